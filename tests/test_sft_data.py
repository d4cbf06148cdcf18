"""Chat data: every record shape, the template against transformers, the loss mask, packing."""

import json

import pytest
import torch

from llmkit.config import ModelConfig
from llmkit.data.chat import ChatStats, encode_conversation, fit_length, mix, pack, parse_source, read_conversations
from llmkit.errors import LLMKitError
from llmkit.model.transformer import Transformer
from llmkit.tokenizer import Tokenizer
from llmkit.train.sft import collate, sft_loss

CONV_EN = [
    {"role": "system", "content": "You are brief."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "Answer: 5"},
    {"role": "user", "content": "And 4 + 4?"},
    {"role": "assistant", "content": "Answer: 8"},
]
CONV_ZH = [
    {"role": "system", "content": "你是一个简洁的助手。"},
    {"role": "user", "content": "床前明月光的下一句是什么？"},
    {"role": "assistant", "content": "疑是地上霜。"},
    {"role": "user", "content": "作者是谁？"},
    {"role": "assistant", "content": "答案：李白"},
]


@pytest.fixture(scope="module")
def tok():
    text = [json.dumps(c, ensure_ascii=False) for c in (CONV_EN, CONV_ZH)] * 50
    return Tokenizer.train(text + ["the quick brown fox 床前明月光 疑是地上霜"] * 20, 400, show_progress=False)


def masked_text(tok, enc):
    return tok.decode([t for t, m in zip(enc.ids, enc.mask, strict=True) if m])


@pytest.mark.parametrize("conv", [CONV_EN, CONV_ZH], ids=["en", "zh"])
def test_ids_match_transformers_apply_chat_template(tok, conv, tmp_path):
    from transformers import AutoTokenizer

    tok.save(tmp_path)
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    enc = encode_conversation(tok, conv)
    theirs = hf.apply_chat_template(conv, tokenize=True)
    theirs = theirs["input_ids"] if isinstance(theirs, dict) or hasattr(theirs, "keys") else theirs
    assert enc.ids == list(theirs)
    assert enc.ids[0] == tok.bos_id
    assert masked_text(tok, enc) == "".join(m["content"] + "<|end|>" for m in conv if m["role"] == "assistant")
    # the engine's chat prompt is exactly the training ids up to the reply
    from llmkit.infer.engine import chat_prompt_ids

    prompt = chat_prompt_ids(tok, conv[:2])
    assert enc.ids[: len(prompt)] == prompt


RECORDS = {
    "messages": {"messages": CONV_EN},
    "prompt_completion": {"prompt": "What is 2 + 3?", "completion": "Answer: 5"},
    "prompt_completion_lists": {"prompt": CONV_ZH[:2], "completion": [CONV_ZH[2]]},
    "alpaca": {"instruction": "Add the numbers.", "input": "2 and 3", "output": "Answer: 5", "system": "Be brief."},
    "sharegpt": {"conversations": [{"from": "human", "value": "作者是谁？"}, {"from": "gpt", "value": "答案：李白"}]},
}


@pytest.mark.parametrize("shape", list(RECORDS))
def test_every_shape_reads_and_masks_only_assistant_tokens(tok, shape, tmp_path):
    rec = RECORDS[shape]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(json.dumps(rec, ensure_ascii=False) + "\n", encoding="utf-8")
    import datasets

    parquet = tmp_path / "d.parquet"
    datasets.Dataset.from_list([rec]).to_parquet(str(parquet))
    saved = tmp_path / "saved"
    datasets.Dataset.from_list([rec]).save_to_disk(str(saved))
    convs = [read_conversations(str(p))[0] for p in (jsonl, parquet, saved)]
    assert convs[0] == convs[1] == convs[2]
    conv = convs[0]
    enc = encode_conversation(tok, conv)
    want = "".join(m["content"] + "<|end|>" for m in conv if m["role"] == "assistant")
    assert masked_text(tok, enc) == want
    assert tok.decode(enc.ids) == tok.apply_chat_template(conv)


def test_bad_records_are_counted_with_line_numbers(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"messages": CONV_EN}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        json.dumps({"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]}),
        json.dumps({"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "x"}]}),
        json.dumps({"text": "plain"}),
        "{not json",
        json.dumps({"prompt": "p", "completion": "c"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    stats = ChatStats()
    convs = read_conversations(str(path), stats)
    assert len(convs) == 2 and stats.read == 2
    assert stats.first_skip == {
        "no assistant turn": f"{path}:2",
        "unknown role 'wizard'": f"{path}:3",
        "empty content": f"{path}:4",
        "no messages, conversations, prompt/completion or instruction/output fields": f"{path}:5",
        "not valid JSON": f"{path}:6",
    }
    with pytest.raises(LLMKitError, match=r"bad.jsonl:2: no assistant turn"):
        read_conversations(str(path), strict=True)
    with pytest.raises(LLMKitError, match="no such file"):
        read_conversations(str(tmp_path / "missing.jsonl"))


def test_overlong_conversations_are_truncated_or_dropped_and_counted(tok):
    enc = encode_conversation(tok, CONV_EN)
    stats = ChatStats()
    cut = fit_length(enc, len(enc) - 3, "truncate", stats)
    assert len(cut) == len(enc) - 3 and stats.truncated == 1
    assert fit_length(enc, len(enc) - 3, "drop", stats) is None and stats.dropped_long == 1
    assert fit_length(enc, 4, "truncate", stats) is None and stats.dropped_long == 2  # nothing left to learn
    assert fit_length(enc, len(enc), "drop", stats) is enc


def test_mix_weights_and_sources():
    a, b = list(range(100)), [f"b{i}" for i in range(10)]
    out = mix([a, b], [1.0, 1.0], seed=0)
    assert len(out) == 110 and sum(isinstance(x, str) for x in out) == 55
    assert mix([a, b], [1.0, 1.0], seed=0) == out
    assert parse_source("data.jsonl@2.5") == ("data.jsonl", 2.5)
    assert parse_source("hf:org/name:cfg") == ("hf:org/name:cfg", 1.0)
    with pytest.raises(LLMKitError, match="weight must be positive"):
        parse_source("data.jsonl@0")
    with pytest.raises(LLMKitError, match="positive"):
        mix([a], [-1.0], seed=0)


def test_packed_loss_equals_unpacked(tok):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=448, hidden_size=32, num_hidden_layers=2, num_attention_heads=4))
    convs = [CONV_EN, CONV_ZH, CONV_EN[:3], CONV_ZH[:3], CONV_ZH[1:3]]
    encs = [encode_conversation(tok, c) for c in convs]
    seq_len = 2 * max(len(e) for e in encs)
    rows = pack([len(e) for e in encs], seq_len)
    assert len(rows) < len(encs)
    packed = collate([[encs[i] for i in r] for r in rows], seq_len, tok.pad_id, pad_to=seq_len)
    alone = [collate([[e]], seq_len, tok.pad_id) for e in encs]
    with torch.no_grad():
        loss_packed = sft_loss(model, packed) / packed["count"]
        loss_alone = sum(sft_loss(model, b) for b in alone) / sum(b["count"] for b in alone)
    assert packed["count"] == sum(b["count"] for b in alone)
    assert abs(loss_packed.item() - loss_alone.item()) < 1e-5
    # positions restart per conversation; a conversation never attends into another
    first = rows[0]
    n0 = len(encs[first[0]])
    assert packed["position_ids"][0, n0].item() == 0
    assert not packed["attn_mask"][0, 0, n0, :n0].any()
