"""SFT end to end on a tiny model: it learns an easy task the base model fails, resume is bitwise,
the result loads in transformers and chats through its template, LoRA fine-tuning, bad input."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from llmkit.checkpoint import save_checkpoint
from llmkit.config import ModelConfig
from llmkit.model.transformer import Transformer
from llmkit.tasks import get_task
from llmkit.tokenizer import Tokenizer

pytestmark = pytest.mark.xdist_group("sft")
STEPS = [
    "sft.max_steps=60",
    "sft.batch_size=8",
    "sft.lr=0.003",
    "sft.warmup_steps=5",
    "sft.ckpt_every=30",
    "sft.eval_examples=30",
    "sft.task_examples=600",
    "train.device=cpu",
    "train.dtype=fp32",
]


def cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "llmkit.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    texts = [
        e.prompt + "\n" + e.solution for t in ("count_char", "compare2") for e in get_task(t).make("train", 300, 0)
    ]
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
def trained(base):
    out = base / "out"
    r = cli("sft", base / "base", *STEPS, "--tasks", "count_char,compare2", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_sft_lifts_an_easy_task_over_the_base_model(base, trained):
    from llmkit.checkpoint import load_model
    from llmkit.tasks.runner import evaluate_tasks
    from llmkit.train.finetune import base_accuracy

    out, _ = trained
    tok = Tokenizer.load(base / "base")
    test = get_task("count_char").make("test", 60, 0)
    pool = get_task("count_char").make("train", 30, 0)
    before = base_accuracy(load_model(base / "base"), tok, test, pool, k=3, seed=0).scores["count_char"]
    after = evaluate_tasks(load_model(out), tok, test).scores["count_char"]
    assert after.accuracy >= before.accuracy + 0.25, (before, after)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val_acc/count_char" in r for r in rows)


def test_result_loads_in_transformers_and_chats_through_its_template(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import llmkit

    out, _ = trained
    hf_tok = AutoTokenizer.from_pretrained(str(out))
    hf = AutoModelForCausalLM.from_pretrained(str(out))
    msgs = [{"role": "user", "content": "How many times does the letter 'a' appear in 'banana'?"}]
    ids = hf_tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    lm = llmkit.load(out, device="cpu")
    from llmkit.infer.engine import chat_prompt_ids

    assert ids[0].tolist() == chat_prompt_ids(lm.tokenizer, msgs)
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, lm.model(ids), rtol=1e-4, atol=1e-4)
    reply = lm.chat(msgs, max_new_tokens=12, temperature=0.0)
    assert reply.startswith("Answer:"), reply


def test_resume_is_bitwise(base, trained):
    out, _ = trained
    again = base / "resumed"
    shutil.copytree(out, again)
    ckpts = again / "checkpoints"
    shutil.rmtree(ckpts / "step_00000060")
    (ckpts / "latest").write_text("step_00000030\n")
    (again / "model.safetensors").unlink()
    r = cli("sft", base / "base", *STEPS, "--tasks", "count_char,compare2", "--out", again)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from step 30" in r.stderr
    a, b = load_file(str(out / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_sft_writes_an_adapter_and_a_merged_model(base):
    out = base / "lora"
    r = cli(
        "sft",
        base / "base",
        "sft.max_steps=4",
        "sft.eval_examples=4",
        "sft.task_examples=40",
        "train.device=cpu",
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


def test_bad_input_is_one_line(base, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    r = cli("sft", base / "base", "--data", bad, "--out", tmp_path / "o", "--strict")
    assert r.returncode == 2 and "bad.jsonl:1: no assistant turn" in r.stderr and "Traceback" not in r.stderr
    r = cli("sft", base / "base", "--data", f"{bad}@0", "--out", tmp_path / "o")
    assert r.returncode == 2 and "weight must be positive" in r.stderr
    r = cli(
        "sft", base / "base", "sft.lora_targets=[qkv]", "--tasks", "compare2", "--lora", "2", "--out", tmp_path / "o"
    )
    assert r.returncode == 2 and "'qkv' is not in the model" in r.stderr
    r = cli("sft", tmp_path / "nowhere", "--tasks", "compare2", "--out", tmp_path / "o")
    assert r.returncode == 2 and "not found" in r.stderr
