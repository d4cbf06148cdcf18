"""The alignment objectives: each against a hand computation, and DPO and the distillation
divergences against TRL's own trainers on the same log-probabilities."""

import math

import pytest
import torch
import torch.nn.functional as F

from llmkit.train.objectives import (
    aggregate,
    bradley_terry_loss,
    distill_divergence,
    dpo_loss,
    gae,
    group_advantages,
    kl_penalty,
    loss_count,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_bradley_terry_by_hand():
    got = bradley_terry_loss(torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.0]))
    want = [-math.log(sig(1.5)), -math.log(sig(-1.0))]
    assert got.tolist() == pytest.approx(want, rel=1e-6)


def test_dpo_sigmoid_and_label_smoothing_by_hand():
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-10.0, -14.0, -11.0, -13.0))
    beta = 0.5
    margin = (-10 + 11) - (-14 + 13)  # 2.0
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta)
    assert losses.item() == pytest.approx(-math.log(sig(beta * margin)), rel=1e-6)
    assert chosen.item() == pytest.approx(0.5) and rejected.item() == pytest.approx(-0.5)
    eps = 0.2  # cDPO: -(1-e) log s(bm) - e log s(-bm)
    smoothed, _, _ = dpo_loss(pc, pr, rc, rr, beta, "sigmoid", eps)
    want = -(1 - eps) * math.log(sig(1.0)) - eps * math.log(sig(-1.0))
    assert smoothed.item() == pytest.approx(want, rel=1e-6)


def test_gae_by_hand():
    # one row of 3 tokens then padding; gamma 0.9, lambda 0.8
    r = torch.tensor([[0.0, 0.1, 1.0, 7.0]])
    v = torch.tensor([[0.5, 0.4, 0.2, 9.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    g, lam = 0.9, 0.8
    d2 = 1.0 + g * 0.0 - 0.2  # the step after the last token is terminal
    d1 = 0.1 + g * 0.2 - 0.4
    d0 = 0.0 + g * 0.4 - 0.5
    a2 = d2
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    adv, ret = gae(r, v, m, g, lam)
    assert adv[0].tolist() == pytest.approx([a0, a1, a2, 0.0], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.4, a2 + 0.2, 0.0], abs=1e-6)


def test_whiten_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, m)
    assert w[0].tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-4)  # mean 2, unbiased std 1


def test_ppo_clipped_losses_by_hand():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1 against old = log 1
    old = torch.zeros(1, 3)
    adv = torch.tensor([[2.0, -1.0, 1.0]])
    loss, clipped = ppo_policy_loss(logp, old, adv, clip=0.2)
    # -min(rA, clip(r)A): 1.5*2 vs 1.2*2 -> -2.4 ; 0.5*-1 vs 0.8*-1 -> -(-0.8) ; 1.1 inside the range
    assert loss[0].tolist() == pytest.approx([-2.4, 0.8, -1.1], rel=1e-6)
    assert clipped[0].tolist() == [True, True, False]
    high, _ = ppo_policy_loss(logp, old, adv, clip=0.2, clip_high=0.28)  # DAPO's clip-higher
    assert high[0, 0].item() == pytest.approx(-2.56, rel=1e-6)
    v, v_old, ret = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([[2.0, 0.1]])
    vl, vclipped = ppo_value_loss(v, v_old, ret, clip=0.2)
    # row 0: plain (1-2)^2 = 1, clipped (0.7-2)^2 = 1.69 -> 0.845 ; row 1: both 0.01 -> 0.005
    assert vl[0].tolist() == pytest.approx([0.845, 0.005], rel=1e-6)
    assert vclipped[0].tolist() == [True, False]


def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 3.0, 3.0, 3.0])
    adv = group_advantages(r, 4)
    std = math.sqrt(((0.5**2) * 4) / 3)  # unbiased
    assert adv[:4].tolist() == pytest.approx([x / (std + 1e-4) for x in (0.5, -0.5, -0.5, 0.5)], rel=1e-6)
    assert adv[4:].tolist() == [0.0] * 4  # a group with one reward carries no signal
    assert group_advantages(r, 4, scale=False)[:4].tolist() == [0.5, -0.5, -0.5, 0.5]  # Dr. GRPO
    failed = torch.tensor([1.0, float("nan"), 0.0, 0.5])  # a failed call: left out, advantage 0
    a = group_advantages(failed, 4, scale=False)
    assert a.tolist() == pytest.approx([0.5, 0.0, -0.5, 0.0])


def test_loss_normalisations_by_hand():
    per_token = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    # sequence (GRPO): mean of per-sequence means = (2 + 4) / 2
    assert (aggregate(per_token, mask, "sequence") / loss_count(mask, "sequence", 4)).item() == pytest.approx(3.0)
    # token (DAPO): all tokens together = (1+2+3+4) / 4
    assert (aggregate(per_token, mask, "token") / loss_count(mask, "token", 4)).item() == pytest.approx(2.5)
    # Dr. GRPO: token sum over sequences x max length = 10 / (2 * 8)
    assert (aggregate(per_token, mask, "dr_grpo") / loss_count(mask, "dr_grpo", 8)).item() == pytest.approx(10 / 16)


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(0.5)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.125)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(math.exp(-0.5) + 0.5 - 1)


