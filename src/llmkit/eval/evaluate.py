"""``llmkit eval``: score checkpoints on text (bits per byte) and tasks (few-shot accuracy), side by
side, into ``results.json`` + ``results.md`` (and ``icl.png``, the in-context curve, when several
shot counts were asked).

Text sources are corpus names, files, directories or JSONL like ``data.sources``; a named corpus is
scored on its held-out split (the default speedrun's validation documents), never on what the
default run trained on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmkit.console import say
from llmkit.eval.perplexity import EvalError, score_texts
from llmkit.eval.runner import TaskResult, run_task
from llmkit.eval.taskfile import Task, load_task

DEFAULT_TASKS = ("copy-pattern", "label-map", "shakespeare-next-line", "poem-next-clause")


@dataclass
class EvalOptions:
    """What to measure; the defaults of ``llmkit eval``."""

    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    texts: list[str] = field(default_factory=list)
    shots: list[int] = field(default_factory=lambda: [0])
    seed: int = 1234
    batch_size: int = 16
    limit: int = 0
    window: int = 0
    stride: int = 0
    max_bytes: int = 100_000
    log_samples: bool = False
    suite: list[str] = field(default_factory=list)
    """Task-suite generation tasks (``llmkit tasks list``), verified replies."""
    mode: str = "few_shot"
    cot: list[bool] = field(default_factory=lambda: [True])
    """Chain-of-thought settings to run each suite task with (both: ``[True, False]``)."""


def text_documents(source: str, max_bytes: int) -> list[str]:
    """The documents of ``source`` to score, at most ``max_bytes`` of UTF-8 (0 = all); a named
    corpus gives its held-out split."""
    from llmkit.config import DataConfig
    from llmkit.data.corpora import corpus_names
    from llmkit.data.sources import iter_documents
    from llmkit.eval.builtin import held_out_documents

    if source in corpus_names():
        docs = held_out_documents(source)
    else:
        docs = list(iter_documents(source, DataConfig(sources=[source])))
    return clip_documents(docs, max_bytes)


def clip_documents(docs: Sequence[str], max_bytes: int) -> list[str]:
    """The first documents up to ``max_bytes`` of UTF-8 in all (the last one cut on a character)."""
    if max_bytes <= 0:
        return list(docs)
    out, used = [], 0
    for doc in docs:
        b = doc.encode("utf-8")
        if used + len(b) > max_bytes:
            rest = b[: max_bytes - used].decode("utf-8", "ignore")
            if rest:
                out.append(rest)
            break
        out.append(doc)
        used += len(b)
    return out


def evaluate_model(
    lm,
    opts: EvalOptions,
    tasks: Sequence[Task],
    texts: dict[str, list[str]],
    label: str = "",
) -> dict:
    """One loaded model (``.model``, ``.tokenizer``) on every text and task: a JSON-ready dict."""
    out: dict = {"checkpoint": label or str(getattr(lm, "path", "")), "text": {}, "tasks": []}
    for source, docs in texts.items():
        t0 = time.perf_counter()
        s = score_texts(
            lm.model,
            lm.tokenizer,
            docs,
            window=opts.window or None,
            stride=opts.stride or None,
            batch_size=opts.batch_size,
        )
        out["text"][source] = s.to_dict()
        took = time.perf_counter() - t0
        say(f"eval {label}: {source}: {s.bits_per_byte:.4f} bits/byte, perplexity {s.perplexity:.2f} ({took:.1f} s)")
    for task in tasks:
        for k in opts.shots:
            t0 = time.perf_counter()
            r: TaskResult = run_task(
                lm.model,
                lm.tokenizer,
                task,
                shots=k,
                seed=opts.seed,
                batch_size=opts.batch_size,
                limit=opts.limit,
                details=opts.log_samples,
            )
            row = r.to_dict(with_details=opts.log_samples)
            row["seconds"] = time.perf_counter() - t0
            out["tasks"].append(row)
            say(f"eval {label}: {task.name} {k}-shot: {format_metric(row, 'acc')} (n={r.n}, {row['seconds']:.1f} s)")
    if opts.suite:
        from llmkit.eval.suite import run_suite_task

        for name in opts.suite:
            for k in opts.shots if opts.mode == "few_shot" else [0]:
                for cot in opts.cot if k else opts.cot[:1]:  # without shots there is nothing to show
                    t0 = time.perf_counter()
                    row = run_suite_task(
                        lm.model,
                        lm.tokenizer,
                        name,
                        mode=opts.mode,
                        shots=k,
                        cot=cot,
                        n=opts.limit or 50,
                        seed=opts.seed,
                    )
                    row["seconds"] = time.perf_counter() - t0
                    out["tasks"].append(row)
                    how = (
                        f"{k}-shot {'with' if cot else 'without'} chain-of-thought"
                        if opts.mode == "few_shot"
                        else "chat"
                    )
                    acc = format_metric(row, "acc")
                    say(f"eval {label}: {name} ({how}): {acc} (n={row['n']}, {row['seconds']:.1f} s)")
    return out


def format_metric(row: dict, name: str) -> str:
    value, se = row[name], row.get(f"{name}_stderr", float("nan"))
    if name.startswith("acc"):
        return f"{100 * value:.1f} ± {100 * se:.1f}%" if se == se else f"{100 * value:.1f}%"
    return f"{value:.3f} ± {se:.3f}" if se == se else f"{value:.3f}"


def markdown(results: list[dict]) -> str:
    """Checkpoints side by side: one column each; bits per byte per text source, then every task at
    every shot count (accuracy ± standard error; length-normalised accuracy for multiple choice)."""
    names = [r["checkpoint"] for r in results]
    lines = ["| | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]
    sources = list(dict.fromkeys(s for r in results for s in r["text"]))
    for source in sources:
        cells = [f"{r['text'][source]['bits_per_byte']:.4f}" if source in r["text"] else "" for r in results]
        lines.append(f"| {source}: bits/byte | " + " | ".join(cells) + " |")
    keys = list(dict.fromkeys(_key(t) for r in results for t in r["tasks"]))
    for key in keys:
        rows = [next((t for t in r["tasks"] if _key(t) == key), None) for r in results]
        if any(t and "acc_norm" in t for t in rows):
            metrics = ["acc", "acc_norm"]
        elif any(t and "answer_loss" in t for t in rows):
            metrics = ["acc", "answer_loss"]
        else:
            metrics = ["acc"]
        for m in metrics:
            cells = [format_metric(t, m) if t else "" for t in rows]
            lines.append(f"| {_label(key)} {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _key(row: dict) -> tuple:
    return (row["task"], row["shots"], row.get("mode"), row.get("cot"))


def _label(key: tuple) -> str:
    task, shots, mode, cot = key
    if mode == "chat":
        return f"{task} (chat)"
    if cot is None:
        return f"{task} ({shots}-shot)"
    return f"{task} ({shots}-shot, {'CoT' if cot else 'no CoT'})"


def write_results(results: list[dict], out_dir: Path, opts: EvalOptions) -> Path:
    """``results.json``, ``results.md`` and, with several shot counts, ``icl.png``."""
    from llmkit.files import atomic_write_json, atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "results.json", {"options": vars(opts), "results": results})
    md = ["# Evaluation", "", markdown(results), ""]
    if len(opts.shots) > 1 and any(t.get("kind") != "generate" for r in results for t in r["tasks"]):
        from llmkit.eval.plots import plot_icl

        plot_icl(results, out_dir / "icl.png")
        md += ["![in-context learning](icl.png)", ""]
    atomic_write_text(out_dir / "results.md", "\n".join(md))
    return out_dir / "results.md"


def evaluate(checkpoints: Sequence[Path], opts: EvalOptions, out_dir: Path, device=None, dtype="auto") -> list[dict]:
    """Load each checkpoint in turn and evaluate it (see :func:`evaluate_model`); write the results."""
    import llmkit

    if any(k < 0 for k in opts.shots):
        raise EvalError(f"--shots {opts.shots}: shot counts must be >= 0")
    tasks = [load_task(t) for t in opts.tasks]
    texts = {s: text_documents(s, opts.max_bytes) for s in opts.texts}
    results = []
    for path in checkpoints:
        lm = llmkit.load(path, device=device, dtype=dtype, inference_only=True)
        results.append(evaluate_model(lm, opts, tasks, texts, label=str(path)))
    write_results(results, out_dir, opts)
    return results


def load_results(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text(encoding="utf-8"))["results"]
