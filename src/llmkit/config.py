"""Typed configuration: one dataclass per concern, YAML presets, ``section.field=value`` overrides.

A run is described by a :class:`RunConfig` (data, tokenizer, model, train). Presets live in
``llmkit/configs/<name>.yaml`` and hold only the fields that differ from the defaults below.
Overrides from the command line (``train.max_steps=100``) are parsed with YAML so numbers,
booleans and lists get their natural types, checked against the dataclass field types, and the
resolved config is written to the run directory as ``config.yaml`` so every run can be repeated.

``ModelConfig`` uses Hugging Face ``LlamaConfig`` field names, so ``config.json`` of a checkpoint
is this dataclass plus ``architectures``/``model_type``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from llmkit.errors import ConfigError
from llmkit.files import atomic_write_text

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    """Where the text comes from and how it is split."""

    sources: list[str] = field(default_factory=lambda: ["shakespeare"])
    """Corpus names (``shakespeare``, ``fortunes-zh``), files, directories, globs, ``*.jsonl``,
    ``*.parquet``, saved ``datasets`` directories, or ``hf:NAME[:CONFIG]`` hub datasets."""
    text_field: str = "text"
    """Field holding the text in JSONL, Parquet and ``datasets`` sources."""
    val_fraction: float = 0.05
    """Fraction of documents held out for validation (chosen by a hash of the document)."""
    strict: bool = False
    """Fail on the first malformed JSONL line instead of skipping and counting it."""
    max_documents: int = 0
    """Read at most this many documents per source (0 = all); useful for streamed hub data."""
    streaming: bool = False
    """Never hold the corpus in memory: stream hub datasets and re-read every source on each pass
    (for corpora larger than RAM)."""
    split: str = "train"
    """Split name for hub datasets."""

    def validate(self) -> None:
        if not self.sources:
            raise ConfigError("data.sources is empty; name at least one corpus, file or directory")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_documents < 0:
            raise ConfigError(f"data.max_documents must be >= 0 (0 = all), got {self.max_documents}")


@dataclass
class CleanConfig:
    """Cleaning, deduplication, decontamination and mixing before the tokenizer (the ``clean`` stage
    and ``llmkit data clean``; see docs/data-cleaning.md)."""

    normalise: bool = True
    """Repair mojibake (ftfy), NFC, drop control characters, tidy whitespace."""
    html: str = "auto"
    """HTML to main text with trafilatura: ``auto`` (documents that look like a page), ``on``, ``off``."""
    languages: list[str] = field(default_factory=list)
    """Keep documents in these languages (ISO 639-1 codes, e.g. [en, zh]); empty keeps every language."""
    lang_thresholds: dict = field(default_factory=dict)
    """Minimum language-identification probability per language, e.g. {en: 0.5}."""
    boilerplate: bool = True
    """Remove navigation and legal lines (cookie notices, 版权所有, ...) inside documents."""
    quality: bool = True
    """Gopher/C4-style document rules, Chinese-aware (lengths in tokens: a Chinese character is one)."""
    min_tokens: int = 4
    """Quality: documents need at least this many tokens (words, or Chinese characters)."""
    max_tokens: int = 500_000
    """Quality: documents may have at most this many tokens."""
    min_alpha_tokens: float = 0.7
    """Quality: at least this share of tokens must not be bare numbers."""
    max_symbol_ratio: float = 0.1
    """Quality: at most this many ``#`` and ellipses per token."""
    repetition: bool = True
    """Gopher repetition rules (repeated lines, paragraphs, n-grams) on documents of 300+ tokens."""
    pii: bool = False
    """Replace e-mail addresses, phone numbers, IP addresses and Chinese ID numbers with <EMAIL>, ..."""
    dedup: str = "near"
    """``near`` (exact + MinHash LSH near-duplicates), ``exact`` (identical token sequences), ``off``."""
    near_threshold: float = 0.7
    """Near-duplicates: estimated Jaccard similarity of shingle sets at or above which a copy is removed."""
    shingle_size: int = 5
    """Near-duplicates: tokens per shingle."""
    num_perm: int = 128
    """Near-duplicates: MinHash permutations (more = finer similarity estimates, more memory)."""
    decontaminate: bool = True
    """Remove text overlapping the evaluation task suite (the ``clean`` stage supplies its items)."""
    decontam_ngram: int = 13
    """Decontamination: n-gram length in tokens."""
    decontam_mode: str = "document"
    """Decontamination: ``document`` removes a contaminated document, ``span`` cuts out the overlap."""
    mix_epochs: dict = field(default_factory=dict)
    """Times each source is written (source name -> epochs; 2 repeats it, 0.5 keeps a fixed half)."""
    mix_weights: dict = field(default_factory=dict)
    """Target share of the cleaned bytes per source (turned into epochs); overrides mix_epochs."""
    workers: int = 0
    """Cleaning processes (0 = one per core); the output is the same for any number."""
    chunk_bytes: int = 1_000_000
    """Documents are cleaned in chunks of about this many bytes (the unit of resuming and of work)."""
    engine: str = "local"
    """``local`` (processes on this machine) or ``datatrove`` (its executors: local, Slurm, Ray)."""


