"""The small Python API: ``llmkit.load(path)`` for notebooks and scripts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from llmkit.checkpoint import load_model
from llmkit.config import ModelConfig


def default_device() -> str:
    """``cuda`` if present, else ``mps`` if present, else ``cpu``."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@dataclass
class LoadedModel:
    """A checkpoint in memory: ``.model`` (``model(input_ids) -> logits``), ``.tokenizer``, ``.config``."""

    model: torch.nn.Module
    tokenizer: object
    config: ModelConfig
    path: Path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load(path: str | Path, device: str | None = None, dtype: torch.dtype | None = None) -> LoadedModel:
    """Load a checkpoint directory written by llmkit (or a local Llama/Qwen2/Mistral HF checkpoint)."""
    from llmkit.tokenizer import Tokenizer

    path = Path(path)
    model = load_model(path, device=device or default_device(), dtype=dtype)
    tokenizer = Tokenizer.load(path)
    return LoadedModel(model=model, tokenizer=tokenizer, config=model.config, path=path)
