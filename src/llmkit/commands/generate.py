"""``llmkit generate CKPT``: one-shot or batch generation, every decoding option, JSONL out.

The decoding flags are made from :class:`~llmkit.infer.sampling.SamplingParams` itself (names,
types, defaults and the help text of each field), so the CLI can never drift from the engine.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import itertools
import json
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from llmkit.errors import DataError

# Fields the CLI spells differently or handles itself.
_SKIP = {"truncate_prompt"}


def _field_docs() -> dict[str, str]:
    """Attribute docstrings of SamplingParams (the text under each field)."""
    from llmkit.infer import sampling

    tree = ast.parse(inspect.getsource(sampling))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SamplingParams")
    docs = {}
    for a, b in zip(cls.body, [*cls.body[1:], None], strict=True):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = " ".join(str(b.value.value).split())
    return docs


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of token ids") from None


def _bias(text: str) -> dict[int, float]:
    """``'{"50": -100}'`` (JSON) or ``50:-100,7:2.5``."""
    try:
        if text.strip().startswith("{"):
            return {int(k): float(v) for k, v in json.loads(text).items()}
        return {int(k): float(v) for k, v in (pair.split(":") for pair in text.split(",") if pair.strip())}
    except (ValueError, json.JSONDecodeError):
        raise argparse.ArgumentTypeError(f'{text!r}: use JSON {{"id": bias}} or id:bias,id:bias') from None


def add_decoding_args(p: argparse.ArgumentParser, **defaults) -> None:
    """One flag per SamplingParams field (``--top-p``, ``--stop`` ...), help from its docstring."""
    from llmkit.infer.sampling import SamplingParams

    docs = _field_docs()
    hints = typing.get_type_hints(SamplingParams)
    g = p.add_argument_group("decoding options (applied in the order documented in docs/inference.md)")
    for f in fields(SamplingParams):
        if f.name in _SKIP:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = defaults.get(f.name, f.default if f.default is not MISSING else f.default_factory())
        tp = hints[f.name]
        helptext = docs.get(f.name, "")
        if tp is bool:
            g.add_argument(flag, action="store_true", default=default, help=helptext)
        elif f.name == "stop":
            g.add_argument(flag, action="append", default=None, metavar="TEXT", help=helptext + " (repeatable)")
        elif f.name == "logit_bias":
            g.add_argument(flag, type=_bias, default=default, metavar="ID:BIAS,...", help=helptext)
        elif f.name.endswith("token_ids"):
            g.add_argument(flag, type=_int_list, default=default, metavar="ID,ID", help=helptext)
        else:
            base = int if "int" in str(tp) else float
            g.add_argument(flag, type=base, default=default, help=helptext)
    p.set_defaults(sampling_defaults=defaults)


def params_from_args(args):
    from llmkit.infer.sampling import SamplingParams

    kw = {f.name: getattr(args, f.name) for f in fields(SamplingParams) if f.name not in _SKIP}
    if kw["num_beams"] > 1:  # beam search does not sample: this command's sampling defaults do not apply
        neutral = SamplingParams()
        for name, value in getattr(args, "sampling_defaults", {}).items():
            if name != "max_new_tokens" and kw[name] == value:
                kw[name] = getattr(neutral, name)
    kw["stop"] = kw["stop"] or []
    kw["stop_token_ids"] = kw["stop_token_ids"] or []
    kw["truncate_prompt"] = getattr(args, "truncate", False)
    return SamplingParams(**kw).validate()


ORDER = 44  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    from llmkit.commands._common import DefaultsHelpFormatter, add_model_args, positive_int

    p = sub.add_parser(
        "generate",
        help="generate text from a checkpoint (one prompt or a file of prompts)",
        description="Continue prompts with a checkpoint. One --prompt prints (streams) the text; "
        '--input FILE (.txt: one prompt per line; .jsonl: objects with a "prompt" '
        "field, other fields are copied through) writes one JSON object per prompt "
        "to --output (or stdout).",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="prompt text (repeatable)")
    src.add_argument("--input", type=Path, help='prompts file: .txt (one per line) or .jsonl ({"prompt": ...})')
    p.add_argument("--output", type=Path, default=None, help="write results as JSONL here")
    p.add_argument("--chat", action="store_true", help="wrap each prompt as a user message in the chat template")
    p.add_argument(
        "--truncate", action="store_true", help="left-truncate prompts that do not fit the context instead of failing"
    )
    p.add_argument("--draft", type=Path, default=None, help="draft checkpoint for speculative decoding")
    p.add_argument("--prompt-lookup", action="store_true", help="speculative decoding by prompt lookup (no draft)")
    p.add_argument("--num-draft-tokens", type=int, default=4, help="tokens proposed per speculative step")
    p.add_argument("--batch-size", type=positive_int, default=32, help="sequences decoded together")
    add_model_args(p)
    add_decoding_args(p, max_new_tokens=256, temperature=0.8, top_k=50)
    p.set_defaults(func=run)


def read_prompts(path: Path) -> list[dict]:
    """Prompts from .txt (one per non-empty line) or .jsonl (objects with "prompt"), as dicts."""
    if not path.is_file():
        raise DataError(f"{path}: prompts file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".jsonl":
        rows = [{"prompt": line} for line in text.splitlines() if line.strip()]
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg}); one object per line") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
                raise DataError(f'{path}:{n}: expected an object with a string "prompt" field')
            rows.append(obj)
    if not rows:
        raise DataError(f"{path}: no prompts in the file")
    return rows


def run(args) -> int:
    from llmkit.commands._common import load_for_inference
    from llmkit.infer.engine import chat_prompt_ids, chat_stop_ids

    params = params_from_args(args)
    rows = [{"prompt": p} for p in args.prompt] if args.prompt else read_prompts(args.input)
    lm = load_for_inference(args)
    lm.engine.max_batch = args.batch_size
    prompts = [r["prompt"] for r in rows]
    if args.chat:
        from llmkit.api import is_chat_model
        from llmkit.console import say

        if not is_chat_model(lm.path, lm.tokenizer):
            say(
                f"warning: {args.checkpoint} is a base model (not instruction-tuned): with --chat it continues "
                "the chat template as text and will not answer like an assistant; drop --chat to continue text"
            )
        prompts = [chat_prompt_ids(lm.tokenizer, [{"role": "user", "content": p}]) for p in prompts]
        params.stop_token_ids = list(params.stop_token_ids) + chat_stop_ids(lm.tokenizer)
    spec = dict(draft=args.draft, prompt_lookup=args.prompt_lookup, num_draft_tokens=args.num_draft_tokens)
    options = dict(params.__dict__.items())
    stream = params.n == 1 and params.num_beams == 1 and params.logprobs is None  # plain text is all it shows
    if args.prompt and len(prompts) == 1 and args.output is None and stream:
        deltas = lm.stream(prompts[0], **options, **spec)
        first = next(deltas, "")  # starts the request: a prompt that cannot run fails here, before any output
        if not args.chat:  # a continuation is printed after its prompt; a chat reply stands alone
            print(rows[0]["prompt"], end="", flush=True)
        for delta in itertools.chain([first], deltas):
            print(delta, end="", flush=True)
        print()
        return 0
    results = lm.generate(prompts, return_ids=True, **options, **spec)
    lines = []
    for row, res in zip(rows, results, strict=True):
        comps = res if isinstance(res, list) else [res]
        out = dict(row)
        out["completions"] = [
            {
                "text": c.text,
                "finish_reason": c.finish_reason,
                "tokens": len(c.token_ids),
                **({"token_ids": c.token_ids} if params.logprobs is not None else {}),
                **(
                    {"logprobs": [[lp.token_id, lp.logprob, lp.top] for lp in c.logprobs]}
                    if c.logprobs is not None
                    else {}
                ),
                **({"score": c.score} if c.score is not None else {}),
            }
            for c in comps
        ]
        out["text"] = comps[0].text
        out["prompt_tokens"] = comps[0].prompt_tokens
        lines.append(json.dumps(out, ensure_ascii=False))
    if args.output is None:
        sys.stdout.write("\n".join(lines) + "\n")
    else:
        from llmkit.files import atomic_write_text

        atomic_write_text(args.output, "\n".join(lines) + "\n")
        print(f"wrote {len(lines)} results to {args.output}", file=sys.stderr)
    return 0
