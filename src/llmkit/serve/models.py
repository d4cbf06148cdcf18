"""The models a server holds, side by side, each with its own engine, chosen by the ``model`` field.

A model is named on the command line as ``NAME=PATH`` (or just ``PATH``, which is then its name).
Each gets an :class:`~llmkit.infer.engine.Engine` configured for serving (batch bounds, prefix
cache) and the per-token strings that logprobs report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from llmkit.errors import ConfigError
from llmkit.infer.engine import Engine, chat_stop_ids


@dataclass
class EngineOptions:
    """How each served model's engine batches (see :class:`~llmkit.infer.engine.Engine`)."""

    max_batch: int = 32
    max_batch_tokens: int | None = None
    prefill_budget: int | None = 2048
    prefix_cache: int = 8


@dataclass
class ServedModel:
    name: str
    path: Path
    model: object
    tokenizer: object
    engine: Engine
    created: int = field(default_factory=lambda: int(time.time()))
    raw_bytes: list[bytes] = field(default_factory=list)
    """Each token id's bytes (``b""`` for special tokens, which are never part of the text)."""
    specials: set[int] = field(default_factory=set)
    end_of_turn_ids: list[int] = field(default_factory=list)
    """The chat template's end-of-turn tokens: a chat reply stops there."""

    @property
    def context(self) -> int:
        return self.engine.context

    def token_text(self, token_id: int) -> str:
        """A token as OpenAI's logprobs write it: its text, its name for a special token, or
        ``bytes:\\xNN...`` for a token that is only part of a UTF-8 character."""
        if token_id in self.specials:
            return self.tokenizer.id_to_token(token_id) or ""
        raw = self.raw_bytes[token_id] if 0 <= token_id < len(self.raw_bytes) else b""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)

    def token_byte_list(self, token_id: int) -> list[int]:
        if token_id in self.specials:
            return list((self.tokenizer.id_to_token(token_id) or "").encode("utf-8"))
        return list(self.raw_bytes[token_id]) if 0 <= token_id < len(self.raw_bytes) else []


def parse_model_spec(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` -> (NAME, PATH); a bare ``PATH`` is its own name."""
    name, sep, path = spec.partition("=")
    if not sep:
        return spec, Path(spec)
    if not name or not path:
        raise ConfigError(f"model {spec!r}: write NAME=PATH (for example chat=runs/cpu-tiny/sft) or just PATH")
    return name, Path(path)


def serve_model(name: str, path: Path, lm, options: EngineOptions) -> ServedModel:
    """Wrap a loaded checkpoint (:func:`llmkit.load`) for serving."""
    tok = lm.tokenizer
    engine = Engine(
        lm.model,
        tok,
        max_batch=options.max_batch,
        max_batch_tokens=options.max_batch_tokens,
        prefill_budget=options.prefill_budget,
        prefix_cache=options.prefix_cache,
    )
    specials = set(tok.special_ids)
    raw = [b"" if i in specials else bytes(b) for i, b in enumerate(tok.token_byte_strings())]
    return ServedModel(
        name=name,
        path=Path(path),
        model=lm.model,
        tokenizer=tok,
        engine=engine,
        raw_bytes=raw,
        specials=specials,
        end_of_turn_ids=chat_stop_ids(tok),
    )


def load_models(
    specs: list[str], options: EngineOptions, device: str | None, dtype: str, rope_scaling: dict | None = None
) -> dict[str, ServedModel]:
    """Load every ``NAME=PATH`` (in order; the first is the default model)."""
    import llmkit

    named = [parse_model_spec(s) for s in specs]
    seen: set[str] = set()
    for name, _ in named:
        if name in seen:
            raise ConfigError(f"model name {name!r} is given twice; name them apart with NAME=PATH")
        seen.add(name)
    out = {}
    for name, path in named:
        lm = llmkit.load(path, device=device, dtype=dtype, rope_scaling=rope_scaling, inference_only=True)
        out[name] = serve_model(name, path, lm, options)
    return out
