"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture(scope="session")
def serve_models(tmp_path_factory):
    """The server tests' checkpoints: ``talker`` (random weights, 1024-token context: long,
    deterministic output), ``xss`` (a chat model trained to answer with HTML markup) and
    ``talker-lora`` (a LoRA adapter for talker)."""
    from serving import lora_adapter, memorizing_checkpoint, random_checkpoint, train_tokenizer

    root = tmp_path_factory.mktemp("serve-models")
    tok = train_tokenizer()
    talker = random_checkpoint(root / "talker", tok, context=1024)
    return {
        "tokenizer": tok,
        "talker": talker,
        "xss": memorizing_checkpoint(root / "xss", tok),
        "talker-lora": lora_adapter(root / "talker-lora", talker),
    }


@pytest.fixture(scope="session")
def server(serve_models):
    """One ``llmkit serve`` process for the server test modules (they share the "serve" xdist
    group, so one worker runs them all against it): the models, an API key, small limits."""
    from serving import API_KEY, Server

    srv = Server(
        [
            f"talker={serve_models['talker']}",
            f"xss={serve_models['xss']}",
            "--lora",
            f"talker-lora={serve_models['talker-lora']}",
            "--api-key",
            API_KEY,
            "--dtype",
            "float32",
            "--device",
            "cpu",
            "--max-batch",
            "16",
            "--max-n",
            "8",
            "--max-body-bytes",
            "65536",
            "--max-queue",
            "64",
        ]
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tiny_engine_model():
    """A 2-layer random model with GQA (4 query / 2 key-value heads) for engine and KV-cache tests."""
    import torch

    from llmkit.config import ModelConfig
    from llmkit.model.transformer import Transformer

    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=97,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.1,
    )
    return Transformer(cfg).eval()
