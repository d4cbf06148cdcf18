"""Checkpoints in Hugging Face layout, written atomically, resumable exactly.

A checkpoint directory holds ``config.json`` (LlamaForCausalLM), ``model.safetensors``,
``generation_config.json``, the tokenizer files and, while training may resume, ``trainer_state.pt``
(optimizer, step, RNG states, data position). ``transformers.AutoModelForCausalLM.from_pretrained``
loads it with no custom code.

Atomicity: a checkpoint is written into ``<name>.tmp-<pid>`` and renamed into place; the
``latest`` pointer file is itself replaced atomically, and only after the directory it names is
complete. A process killed at any instant therefore leaves either the previous checkpoint or the
new one, never a half-written one that a resume would pick up.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llmkit.config import ModelConfig
from llmkit.errors import CheckpointError

# atomic_write_json is re-exported for code that still imports it from here; it lives in llmkit.files
from llmkit.files import atomic_write_json as atomic_write_json
from llmkit.files import atomic_write_text, make_temp_dir

FORMAT_VERSION = 1
REQUIRED_FILES = ("config.json", "model.safetensors")
SHARD_INDEX = "model.safetensors.index.json"
"""A sharded checkpoint's map from tensor name to file (transformers' ``save_pretrained`` layout)."""
TRAINER_STATE = "trainer_state.pt"


def _hf_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """State dict as HF expects it: tied ``lm_head`` omitted, tensors contiguous and unshared.
    ``sd`` is the model's full state dict when the caller gathered it (a sharded model's own holds
    shards)."""
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    model = getattr(model, "module", model)  # unwrap DDP
    sd = dict(model.state_dict() if sd is None else sd)
    if model.config.tie_word_embeddings:  # the embedding holds the matrix (a quantized head's codes too)
        for name in [k for k in sd if k.startswith("lm_head.")]:
            del sd[name]
    return {k: v.detach().contiguous() for k, v in sd.items()}


def write_model_files(
    directory: Path,
    model: torch.nn.Module,
    tokenizer=None,
    generation: dict | None = None,
    extra_config: dict | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write config.json, model.safetensors, generation_config.json and tokenizer files into an
    existing (temporary) directory. Callers make it atomic with :func:`save_checkpoint`.
    ``state_dict``: the weights to write when ``model`` is sharded (gathered by the caller)."""
    core = getattr(getattr(model, "_orig_mod", model), "module", getattr(model, "_orig_mod", model))
    cfg: ModelConfig = core.config
    hf = cfg.to_hf_dict()
    hf["llmkit_format_version"] = FORMAT_VERSION
    if extra_config:
        hf.update(extra_config)
    save_file(_hf_state_dict(core, state_dict), str(directory / "model.safetensors"), metadata={"format": "pt"})
    gen = {
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "do_sample": True,
        "temperature": 0.8,
        "top_k": 50,
    }  # no max_length: transformers warns when a caller's max_new_tokens meets a saved one
    gen.update(generation or {})
    (directory / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(directory)
    # config.json last: its presence marks the model files complete.
    (directory / "config.json").write_text(json.dumps(hf, indent=2) + "\n")


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    tokenizer=None,
    trainer_state: dict | None = None,
    generation: dict | None = None,
    extra_config: dict | None = None,
    extra_files: dict[str, str] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    extra_dirs: dict[str, Path] | None = None,
) -> Path:
    """Write a complete checkpoint to ``directory`` atomically (temp dir + rename).

    An existing ``directory`` is replaced only once the new one is complete. ``extra_dirs`` (name ->
    a finished directory on the same filesystem) are moved in before the rename: the sharded
    trainer state that every process of an FSDP2 run wrote.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(directory.parent, f".{directory.name}.tmp-{os.getpid()}-")
    try:
        write_model_files(tmp, model, tokenizer, generation, extra_config, state_dict)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        for name, src in (extra_dirs or {}).items():
            os.replace(src, tmp / name)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE)
        _fsync_dir_files(tmp)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _fsync_dir_files(directory: Path) -> None:
    for p in directory.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def check_checkpoint(directory: Path) -> dict:
    """Validate a checkpoint directory and return its parsed ``config.json``.

    Raises CheckpointError naming what is missing or wrong and what to do.
    """
    directory = Path(directory)
    if directory.is_file():
        hint = f"did you mean {directory.parent}?" if (directory.parent / "config.json").is_file() else ""
        raise CheckpointError(
            f"{directory}: is a file; give the checkpoint directory (the one holding config.json and "
            f"model.safetensors){'; ' + hint if hint else ''}"
        )
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    missing = [f for f in REQUIRED_FILES if not (directory / f).is_file()]
    if missing == ["model.safetensors"] and (directory / SHARD_INDEX).is_file():
        missing = [name for name in _shard_files(directory) if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{directory}: incomplete checkpoint, missing {', '.join(missing)}; "
            "re-run the stage that writes it (it resumes) or point at a complete checkpoint"
        )
    try:
        hf = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{directory / 'config.json'}: not valid JSON ({e}); the checkpoint is corrupt") from None
    version = hf.get("llmkit_format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{directory}: checkpoint format version {version} is newer than this llmkit "
            f"understands ({FORMAT_VERSION}); upgrade llmkit"
        )
    return hf


def _shard_files(directory: Path) -> list[str]:
    """The safetensors files named by a sharded checkpoint's index, in order."""
    path = directory / SHARD_INDEX
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        return sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not a valid shard index (no weight_map); the checkpoint is corrupt") from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file in ordinary memory. Read with pread where safetensors
    can, not memory-mapped: tensors that stayed views of the file would keep all of it mapped
    (and its touched pages resident) for as long as any one of them lives."""
    try:
        return load_file(str(path), backend="pread")
    except TypeError:  # safetensors < 0.8: mmap only, so copy out of the mapping
        return {k: v.clone() for k, v in load_file(str(path)).items()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot be read ({e}); the checkpoint is corrupt") from None


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint: ``model.safetensors``, or the shards its index names."""
    directory = Path(directory)
    if (directory / "model.safetensors").is_file() or not (directory / SHARD_INDEX).is_file():
        return _read_tensors(directory / "model.safetensors")
    sd: dict[str, torch.Tensor] = {}
    for name in _shard_files(directory):
        sd.update(_read_tensors(directory / name))
    return sd