def test_distill_divergences_by_hand():
    s, t = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[2.0, 0.0, 0.0]])
    T = 2.0
    ps, pt = F.softmax(s / T, -1)[0].tolist(), F.softmax(t / T, -1)[0].tolist()
    fwd = sum(b * math.log(b / a) for a, b in zip(ps, pt, strict=True))
    rev = sum(a * math.log(a / b) for a, b in zip(ps, pt, strict=True))
    assert distill_divergence(s, t, T, "forward").item() == pytest.approx(T * T * fwd, rel=1e-5)
    assert distill_divergence(s, t, T, "reverse").item() == pytest.approx(T * T * rev, rel=1e-5)
    assert distill_divergence(s, t, T, "mix", 0.25).item() == pytest.approx(T * T * (0.75 * fwd + 0.25 * rev), rel=1e-5)


@pytest.mark.parametrize(("kind", "beta"), [("forward", 0.0), ("reverse", 1.0)])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_distill_divergence_matches_trl(kind, beta, temperature):
    """TRL's generalized JSD at beta 0 / 1 is the forward / reverse KL (without the T^2 scale)."""
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    g = torch.Generator().manual_seed(0)
    hs, ht = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    ws, wt = torch.randn(11, 8, generator=g), torch.randn(11, 8, generator=g)
    trl_loss, _, _ = _chunked_divergence_loss(hs, ht, ws, wt, torch.ones(2, 3), beta, temperature=temperature)
    ours = distill_divergence(hs @ ws.T, ht @ wt.T, temperature, kind).mean()
    assert ours.item() == pytest.approx(temperature**2 * trl_loss.item(), rel=1e-5)


# ---- DPO against TRL's DPOTrainer -----------------------------------------------------------------
TEXT = "The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸跳过了懒狗。 " * 40


@pytest.fixture(scope="module")
def trl_dpo(tmp_path_factory):
    """TRL's DPOTrainer over a tiny Llama that `transformers` loads from an llmkit checkpoint, and
    the same weights as an llmkit model."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from llmkit.checkpoint import load_model, save_checkpoint
    from llmkit.config import ModelConfig
    from llmkit.model.transformer import Transformer
    from llmkit.tokenizer import Tokenizer

    tok = Tokenizer.train([TEXT], vocab_size=320, show_progress=False)
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=320,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=0.1,
    )
    path = tmp_path_factory.mktemp("dpo") / "model"
    save_checkpoint(path, Transformer(cfg), tokenizer=tok)
    ds = Dataset.from_list([{"prompt": "The quick", "chosen": " brown fox", "rejected": " lazy dog"}] * 2)
    args = DPOConfig(
        output_dir=str(tmp_path_factory.mktemp("trl")), report_to=[], use_cpu=True, precompute_ref_log_probs=False
    )
    hf = AutoModelForCausalLM.from_pretrained(path)
    trainer = DPOTrainer(model=hf, args=args, train_dataset=ds, processing_class=AutoTokenizer.from_pretrained(path))
    trainer.precompute_ref_logps = True  # reference log-probs come in the batch, as ours do
    trainer.model.train()
    return trainer, load_model(path), tok


@pytest.mark.parametrize(("loss_type", "smoothing"), [("sigmoid", 0.0), ("ipo", 0.0), ("robust", 0.1)])
def test_dpo_loss_rewards_and_margins_match_trl(trl_dpo, loss_type, smoothing):
    from llmkit.data.preference import PreferencePair
    from llmkit.train.dpo import DPOTask
    from llmkit.train.preference import encode_pairs

    trainer, model, tok = trl_dpo
    pairs = encode_pairs(
        tok,
        [
            PreferencePair(" brown fox jumps", " lazy dog", prompt="The quick"),
            PreferencePair(" 狐狸跳过了懒狗。", " the dog", prompt="敏捷的棕色"),
            PreferencePair(" over", " over the lazy dog.", prompt="The quick brown fox jumps"),
        ],
        max_len=64,
    )
    ref = torch.tensor([[-30.0, -25.0], [-20.0, -31.0], [-5.0, -40.0]])
    task = DPOTask(pairs, ref, tok.pad_id, beta=0.3, loss_type=loss_type, label_smoothing=smoothing, batch_size=3)
    batch = task.batch(0, 0, 1)
    loss_sum, metrics = task.loss(model, batch)

    # the same rows in TRL's layout (chosen rows, then rejected rows): completion_mask marks the
    # answer tokens, attention_mask the padding
    ids = batch["input_ids"]
    completion = torch.zeros_like(ids)
    completion[:, 1:] = batch["loss_mask"].long()
    inputs = {
        "input_ids": ids,
        "attention_mask": (torch.arange(ids.shape[1])[None] < batch["lengths"][:, None]).long(),
        "completion_mask": completion,
        "ref_chosen_logps": batch["ref"][:, 0],
        "ref_rejected_logps": batch["ref"][:, 1],
    }
    trainer.beta, trainer.loss_types, trainer.loss_weights = 0.3, [loss_type], [1.0]
    trainer.label_smoothing = smoothing
    trainer._metrics["train"].clear()
    trl_loss = trainer.compute_loss(trainer.model, inputs)
    logged = trainer._metrics["train"]
    assert (loss_sum / batch["count"]).item() == pytest.approx(trl_loss.item(), rel=1e-4, abs=1e-6)
    assert metrics["reward_chosen"] == pytest.approx(logged["rewards/chosen"][-1], rel=1e-4, abs=1e-6)
    assert metrics["reward_rejected"] == pytest.approx(logged["rewards/rejected"][-1], rel=1e-4, abs=1e-6)
    assert metrics["margin"] == pytest.approx(logged["rewards/margins"][-1], rel=1e-4, abs=1e-6)
    assert metrics["accuracy"] == pytest.approx(logged["rewards/accuracies"][-1])
