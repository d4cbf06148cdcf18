"""Preference data and the stages that learn from it: the reward model learns a planted preference
and `transformers` scores the saved checkpoint the same; DPO raises the held-out margin; PPO runs
against the trained reward model; bad pairs are one-line errors or counted skips."""

import json
import os
import subprocess
import sys

import pytest
import torch

from llmkit.checkpoint import load_model, save_checkpoint
from llmkit.config import ModelConfig
from llmkit.data.preference import PairStats, read_pairs
from llmkit.errors import DataError
from llmkit.model.transformer import Transformer
from llmkit.tokenizer import Tokenizer

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TEXT = "The quick brown fox jumps over the lazy dog 0123456789. 敏捷的棕色狐狸跳过了懒狗。 " * 40
THINGS = "river mountain garden window letter candle basket mirror castle ladder forest meadow harbor violin lantern"
COMMON = ["train.log_every=5", "train.device=cpu", "train.dtype=fp32"]


def planted_pairs():
    """Chosen answers praise the fox, rejected ones the dog: a preference a model can learn."""
    out = []
    for i, thing in enumerate(THINGS.split()):
        for j, (fox, dog) in enumerate((("a quick brown fox", "a lazy dog"), ("the fox jumps", "the dog sleeps"))):
            prompt = [{"role": "user", "content": f"What is near the {thing}? ({i}.{j})"}]
            out.append(
                {
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": f"Near the {thing} is {fox}."}],
                    "rejected": [{"role": "assistant", "content": f"Near the {thing} is {dog}."}],
                }
            )
    return out


def config(vocab=320):
    return ModelConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=96,
        initializer_range=0.1,
    )


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    root = tmp_path_factory.mktemp("pref")
    tok = Tokenizer.train([TEXT], vocab_size=320, show_progress=False)
    torch.manual_seed(0)
    save_checkpoint(root / "model", Transformer(config()), tokenizer=tok)
    with open(root / "pairs.jsonl", "w", encoding="utf-8") as f:
        for rec in planted_pairs():
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return root


def cli(verb, *args):
    """``llmkit VERB ...`` with the ``section.field=value`` overrides moved right after the checkpoint."""
    settings = [str(a) for a in args if "=" in str(a) and "." in str(a).split("=")[0]]
    rest = [str(a) for a in args if str(a) not in settings]
    args = [rest[0], *settings, *rest[1:]] if verb != "distill" else [*rest, *settings]
    return subprocess.run(
        [sys.executable, "-m", "llmkit.cli", verb, *args], env=ENV, capture_output=True, text=True, timeout=600
    )


def one_line_error(r, *needles):
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), line
    for n in needles:
        assert n in line, line


@pytest.fixture(scope="module")
def reward_model(fx):
    out = fx / "rm"
    r = cli(
        "reward",
        fx / "model",
        "--data",
        fx / "pairs.jsonl",
        "--out",
        out,
        "reward.max_steps=30",
        "reward.lr=3e-3",
        "reward.val_fraction=0.3",
        "reward.eval_every=0",
        *COMMON,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.slow
def test_reward_model_learns_a_planted_preference(reward_model):
    summary = json.loads((reward_model / "train_summary.json").read_text())
    assert summary["val_accuracy"] >= 0.85, summary  # held-out prompts; chance is 0.5
    assert summary["val_margin"] > 0


@pytest.mark.slow
def test_transformers_loads_the_reward_model_with_the_same_scores(reward_model):
    from transformers import AutoModelForSequenceClassification

    from llmkit.model.heads import RewardModel

    hf = json.loads((reward_model / "config.json").read_text())
    assert hf["architectures"] == ["LlamaForSequenceClassification"] and hf["num_labels"] == 1
    theirs = AutoModelForSequenceClassification.from_pretrained(reward_model).eval()
    ours = load_model(reward_model, model_class=RewardModel)
    tok = Tokenizer.load(reward_model)
    texts = ["Near the river is a quick brown fox.", "Near the river is a lazy dog.", "狐狸"]
    rows = [[*tok.encode(t, bos=True), tok.eos_id] for t in texts]
    L = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_id] * (L - len(r)) for r in rows])
    with torch.no_grad():
        want = theirs(input_ids=ids).logits[:, 0]
        got = ours(ids, torch.tensor([len(r) for r in rows]))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert got[0] > got[1]  # the fox is preferred


