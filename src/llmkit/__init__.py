"""llmkit: build a large language model end to end, from raw text to a served chat model."""

__version__ = "0.1.0"

from llmkit.errors import LLMKitError


def load(path, device=None, dtype=None, rope_scaling=None, inference_only=False, adapter=None):
    """Load a checkpoint directory for notebooks and scripts (see :func:`llmkit.api.load`).

    Returns an object with ``.model`` (a ``torch.nn.Module``: ``model(input_ids) -> logits``),
    ``.tokenizer``, ``.config`` and ``.generate`` / ``.stream`` / ``.chat``. ``dtype`` may be
    ``"auto"`` (bf16 where the hardware computes in it natively); ``inference_only=True`` holds
    the weights once, packed for generation; ``adapter`` runs a LoRA adapter on top, unmerged.
    """
    from llmkit.api import load as _load

    return _load(
        path, device=device, dtype=dtype, rope_scaling=rope_scaling, inference_only=inference_only, adapter=adapter
    )


__all__ = ["LLMKitError", "__version__", "load"]
