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
