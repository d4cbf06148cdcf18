"""Quantize a Transformer in place, and save and load quantized checkpoints.

Every projection (q/k/v/o, gate/up/down), the LM head and the token embedding are quantized: on a
small model the embedding and head are a large share of the bytes (a fifth of the default
speedrun's model), and decoding reads the head for every token. Norms stay fp32.

A quantized checkpoint is the usual directory (config.json, model.safetensors, tokenizer files)
whose ``config.json`` carries ``quantization_config``
(``{"quant_method": "llmkit", "scheme": "int4", "group_size": 32, "method": "gptq", ...}``) and
whose safetensors hold ``<layer>.qweight`` (int8 codes, or uint8 pairs of int4 codes) and
``<layer>.scales`` (fp16) in place of ``<layer>.weight``. Loading it gives back exactly the
saved model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from llmkit.checkpoint import check_checkpoint, read_weights, save_checkpoint
from llmkit.config import ModelConfig
from llmkit.console import say
from llmkit.errors import CheckpointError, ConfigError, DataError
from llmkit.quant.formats import check_scheme
from llmkit.quant.gptq import HessianAccumulator, gptq_quantize
from llmkit.quant.modules import QuantEmbedding, QuantLinear

METHODS = ("rtn", "gptq")


def _projections(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every nn.Linear to quantize: attention, MLP and the LM head."""
    out = []
    for layer in model.model.layers:
        out += [(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        out += [(layer.mlp, n) for n in ("gate_proj", "up_proj", "down_proj")]
    return [*out, (model, "lm_head")]


def is_quantized(model: nn.Module) -> bool:
    return isinstance(getattr(model, "lm_head", None), QuantLinear)


def quantization_config(model: nn.Module) -> dict | None:
    """The ``quantization_config`` recorded on a quantized model (None for a full-precision one)."""
    return getattr(model, "quantization_config", None)


@torch.no_grad()
def collect_hessians(model: nn.Module, batches: Iterable[torch.Tensor]) -> dict[int, HessianAccumulator]:
    """Input Hessians of every projection, keyed by ``id(linear)``, from forwards over ``batches``
    of token ids (B, T) through the full-precision model."""
    accumulators: dict[int, HessianAccumulator] = {}
    hooks = []
    for parent, name in _projections(model):
        lin = getattr(parent, name)
        acc = accumulators.setdefault(id(lin), HessianAccumulator(lin.in_features))
        hooks.append(lin.register_forward_hook(lambda _m, inputs, _out, acc=acc: acc.add(inputs[0])))
    try:
        for ids in batches:
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    return accumulators


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    scheme: str,
    group_size: int = 32,
    method: str = "rtn",
    calibration: Iterable[torch.Tensor] | None = None,
) -> nn.Module:
    """Replace ``model``'s projections, head and embedding by quantized ones (in place).

    ``method`` ``rtn`` rounds each weight to the nearest grid point; ``gptq`` needs
    ``calibration``, batches of token ids (B, T) from text like the model's own, and chooses the
    codes that best preserve each layer's outputs on them.
    """
    check_scheme(scheme, group_size)
    if method not in METHODS:
        raise CheckpointError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    for parent, name in _projections(model):
        lin = getattr(parent, name)
        check_scheme(scheme, group_size, lin.in_features, f"{name} (in_features)")
    model.eval()
    hessians = collect_hessians(model, calibration) if method == "gptq" else {}
    if hessians:
        tokens = next(iter(hessians.values())).n
        say(f"gptq: {len(hessians)} projections, Hessians from {tokens} calibration tokens")
    tied = model.config.tie_word_embeddings
    for parent, name in _projections(model):
        lin = getattr(parent, name)
        if method == "gptq":
            q, scales = gptq_quantize(lin.weight.float(), hessians[id(lin)].H, scheme, group_size)
            setattr(parent, name, QuantLinear.from_codes(q, scales, lin.bias, scheme, group_size))
        else:
            setattr(parent, name, QuantLinear.from_linear(lin, scheme, group_size))
    body = model.model
    if tied:
        body.embed_tokens = QuantEmbedding(model.lm_head)
    else:
        body.embed_tokens = QuantEmbedding.from_embedding(body.embed_tokens, scheme, group_size)
    model.fast = None
    for mod in model.modules():
        if hasattr(mod, "fast"):
            mod.fast = None
    model.quantization_config = {
        "quant_method": "llmkit",
        "scheme": scheme,
        "group_size": group_size if scheme == "int4" else None,
        "method": method,
        "modules": "q/k/v/o, gate/up/down, lm_head, embed_tokens",
    }
    return model


def save_quantized(directory: Path, model: nn.Module, tokenizer=None, generation: dict | None = None) -> Path:
    """Write a quantized model as a checkpoint directory (atomically, like every checkpoint)."""
    return save_checkpoint(
        directory,
        model,
        tokenizer,
        generation=generation,
        extra_config={"quantization_config": quantization_config(model)},
    )


def _skeleton(config: ModelConfig, qc: dict) -> nn.Module:
    """A Transformer with empty quantized layers of the right shapes, on the meta device for the
    full-precision parts (the checkpoint's tensors are assigned to it)."""
    from llmkit.model.transformer import Transformer

    scheme, group = qc.get("scheme"), qc.get("group_size") or 32
    check_scheme(scheme, group)
    with torch.device("meta"):
        model = Transformer(config)
    for parent, name in _projections(model):
        lin = getattr(parent, name)
        setattr(parent, name, QuantLinear(lin.in_features, lin.out_features, scheme, group, lin.bias is not None))
    if config.tie_word_embeddings:
        model.model.embed_tokens = QuantEmbedding(model.lm_head)
    else:
        head = QuantLinear(config.hidden_size, config.vocab_size, scheme, group, bias=False)
        model.model.embed_tokens = QuantEmbedding(head)
    model.quantization_config = dict(qc)
    return model


def load_quantized(directory: Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a checkpoint written by :func:`save_quantized` (bit for bit what was saved)."""
    directory = Path(directory)
    hf = check_checkpoint(directory)
    qc = hf.get("quantization_config")
    if not isinstance(qc, dict) or qc.get("quant_method") != "llmkit":
        raise CheckpointError(f"{directory / 'config.json'}: not an llmkit quantized checkpoint")
    config = ModelConfig.from_hf_dict(hf, source=str(directory / "config.json"))
    model = _skeleton(config, qc)
    sd = read_weights(directory)
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.qweight, model.lm_head.scales = model.model.embed_tokens.qweight, model.model.embed_tokens.scales
        missing = [k for k in missing if not k.startswith("lm_head.")]
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(
            f"{directory / 'model.safetensors'}: weights do not match its quantization_config ({what}); "
            "quantize the full-precision checkpoint again"
        )
    model.to(device)
    model.eval()
    return model


def calibration_batches(
    tokenizer, texts: Iterable[str], tokens: int, seq_len: int, batch: int = 8
) -> list[torch.Tensor]:
    """About ``tokens`` token ids from ``texts`` as (batch, seq_len) tensors (documents joined
    with EOS, cut into rows)."""
    ids: list[int] = []
    for text in texts:
        ids += [*tokenizer.encode(text), tokenizer.eos_id or 0]
        if len(ids) >= tokens:
            break
    ids = ids[:tokens]
    rows = len(ids) // seq_len
    if rows == 0:
        raise DataError(f"calibration text has {len(ids)} tokens, fewer than one row of {seq_len}; give more text")
    t = torch.tensor(ids[: rows * seq_len]).view(rows, seq_len)
    return list(t.split(batch))


def run_calibration_texts(checkpoint: Path, source: str | None) -> Iterable[str]:
    """Texts to calibrate on: ``source`` (a corpus name, file, directory... anything
    ``data.sources`` accepts), else the training split of the run the checkpoint belongs to."""
    from llmkit.config import DataConfig, resolve
    from llmkit.data.splits import SplitCorpus

    if source:
        return SplitCorpus(DataConfig(sources=[source], val_fraction=0.0), seed=0).train_documents()
    for parent in Path(checkpoint).resolve().parents[:3]:
        if (parent / "config.yaml").is_file():
            import yaml

            cfg = resolve(base=yaml.safe_load((parent / "config.yaml").read_text(encoding="utf-8")))
            return SplitCorpus(cfg.data, cfg.train.seed).train_documents()
    raise ConfigError(
        f"{checkpoint}: not inside a run directory, so there is no corpus to calibrate on; "
        "give --calibration SOURCE (a corpus name like shakespeare, or a text file)"
    )


def quantize_checkpoint(
    checkpoint: Path,
    out: Path,
    scheme: str,
    group_size: int = 32,
    method: str = "rtn",
    calibration: str | None = None,
    calibration_tokens: int = 16384,
    force: bool = False,
) -> dict:
    """``llmkit quantize``: load, quantize, save; returns sizes for the summary line."""
    from llmkit.checkpoint import load_model
    from llmkit.tokenizer import Tokenizer

    check_scheme(scheme, group_size)
    out = Path(out)
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists; choose another --out or add --force to replace it")
    model = load_model(checkpoint)
    tokenizer = Tokenizer.load(checkpoint)
    batches = None
    if method == "gptq":
        seq = min(256, model.config.max_position_embeddings)
        texts = run_calibration_texts(checkpoint, calibration)
        batches = calibration_batches(tokenizer, texts, calibration_tokens, seq)
    quantize_model(model, scheme, group_size, method, batches)
    generation = _read_json(Path(checkpoint) / "generation_config.json")
    save_quantized(out, model, tokenizer, generation=generation)
    before = _weights_bytes(Path(checkpoint))
    return {"bytes_before": before, "bytes_after": _weights_bytes(out)}


def _read_json(path: Path) -> dict | None:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _weights_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))