@pytest.mark.slow
def test_ppo_against_the_reward_model(fx, reward_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": [{"role": "user", "content": f"What is near the {t}?"}]}) + "\n"
            for t in THINGS.split()
        )
    )
    args = ["ppo", fx / "model", "--prompts", prompts]
    settings = ["ppo.max_steps=2", "ppo.epochs=2", "ppo.prompts_per_round=4", "ppo.max_new_tokens=8", *COMMON]
    r = cli(*args, "--out", tmp_path / "ppo", "--reward-model", reward_model, *settings, "ppo.eval_prompts=3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "val_reward" in json.loads((tmp_path / "ppo" / "train_summary.json").read_text())
    one_line_error(cli(*args, "--out", tmp_path / "x", "--reward-model", fx / "model"), "not a reward model")


@pytest.mark.slow
def test_dpo_raises_the_held_out_margin(fx):
    out = fx / "dpo"
    r = cli(
        "dpo",
        fx / "model",
        "--data",
        fx / "pairs.jsonl",
        "--out",
        out,
        "dpo.max_steps=20",
        "dpo.lr=3e-3",
        "dpo.beta=0.5",
        "dpo.val_fraction=0.3",
        "dpo.eval_every=10",
        *COMMON,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "ref_logps.pt").is_file()
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "val_margin" in x]
    # the policy starts as the reference: every margin is 0 before training
    assert evals[-1]["val_margin"] > 0.5 and evals[-1]["val_accuracy"] >= 0.85, evals


def test_preference_formats(tmp_path):
    text = {"prompt": "2+2=", "chosen": "4", "rejected": "5"}
    chat = {
        "prompt": [{"role": "user", "content": "2+2?"}],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": "5",
    }
    implicit = {
        "chosen": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}],
        "rejected": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "Hi"}],
    }
    same = {"prompt": "x", "chosen": "y ", "rejected": "y"}
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in (text, chat, implicit, same)))
    stats = PairStats()
    a, b, c = read_pairs(str(path), stats)
    assert (a.prompt, a.chosen, a.rejected, a.messages) == ("2+2=", "4", "5", None)
    assert b.messages == [{"role": "user", "content": "2+2?"}] and (b.chosen, b.rejected) == ("4", "5")
    assert c.messages == [{"role": "user", "content": "你好"}] and (c.chosen, c.rejected) == ("你好！", "Hi")
    assert stats.identical == 1 and "identical" in stats.warnings()[0]


def test_bad_preference_rows_are_one_line_errors(tmp_path):
    cases = [
        ('{"prompt": "a", "chosen": "b"}', "p.jsonl:1: missing field 'rejected'"),
        ('{"chosen": "b", "rejected": "c"}', "p.jsonl:1: missing field 'prompt'"),
        ("not json", "p.jsonl:1: not valid JSON"),
        ('{"prompt": "a", "chosen": "b", "rejected": "b"}', "no usable preference pairs (1 rows, 1 with identical"),
    ]
    for line, needle in cases:
        path = tmp_path / "p.jsonl"
        path.write_text(line + "\n")
        with pytest.raises(DataError, match=None) as e:
            read_pairs(str(path))
        assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_reference_with_another_vocabulary_is_refused(fx, tmp_path):
    other = tmp_path / "other"
    tok = Tokenizer.train([TEXT + " extra words"], vocab_size=384, show_progress=False)
    save_checkpoint(other, Transformer(config(384)), tokenizer=tok)
    r = cli("dpo", fx / "model", "--data", fx / "pairs.jsonl", "--out", tmp_path / "d", "--ref", other)
    one_line_error(r, str(other), "vocabulary has 384 entries but the model's has 320")
