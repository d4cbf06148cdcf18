"""llmkit: build a large language model end to end, from raw text to a served chat model."""

__version__ = "0.1.0"

from llmkit.errors import LLMKitError  # noqa: E402


def load(path, device=None, dtype=None):
    """Load a checkpoint directory for notebooks and scripts.

    Returns an object with ``.model`` (a ``torch.nn.Module``: ``model(input_ids) -> logits``),
    ``.tokenizer`` and ``.config``.
    """
    from llmkit.api import load as _load

    return _load(path, device=device, dtype=dtype)


__all__ = ["LLMKitError", "load", "__version__"]
