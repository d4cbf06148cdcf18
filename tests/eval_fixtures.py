"""A tiny bilingual tokenizer and model saved as a real checkpoint, shared by the evaluation tests."""

from pathlib import Path

import torch

from llmkit.checkpoint import save_checkpoint
from llmkit.config import ModelConfig
from llmkit.model.transformer import Transformer
from llmkit.tokenizer import Tokenizer

TEXT = (
    "ROMEO. But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.\n"
    "JULIET. O Romeo, Romeo, wherefore art thou Romeo? Deny thy father and refuse thy name.\n"
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。春眠不觉晓，处处闻啼鸟。\n"
    "king queen lord lady night day sword crown love death heart blood moon star sea wind fire up down\n"
)


def make_checkpoint(directory: Path, context: int = 128, seed: int = 0) -> Path:
    """A random 2-layer model with a 300-token BPE vocabulary, saved in Hugging Face layout."""
    tok = Tokenizer.train([TEXT] * 20, vocab_size=300, show_progress=False)
    tok.model_max_length = context
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=320,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
    )
    model = Transformer(cfg)
    with torch.no_grad():  # larger weights than the init: sharper, more varied predictions to compare
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    save_checkpoint(directory, model.eval(), tok)
    return directory