@dataclass
class TokenizerConfig:
    """Byte-level BPE training."""

    vocab_size: int = 4096
    """Vocabulary size including the 256 byte tokens and the special tokens."""
    min_frequency: int = 2
    """A merge must occur at least this often in the training text."""
    max_train_chars: int = 0
    """Train the tokenizer on at most this many characters of the corpus (0 = all)."""
    pre_tokenizer: str = "qwen2"
    """Split regex before BPE: ``qwen2`` (GPT-4's with single digits; llama.cpp tokenizes it
    identically, so GGUF export works) or ``llmkit`` (Chinese in runs of at most 2 characters)."""


@dataclass
class ModelConfig:
    """A LLaMA-family decoder. Field names follow ``transformers.LlamaConfig``."""

    vocab_size: int = 4096
    """Set from the tokenizer (rounded up to a multiple of 64) when pretraining."""
    hidden_size: int = 256
    """Width of the residual stream."""
    intermediate_size: int = 0
    """SwiGLU width; 0 derives ``8/3 * hidden_size`` rounded up to a multiple of 64."""
    num_hidden_layers: int = 4
    """Number of transformer blocks."""
    num_attention_heads: int = 4
    """Query heads; must divide hidden_size (head_dim = hidden_size / heads)."""
    num_key_value_heads: int = 0
    """Grouped-query attention: 0 means as many as ``num_attention_heads`` (plain multi-head)."""
    max_position_embeddings: int = 256
    """Trained context length in tokens."""
    rope_theta: float = 10000.0
    """RoPE base; larger bases suit longer contexts."""
    rope_scaling: dict | None = None
    """``{"rope_type": "linear"|"dynamic"|"yarn", "factor": F, ...}`` as transformers writes it."""
    rms_norm_eps: float = 1e-5
    """Epsilon inside RMSNorm."""
    tie_word_embeddings: bool = True
    """Share the input embedding matrix with the output head (saves V*C parameters)."""
    attention_bias: bool = False
    """Biases on the q/k/v projections (Qwen2-style); the checkpoint is then saved as Qwen2."""
    head_dim: int = 0
    """Width of each attention head; 0 derives ``hidden_size / num_attention_heads`` (Qwen3 sets its own)."""
    qk_norm: bool = False
    """RMSNorm over each head's queries and keys before RoPE (Qwen3); the checkpoint is then saved as Qwen3."""
    sliding_window: int = 0
    """Attend to at most this many latest tokens in the layers of ``layer_types`` marked
    ``sliding_attention`` (Mistral, Qwen2/3 options); 0 = full attention everywhere."""
    layer_types: list[str] | None = None
    """Per layer ``full_attention`` or ``sliding_attention`` (as transformers writes it); None with a
    ``sliding_window`` means every layer slides (Mistral)."""
    model_type: str = "llama"
    """The Hugging Face architecture written to config.json: ``llama``, ``mistral``, ``qwen2`` or
    ``qwen3`` (set when importing a checkpoint; ``attention_bias`` implies qwen2, ``qk_norm`` qwen3)."""
    initializer_range: float = 0.02
    """Standard deviation of the normal initialisation."""
    bos_token_id: int | None = 1
    """Set from the tokenizer (None for checkpoints without one, e.g. Qwen)."""
    eos_token_id: int | None = 2
    """Set from the tokenizer."""
    pad_token_id: int | None = 0
    """Set from the tokenizer."""

    def __post_init__(self):
        if self.intermediate_size <= 0:
            self.intermediate_size = 64 * -(-int(8 * self.hidden_size / 3) // 64)
        if self.num_key_value_heads <= 0:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim <= 0 and self.num_attention_heads > 0:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(
                    f"model.hidden_size={self.hidden_size} is not divisible by "
                    f"model.num_attention_heads={self.num_attention_heads}; pick heads that divide the width"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.model_type == "llama" and self.qk_norm:
            self.model_type = "qwen3"
        elif self.model_type == "llama" and self.attention_bias:
            self.model_type = "qwen2"  # Llama's attention_bias would also bias o_proj
        self.validate()

    def window(self, layer_idx: int) -> int:
        """The sliding window of layer ``layer_idx`` in tokens, 0 for full attention."""
        if not self.sliding_window:
            return 0
        if self.layer_types is None:
            return self.sliding_window
        return self.sliding_window if self.layer_types[layer_idx] == "sliding_attention" else 0

    def validate(self) -> None:
        """Reject impossible shapes with a message that names the field."""
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.head_dim % 2:
            raise ConfigError(f"model.head_dim={self.head_dim} must be even for RoPE")
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model.model_type={self.model_type!r}: use one of {', '.join(MODEL_TYPES)}")
        if self.layer_types is not None and (
            len(self.layer_types) != self.num_hidden_layers
            or any(t not in ("full_attention", "sliding_attention") for t in self.layer_types)
        ):
            raise ConfigError(
                f"model.layer_types must list full_attention or sliding_attention for each of the "
                f"{self.num_hidden_layers} layers"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"model.num_attention_heads={self.num_attention_heads} is not divisible by "
                f"model.num_key_value_heads={self.num_key_value_heads}; use a divisor for grouped-query attention"
            )

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count computed from the shape (no model needed)."""
        h, i, L, v = self.hidden_size, self.intermediate_size, self.num_hidden_layers, self.vocab_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        per_layer = h * q * 2 + h * kv * 2 + 3 * h * i + 2 * h
        if self.attention_bias:
            per_layer += q + 2 * kv
        if self.qk_norm:
            per_layer += 2 * self.head_dim
        n = L * per_layer + h
        if include_embeddings:
            n += v * h * (1 if self.tie_word_embeddings else 2)
        return n

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``config.json`` of the Hugging Face ``<model_type>ForCausalLM`` with this shape."""
        d = dataclasses.asdict(self)
        kind = self.model_type
        d.update(
            architectures=[ARCHITECTURES[kind]],
            hidden_act="silu",
            attention_dropout=0.0,
            torch_dtype="float32",
            use_cache=True,
        )
        for k in ("qk_norm", "layer_types", "sliding_window"):
            d.pop(k)
        if d["rope_scaling"] is None:
            d.pop("rope_scaling")
        if kind == "llama":
            d.update(mlp_bias=False, pretraining_tp=1)
        if kind == "qwen2":
            d.pop("attention_bias")  # q/k/v biases are part of Qwen2 itself
        if kind in ("qwen2", "qwen3"):
            d.update(
                use_sliding_window=bool(self.sliding_window),
                sliding_window=self.sliding_window or None,
                max_window_layers=self.num_hidden_layers,
                layer_types=[
                    "sliding_attention" if self.window(i) else "full_attention" for i in range(self.num_hidden_layers)
                ],
            )
        if kind == "mistral":
            d.update(sliding_window=self.sliding_window or None)
        return d

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """Read a Llama/Mistral/Qwen2/Qwen3 ``config.json``; unknown keys are ignored, missing ones
        take that family's transformers default (not ours: e.g. untied embeddings, eps 1e-6)."""
        kind = d.get("model_type") or "llama"
        if kind not in MODEL_TYPES:
            raise ConfigError(
                f"{source}: architecture {d.get('architectures', [kind])[0]!r} (model_type {kind!r}) is not "
                f"supported; llmkit reads {', '.join(ARCHITECTURES.values())} checkpoints"
            )
        if d.get("hidden_act", "silu") != "silu":
            raise ConfigError(
                f"{source}: hidden_act {d['hidden_act']!r} is not supported (llmkit's MLP is SwiGLU/silu)"
            )
        if d.get("mlp_bias"):
            raise ConfigError(f"{source}: mlp_bias is not supported")
        if d.get("attention_bias") and kind != "qwen2":
            raise ConfigError(f"{source}: {kind} attention_bias (a bias on o_proj too) is not supported")
        names = {f.name for f in fields(cls)} - {"qk_norm", "layer_types", "sliding_window", "head_dim"}
        kwargs = {**_HF_DEFAULTS, **{k: v for k, v in d.items() if k in names}, "model_type": kind}
        if "llmkit_format_version" in d:  # our own checkpoint: every field was written
            kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["head_dim"] = d.get("head_dim") or 0
        kwargs["attention_bias"] = kind == "qwen2"
        kwargs["qk_norm"] = kind == "qwen3"
        if kind == "mistral":
            kwargs["sliding_window"] = d.get("sliding_window", 4096) or 0
        elif kind in ("qwen2", "qwen3") and d.get("use_sliding_window") and d.get("sliding_window"):
            kwargs["sliding_window"] = d["sliding_window"]
            first = d.get("max_window_layers", 28)
            n = d.get("num_hidden_layers", 0)
            kwargs["layer_types"] = d.get("layer_types") or [
                "sliding_attention" if i >= first else "full_attention" for i in range(n)
            ]
        missing = [
            k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads") if k not in kwargs
        ]
        if missing:
            raise ConfigError(f"{source}: missing {', '.join(missing)}; is this a causal LM config?")
        rs = d.get("rope_parameters") or d.get("rope_scaling")
        if isinstance(rs, dict):
            if "rope_theta" in rs and "rope_theta" not in d:
                kwargs["rope_theta"] = rs["rope_theta"]
            rope_type = rs.get("rope_type", rs.get("type", "default"))
            kwargs["rope_scaling"] = None if rope_type == "default" else dict(rs)
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if isinstance(kwargs.get(k), list):
                kwargs[k] = kwargs[k][0]
        hints = typing.get_type_hints(cls)
        kwargs = {k: _check_type(v, hints[k], f"{source}: {k}") for k, v in kwargs.items()}
        try:
            return cls(**kwargs)
        except ConfigError as e:  # an impossible shape: name the file it came from
            raise ConfigError(f"{source}: {e}") from None


MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
ARCHITECTURES = {t: f"{t.capitalize()}ForCausalLM" for t in MODEL_TYPES}
"""The Hugging Face architectures llmkit reads and writes (one decoder with options: q/k/v biases,
q/k norms, sliding windows)."""

_HF_DEFAULTS = {"tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 10000.0}
"""transformers' defaults, common to the four families, for keys an imported config.json omits."""


@dataclass
class TrainConfig:
    """The one training loop's knobs (shared by every stage)."""

    max_steps: int = 1000
    """Optimizer steps; the learning-rate schedule spans them."""
    batch_size: int = 16
    """Sequences per micro-batch per process."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; global batch = batch_size * grad_accum * world_size."""
    seq_len: int = 256
    """Tokens per training sequence (at most model.max_position_embeddings)."""
    optimizer: str = "adamw"
    """``adamw``, or ``muon`` (Muon for hidden matrices, AdamW for embeddings, head and norms)."""
    lr: float = 3e-3
    """Peak AdamW learning rate."""
    muon_lr: float = 0.02
    """Peak Muon learning rate (train.optimizer=muon)."""
    min_lr_ratio: float = 0.1
    """The schedule decays to lr * min_lr_ratio."""
    warmup_steps: int = 50
    """Linear warmup steps."""
    schedule: str = "cosine"
    """``cosine`` (warmup, cosine to min) or ``wsd`` (warmup, stable, linear decay at the end)."""
    decay_fraction: float = 0.2
    """For ``wsd``: fraction of steps spent decaying."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices (not on norms' gains)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    dtype: str = "auto"
    """Compute precision (master weights stay fp32). ``auto``: bf16 on CUDA with bf16, fp16 on older
    CUDA GPUs; on CPU bf16 only where it has bf16 matmul instructions (AVX512-BF16, AMX, Arm BF16:
    1.3-1.7x faster there), else fp32; the log says what it picked. Or ``fp32``, ``bf16``,
    ``fp16`` (dynamic loss scaling: steps with inf/nan gradients are skipped and counted), ``fp8``
    (torchao float8 linears; GPUs with compute capability 8.9+)."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    eval_every: int = 100
    """Validate every N steps (0 = only at the end)."""
    eval_batches: int = 8
    """Validation batches per evaluation and per held-out source."""
    ckpt_every: int = 200
    """Write a resumable checkpoint every N steps (and at the end)."""
    keep_last: int = 2
    """Resumable checkpoints to keep."""
    log_every: int = 10
    """Log a metrics row every N steps."""
    seed: int = 1337
    """Seed of the model initialisation and of the batch order."""
    device: str = "auto"
    """auto (cuda, then mps, then cpu), or a torch device string."""
    time_budget_s: float = 0.0
    """Stop after this many seconds of training (0 = no limit); the schedule still uses max_steps."""
    parallel: str = "ddp"
    """With several processes (torchrun): ``ddp`` (every process holds the whole model and optimizer)
    or ``fsdp`` (FSDP2: parameters, gradients and optimizer state sharded per block across processes)."""
    cpu_offload: bool = False
    """FSDP2 only: keep the sharded parameters, gradients and optimizer state in CPU memory (GPU runs)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward instead of storing them (less memory, ~1/3 more compute)."""
    loss_scale: float = 65536.0
    """fp16 only: the initial dynamic loss scale (halved on every skipped step, doubled after 1000 clean ones)."""

    def validate(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "seq_len", "eval_batches", "keep_last"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        for name in ("ckpt_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive (a step count), got {getattr(self, name)}")
        for name in ("eval_every", "warmup_steps", "weight_decay", "grad_clip", "time_budget_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0 (0 = off), got {getattr(self, name)}")
        for name in ("min_lr_ratio", "decay_fraction", "beta1", "beta2"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"train.{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.optimizer not in ("adamw", "muon"):
            raise ConfigError(f"train.optimizer={self.optimizer!r}: use 'adamw' or 'muon'")
        if self.schedule not in ("cosine", "wsd"):
            raise ConfigError(f"train.schedule={self.schedule!r}: use 'cosine' or 'wsd'")
        if self.dtype not in ("auto", "fp32", "bf16", "fp16", "fp8"):
            raise ConfigError(f"train.dtype={self.dtype!r}: use 'auto', 'fp32', 'bf16', 'fp16' or 'fp8'")
        if self.parallel not in ("ddp", "fsdp"):
            raise ConfigError(f"train.parallel={self.parallel!r}: use 'ddp' or 'fsdp'")
        if self.cpu_offload and self.parallel != "fsdp":
            raise ConfigError("train.cpu_offload=true offloads FSDP2 shards; set train.parallel=fsdp too")
        if self.loss_scale < 1:
            raise ConfigError(f"train.loss_scale must be >= 1, got {self.loss_scale}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        from llmkit.devices import pick_device  # imports torch: only when a config is checked

        try:
            device = pick_device(self.device)
        except ConfigError as e:
            raise ConfigError(f"train.{e}") from None
        if self.dtype == "fp8":
            from llmkit.devices import fp8_unsupported

            why = fp8_unsupported(device)
            if why:
                raise ConfigError(
                    f"train.dtype=fp8 needs an NVIDIA GPU with FP8 tensor cores (compute capability 8.9+: "
                    f"Ada, Hopper, Blackwell); {why}: use train.dtype=bf16 or auto"
                )


@dataclass
class SampleConfig:
    """Samples written to the report at the end of pretraining."""

    prompts: list[str] = field(default_factory=lambda: ["Romeo.\n", "To be, or not"])
    """Prompts sampled into the report after pretraining."""
    max_new_tokens: int = 120
    """Tokens generated per sample."""
    temperature: float = 0.8
    """Sampling temperature."""
    top_k: int = 50
    """Sample among the k most likely tokens (0 = all)."""

    def validate(self) -> None:
        if any(not p for p in self.prompts):
            raise ConfigError("sample.prompts: a prompt is empty; give each at least one character")
        if self.max_new_tokens < 1:
            raise ConfigError(f"sample.max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.temperature < 0 or self.top_k < 0:
            raise ConfigError("sample.temperature and sample.top_k must be >= 0 (0 = greedy / all tokens)")


@dataclass
class RewardConfig:
    """``llmkit reward``: a reward model (scalar head, Bradley-Terry loss) on preference pairs."""

    data: str = ""
    """Preference pairs: a JSONL file or ``hf:NAME`` dataset of prompt/chosen/rejected (text or
    messages), or ``tasks:NAME,NAME`` (pairs made from the task suite, see ``pairs``)."""
    pairs: list[str] = field(default_factory=lambda: ["wrong_answer", "on_policy", "language"])
    """With ``tasks:`` data, the pairs made from each example: ``wrong_answer``, ``on_policy`` (the
    model's own wrong samples), ``language`` (answer in the other language)."""
    task_examples: int = 200
    """With ``tasks:`` data, training examples per task (held-out pairs come from the test split)."""
    samples: int = 4
    """With ``on_policy`` pairs, replies sampled per example to find a wrong one."""
    val_fraction: float = 0.1
    """Fraction of pairs held out to measure pairwise accuracy (files; ``tasks:`` uses the test split)."""
    max_len: int = 256
    """Tokens per prompt + answer; longer rows keep the answer and cut the prompt on the left."""
    max_steps: int = 200
    """Optimizer steps."""
    batch_size: int = 8
    """Pairs per micro-batch."""
    lr: float = 1e-4
    """Peak AdamW learning rate."""
    warmup_steps: int = 10
    """Linear warmup steps."""
    eval_every: int = 50
    """Held-out accuracy every N steps (0 = only at the end)."""
    ckpt_every: int = 100
    """Resumable checkpoint every N steps."""
    lora_rank: int = 0
    """LoRA rank (``--lora``); 0 trains every weight."""


@dataclass
class DPOConfig:
    """``llmkit dpo``: direct preference optimisation against a frozen reference."""

    data: str = ""
    """Preference pairs: a JSONL file or ``hf:NAME`` dataset of prompt/chosen/rejected (text or
    messages), or ``tasks:NAME,NAME`` (pairs made from the task suite, see ``pairs``)."""
    ref: str = ""
    """Reference checkpoint (default: the model being trained, as it starts)."""
    beta: float = 0.1
    """Strength of the pull towards the reference (larger = stay closer)."""
    loss: str = "sigmoid"
    """``sigmoid`` (DPO), ``ipo`` (IPO, length-normalised) or ``robust`` (rDPO, for noisy labels)."""
    label_smoothing: float = 0.0
    """Probability that a pair's label is wrong: cDPO with ``sigmoid``, rDPO with ``robust``."""
    pairs: list[str] = field(default_factory=lambda: ["wrong_answer", "on_policy", "language"])
    """With ``tasks:`` data, the pairs made from each example: ``wrong_answer``, ``on_policy`` (the
    model's own wrong samples), ``language`` (answer in the other language)."""
    task_examples: int = 200
    """With ``tasks:`` data, training examples per task (held-out pairs come from the test split)."""
    samples: int = 4
    """With ``on_policy`` pairs, replies sampled per example to find a wrong one."""
    val_fraction: float = 0.1
    """Fraction of pairs held out to measure margins and preference accuracy (files; ``tasks:`` uses
    the test split)."""
    max_len: int = 256
    """Tokens per prompt + answer; longer rows keep the answer and cut the prompt on the left."""
    max_steps: int = 200
    """Optimizer steps."""
    batch_size: int = 8
    """Pairs per micro-batch."""
    lr: float = 5e-5
    """Peak AdamW learning rate."""
    warmup_steps: int = 10
    """Linear warmup steps."""
    eval_every: int = 50
    """Held-out margins every N steps (0 = only at the end)."""
    ckpt_every: int = 100
    """Resumable checkpoint every N steps."""
    lora_rank: int = 0
    """LoRA rank (``--lora``); 0 trains every weight."""


@dataclass
class GRPOConfig:
    """``llmkit grpo`` and the speedrun's ``rl`` stage: group-relative policy optimisation."""

    prompts: str = ""
    """Prompts: a JSONL file (``prompt`` as text or messages, plus fields for the reward function),
    or ``tasks:NAME,NAME`` for the task suite's training items."""
    reward: str = ""
    """``path/to/file.py:function`` called as fn(prompt=, completion=, **fields) -> float, or
    ``verifier`` (the task suite's verifiers; the default with ``tasks:`` prompts)."""
    samples: int = 8
    """Completions sampled per prompt (the group)."""
    prompts_per_round: int = 8
    """Prompts per rollout batch (x samples = rollouts per round)."""
    epochs: int = 1
    """Passes over each rollout batch."""
    minibatches: int = 1
    """Optimizer steps per pass over a rollout batch."""
    max_new_tokens: int = 64
    """Longest completion sampled."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (the loss uses the same)."""
    top_p: float = 1.0
    """Nucleus sampling of the rollouts (1 = off)."""
    clip: float = 0.2
    """PPO clip range of the probability ratio."""
    clip_high: float = 0.0
    """Upper clip range (DAPO's clip-higher); 0 = the same as ``clip``."""
    kl_coef: float = 0.0
    """Weight of the k3 KL penalty to the starting model (0 = none, no reference kept)."""
    loss_norm: str = "token"
    """``token`` (DAPO), ``sequence`` (GRPO paper) or ``dr_grpo`` (constant normaliser)."""
    scale_advantages: bool = True
    """Divide advantages by the group's standard deviation (Dr. GRPO turns this off)."""
    task_examples: int = 2000
    """With ``tasks:`` prompts, training prompts per task."""
    eval_prompts: int = 64
    """Held-out prompts scored with greedy decoding at each evaluation (``tasks:``: the test split);
    the speedrun's ``rl`` stage scores them before and after training instead."""
    max_steps: int = 100
    """Optimizer steps (rounds = max_steps / (epochs x minibatches))."""
    lr: float = 1e-5
    """Peak AdamW learning rate."""
    warmup_steps: int = 5
    """Linear warmup steps."""
    eval_every: int = 25
    """Held-out reward every N steps (0 = only at the end)."""
    ckpt_every: int = 25
    """Resumable checkpoint every N steps."""
    lora_rank: int = 0
    """LoRA rank (``--lora``); 0 trains every weight."""


@dataclass
class PPOConfig:
    """``llmkit ppo``: InstructGPT-style RLHF with a value head, GAE and a KL-shaped reward."""

    prompts: str = ""
    """Prompts: a JSONL file (``prompt`` as text or messages) or ``tasks:NAME,NAME``."""
    reward_model: str = ""
    """A reward model checkpoint (``llmkit reward``); or leave empty and set ``reward``."""
    reward: str = ""
    """Instead of a reward model: ``path/to/file.py:function`` or ``verifier`` (as for GRPO)."""
    samples: int = 1
    """Completions sampled per prompt."""
    prompts_per_round: int = 16
    """Prompts per rollout batch."""
    epochs: int = 4
    """Passes over each rollout batch."""
    minibatches: int = 1
    """Optimizer steps per pass over a rollout batch."""
    max_new_tokens: int = 64
    """Longest completion sampled."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (the loss uses the same)."""
    clip: float = 0.2
    """Clip range of the policy ratio."""
    value_clip: float = 0.2
    """Clip range of the value change."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    gamma: float = 1.0
    """Discount."""
    lam: float = 0.95
    """GAE lambda."""
    kl_coef: float = 0.05
    """Per-token KL penalty to the starting model, subtracted from the reward."""
    task_examples: int = 2000
    """With ``tasks:`` prompts, training prompts per task."""
    eval_prompts: int = 64
    """Held-out prompts scored with greedy decoding at each evaluation (``tasks:``: the test split)."""
    max_steps: int = 100
    """Optimizer steps."""
    lr: float = 1e-5
    """Peak AdamW learning rate."""
    warmup_steps: int = 5
    """Linear warmup steps."""
    eval_every: int = 25
    """Held-out reward every N steps (0 = only at the end)."""
    ckpt_every: int = 25
    """Resumable checkpoint every N steps."""
    lora_rank: int = 0
    """LoRA rank (``--lora``); 0 trains every weight."""


@dataclass
class DistillConfig:
    """``llmkit distill``: a student learns a teacher's next-token distributions."""

    teacher: str = ""
    """Teacher checkpoint (must share the student's tokenizer)."""
    data: str = ""
    """``pretrain`` or empty (the run's token shards), or chat conversations (a JSONL/JSON/Parquet
    file, saved dataset or ``hf:NAME``, as ``sft.data`` reads them) with the loss on the replies."""
    divergence: str = "forward"
    """``forward`` KL(teacher||student), ``reverse`` KL(student||teacher) or ``mix`` of both."""
    mix: float = 0.5
    """With ``mix``: weight of the reverse KL."""
    temperature: float = 1.0
    """Softening of both distributions (the loss is scaled by its square); 2.0 measured worse than
    1.0 for language models (docs/alignment.md)."""
    alpha: float = 0.8
    """Weight of the distillation loss; 1 - alpha goes to the ordinary next-token loss."""
    max_steps: int = 300
    """Optimizer steps."""
    lr: float = 3e-3
    """Peak learning rate."""
    warmup_steps: int = 20
    """Linear warmup steps."""
    eval_every: int = 100
    """Validation every N steps (0 = only at the end)."""
    ckpt_every: int = 100
    """Resumable checkpoint every N steps."""
    lora_rank: int = 0
    """LoRA rank (``--lora``); 0 trains every weight."""


@dataclass
class SFTConfig:
    """Supervised fine-tuning (``llmkit sft`` and the speedrun's ``sft`` stage)."""

    data: list[str] = field(default_factory=list)
    """Chat datasets ``PATH[@WEIGHT]`` (JSONL/JSON/Parquet, saved datasets, hf:NAME) mixed by weight."""
    tasks: list[str] = field(
        default_factory=lambda: ["add2", "sub2", "compare2", "copy", "reverse", "upper_case", "word_problems"]
    )
    """Task-suite tasks whose training split joins the mix (``llmkit tasks list``)."""
    corpus_tasks: list[str] = field(
        default_factory=lambda: ["shakespeare_speaker", "poem_author", "next_line_poem", "next_line_play"]
    )
    """Tasks made from the pretraining corpora (only those whose corpus the run pretrained on)."""
    task_examples: int = 2000
    """Training examples made per task."""
    task_weight: float = 1.0
    """Weight of the task-suite mix against each ``sft.data`` dataset (whose weight is in its spec)."""
    eval_examples: int = 50
    """Held-out examples per task evaluated during and after training (and for the base model)."""
    few_shot: int = 3
    """Examples shown to the base model before each held-out question."""
    max_steps: int = 300
    """Optimizer steps (ignored when ``epochs`` > 0)."""
    epochs: float = 0.0
    """Passes over the mix; > 0 sets the number of steps."""
    batch_size: int = 16
    """Packed rows per micro-batch."""
    seq_len: int = 0
    """Tokens per row; 0 = the base model's context."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    warmup_steps: int = 20
    """Linear warmup steps."""
    min_lr_ratio: float = 0.1
    """The cosine schedule decays to lr * min_lr_ratio."""
    weight_decay: float = 0.0
    """Decoupled weight decay on matrices."""
    eval_every: int = 0
    """Held-out task accuracy every N steps (0 = only at the end)."""
    ckpt_every: int = 100
    """Resumable checkpoint every N steps (and at the end)."""
    log_every: int = 10
    """Metrics row every N steps."""
    packing: bool = True
    """Pack several conversations per row (attention kept inside each); False pads one per row."""
    overlong: str = "truncate"
    """A conversation longer than a row: ``truncate`` it or ``drop`` it (either is counted)."""
    lora_rank: int = 0
    """LoRA rank; 0 trains every weight (full fine-tuning)."""
    lora_alpha: float = 16.0
    """LoRA scale numerator: the update is (alpha / rank) * B @ A."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA path's input."""
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names (last part) that get LoRA adapters."""

    def validate(self) -> None:
        for name in ("task_examples", "eval_examples", "batch_size", "max_steps", "ckpt_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"sft.{name} must be positive, got {getattr(self, name)}")
        if self.overlong not in ("truncate", "drop"):
            raise ConfigError(f"sft.overlong={self.overlong!r}: use 'truncate' or 'drop'")
        if self.task_weight <= 0:
            raise ConfigError(f"sft.task_weight must be positive, got {self.task_weight}")
        if self.lora_rank < 0 or self.lr <= 0:
            raise ConfigError("sft.lora_rank must be >= 0 and sft.lr positive")

    def train_config(self, base: TrainConfig, seq_len: int) -> TrainConfig:
        """The loop's settings for SFT: this section's schedule on top of the run's device, dtype,
        seed and clipping."""
        return dataclasses.replace(
            base,
            max_steps=self.max_steps,
            batch_size=self.batch_size,
            grad_accum=1,
            seq_len=seq_len,
            optimizer="adamw",
            lr=self.lr,
            warmup_steps=min(self.warmup_steps, max(self.max_steps - 1, 0)),
            schedule="cosine",
            min_lr_ratio=self.min_lr_ratio,
            weight_decay=self.weight_decay,
            eval_every=self.eval_every,
            ckpt_every=self.ckpt_every,
            log_every=self.log_every,
            time_budget_s=0.0,
        )


@dataclass
class EvalConfig:
    """The speedrun's evaluation stage (``llmkit eval`` runs the same code with its own flags)."""

    checkpoints: list[str] = field(default_factory=lambda: ["base", "sft", "rl"])
    """Run-directory checkpoints to evaluate side by side, in this order (missing ones are skipped)."""
    tasks: list[str] = field(default_factory=lambda: ["shakespeare-next-line", "poem-next-clause"])
    """Tasks scored at ``eval.shots`` (built-in names or task files)."""
    shots: list[int] = field(default_factory=lambda: [0])
    """Shot counts for ``eval.tasks``."""
    icl_tasks: list[str] = field(default_factory=lambda: ["copy-pattern", "label-map"])
    """Tasks where context can teach the answer, scored at every ``eval.icl_shots`` (the in-context curve)."""
    icl_shots: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8])
    """Shot counts of the in-context curve."""
    limit: int = 0
    """Score at most this many items per task (0 = all)."""
    max_bytes: int = 50_000
    """Bytes of each held-out source scored for bits per byte (0 = all)."""
    seed: int = 1234
    """Seed of the shots' choice."""
    batch_size: int = 16
    """Sequences per forward pass."""


@dataclass
class PipelineConfig:
    """Which stages a run has, in order (see ``llmkit/stages/``)."""

    stages: list[str] = field(default_factory=lambda: ["clean", "data", "pretrain", "samples", "sft", "rl", "eval"])
    """Stage names run in this order by ``llmkit speedrun``; each is skipped when complete."""

    def validate(self) -> None:
        if not self.stages:
            raise ConfigError("pipeline.stages is empty; list the stages to run, e.g. [data, pretrain, samples]")
        twice = sorted({s for s in self.stages if self.stages.count(s) > 1})
        if twice:
            raise ConfigError(f"pipeline.stages names {', '.join(twice)} twice; each stage runs once")


@dataclass
class RunConfig:
    """Everything a speedrun needs; the YAML presets are partial dicts of this."""

    data: DataConfig = field(default_factory=DataConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    preset: str = ""

    def validate(self) -> RunConfig:
        """Check every section that has a ``validate`` and the rules between sections, so that a
        mistake is reported before any work starts (not after a tokenizer was trained)."""
        for f in fields(self):
            check = getattr(getattr(self, f.name), "validate", None)
            if callable(check):
                check()
        if self.train.seq_len > self.model.max_position_embeddings:
            raise ConfigError(
                f"train.seq_len={self.train.seq_len} exceeds model.max_position_embeddings="
                f"{self.model.max_position_embeddings}; lower one or raise the other"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Coerce ``value`` to the annotated type ``tp`` or raise a ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is list or origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [str(v) for v in value] if args and args[0] is str else value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return value
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def _build(cls, values: dict[str, Any], where: str):
    """Make dataclass ``cls`` from a dict, rejecting unknown fields by name."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in (values or {}).items():
        name = f"{where}.{key}" if where else key
        if key not in known:
            if not where:
                sections = [k for k in known if dataclasses.is_dataclass(hints[k])]
                raise ConfigError(f"unknown config section {key!r}; sections: {', '.join(sections)}")
            raise ConfigError(f"{where}: unknown field {key!r}; known fields: {', '.join(known)}")
        ftype = hints[key]
        if dataclasses.is_dataclass(ftype):
            if not isinstance(value, dict):
                raise ConfigError(f"{name} must be a mapping of fields (section.field=value)")
            kwargs[key] = _build(ftype, value, name)
        else:
            kwargs[key] = _check_type(value, ftype, name)
    return cls(**kwargs)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-3", "data.sources=[a.txt,b.txt]"]`` -> nested dict with YAML-typed values."""
    nested: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.field=value (e.g. train.max_steps=100)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        # YAML reads 1e-3 as a string; accept it as a number.
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value) if any(c in value for c in "eE.") else value
        parts = key.strip().split(".")
        cur = nested
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
            if not isinstance(cur, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier one")
        cur[parts[-1]] = value
    return nested


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "rope_scaling":
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_preset_dict(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix or len(path.parts) > 1:  # a path, not a preset name
        if not path.is_file():
            raise ConfigError(f"{path}: preset file not found" + (" (it is a directory)" if path.is_dir() else ""))
    else:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown preset {name_or_path!r}; choose one of {', '.join(list_presets())} or give a path to a .yaml file"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset must be a mapping of sections (data, tokenizer, model, train)")
    return data


def resolve(
    preset: str = "cpu-tiny", overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> RunConfig:
    """Preset + overrides -> a validated RunConfig. ``base`` (a saved config.yaml) replaces the preset."""
    data = base if base is not None else load_preset_dict(preset)
    data = _merge(data, parse_overrides(overrides or []))
    data.setdefault("preset", preset)
    cfg = _build(RunConfig, data, "").validate()
    if cfg.model.vocab_size != cfg.tokenizer.vocab_size:
        cfg.model.vocab_size = cfg.tokenizer.vocab_size
    return cfg


def stage_train_config(base: TrainConfig, stage) -> TrainConfig:
    """``base`` (the ``train`` section) with the fields a stage's section also has (``max_steps``,
    ``lr``, ``batch_size``...) taken from the stage: a fine-tuning stage states its own schedule,
    and shares the device, dtype, seed and checkpointing settings. Fine-tuning uses AdamW with a
    cosine schedule (Muon is a pretraining choice)."""
    values = dataclasses.asdict(base)
    values.update(optimizer="adamw", schedule="cosine", weight_decay=0.0)
    names = {f.name for f in fields(TrainConfig)}
    values.update({k: v for k, v in dataclasses.asdict(stage).items() if k in names})
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg


def build_section(cls, values: dict[str, Any], where: str):
    """Public wrapper of the validated dataclass builder (for stage-specific configs)."""
    return _build(cls, values, where)


def field_docs(cfg: RunConfig | None = None) -> list[tuple[str, str, str]]:
    """(``section.field``, value in ``cfg`` (default: the defaults), description) for every RunConfig field.

    Descriptions are the attribute docstrings in this file, so ``--help`` and the defaults come
    from one place and cannot drift apart.
    """
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(__import__(__name__, fromlist=["_"])))
    docs: dict[tuple[str, str], str] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            body = node.body
            for a, b in zip(body, [*body[1:], None], strict=True):
                if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name):
                    text = ""
                    if (
                        isinstance(b, ast.Expr)
                        and isinstance(getattr(b, "value", None), ast.Constant)
                        and isinstance(b.value.value, str)
                    ):
                        text = " ".join(b.value.value.split())
                    docs[(node.name, a.target.id)] = text
    out = []
    run = cfg or RunConfig()
    for section in fields(run):
        obj = getattr(run, section.name)
        if not dataclasses.is_dataclass(obj):
            continue
        for f in fields(obj):
            out.append(
                (f"{section.name}.{f.name}", repr(getattr(obj, f.name)), docs.get((type(obj).__name__, f.name), ""))
            )
    return out


def overrides_help(preset: str | None = None) -> str:
    """Epilog for verbs that take ``section.field=value`` overrides: every field with the value
    ``preset`` gives it (the dataclass defaults without one)."""
    if preset:
        head = f"config fields with the values of preset {preset!r} (`--preset NAME --help` shows another's)"
    else:
        head = "config fields with their defaults before a preset applies"
    lines = [head + "; override any with section.field=value:"]
    for name, value, doc in field_docs(resolve(preset) if preset else None):
        lines.append(f"  {name} = {value}" + (f"\n      {doc}" if doc else ""))
    return "\n".join(lines)
