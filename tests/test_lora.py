"""LoRA: only adapters train, merge/unmerge, PEFT loads ours and we load PEFT's, bad adapters."""

import json

import pytest
import torch

from llmkit.checkpoint import load_model, save_checkpoint
from llmkit.config import ModelConfig
from llmkit.errors import LLMKitError
from llmkit.model.lora import LoraConfig, add_lora, load_adapter, lora_layers, merge_lora, save_adapter
from llmkit.model.transformer import Transformer

CFG = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
IDS = torch.tensor([[1, 5, 9, 33, 70, 2, 11, 4]])


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("base") / "ckpt"
    save_checkpoint(d, Transformer(ModelConfig(**CFG)))
    return d


def adapted(base_dir, targets=("q_proj", "v_proj", "down_proj")):
    model = load_model(base_dir)
    cfg = LoraConfig(r=4, alpha=8.0, target_modules=list(targets))
    add_lora(model, cfg)
    torch.manual_seed(1)
    for layer in lora_layers(model).values():  # a trained-looking adapter (B starts at zero)
        torch.nn.init.normal_(layer.lora_B.weight, std=0.05)
    return model, cfg


def test_only_adapter_parameters_get_gradients(base_dir):
    model, _ = adapted(base_dir)
    model.train()
    model(IDS).sum().backward()
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_merge_and_unmerge(base_dir):
    model, _ = adapted(base_dir)
    with torch.no_grad():
        plain = load_model(base_dir)(IDS)
        unmerged = model(IDS)
        assert not torch.allclose(plain, unmerged)
        layers = lora_layers(model)
        for layer in layers.values():
            layer.merge()
        torch.testing.assert_close(model(IDS), unmerged, rtol=1e-5, atol=1e-5)
        for layer in layers.values():
            layer.unmerge()
        torch.testing.assert_close(model(IDS), unmerged, rtol=1e-5, atol=1e-5)
        merged = merge_lora(model)
        assert not lora_layers(merged)
        torch.testing.assert_close(merged(IDS), unmerged, rtol=1e-5, atol=1e-5)


def test_peft_loads_our_adapter_with_equal_logits(base_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, cfg = adapted(base_dir)
    save_adapter(model, cfg, tmp_path / "adapter", base_path=base_dir)
    with torch.no_grad():
        ours = model(IDS)
        hf = AutoModelForCausalLM.from_pretrained(str(base_dir), torch_dtype=torch.float32)
        peft_model = PeftModel.from_pretrained(hf, str(tmp_path / "adapter"))
        theirs = peft_model(IDS).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_adapter_saved_by_peft_loads_into_llmkit(base_dir, tmp_path):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(base_dir), torch_dtype=torch.float32)
    pm = get_peft_model(hf, PeftLoraConfig(r=2, lora_alpha=6, target_modules=["k_proj", "gate_proj"], lora_dropout=0.0))
    torch.manual_seed(3)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    pm.save_pretrained(str(tmp_path / "peft"))
    with torch.no_grad():
        theirs = pm(IDS).logits
        model = load_model(base_dir)
        cfg = load_adapter(model, tmp_path / "peft")
        assert cfg.r == 2 and sorted(cfg.target_modules) == ["gate_proj", "k_proj"]
        torch.testing.assert_close(model(IDS), theirs, rtol=1e-5, atol=1e-5)


def test_engine_runs_base_plus_adapter_unmerged(base_dir, tmp_path):
    from llmkit.infer.engine import Engine
    from llmkit.infer.sampling import SamplingParams

    model, cfg = adapted(base_dir)
    save_adapter(model, cfg, tmp_path / "a")
    merged = merge_lora(adapted(base_dir)[0])
    params = SamplingParams(max_new_tokens=6, temperature=0.0, ignore_eos=True)
    fresh = load_model(base_dir)
    load_adapter(fresh, tmp_path / "a")
    out = Engine(fresh).generate([IDS[0].tolist()], params)[0][0].token_ids
    assert out == Engine(merged).generate([IDS[0].tolist()], params)[0][0].token_ids
    assert lora_layers(fresh)  # still an adapter, not merged


def test_bad_targets_and_mismatched_adapters(base_dir, tmp_path):
    with pytest.raises(LLMKitError, match="'qkv' is not in the model; its linear layers are"):
        add_lora(load_model(base_dir), LoraConfig(r=2, target_modules=["qkv"]))
    model, cfg = adapted(base_dir)
    save_adapter(model, cfg, tmp_path / "a")
    other = dict(CFG, hidden_size=64)
    torch.manual_seed(0)
    with pytest.raises(LLMKitError, match="does not fit this base model"):
        load_adapter(Transformer(ModelConfig(**other)), tmp_path / "a")
    with pytest.raises(LLMKitError, match=r"adapter_config\.json: not found"):
        load_adapter(load_model(base_dir), tmp_path)
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3", "r": 1}))
    with pytest.raises(LLMKitError, match="only LORA"):
        load_adapter(load_model(base_dir), tmp_path / "a")


def test_lora_merge_cli_and_generate_with_adapter(base_dir, tmp_path):
    from llmkit.cli import main
    from llmkit.tokenizer import Tokenizer

    tok = Tokenizer.train(["hello world 你好"] * 50, 300, show_progress=False)
    ckpt = tmp_path / "base"
    import shutil

    shutil.copytree(base_dir, ckpt)
    tok.save(ckpt)
    model, cfg = adapted(ckpt)
    save_adapter(model, cfg, tmp_path / "adapter", base_path=ckpt)
    assert main(["lora", "merge", str(tmp_path / "adapter"), "--out", str(tmp_path / "merged")]) == 0
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "merged")(IDS), model(IDS), rtol=1e-5, atol=1e-5)
    import llmkit

    lm = llmkit.load(ckpt, device="cpu", inference_only=True, adapter=tmp_path / "adapter")
    merged = llmkit.load(tmp_path / "merged", device="cpu", inference_only=True)
    opts = dict(max_new_tokens=5, temperature=0.0, ignore_eos=True)
    assert (
        lm.generate(IDS[0].tolist(), return_ids=True, **opts).token_ids
        == merged.generate(IDS[0].tolist(), return_ids=True, **opts).token_ids
    )
    assert main(["lora", "merge", str(tmp_path / "adapter"), "--base", str(tmp_path / "nope"), "--out", "x"]) == 2
