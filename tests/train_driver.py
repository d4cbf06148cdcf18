"""A small training run used by the trainer tests (also under torchrun and for kill/resume).

Tokens are the UTF-8 bytes of real English and Chinese text, so no tokenizer is needed and the
loss has something to learn. Usage: python train_driver.py OUT_DIR STEPS [key=value ...]
Set SLOW_SAVE=<seconds> to pause inside the second checkpoint write (so a test can kill it there),
SIGNAL_AT=<step>:<INT|KILL> to send this process that signal right after that step.
"""

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from llmkit import checkpoint
from llmkit.config import ModelConfig, TrainConfig
from llmkit.model.transformer import Transformer
from llmkit.train.pretrain import PretrainTask
from llmkit.train.trainer import Trainer

TEXT = (
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate. "
    "Rough winds do shake the darling buds of May, and summer's lease hath all too short a date. "
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。 "
    "The quick brown fox jumps over the lazy dog; 1234567890. "
) * 40


class ByteShards:
    """Just enough of TokenShards for PretrainTask: a flat array of byte tokens."""

    def __init__(self, data: bytes):
        self.tokens = np.frombuffer(data, dtype=np.uint8).astype(np.int64)

    def __len__(self):
        return len(self.tokens)

    def window(self, start, length):
        return self.tokens[start : start + length]


def make(out_dir, steps, overrides=()):
    kw = dict(
        max_steps=steps,
        batch_size=4,
        seq_len=32,
        lr=3e-3,
        warmup_steps=3,
        eval_every=5,
        eval_batches=2,
        ckpt_every=5,
        log_every=1,
        keep_last=2,
        dtype="fp32",
    )
    for item in overrides:
        k, v = item.split("=", 1)
        kw[k] = type(getattr(TrainConfig(), k))(v) if not isinstance(getattr(TrainConfig(), k), bool) else v == "true"
    cfg = TrainConfig(**kw)
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(
            vocab_size=256,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
    )
    data = TEXT.encode("utf-8")
    cut = int(len(data) * 0.9)
    task = PretrainTask(
        ByteShards(data[:cut]),
        {"val": ByteShards(data[cut:])},
        cfg.seq_len,
        cfg.batch_size,
        torch.ones(256, dtype=torch.long),
        seed=cfg.seed,
        eval_batches=cfg.eval_batches,
    )
    return Trainer(model, task, cfg, Path(out_dir))


if __name__ == "__main__":
    if os.environ.get("SLOW_SAVE"):
        real = checkpoint.write_model_files
        saves = []

        def slow(directory, *a, **k):
            real(directory, *a, **k)
            saves.append(directory)
            print("SAVING", flush=True)
            if len(saves) >= 2:  # the first checkpoint completes; the second hangs mid-write
                time.sleep(float(os.environ["SLOW_SAVE"]))

        checkpoint.write_model_files = slow
    torch.set_num_threads(1)
    trainer = make(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
    if os.environ.get("SIGNAL_AT"):
        at, name = os.environ["SIGNAL_AT"].split(":")

        def send(row):
            if row.get("step") == int(at) and "loss" in row:
                os.kill(os.getpid(), getattr(signal, f"SIG{name}"))

        trainer.on_log = send
    trainer.fit()
    print("DONE", flush=True)
