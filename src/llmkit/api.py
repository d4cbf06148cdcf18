"""The small Python API: ``llmkit.load(path)`` for notebooks and scripts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from llmkit.checkpoint import check_checkpoint, load_model
from llmkit.config import ModelConfig
from llmkit.devices import cpu_has_native_bf16, pick_device
from llmkit.infer.sampling import GenerationError

CHAT_STAGES = ("sft", "dpo", "ppo", "grpo")
"""``llmkit_stage`` values in config.json of checkpoints trained to follow the chat template."""


def is_chat_model(path: Path, tokenizer) -> bool:
    """True when the checkpoint was instruction-tuned and its tokenizer carries a chat template."""
    try:
        stage = json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("llmkit_stage")
    except (OSError, json.JSONDecodeError):
        return False
    has_template = hasattr(tokenizer, "apply_chat_template")
    tc = Path(path) / "tokenizer_config.json"
    if tc.is_file():
        try:
            has_template = has_template and bool(json.loads(tc.read_text(encoding="utf-8")).get("chat_template"))
        except json.JSONDecodeError:
            has_template = False
    return stage in CHAT_STAGES and has_template


DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def inference_dtype(requested: str | torch.dtype | None, device: str) -> torch.dtype:
    """The dtype to run a model in. ``auto``: bf16 where the hardware computes in it natively (CUDA
    with bf16 support; CPUs with AVX512-BF16, AMX or Arm BF16): decoding reads half the bytes and measured
    1.3-1.7x faster than fp32 on such a CPU (docs/BENCHMARKS.md); fp32 elsewhere. None means fp32."""
    if isinstance(requested, torch.dtype):
        return requested
    if requested is None:
        return torch.float32
    if requested in DTYPES:
        return DTYPES[requested]
    if requested != "auto":
        raise GenerationError(f"dtype {requested!r}: use auto, float32, bfloat16 or float16")
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if kind == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return torch.float32


@dataclass
class LoadedModel:
    """A checkpoint in memory: ``.model`` (``model(input_ids) -> logits``), ``.tokenizer``, ``.config``."""

    model: torch.nn.Module
    tokenizer: object
    config: ModelConfig
    path: Path
    inference_only: bool = False
    """Loaded with ``inference_only=True``: weights held once, packed for the engine; no training."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def engine(self):
        """The :class:`~llmkit.infer.engine.Engine` behind generate/stream/chat (created once)."""
        if self.__dict__.get("_engine") is None:
            from llmkit.infer.engine import Engine

            self.__dict__["_engine"] = Engine(self.model, self.tokenizer)
        return self.__dict__["_engine"]

    def set_rope_scaling(self, scaling: dict | None) -> None:
        """Read past the trained context: ``{"rope_type": "yarn"|"linear"|"dynamic"|"llama3",
        "factor": F}`` (None = plain RoPE). The engine's context grows to factor x trained length."""
        from llmkit.model.rope import set_rope_scaling

        set_rope_scaling(self.model, scaling)
        self.__dict__["_engine"] = None  # the context length changed

    def speculative(self, draft=None, prompt_lookup: bool = False, num_draft_tokens: int = 4):
        """A :class:`~llmkit.infer.speculative.SpeculativeDecoder` with this model as the target;
        ``draft`` is a checkpoint path, a LoadedModel or a model (same tokenizer)."""
        from llmkit.infer.speculative import SpeculativeDecoder

        if isinstance(draft, (str, Path)):
            draft = load(
                draft,
                device=str(self.device),
                dtype=next(self.model.parameters()).dtype,
                inference_only=self.inference_only,
            )
        if isinstance(draft, LoadedModel):
            mine, theirs = getattr(self.tokenizer, "fingerprint", None), getattr(draft.tokenizer, "fingerprint", None)
            if mine and theirs and mine() != theirs():
                raise GenerationError(
                    f"the draft {draft.path} has a different tokenizer ({theirs()}) than the target "
                    f"({mine()}); speculative decoding needs a draft trained with the same tokenizer"
                )
            draft = draft.model
        return SpeculativeDecoder(self.engine, draft, prompt_lookup=prompt_lookup, num_draft_tokens=num_draft_tokens)

    def generate(
        self,
        prompt_or_prompts,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        *,
        return_ids: bool = False,
        return_logprobs: bool = False,
        draft=None,
        prompt_lookup: bool = False,
        num_draft_tokens: int = 4,
        **options,
    ):
        """Continue a prompt (str, or a list of token ids) or a list of prompts.

        Returns the generated text without the prompt: a str for one prompt, a list for a list.
        With ``n=k`` each prompt gives a list of k texts. With ``return_ids`` / ``return_logprobs``
        each text is replaced by a :class:`~llmkit.infer.engine.Completion` (``.text``,
        ``.token_ids``, ``.logprobs``, ``.finish_reason``). Every other decoding option of
        :class:`~llmkit.infer.sampling.SamplingParams` is accepted by name (``min_p``,
        ``repetition_penalty``, ``stop``, ``num_beams``, ``logprobs`` ...); temperature=0 is greedy.
        ``draft`` (a smaller model with the same tokenizer) or ``prompt_lookup=True`` turns on
        speculative decoding (prompts then run one at a time).
        """
        params = _params(
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, **options
        )
        if return_logprobs and params.logprobs is None:
            params.logprobs = 0
        single = isinstance(prompt_or_prompts, str) or (
            isinstance(prompt_or_prompts, (list, tuple))
            and prompt_or_prompts
            and all(isinstance(t, int) for t in prompt_or_prompts)
        )
        prompts = [prompt_or_prompts] if single else list(prompt_or_prompts)
        if not prompts:
            raise GenerationError("empty prompt: give a prompt (or a non-empty list of prompts) to continue from")
        if draft is not None or prompt_lookup:
            spec = self.speculative(draft, prompt_lookup, num_draft_tokens)
            if params.n != 1:
                raise GenerationError("speculative decoding produces one sample per prompt: use n=1")
            results = [
                [spec.generate(p, params.with_(seed=None if seed is None else seed + i))] for i, p in enumerate(prompts)
            ]
        else:
            results = self.engine.generate(prompts, params)
        full = return_ids or return_logprobs
        shaped = [[c if full else c.text for c in cs] for cs in results]
        shaped = [cs[0] if params.n == 1 else cs for cs in shaped]
        return shaped[0] if single else shaped

    def stream(
        self,
        prompt,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        *,
        draft=None,
        prompt_lookup: bool = False,
        num_draft_tokens: int = 4,
        **options,
    ):
        """Yield the continuation of one prompt as text deltas (whole characters; their
        concatenation equals what ``generate`` returns for the same options and seed)."""
        params = _params(
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, **options
        )
        source = self.engine
        if draft is not None or prompt_lookup:
            source = self.speculative(draft, prompt_lookup, num_draft_tokens)
        for out in source.stream(prompt, params):
            if out.text:
                yield out.text

    def chat(self, messages: list[dict], stream: bool = False, **options):
        """Answer a conversation (``[{"role": "user", "content": ...}, ...]``) through the
        tokenizer's chat template; returns the reply text, or an iterator of deltas with
        ``stream=True``. The template's end-of-turn token stops generation."""
        from llmkit.infer.engine import chat_prompt_ids, chat_stop_ids

        ids = chat_prompt_ids(self.tokenizer, messages)
        options["stop_token_ids"] = list(options.get("stop_token_ids") or []) + chat_stop_ids(self.tokenizer)
        if stream:
            return self.stream(ids, **options)
        return self.generate(ids, **options)


