"""SFT end to end on a tiny model: it learns an easy task the base model fails, a run killed with
SIGKILL resumes to bitwise the same weights, the result loads in transformers and chats through its
template, LoRA fine-tuning, an imported Qwen2 with its own ChatML template, the held-out evaluator
under DDP, bad input.

One tiny model is trained once (``straight``) and shared; every other run is a few steps."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmkit.checkpoint import save_checkpoint
from llmkit.config import ModelConfig
from llmkit.model.transformer import Transformer
from llmkit.tasks import get_task
from llmkit.tokenizer import Tokenizer

TASKS = "count_char,compare2"
STEPS = [
    "sft.max_steps=60",
    "sft.batch_size=8",
    "sft.lr=0.003",
    "sft.warmup_steps=5",
    "sft.ckpt_every=20",
    "sft.log_every=5",
    "sft.eval_examples=8",
    "sft.task_examples=600",
    "train.device=cpu",
    "train.dtype=fp32",
]
EVAL_DRIVER = Path(__file__).parent / "sft_eval_driver.py"


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: one thread each is fastest, and fair to xdist


def cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "llmkit.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def sft_args(root, out):
    return ["sft", root / "base", *STEPS, "--tasks", TASKS, "--out", out]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    texts = [e.prompt + "\n" + e.solution for t in TASKS.split(",") for e in get_task(t).make("train", 300, 0)]
    tok = Tokenizer.train(texts, 512, show_progress=False)
    tok.model_max_length = 96
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(
            vocab_size=512,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=96,
        )
    )
    save_checkpoint(root / "base", model, tok)
    return root


@pytest.fixture(scope="module")
def straight(base):
    """The shared fine-tuned model: 60 uninterrupted steps."""
    out = base / "straight"
    r = cli(*sft_args(base, out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def metric_rows(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.xdist_group("sft")
def test_sft_lifts_an_easy_task_over_the_base_model(base, straight):
    from llmkit.checkpoint import load_model
    from llmkit.tasks.runner import evaluate_tasks
    from llmkit.train.finetune import base_accuracy

    tok = Tokenizer.load(base / "base")
    test = get_task("count_char").make("test", 60, 0)
    pool = get_task("count_char").make("train", 30, 0)
    before = base_accuracy(load_model(base / "base"), tok, test, pool, k=3, seed=0).scores["count_char"]
    after = evaluate_tasks(load_model(straight), tok, test).scores["count_char"]
    assert after.accuracy >= before.accuracy + 0.25, (before, after)
    assert any("val_acc/count_char" in r for r in metric_rows(straight))


@pytest.mark.xdist_group("sft")
def test_result_loads_in_transformers_and_chats_through_its_template(straight):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import llmkit
    from llmkit.infer.engine import chat_prompt_ids

    hf_tok = AutoTokenizer.from_pretrained(str(straight))
    hf = AutoModelForCausalLM.from_pretrained(str(straight))
    msgs = [{"role": "user", "content": "How many times does the letter 'a' appear in 'banana'?"}]
    ids = hf_tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    lm = llmkit.load(straight, device="cpu")
    assert ids[0].tolist() == chat_prompt_ids(lm.tokenizer, msgs)
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, lm.model(ids), rtol=1e-4, atol=1e-4)
    reply = lm.chat(msgs, max_new_tokens=12, temperature=0.0)
    assert reply.startswith("Answer:"), reply


@pytest.mark.xdist_group("sft")
def test_sigkilled_run_resumes_to_bitwise_the_same_weights(base, straight):
    out = base / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmkit.cli", *map(str, sft_args(base, out))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.exists() and not (out / "model.safetensors").exists(), "the run was not killed mid-training"
    r = cli(*sft_args(base, out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"resumed from step (20|40) ", r.stderr), r.stderr[-2000:]
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = lambda d: [(x["step"], x["loss"]) for x in metric_rows(d) if "loss" in x]  # noqa: E731
    assert losses(out) == losses(straight)


@pytest.mark.xdist_group("sft")
def test_evaluator_under_ddp_shards_and_gathers_like_one_process(straight, tmp_path):
    """Two ranks each generate half of the held-out items; counts and every reply (in the
    examples' order) come back on rank 0 as one process computes them."""
    single = tmp_path / "single.json"
    r = subprocess.run(
        [sys.executable, str(EVAL_DRIVER), str(straight), str(single)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = tmp_path / "ddp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    r = subprocess.run([*cmd, str(EVAL_DRIVER), str(straight), str(ddp)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = json.loads(single.read_text()), json.loads(ddp.read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["metrics"] == one["metrics"] and two["scores"] == one["scores"]
    assert two["responses"] == one["responses"] and len(one["responses"]) == one["n"]


@pytest.mark.xdist_group("sft")
def test_lora_sft_writes_an_adapter_and_a_merged_model(base):
    out = base / "lora"
    r = cli(
        "sft",
        base / "base",
        "sft.max_steps=3",
        "sft.eval_examples=2",
        "sft.task_examples=24",
        "train.device=cpu",
        "train.dtype=fp32",
        "--tasks",
        "compare2",
        "--out",
        out,
        "--lora",
        "4",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["base_model_name_or_path"] == str(base / "base")
    weights = load_file(str(out / "model.safetensors"))
    assert not any("lora" in k for k in weights)
    base_w = load_file(str(base / "base" / "model.safetensors"))
    assert not torch.equal(
        weights["model.layers.0.self_attn.q_proj.weight"], base_w["model.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(weights["model.embed_tokens.weight"], base_w["model.embed_tokens.weight"])


@pytest.mark.xdist_group("sft")
def test_bad_input_is_one_line(base, tmp_path, capsys):
    from llmkit.cli import main

    def error(*args):
        assert main([str(a) for a in args]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len([x for x in err.splitlines() if x.startswith("error: ")]) == 1
        return err

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert "bad.jsonl:1: no assistant turn" in error("sft", base / "base", "--data", bad, "--out", tmp_path, "--strict")
    assert "weight must be positive" in error("sft", base / "base", "--data", f"{bad}@0", "--out", tmp_path / "o")
    assert "'qkv' is not in the model" in error(
        "sft", base / "base", "sft.lora_targets=[qkv]", "--tasks", "compare2", "--lora", "2", "--out", tmp_path / "o"
    )
    assert "not found" in error("sft", tmp_path / "nowhere", "--tasks", "compare2", "--out", tmp_path / "o")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------- an imported model
CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def save_qwen2_with_chatml(path: Path) -> None:
    """A tiny random Qwen2 and a byte-level BPE tokenizer with Qwen2's special tokens and a ChatML
    template, both saved by transformers (no BOS token, ``<|im_end|>`` ends a turn)."""
    import transformers
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    inner = HFTokenizer(models.BPE())
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = decoders.ByteLevel()
    texts = [e.prompt + " " + e.solution for e in get_task("compare2").make("train", 200, 0)]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    inner.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=inner, eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=128
    )
    tok.chat_template = CHATML
    tok.save_pretrained(path)
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(
        vocab_size=320,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)


def test_imported_qwen2_fine_tunes_through_its_own_chatml_template(tmp_path):
    import transformers

    from llmkit.data.chat import encode_conversation
    from llmkit.infer.engine import chat_prompt_ids

    save_qwen2_with_chatml(tmp_path / "qwen")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "qwen")
    tok = Tokenizer.load(tmp_path / "qwen")
    conv = [
        {"role": "user", "content": "Which is larger, 12 or 31?"},
        {"role": "assistant", "content": "Answer: 31"},
        {"role": "user", "content": "32 和 17，哪个数更大？"},
        {"role": "assistant", "content": "答案：32"},
    ]
    enc = encode_conversation(tok, conv)
    theirs = hf_tok.apply_chat_template(conv, tokenize=True)
    assert enc.ids == list(theirs["input_ids"] if hasattr(theirs, "keys") else theirs)  # no BOS: Qwen2 has none
    learned = tok.decode([t for t, m in zip(enc.ids, enc.mask, strict=True) if m])
    assert learned == "Answer: 31<|im_end|>答案：32<|im_end|>"

    out = tmp_path / "sft"
    r = cli(
        "sft",
        tmp_path / "qwen",
        "sft.max_steps=4",
        "sft.batch_size=4",
        "sft.eval_examples=4",
        "sft.task_examples=40",
        "train.device=cpu",
        "train.dtype=fp32",
        "--tasks",
        "compare2",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
    hf_out = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_out.chat_template == CHATML
    prompt = conv[:1]
    ids = hf_out.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    assert ids == chat_prompt_ids(Tokenizer.load(out), prompt)
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    before = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "qwen")
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, before.model.layers[0].mlp.up_proj.weight)
