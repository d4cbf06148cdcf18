"""GGUF export: a checkpoint as one file that llama.cpp (and ollama, LM Studio...) runs.

The ``gguf`` package writes the container; this module decides what goes in it:

* **Tensors**, renamed to llama.cpp's scheme (``blk.0.attn_q.weight`` ...). llama.cpp's ``llama``
  architecture rotates interleaved pairs of each head where Hugging Face rotates halves, so q/k
  rows are permuted for it (as llama.cpp's own converter does); ``qwen2``/``qwen3`` rotate
  halves like we do. 2-D weights are stored as ``--type``; norms and biases stay f32.
* **Hyperparameters**: widths, heads, RoPE base and scaling, norm epsilon, sliding window.
* **The tokenizer**: every token's byte-level string, its type (normal, control, unused padding
  up to the embedding's rows), the BPE merges, the special token ids, whether BOS is added, the
  chat template, and the **pre-tokenizer name**. llama.cpp splits text with its own fixed set of
  named regexes, so export refuses (one line, with the fix) a tokenizer whose split regex none of
  them reproduces: then llama.cpp would tokenize differently from llmkit.

Beside the file, an ollama ``Modelfile`` (template, stop tokens, sampling defaults).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from llmkit.checkpoint import load_model
from llmkit.errors import ConfigError, LLMKitError
from llmkit.tokenizer import CHAT_TEMPLATE, QWEN2_PATTERN, Tokenizer

TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")
"""GGUF tensor types llmkit writes; llama.cpp reads each of them on every backend."""

LLAMA3_PATTERN = QWEN2_PATTERN.replace(r"|\p{N}|", r"|\p{N}{1,3}|")  # Llama 3: numbers in runs of up to 3
PRE_TOKENIZERS = {QWEN2_PATTERN: "qwen2", LLAMA3_PATTERN: "llama-bpe"}
"""Split regexes (as tokenizer.json holds them) -> the llama.cpp pre-tokenizer that implements each."""

ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}


class ExportError(LLMKitError):
    """A checkpoint that cannot be exported faithfully."""


def _ggml_type(kind: str):
    import gguf

    return {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "bf16": gguf.GGMLQuantizationType.BF16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
        "q4_0": gguf.GGMLQuantizationType.Q4_0,
    }[kind]


def _file_type(kind: str):
    import gguf

    return {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    }[kind]


def llama_cpp_pre_tokenizer(tokenizer: Tokenizer, source: str = "tokenizer.json") -> str:
    """The llama.cpp pre-tokenizer that splits text exactly like ``tokenizer``, or an ExportError
    naming the fix. Accepted: byte-level BPE, no normalizer (or NFC), one Split regex that llama.cpp
    knows (:data:`PRE_TOKENIZERS`), then ByteLevel without its own regex."""
    spec = json.loads(tokenizer.inner.to_str())
    model, norm, pre = spec.get("model") or {}, spec.get("normalizer"), spec.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ExportError(f"{source}: only byte-level BPE tokenizers can be exported to GGUF (this one is not)")
    if norm is not None and norm.get("type") != "NFC":
        raise ExportError(f"{source}: its {norm.get('type')} normalizer has no llama.cpp equivalent")
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    split = [s for s in steps if s.get("type") == "Split"]
    pattern = split[0].get("pattern", {}).get("Regex") if len(split) == 1 else None
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    if pattern in PRE_TOKENIZERS and len(steps) == 2 and byte_level and not byte_level[0].get("use_regex", True):
        return PRE_TOKENIZERS[pattern]
    raise ExportError(
        f"{source}: its pre-tokenizer splits text in a way no llama.cpp pre-tokenizer reproduces, so llama.cpp "
        "would tokenize differently; retrain the tokenizer with tokenizer.pre_tokenizer=qwen2 (the default)"
    )


def _permute_rope(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorder each head's rows from HF's rotate-half pairs (i, i + d/2) to llama.cpp's
    interleaved pairs (2i, 2i + 1): (heads * d, ...) -> same shape."""
    d = w.shape[0] // heads
    return w.reshape(heads, 2, d // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _tensors(model, arch: str):
    """(gguf name, fp32 tensor) for every weight of ``model``."""
    c = model.config
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    yield "token_embd.weight", sd["model.embed_tokens.weight"]
    yield "output_norm.weight", sd["model.norm.weight"]
    if not c.tie_word_embeddings:
        yield "output.weight", sd["lm_head.weight"]
    names = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    for i in range(c.num_hidden_layers):
        for ours, theirs in names.items():
            t = sd.get(f"model.layers.{i}.{ours}")
            if t is None:
                continue
            if arch == "llama" and ours.startswith(("self_attn.q_proj", "self_attn.k_proj")):
                heads = c.num_attention_heads if "q_proj" in ours else c.num_key_value_heads
                t = _permute_rope(t, heads)
            yield f"blk.{i}.{theirs}", t


def _write_tokenizer(writer, tokenizer: Tokenizer, n_vocab: int, pre: str) -> None:
    import gguf

    spec = json.loads(tokenizer.inner.to_str())
    vocab = tokenizer.inner.get_vocab(with_added_tokens=True)
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [gguf.TokenType.UNUSED] * n_vocab
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    for piece, i in vocab.items():
        if i >= n_vocab:
            raise ExportError(f"tokenizer has id {i} but the model's embedding has only {n_vocab} rows")
        tokens[i] = piece
        if i in added:
            types[i] = gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED
        else:
            types[i] = gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if tokenizer.bos_id is not None:
        writer.add_bos_token_id(tokenizer.bos_id)
    if tokenizer.eos_id is not None:
        writer.add_eos_token_id(tokenizer.eos_id)
    if tokenizer.pad_id is not None:
        writer.add_pad_token_id(tokenizer.pad_id)
    end = tokenizer.token_to_id("<|end|>")
    if end is not None:
        writer.add_eot_token_id(end)  # an assistant turn ends here (llama.cpp's chat stops on it)
    writer.add_add_bos_token(tokenizer.bos_id is not None)  # llmkit's engine starts prompts with BOS
    writer.add_add_eos_token(False)
    writer.add_chat_template(tokenizer.chat_template)


def export_gguf(checkpoint: Path, out: Path, kind: str = "f32", force: bool = False) -> dict:
    """Write ``checkpoint`` as a GGUF file ``out`` of tensor type ``kind`` and an ollama Modelfile
    beside it; returns what was written (for the summary line)."""
    import gguf

    if kind not in TYPES:
        raise ConfigError(f"--type {kind!r}: llmkit writes GGUF types {', '.join(TYPES)} (llama.cpp reads all of them)")
    out = Path(out)
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists; choose another --out or add --force to replace it")
    checkpoint = Path(checkpoint)
    tokenizer = Tokenizer.load(checkpoint)
    pre = llama_cpp_pre_tokenizer(tokenizer, str(checkpoint / "tokenizer.json"))
    model = load_model(checkpoint)
    c = model.config
    arch = ARCHITECTURES[c.model_type]
    if kind in ("q8_0", "q4_0"):
        narrow = [n for n, t in _tensors(model, arch) if t.dim() == 2 and t.shape[1] % 32]
        if narrow:
            raise ConfigError(f"--type {kind}: {narrow[0]} has rows not a multiple of 32; use f32, f16 or bf16")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        writer.add_name(checkpoint.resolve().name)
        writer.add_context_length(c.max_position_embeddings)
        writer.add_embedding_length(c.hidden_size)
        writer.add_block_count(c.num_hidden_layers)
        writer.add_feed_forward_length(c.intermediate_size)
        writer.add_head_count(c.num_attention_heads)
        writer.add_head_count_kv(c.num_key_value_heads)
        writer.add_key_length(c.head_dim)
        writer.add_value_length(c.head_dim)
        writer.add_rope_dimension_count(c.head_dim)
        writer.add_rope_freq_base(c.rope_theta)
        writer.add_layer_norm_rms_eps(c.rms_norm_eps)
        writer.add_vocab_size(c.vocab_size)
        writer.add_file_type(_file_type(kind))
        _add_rope_scaling(writer, c)
        if c.sliding_window:
            if c.layer_types is not None and any(t != "sliding_attention" for t in c.layer_types):
                raise ExportError("a sliding window on only some layers has no GGUF form for this architecture")
            writer.add_sliding_window(c.sliding_window)
        _write_tokenizer(writer, tokenizer, c.vocab_size, pre)
        for name, t in _tensors(model, arch):
            data = t.numpy().astype(np.float32)
            if t.dim() == 1 or kind == "f32":
                writer.add_tensor(name, data)
                continue
            qtype = _ggml_type(kind)
            if kind == "f16":
                writer.add_tensor(name, data.astype(np.float16))
            else:
                writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    modelfile = out.with_name("Modelfile")
    modelfile.write_text(ollama_modelfile(out.name, tokenizer, c.max_position_embeddings, checkpoint), encoding="utf-8")
    return {"bytes": out.stat().st_size, "modelfile": modelfile, "pre_tokenizer": pre, "architecture": arch}


def _add_rope_scaling(writer, c) -> None:
    import gguf

    rs = c.rope_scaling
    if not rs:
        return
    kind = rs.get("rope_type", rs.get("type"))
    kinds = {"linear": gguf.RopeScalingType.LINEAR, "yarn": gguf.RopeScalingType.YARN}
    if kind not in kinds:
        raise ExportError(f"RoPE scaling {kind!r} has no GGUF form; export without it (linear and yarn do)")
    writer.add_rope_scaling_type(kinds[kind])
    writer.add_rope_scaling_factor(float(rs["factor"]))
    if kind == "yarn":
        writer.add_rope_scaling_orig_ctx_len(int(rs.get("original_max_position_embeddings", c.max_position_embeddings)))


# llmkit's CHAT_TEMPLATE in ollama's Go template language
_OLLAMA_TEMPLATE = """{{- range .Messages }}<|{{ .Role }}|>
{{ .Content }}<|end|>
{{ end }}<|assistant|>
"""


def ollama_modelfile(gguf_name: str, tokenizer: Tokenizer, context: int, checkpoint: Path) -> str:
    """An ollama Modelfile for the GGUF: ``ollama create NAME -f Modelfile``. The template is
    written in ollama's language when the chat template is llmkit's own; otherwise ollama reads the
    GGUF's Jinja template itself (it knows the common open models' templates)."""
    gen = {}
    path = checkpoint / "generation_config.json"
    if path.is_file():
        gen = json.loads(path.read_text(encoding="utf-8"))
    lines = [f"FROM ./{gguf_name}"]
    if tokenizer.chat_template == CHAT_TEMPLATE:
        lines.append(f'TEMPLATE """{_OLLAMA_TEMPLATE}"""')
    stops = [t for t in ("<|end|>", "<|eos|>") if tokenizer.token_to_id(t) is not None]
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines.append(f"PARAMETER num_ctx {context}")
    for key, name in (("temperature", "temperature"), ("top_k", "top_k"), ("top_p", "top_p")):
        if key in gen:
            lines.append(f"PARAMETER {name} {gen[key]}")
    return "\n".join(lines) + "\n"