def _params(**options):
    from llmkit.infer.sampling import PARAM_NAMES, SamplingParams

    unknown = [k for k in options if k not in PARAM_NAMES]
    if unknown:
        raise GenerationError(f"unknown decoding option {unknown[0]!r}; known: {', '.join(PARAM_NAMES)}")
    return SamplingParams(**options).validate()


def load(
    path: str | Path,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    rope_scaling: dict | None = None,
    inference_only: bool = False,
    adapter: str | Path | None = None,
) -> LoadedModel:
    """Load a checkpoint directory written by llmkit (or a local Llama/Qwen2/Mistral HF checkpoint).

    ``dtype``: None or ``float32`` (default), ``bfloat16``, ``float16``, or ``auto`` (bf16 where the
    hardware computes in it natively, see :func:`inference_dtype`). ``rope_scaling``
    (``{"rope_type": "yarn", "factor": 4.0}``; linear, dynamic, yarn, llama3) replaces the
    checkpoint's RoPE scaling, to read past the trained context. ``inference_only`` packs the
    weights for the engine and frees the trainable copies, so they are held once (what the CLI
    does); such a model can generate and score but not train. ``adapter`` applies a LoRA adapter
    directory (PEFT format) on top of the weights without merging it.
    """
    from llmkit.tokenizer import Tokenizer

    path = Path(path)
    device = pick_device(device)
    device = device.type if device.index in (None, 0) else str(device)  # "cuda", not "cuda:0"
    if check_checkpoint(path).get("quantization_config"):  # codes and scales: no dtype to choose
        from llmkit.quant.model import load_quantized

        model = load_quantized(path, device=device)
        inference_only = True
    else:
        model = load_model(path, device=device, dtype=inference_dtype(dtype, device))
    if rope_scaling is not None:
        from llmkit.model.rope import set_rope_scaling

        set_rope_scaling(model, rope_scaling)
    if adapter is not None:
        from llmkit.model.lora import load_adapter

        load_adapter(model, Path(adapter))
    if inference_only:
        from llmkit.model.inference import prepare_for_inference

        prepare_for_inference(model, release_dense=True)
    tokenizer = Tokenizer.load(path)
    return LoadedModel(model=model, tokenizer=tokenizer, config=model.config, path=path, inference_only=inference_only)
