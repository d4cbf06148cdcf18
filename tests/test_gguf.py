"""GGUF export against the real llama.cpp (llama-cpp-python): same tokens, same logits, same
greedy text, same chat prompt; and one-line errors for what cannot be exported faithfully."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from llmkit.checkpoint import save_checkpoint
from llmkit.config import ModelConfig
from llmkit.export.gguf import export_gguf
from llmkit.infer.engine import Engine
from llmkit.infer.sampling import SamplingParams
from llmkit.model.transformer import Transformer
from llmkit.tokenizer import Tokenizer

llama_cpp = pytest.importorskip("llama_cpp")  # a test dependency ([test] extra); built from source
pytestmark = pytest.mark.xdist_group("gguf")

TEXT = (
    "ROMEO: But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.\n"
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。我们今天在公园学习音乐，明天去北京工作。\n"
    "In 2024 we shipped 1,234,567 units at $3.99 each; see https://example.com/a_b?c=1.\n"
    "def f(x):\n    return x  # indented code\n\n\t tabs and   runs   of spaces  \n"
)
SAMPLES = {
    "english": "To be, or not to be: that is the question.",
    "chinese": "春眠不觉晓，处处闻啼鸟。",
    "mixed": "Hello 世界, 你好 world! 第3章 chapter 3",
    "digits": "3.14159 and 2024-11-30, 1000000",
    "whitespace": "a  b   c\n\n\n\t\t d    \r\n e ",
    "emoji": "I ❤️ 🦙s 👩‍👩‍👧 and 🇨🇳",
    "specials": "<|user|>\nhi<|end|>\n<|assistant|>\n",
}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "llmkit.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small random Llama-layout model with a trained bilingual tokenizer, exported as f32 and q8_0."""
    root = tmp_path_factory.mktemp("gguf")
    tok = Tokenizer.train([TEXT * 30], vocab_size=420, show_progress=False)
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=448,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.3,  # peaked next-token distributions: no near-ties for greedy to flip on
    )
    model = Transformer(cfg).eval()
    save_checkpoint(root / "ckpt", model, tok)
    r = cli("export", "gguf", root / "ckpt", "--type", "f32", "--out", root / "f32" / "model.gguf")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "pre-tokenizer qwen2" in r.stdout
    export_gguf(root / "ckpt", root / "q8_0" / "model.gguf", "q8_0")
    return root, model, tok


def open_gguf(path):
    """llama.cpp with an f32 KV cache (its default f16 cache rounds keys and values)."""
    f32 = 0  # GGML_TYPE_F32
    return llama_cpp.Llama(
        str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=2, seed=0, type_k=f32, type_v=f32
    )


def llama_greedy(llm, prompt: list[int], n: int) -> tuple[list[int], np.ndarray]:
    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([out[-1]])
    return out, np.array(llm.scores[: llm.n_tokens])


def test_llama_cpp_tokenizes_like_llmkit(exported):
    root, _model, tok = exported
    llm = open_gguf(root / "f32" / "model.gguf")
    for name, text in SAMPLES.items():
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok.encode(text), name
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok.encode(text, bos=True), name
        assert llm.detokenize(tok.encode(text), special=True).decode() == text, name


def test_f32_greedy_and_logits_match_and_q8_0_agrees_first(exported):
    root, model, tok = exported
    prompt = tok.encode("ROMEO: 床前", bos=True)
    ours = Engine(model, tok).generate([prompt], SamplingParams(max_new_tokens=64, temperature=0, ignore_eos=True))
    ours = ours[0][0].token_ids
    theirs, scores = llama_greedy(open_gguf(root / "f32" / "model.gguf"), prompt, 64)
    assert theirs == ours
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ours]))[0].numpy()  # (T, V)
    np.testing.assert_allclose(scores[: len(prompt) + 63], logits[: len(prompt) + 63], atol=1e-3, rtol=0)
    q8, _ = llama_greedy(open_gguf(root / "q8_0" / "model.gguf"), prompt, 8)
    assert q8 == ours[:8]


def test_chat_template_and_modelfile(exported):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    root, _model, tok = exported
    llm = open_gguf(root / "f32" / "model.gguf")
    template = llm.metadata["tokenizer.chat_template"]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "你好，who are you?"},
        {"role": "assistant", "content": "A model."},
        {"role": "user", "content": "2+2?"},
    ]
    formatter = Jinja2ChatFormatter(template, eos_token="<|eos|>", bos_token="<|bos|>")
    assert formatter(messages=messages).prompt == tok.apply_chat_template(messages, add_generation_prompt=True)
    modelfile = (root / "f32" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf\n")
    assert 'PARAMETER stop "<|end|>"' in modelfile and "<|{{ .Role }}|>" in modelfile


def test_export_errors_are_one_line(exported, tmp_path):
    from llmkit.errors import LLMKitError

    root, model, _tok = exported
    r = cli("export", "gguf", root / "ckpt", "--type", "q4_k", "--out", tmp_path / "m.gguf")
    lines = [line for line in r.stderr.strip().splitlines() if line.startswith("error: ")]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "q4_k" in lines[0] and "q8_0" in lines[0]
    other = Tokenizer.train([TEXT * 30], vocab_size=420, show_progress=False, pre_tokenizer="llmkit")
    save_checkpoint(tmp_path / "cjk", model, other)
    for args, needle in (
        ((root / "ckpt", root / "f32" / "model.gguf"), "--force"),
        ((tmp_path / "cjk", tmp_path / "m.gguf"), "tokenizer.pre_tokenizer=qwen2"),
    ):
        with pytest.raises(LLMKitError) as e:
            export_gguf(*args)
        assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "m.gguf").exists()
