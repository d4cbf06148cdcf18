"""Distillation: a student taught by a 4x larger teacher reaches a lower validation loss than the same
student trained on the data alone for the same steps; a teacher with another tokenizer is refused."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from llmkit.checkpoint import save_checkpoint
from llmkit.config import ModelConfig, TrainConfig
from llmkit.data.corpora import corpus_documents
from llmkit.model.transformer import Transformer
from llmkit.tokenizer import Tokenizer
from llmkit.train.distill import DistillTask
from llmkit.train.pretrain import PretrainTask
from llmkit.train.trainer import Trainer


class ByteShards:
    """Enough of TokenShards for PretrainTask: UTF-8 bytes as tokens (no tokenizer needed)."""

    def __init__(self, data: bytes):
        self.tokens = np.frombuffer(data, dtype=np.uint8).astype(np.int64)

    def __len__(self):
        return len(self.tokens)

    def window(self, start, length):
        return self.tokens[start : start + length]


def model(width, layers):
    torch.manual_seed(0)
    return Transformer(
        ModelConfig(
            vocab_size=256,
            hidden_size=width,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
    )


def fit(net, task, out, steps, lr):
    cfg = TrainConfig(
        max_steps=steps, batch_size=8, seq_len=48, lr=lr, warmup_steps=5, eval_every=0, eval_batches=4,
        ckpt_every=steps, log_every=steps, dtype="fp32", device="cpu", weight_decay=0.0,
    )  # fmt: skip
    return Trainer(net, task, cfg, out).fit().final_eval["val_loss"]


@pytest.mark.slow
def test_a_student_learns_more_from_a_4x_teacher_than_from_the_data_alone(tmp_path):
    """The teacher read 180 KB of text; each student sees only 3 KB of it, for 60 steps (about 8
    passes), alone or with the teacher's distributions as targets. The data alone lets it memorise
    those bytes; the teacher's soft targets carry what the rest of the corpus taught (measured: 3.43
    against 3.50 nats per byte on held-out text)."""
    docs = corpus_documents("shakespeare")
    text = "".join(next(docs) for _ in range(3))[:200_000].encode()
    full, small, val = ByteShards(text[:180_000]), ByteShards(text[:3000]), {"val": ByteShards(text[180_000:])}

    def data(train):
        return PretrainTask(train, val, 48, 8, torch.ones(256, dtype=torch.long), seed=1, eval_batches=4)

    teacher = model(64, 4)
    fit(teacher, data(full), tmp_path / "teacher", 120, 3e-3)
    teacher.requires_grad_(False).eval()
    student_params, teacher_params = model(32, 2).num_params(False), teacher.num_params(False)
    assert teacher_params >= 4 * student_params
    alone = fit(model(32, 2), data(small), tmp_path / "alone", 60, 3e-3)
    taught = fit(model(32, 2), DistillTask(data(small), teacher, alpha=1.0), tmp_path / "taught", 60, 3e-3)
    assert taught < alone - 0.04, (taught, alone)


def test_a_teacher_with_another_tokenizer_is_refused(tmp_path):
    """Run data prepared with the teacher's tokenizer, a student checkpoint with its own."""
    import json

    from llmkit.data.shards import write_shards

    text = "The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸跳过了懒狗。 " * 40
    cfg = ModelConfig(
        vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=64
    )
    tok = Tokenizer.train([text], 320, show_progress=False)
    save_checkpoint(tmp_path / "teacher", Transformer(cfg), tokenizer=tok)
    other = Tokenizer.train(
        ["Lorem ipsum dolor sit amet, consectetur adipiscing elit. 床前明月光，疑是地上霜。 " * 40], 320, False
    )
    save_checkpoint(tmp_path / "student", Transformer(cfg), tokenizer=other)
    run = tmp_path / "run"
    tok.save(run / "tokenizer")
    for part in ("train", "val/text"):
        write_shards([text], tok, run / "data" / part, show_progress=False)
    (run / "data" / "stats.json").write_text(json.dumps({"val_sets": ["text"]}))
    args = ["distill", "--teacher", tmp_path / "teacher", "--out", tmp_path / "out", "--run-dir", run]
    args += ["--preset", "cpu-micro", "distill.max_steps=2"]  # refused before training; 2 steps if not
    r = subprocess.run(
        [sys.executable, "-m", "llmkit.cli", *map(str, [*args, "--student", tmp_path / "student"])],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "teacher's tokenizer differs from the model's" in r.stderr.strip().splitlines()[-1], r.stderr[-500:]


def test_distilling_on_chat_conversations_scores_only_the_replies(tmp_path):
    """``--data`` conversations: packed chat rows (attention kept inside each conversation), the loss
    on the assistant's tokens, a tenth held out. A student that starts as a copy of the teacher has
    nothing to learn from it (KL 0 before the first update) while the next-token loss is not 0."""
    import json
    import re

    text = "What is two plus three? Five. 二加三等于几？五。 Name a colour: red, green, blue. " * 30
    tok = Tokenizer.train([text], 320, show_progress=False)
    cfg = ModelConfig(
        vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=128
    )
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "teacher", Transformer(cfg), tokenizer=tok)
    with open(tmp_path / "chat.jsonl", "w", encoding="utf-8") as f:
        for i in range(40):
            q, a = (f"What is {i} plus 3?", f"{i + 3}.") if i % 2 else (f"{i} 加 3 等于几？", f"{i + 3}。")
            f.write(
                json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
            )
    out = tmp_path / "student"
    args = ["distill", "--teacher", tmp_path / "teacher", "--student", tmp_path / "teacher", "--data"]
    args += [tmp_path / "chat.jsonl", "--out", out, "--preset", "cpu-micro", "distill.max_steps=2"]
    args += ["distill.eval_every=0", "distill.ckpt_every=2", "train.log_every=1", "train.device=cpu"]
    r = subprocess.run(
        [sys.executable, "-m", "llmkit.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    held = re.search(r"distill: (\d+) conversations \((\d+) held out\)", r.stderr)
    assert held and int(held[1]) + int(held[2]) == 40 and 0 < int(held[2]) < 10, r.stderr[-1000:]
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["kd"] < 1e-6 and first["ce"] > 1.0, first
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["step"] == 2 and 0 < summary["val_loss"] < 10, summary
