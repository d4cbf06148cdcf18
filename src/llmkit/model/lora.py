"""LoRA: a frozen linear layer plus a trainable low-rank update, and PEFT's adapter format.

``LoraLinear`` wraps an ``nn.Linear`` (kept as ``base_layer``, frozen) and adds
``(alpha / r) * B(A(dropout(x)))`` with ``A`` (r, in) Kaiming-initialised and ``B`` (out, r) zero, so
an adapter starts as the identity change. Merging adds ``scale * B @ A`` to the base weight (and
unmerging subtracts it); :func:`merge_lora` folds adapters in and puts plain ``nn.Linear`` layers
back, which is what a published checkpoint holds.

Adapters are saved as PEFT saves them (``adapter_config.json`` + ``adapter_model.safetensors`` with
keys ``base_model.model.<module>.lora_A.weight``), so ``peft.PeftModel.from_pretrained`` applies ours
to the ``transformers`` model, and :func:`load_adapter` reads adapters PEFT wrote.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from llmkit.errors import CheckpointError, ConfigError
from llmkit.files import make_temp_dir

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."


@dataclass
class LoraConfig:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    @property
    def scale(self) -> float:
        return self.alpha / self.r

    def to_peft(self, base_path: str | None) -> dict:
        """PEFT's ``adapter_config.json`` for this adapter."""
        return {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_path,
            "r": self.r,
            "lora_alpha": self.alpha,
            "lora_dropout": self.dropout,
            "target_modules": sorted(self.target_modules),
            "bias": "none",
            "fan_in_fan_out": False,
            "use_rslora": False,
            "use_dora": False,
            "modules_to_save": None,
            "inference_mode": True,
        }


class LoraLinear(nn.Module):
    """``base_layer(x) + scale * lora_B(lora_A(dropout(x)))``; only lora_A/lora_B train."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float):
        super().__init__()
        self.base_layer = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_A = nn.Linear(base.in_features, r, bias=False, device=dev, dtype=dt)  # (r, in)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, device=dev, dtype=dt)  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # as nn.Linear and PEFT
        nn.init.zeros_(self.lora_B.weight)
        self.scale = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (..., out)
        if self.merged:
            return y
        return y + self.lora_B(self.lora_A(self.dropout(x))) * self.scale  # (..., in) -> (..., r) -> (..., out)

    def delta(self) -> torch.Tensor:
        """The weight change the adapter stands for: scale * B @ A, (out, in)."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scale

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base_layer.weight += self.delta().to(self.base_layer.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base_layer.weight -= self.delta().to(self.base_layer.weight.dtype)
            self.merged = False


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    """Every LoRA layer by its module name (``model.layers.0.self_attn.q_proj``)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLinear)}


def add_lora(model: nn.Module, cfg: LoraConfig) -> dict[str, LoraLinear]:
    """Wrap every ``nn.Linear`` whose name ends in one of ``cfg.target_modules``; freeze everything
    else. A target that matches nothing is an error naming the model's linear layers."""
    if cfg.r <= 0:
        raise ConfigError(f"LoRA rank must be positive, got {cfg.r}")
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    leaf_names = sorted({n.rsplit(".", 1)[-1] for n in linears})
    unknown = [t for t in cfg.target_modules if t not in leaf_names]
    if unknown or not cfg.target_modules:
        raise ConfigError(
            f"LoRA target module {unknown[0] if unknown else '(none)'!r} is not in the model; "
            f"its linear layers are {', '.join(leaf_names)}"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    for name, lin in linears.items():
        if name.rsplit(".", 1)[-1] in cfg.target_modules:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, LoraLinear(lin, cfg.r, cfg.alpha, cfg.dropout))
    # the engine's fused inference kernels would skip the adapter: drop any already built
    for m in model.modules():
        if getattr(m, "fast", None) is not None and not isinstance(m, nn.Embedding):
            m.fast = None
    return lora_layers(model)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put plain ``nn.Linear`` layers back (in place)."""
    for name, layer in lora_layers(model).items():
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = layer.base_layer
        base.weight.requires_grad_(True)
        setattr(parent, child, base)
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors under PEFT's names."""
    out = {}
    for name, layer in lora_layers(model).items():
        out[f"{_PEFT_PREFIX}{name}.lora_A.weight"] = layer.lora_A.weight.detach().contiguous()
        out[f"{_PEFT_PREFIX}{name}.lora_B.weight"] = layer.lora_B.weight.detach().contiguous()
    return out


def save_adapter(model: nn.Module, cfg: LoraConfig, directory: Path, base_path=None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT's layout) atomically."""
    import os
    import shutil

    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(directory.parent, f".{directory.name}.tmp-")
    try:
        save_file(adapter_state_dict(model), str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        config = cfg.to_peft(str(base_path) if base_path is not None else None)
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def adapter_base(directory: Path) -> str | None:
    """The base model an adapter names (``base_model_name_or_path``), if any."""
    try:
        return json.loads((Path(directory) / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError):
        return None


def read_adapter_config(directory: Path) -> LoraConfig:
    path = Path(directory) / ADAPTER_CONFIG
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; an adapter directory holds {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e.msg})") from None
    if raw.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{path}: peft_type {raw.get('peft_type')!r} is not supported (only LORA)")
    targets = raw.get("target_modules") or []
    if isinstance(targets, str):
        raise CheckpointError(f"{path}: target_modules as a regex is not supported; list module names")
    if raw.get("use_dora") or raw.get("use_rslora") or raw.get("fan_in_fan_out"):
        raise CheckpointError(f"{path}: DoRA, rsLoRA and fan_in_fan_out adapters are not supported")
    return LoraConfig(
        int(raw["r"]), float(raw.get("lora_alpha", raw["r"])), float(raw.get("lora_dropout", 0.0)), list(targets)
    )


def load_adapter(model: nn.Module, directory: Path) -> LoraConfig:
    """Apply a PEFT-format LoRA adapter (ours or PEFT's) to ``model`` without merging it. An
    adapter made for a differently shaped base model is refused with the mismatching tensor."""
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg = read_adapter_config(directory)
    path = directory / ADAPTER_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; the adapter is incomplete")
    tensors = load_file(str(path))
    add_lora(model, cfg)
    layers = lora_layers(model)
    for key, t in tensors.items():
        name = key.removeprefix(_PEFT_PREFIX)
        for suffix in (".lora_A.weight", ".lora_B.weight", ".lora_A.default.weight", ".lora_B.default.weight"):
            if name.endswith(suffix):
                module, part = name[: -len(suffix)], suffix.split(".")[1]
                break
        else:
            raise CheckpointError(f"{path}: unexpected tensor {key}; is this a LoRA adapter?")
        layer = layers.get(module)
        target = getattr(layer, part).weight if layer is not None else None
        if target is None or target.shape != t.shape:
            what = f"shape {tuple(t.shape)} vs {tuple(target.shape)}" if target is not None else "no such module"
            raise CheckpointError(
                f"{directory}: adapter tensor {key} does not fit this base model ({what}); "
                "use the base model the adapter was trained on"
            )
        with torch.no_grad():
            target.copy_(t.to(target.dtype))
    return cfg