def load_model(directory: Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, model_class=None):
    """Load a checkpoint's model (ours, or a Llama/Mistral/Qwen2/Qwen3 checkpoint saved by
    transformers, sharded or not) in ``dtype`` (default fp32, whatever the file holds). The file's
    tensors become the parameters (converted one at a time), so loading never holds two copies of
    the weights. ``model_class`` (default :class:`~llmkit.model.transformer.Transformer`) is built
    from the config, e.g. a :class:`~llmkit.model.heads.RewardModel` for a sequence classifier."""
    from llmkit.model.transformer import Transformer

    directory = Path(directory)
    hf = check_checkpoint(directory)
    if hf.get("quantization_config"):
        raise QuantizedCheckpointError(
            f"{directory}: this checkpoint is quantized ({_describe(hf['quantization_config'])}), which only "
            "inference can use; give this stage the full-precision checkpoint it was made from"
        )
    config = ModelConfig.from_hf_dict(hf, source=str(directory / "config.json"))
    with torch.device("meta"):
        model = (model_class or Transformer)(config)
    tied = config.tie_word_embeddings and hasattr(model, "lm_head")
    sd = read_weights(directory)
    if tied:
        sd.pop("lm_head.weight", None)
    for name in [k for k in sd if k.endswith("rotary_emb.inv_freq")]:  # older transformers saved it
        del sd[name]
    target = dtype or torch.get_default_dtype()
    for name, t in sd.items():
        if t.is_floating_point():
            sd[name] = t.to(target)  # the original is freed as its entry is replaced
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    except RuntimeError as e:  # shape mismatch
        first = str(e).split("size mismatch for ")[-1].split(":")[0]
        raise CheckpointError(
            f"{directory / 'model.safetensors'}: weights do not match config.json "
            f"(shape of {first}); the checkpoint is corrupt or config.json was edited"
        ) from None
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(
            f"{directory / 'model.safetensors'}: weights do not match config.json ({what}); "
            "the checkpoint is incomplete or from an incompatible model"
        )
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    del sd
    model.to(device)
    model.eval()
    return model


