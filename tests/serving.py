"""Helpers for the server tests: small checkpoints, and ``llmkit serve`` run as a real process on a
free loopback port (the port is read from its start-up line)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from llmkit.checkpoint import save_checkpoint
from llmkit.config import ModelConfig, TrainConfig
from llmkit.model.transformer import Transformer

API_KEY = "sk-llmkit-test"

TEXT = (
    "Hello world, this is a test of the server. The quick brown fox jumps over the lazy dog. "
    "你好，世界！床前明月光，疑是地上霜。举头望明月，低头思故乡。😀🎉 "
) * 30

XSS = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> & "quotes" 你好'
"""What the memorizing model answers to every message: markup that must show as text."""

USER_MESSAGES = ["hi", "<b>hi</b>", "tell me", "你好", "请回答", "what is this?", "早上好", "ok"]


def train_tokenizer():
    from llmkit.tokenizer import Tokenizer

    return Tokenizer.train([TEXT, XSS * 20], vocab_size=320, show_progress=False)


def model_config(context: int, **kw) -> ModelConfig:
    # initializer_range 0.1 makes a random model's logits peaked enough that greedy decoding is
    # not decided by rounding noise (so batched and one-at-a-time results agree exactly)
    kw = {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": context,
        "initializer_range": 0.1,
        "tie_word_embeddings": False,
        **kw,
    }
    return ModelConfig(vocab_size=320, **kw)


def random_checkpoint(path: Path, tokenizer, context: int = 1024, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(path, Transformer(model_config(context)), tokenizer=tokenizer)
    return path


@contextlib.contextmanager
def one_thread():
    """Run tiny models on one thread: two threads of a tiny model only wait on each other, badly
    so when the test workers share two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Memorize:
    """A Task for the one training loop: every batch is the same few chat transcripts, so the
    model learns to answer any of those messages with :data:`XSS`."""

    def __init__(self, rows: list[list[int]], answer_starts: list[int]):
        T = max(len(r) for r in rows)
        self.ids = torch.zeros(len(rows), T, dtype=torch.long)
        self.labels = torch.full((len(rows), T), -100, dtype=torch.long)
        for i, (r, a) in enumerate(zip(rows, answer_starts, strict=True)):
            self.ids[i, : len(r)] = torch.tensor(r)
            self.labels[i, a - 1 : len(r) - 1] = torch.tensor(r[a:])  # predict the answer tokens only

    def batch(self, step, index, total):
        return {"input_ids": self.ids, "labels": self.labels, "count": int((self.labels != -100).sum())}

    def loss(self, model, batch):
        logits = model(batch["input_ids"])  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), reduction="sum")
        return loss, {}

    def evaluate(self, model, info):
        return {}

    def tokens(self, batch):
        return int(batch["input_ids"].numel())


def memorizing_checkpoint(path: Path, tokenizer, steps: int = 40) -> Path:
    """A chat model that answers :data:`USER_MESSAGES` (and, in practice, any short message) with
    :data:`XSS`, trained by the Trainer."""
    return scripted_checkpoint(
        path, tokenizer, [([{"role": "user", "content": m}], None, XSS) for m in USER_MESSAGES], steps
    )


def scripted_checkpoint(
    path: Path, tokenizer, transcripts, steps: int = 40, context: int = 256, lr: float = 1e-2
) -> Path:
    """A chat model trained by the Trainer to answer each ``(messages, tools, reply)`` of
    ``transcripts`` with ``reply``: the prompt is what the chat template renders (tools listed),
    so a server answers those requests, under greedy decoding, with those replies. This is how the
    tests stand in for a model's choices (a tool call, a final answer) with real weights."""
    from llmkit.infer.engine import chat_prompt_ids
    from llmkit.train.trainer import Trainer

    rows, starts = [], []
    end = tokenizer.token_to_id("<|end|>")
    for messages, tools, reply in transcripts:
        prompt = chat_prompt_ids(tokenizer, messages, tools)
        rows.append(prompt + tokenizer.encode(reply) + [end])
        starts.append(len(prompt))
    torch.manual_seed(0)
    model = Transformer(model_config(context, hidden_size=96, initializer_range=0.02))
    cfg = TrainConfig(
        max_steps=steps,
        batch_size=len(rows),
        seq_len=max(len(r) for r in rows),
        lr=lr,
        warmup_steps=10,
        eval_every=0,
        ckpt_every=10_000,
        log_every=1_000,
        device="cpu",
        dtype="fp32",
    )
    with one_thread():
        task = _Memorize(rows, starts)
        Trainer(model, task, cfg, path, tokenizer=tokenizer, extra_config={"llmkit_stage": "sft"}).fit()
    return path


def lora_adapter(path: Path, base: Path, seed: int = 1) -> Path:
    """A PEFT-format LoRA adapter for ``base`` with random (non-zero) matrices: it changes the output."""
    from llmkit.checkpoint import load_model
    from llmkit.model.lora import LoraConfig, add_lora, save_adapter

    model = load_model(base)
    cfg = LoraConfig(r=4, alpha=8.0, target_modules=["q_proj", "v_proj"])
    torch.manual_seed(seed)
    for layer in add_lora(model, cfg).values():
        torch.nn.init.normal_(layer.lora_B.weight, std=0.5)
    return save_adapter(model, cfg, path, base_path=base)


class Server:
    """``llmkit serve ARGS`` in a child process; ``.url`` once it listens, ``.log`` its output."""

    def __init__(self, args: list[str], timeout: float = 180.0, env: dict | None = None):
        # one thread: the test models are tiny, and the test process shares the two cores
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmkit.cli", "serve", *map(str, args), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.log: list[str] = []
        self._ready = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or not self.url:
            self.proc.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.log))

    def _read(self):
        for line in self.proc.stdout:
            self.log.append(line)
            m = re.search(r"chat page: (http://\S+?)/\s", line)
            if m:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()

    def stop(self, sig=signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def wait_log(self, text: str, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in line for line in self.log):
                return True
            time.sleep(0.05)
        return False


def metric(url: str, name: str, **labels) -> float:
    """One sample of ``GET /metrics`` (0 when absent)."""
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric_name, _, rest = key.partition("{")
        if metric_name == name and ",".join(sorted(rest.rstrip("}").split(","))) == want:
            return float(value)
    return 0.0
