"""``llmkit tasks list|show|make``: the task suite from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ORDER = 50  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    from llmkit.commands._common import positive_int

    p = sub.add_parser(
        "tasks",
        help="the task suite: list tasks, show examples, make train/test files",
        description="Generated, bilingual tasks with exact answers (arithmetic, strings, word problems, "
        "formats) and tasks made from the pretraining corpora. Train and test splits never share a problem.",
    )
    verbs = p.add_subparsers(dest="tasks_verb", metavar="<list|show|make>")
    verbs.required = True
    ls = verbs.add_parser("list", help="every task: family, languages, verifier, what it asks")
    ls.add_argument("--family", default=None, help="only this family")
    ls.set_defaults(func=run_list)

    show = verbs.add_parser("show", help="print a few examples of a task")
    show.add_argument("task", help="task name (add2, poem_author ...) or a .jsonl task file")
    show.add_argument("--split", default="test", choices=["train", "test"], help="which split (default test)")
    show.add_argument("-n", type=positive_int, default=4, help="examples to show (default 4)")
    show.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    show.add_argument("--lang", default=None, choices=["en", "zh"], help="only this language")
    show.set_defaults(func=run_show)

    make = verbs.add_parser(
        "make",
        help="write examples of one or more tasks to a JSONL file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write N examples per task. --format messages writes chat conversations "
        "(what `llmkit sft --data` reads); --format examples writes the full items (prompt, answer, "
        "solution, meta).",
    )
    make.add_argument("tasks", nargs="+", help="task names or .jsonl task files")
    make.add_argument("--split", default="train", choices=["train", "test"], help="which split (default train)")
    make.add_argument("-n", type=positive_int, default=1000, help="examples per task (default 1000)")
    make.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    make.add_argument("--lang", default=None, choices=["en", "zh"], help="only this language")
    make.add_argument(
        "--format",
        default="messages",
        choices=["messages", "examples"],
        help="messages: chat conversations for SFT; examples: the items with answers (default messages)",
    )
    make.add_argument("--out", type=Path, required=True, help="output .jsonl file")
    make.set_defaults(func=run_make)


def run_list(args) -> int:
    from llmkit.tasks import list_tasks

    rows = [t.info() for t in list_tasks(args.family)]
    width = max(len(r["name"]) for r in rows) if rows else 4
    print(f"{'task':<{width}}  {'family':<13} {'langs':<6} {'verifier':<12} description")
    for r in rows:
        langs = ",".join(r["languages"])
        print(f"{r['name']:<{width}}  {r['family']:<13} {langs:<6} {r['verifier']:<12} {r['description']}")
    print("\nArithmetic takes any digit count in its name: add5, sub4, mul3, compare6.")
    return 0


def run_show(args) -> int:
    from llmkit.tasks import get_task

    task = get_task(args.task)
    langs = (args.lang,) if args.lang else None
    for ex in task.make(args.split, args.n, args.seed, langs):
        print(f"--- {ex.id} ({ex.lang}, answer {ex.answer!r})")
        print(f"user: {ex.prompt}")
        print(f"assistant: {ex.solution}")
    return 0


def run_make(args) -> int:
    from llmkit.console import say
    from llmkit.files import atomic_write_text
    from llmkit.tasks import get_task, to_messages

    langs = (args.lang,) if args.lang else None
    lines = []
    for name in args.tasks:
        task = get_task(name)
        examples = task.make(args.split, args.n, args.seed, langs)
        if len(examples) < args.n:
            say(f"tasks: {task.name} has only {len(examples)} {args.split} examples (asked for {args.n})")
        for ex in examples:
            rec = (
                ex.to_dict()
                if args.format == "examples"
                else {"messages": to_messages(ex), "task": ex.task, "id": ex.id}
            )
            lines.append(json.dumps(rec, ensure_ascii=False))
    atomic_write_text(args.out, "".join(line + "\n" for line in lines))
    say(f"tasks: wrote {len(lines)} examples to {args.out}")
    sys.stdout.flush()
    return 0