class QuantizedCheckpointError(CheckpointError):
    """A quantized checkpoint was given to something that needs full-precision weights."""


def _describe(qc) -> str:
    if not isinstance(qc, dict):
        return "unknown format"
    return " ".join(str(qc[k]) for k in ("quant_method", "scheme", "method") if qc.get(k))


def load_model_weights(model: torch.nn.Module, directory: Path) -> None:
    """Load ``model.safetensors`` from ``directory`` into an existing model of the same shape."""
    path = Path(directory) / "model.safetensors"
    try:
        sd = load_file(str(path), device=str(next(model.parameters()).device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot be read ({e}); the checkpoint is corrupt") from None
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError:
        missing, unexpected = ["(shapes differ)"], []
    tied = model.config.tie_word_embeddings and hasattr(model, "lm_head")
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match this model (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); was the config changed since it was written?"
        )


def publish_model(
    stage_dir: Path,
    model: torch.nn.Module,
    tokenizer=None,
    generation: dict | None = None,
    extra_config: dict | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Put the final model files directly in ``stage_dir`` (beside checkpoints/, metrics.jsonl).

    Files are written to a temporary directory and renamed in one by one, ``config.json`` last, so
    a ``stage_dir`` with a ``config.json`` always has the matching weights.
    """
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(stage_dir, f".publish.tmp-{os.getpid()}-")
    try:
        write_model_files(tmp, model, tokenizer, generation, extra_config, state_dict)
        _fsync_dir_files(tmp)
        (stage_dir / "config.json").unlink(missing_ok=True)  # incomplete until the new one lands
        for p in sorted(tmp.iterdir(), key=lambda p: p.name == "config.json"):
            os.replace(p, stage_dir / p.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_trainer_state(directory: Path) -> dict | None:
    """The resumable state saved beside a checkpoint, loaded without executing pickled code."""
    path = Path(directory) / TRAINER_STATE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign file
        raise CheckpointError(
            f"{path}: cannot be loaded safely ({type(e).__name__}); delete it to start over"
        ) from None


class CheckpointManager:
    """Numbered training checkpoints under ``<stage>/checkpoints/`` with a ``latest`` pointer.

    Keeps the last ``keep_last``. The pointer is rewritten atomically after the directory it names
    is complete, so a resume always finds a whole checkpoint.
    """

    def __init__(self, root: Path, keep_last: int = 2):
        self.root = Path(root)
        self.keep_last = keep_last

    def path_for(self, step: int) -> Path:
        return self.root / f"step_{step:08d}"

    def staging_for(self, step: int) -> Path:
        """Where every process of a sharded run writes its part of step ``step``'s trainer state,
        before :meth:`save` moves it into the checkpoint (the same path on every process)."""
        return self.root / f".{self.path_for(step).name}.sharded-staging"

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if pointer.is_file():
            target = self.root / pointer.read_text().strip()
            if (target / "config.json").is_file() and (target / TRAINER_STATE).is_file():
                return target
        # Pointer missing or stale: fall back to the newest complete numbered directory.
        done = sorted(
            p for p in self.root.glob("step_*") if (p / "config.json").is_file() and (p / TRAINER_STATE).is_file()
        )
        return done[-1] if done else None

    def save(self, step: int, model, tokenizer, trainer_state: dict, **kwargs) -> Path:
        path = save_checkpoint(self.path_for(step), model, tokenizer, trainer_state, **kwargs)
        atomic_write_text(self.root / "latest", path.name + "\n")
        self._prune()
        return path

    def _prune(self) -> None:
        steps = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for old in steps[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        for tmp in [*self.root.glob(".*.tmp-*"), *self.root.glob(".*.sharded-*")]:
            # leftovers of a process killed mid-write (ours are gone by now)
            if f".tmp-{os.getpid()}-" not in tmp.name:
                shutil.rmtree(tmp, ignore_errors=True)
