"""The models a server holds, side by side, each with its own engine, chosen by the ``model`` field.

A model is named on the command line as ``NAME=PATH`` (or just ``PATH``, which is then its name).
A LoRA adapter (``--lora NAME=DIR``, PEFT format) is served as a model of its own, on top of the
checkpoint it names as its base (or the first model): it shares the base's weights, so each
adapter adds only its small matrices. Each model gets an :class:`~llmkit.infer.engine.Engine`
configured for serving (batch bounds, prefix cache) and the per-token strings logprobs report.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from llmkit.errors import ConfigError
from llmkit.infer.engine import Engine, chat_stop_ids


@dataclass
class EngineOptions:
    """How each served model's engine batches (see :class:`~llmkit.infer.engine.Engine`)."""

    max_batch: int = 32
    max_batch_tokens: int | None = None
    prefill_budget: int | None = 2048
    prefix_cache: int = 8
    kv_cache: str = "auto"


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
    base: str | None = None
    """For a LoRA adapter: the served model it applies to."""

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


def serve_model(name: str, path: Path, lm, options: EngineOptions, model=None) -> ServedModel:
    """Wrap a loaded checkpoint (:func:`llmkit.load`) for serving; ``model`` replaces ``lm.model``
    (an adapted view of it, :func:`adapted_view`)."""
    tok = lm.tokenizer
    model = lm.model if model is None else model
    engine = Engine(
        model,
        tok,
        max_batch=options.max_batch,
        max_batch_tokens=options.max_batch_tokens,
        prefill_budget=options.prefill_budget,
        prefix_cache=options.prefix_cache,
        kv_cache=options.kv_cache,
    )
    specials = set(tok.special_ids)
    raw = [b"" if i in specials else bytes(b) for i, b in enumerate(tok.token_byte_strings())]
    return ServedModel(
        name=name,
        path=Path(path),
        model=model,
        tokenizer=tok,
        engine=engine,
        raw_bytes=raw,
        specials=specials,
        end_of_turn_ids=chat_stop_ids(tok),
    )


def adapted_view(base, adapter: Path):
    """``base`` with a LoRA adapter applied, as a second model that shares every base weight (and
    the base's fast kernels wherever the adapter leaves a projection alone); ``base`` is unchanged.
    The base must keep its dense weights (loaded without ``inference_only``)."""
    from llmkit.model.lora import load_adapter

    shared = {id(t): t for t in [*base.parameters(), *base.buffers()]}
    fast_of = {name: m.fast for name, m in base.named_modules() if getattr(m, "fast", None) is not None}
    shared.update({id(f): f for f in fast_of.values()})
    view = copy.deepcopy(base, memo=shared)
    load_adapter(view, adapter)  # wraps the targets and turns every fast path of the view off
    for name, m in view.named_modules():
        groups = getattr(type(m), "FUSED", None)
        plain = groups and all(type(getattr(m, p)) is torch.nn.Linear for ps in groups.values() for p in ps)
        if plain and name in fast_of:
            m.fast = fast_of[name]  # same weights: the base's packed kernels serve the view too
    return view


def load_models(
    specs: list[str],
    options: EngineOptions,
    device: str | None,
    dtype: str,
    rope_scaling: dict | None = None,
    adapters: list[str] | None = None,
) -> dict[str, ServedModel]:
    """Load every ``NAME=PATH`` (in order; the first is the default model), then every adapter
    ``NAME=DIR`` on the served checkpoint its ``adapter_config.json`` names (else the first)."""
    import llmkit
    from llmkit.model.inference import prepare_for_inference
    from llmkit.model.lora import adapter_base

    named = [parse_model_spec(s) for s in specs]
    lora = [parse_model_spec(s) for s in adapters or []]
    seen: set[str] = set()
    for name, _ in named + lora:
        if name in seen:
            raise ConfigError(f"model name {name!r} is given twice; name them apart with NAME=PATH")
        seen.add(name)
    base_of = {}
    for name, directory in lora:
        wanted = adapter_base(directory)
        matches = [n for n, p in named if wanted and Path(wanted).resolve() == p.resolve()]
        base_of[name] = matches[0] if matches else named[0][0]
    out, loaded = {}, {}
    for name, path in named:
        keep_dense = name in base_of.values()  # adapters compute through the base's dense weights
        lm = llmkit.load(path, device=device, dtype=dtype, rope_scaling=rope_scaling, inference_only=not keep_dense)
        if keep_dense:
            prepare_for_inference(lm.model)
        loaded[name] = (path, lm)
        out[name] = serve_model(name, path, lm, options)
    for name, directory in lora:
        path, lm = loaded[base_of[name]]
        out[name] = serve_model(name, directory, lm, options, model=adapted_view(lm.model, directory))
        out[name].base = base_of[name]
    return out
