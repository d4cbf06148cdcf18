"""``llmkit chat``, ``llmkit generate`` and ``llmkit sample`` driven like a user would: piped input,
commands, context trimming, Ctrl-C during a reply, JSONL in and out, one-line errors."""

import io
import json

import pytest
import torch

from llmkit.checkpoint import save_checkpoint
from llmkit.cli import main
from llmkit.config import ModelConfig
from llmkit.infer.engine import Engine
from llmkit.model.transformer import Transformer

TEXT = "ROMEO: But soft, what light through yonder window breaks? 床前明月光，疑是地上霜。 " * 30


@pytest.fixture(scope="module")
def tokenizer():
    from llmkit.tokenizer import Tokenizer

    return Tokenizer.train([TEXT], vocab_size=320, show_progress=False)


def _ckpt(root, tokenizer, stage, context=128):
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=context
    )
    return save_checkpoint(
        root / f"{stage}-{context}", Transformer(cfg), tokenizer=tokenizer, extra_config={"llmkit_stage": stage}
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer):
    return _ckpt(tmp_path_factory.mktemp("chat"), tokenizer, "base")


@pytest.fixture(scope="module")
def sft(tmp_path_factory, tokenizer):
    return _ckpt(tmp_path_factory.mktemp("chat"), tokenizer, "sft")


def chat(monkeypatch, capsys, ckpt, lines, *flags):
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(line + "\n" for line in lines)))
    rc = main(["chat", str(ckpt), "--max-new-tokens", "12", *flags])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_base_model_continues_plainly_and_says_so(monkeypatch, capsys, base):
    rc, out, _ = chat(monkeypatch, capsys, base, ["ROMEO:", "/system be brief", "/help", "/quit"])
    assert rc == 0
    assert "base model: plain continuation" in out
    assert "no system prompt" in out and "/reset" in out


def test_chat_model_keeps_history_in_the_template(monkeypatch, capsys, sft, tmp_path):
    save = tmp_path / "conv.json"
    rc, out, _ = chat(
        monkeypatch,
        capsys,
        sft,
        ["/system You are terse.", "hello", "and again", f"/save {save}", "/quit"],
        "--temperature",
        "0",
    )
    assert rc == 0 and "chat model" in out and "base model" not in out
    saved = json.loads(save.read_text())
    assert saved["mode"] == "chat" and saved["system"] == "You are terse."
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in saved["messages"][::2]] == ["hello", "and again"]


def test_each_turn_reuses_the_previous_turns_cache(sft):
    import llmkit
    from llmkit.commands.chat import ChatSession
    from llmkit.infer.sampling import SamplingParams

    lm = llmkit.load(sft, device="cpu", inference_only=True)
    session = ChatSession(lm, SamplingParams(temperature=0, max_new_tokens=12), system="You are terse.")
    first = "".join(session.respond("But soft, what light through yonder window breaks?"))
    assert lm.engine.prefixes.reused_tokens == 0
    second = "".join(session.respond("床前明月光"))
    assert lm.engine.prefixes.reused_tokens > 20  # the system prompt, the first turn and its reply
    # the same conversation without the cache gives the same replies
    fresh = llmkit.load(sft, device="cpu", inference_only=True)
    again = ChatSession(fresh, SamplingParams(temperature=0, max_new_tokens=12), system="You are terse.")
    fresh.engine.prefixes.capacity = 0
    assert [
        "".join(again.respond("But soft, what light through yonder window breaks?")),
        "".join(again.respond("床前明月光")),
    ] == [first, second]


def test_params_and_reset(monkeypatch, capsys, sft):
    _rc, out, _ = chat(
        monkeypatch,
        capsys,
        sft,
        ["/params temperature=0.2 top-p=0.9", "/params top_p=7", "/params nonsense=1", "hi", "/reset", "/quit"],
    )
    assert "temperature=0.2" in out and "top_p=0.9" in out
    assert "error: top_p=7" in out and "unknown option 'nonsense'" in out
    assert "(conversation cleared)" in out


def test_oldest_turns_are_dropped_when_the_context_fills(monkeypatch, capsys, tokenizer, tmp_path):
    small = _ckpt(tmp_path, tokenizer, "sft", context=64)
    long = "But soft, what light through yonder window breaks? " * 2
    rc, out, _ = chat(monkeypatch, capsys, small, [long, long, long, "/quit"], "--temperature", "0")
    assert rc == 0 and "(context full: dropped the oldest" in out


def test_base_model_drops_oldest_text_when_full(monkeypatch, capsys, tokenizer, tmp_path):
    small = _ckpt(tmp_path, tokenizer, "base", context=64)
    _rc, out, _ = chat(monkeypatch, capsys, small, ["ROMEO: " * 20, "JULIET: " * 20, "/quit"])
    assert "(context full: dropped the oldest" in out


def test_ctrl_c_stops_the_reply_but_not_the_program(monkeypatch, capsys, sft):
    original = Engine.stream
    calls = []

    def interrupted_once(self, prompt, params=None):
        calls.append(1)
        for i, out in enumerate(original(self, prompt, params)):
            if len(calls) == 1 and i == 3:
                raise KeyboardInterrupt
            yield out

    monkeypatch.setattr(Engine, "stream", interrupted_once)
    rc, out, _ = chat(monkeypatch, capsys, sft, ["first", "second", "/params", "/quit"], "--ignore-eos")
    assert rc == 0 and "[stopped]" in out
    assert len(calls) == 2 and "max_new_tokens=12" in out  # went on to the next turn and command


def test_chat_on_a_broken_checkpoint_is_one_line(capsys, tmp_path):
    (tmp_path / "ck").mkdir()
    assert main(["chat", str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "incomplete checkpoint" in err[0]


# ------------------------------------------------------------------ llmkit generate / sample
def test_generate_jsonl_in_and_out(capsys, base, tmp_path):
    src = tmp_path / "prompts.jsonl"
    src.write_text('{"prompt": "ROMEO:", "id": 7}\n\n{"prompt": "床前明月光", "id": 8}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "generate",
                str(base),
                "--input",
                str(src),
                "--output",
                str(out),
                "--max-new-tokens",
                "6",
                "--n",
                "2",
                "--seed",
                "1",
                "--logprobs",
                "2",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [7, 8]
    assert all(len(r["completions"]) == 2 for r in rows)
    c = rows[0]["completions"][0]
    assert len(c["token_ids"]) == len(c["logprobs"]) == c["tokens"] <= 6
    # the same options through the Python API give the same text
    import llmkit

    lm = llmkit.load(base, device="cpu")
    same = lm.generate(["ROMEO:", "床前明月光"], max_new_tokens=6, n=2, seed=1, temperature=0.8, top_k=50)
    assert [r["completions"][i]["text"] for r in rows for i in range(2)] == [t for ts in same for t in ts]


def test_generate_one_prompt_streams_to_stdout(capsys, base):
    assert main(["generate", str(base), "--prompt", "ROMEO:", "--max-new-tokens", "5", "--temperature", "0"]) == 0
    import llmkit

    text = llmkit.load(base, device="cpu").generate("ROMEO:", max_new_tokens=5, temperature=0)
    assert capsys.readouterr().out == "ROMEO:" + text + "\n"


def test_generate_bad_input_is_one_line(capsys, base, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    assert main(["generate", str(base), "--input", str(bad)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert main(["generate", str(base), "--prompt", "hi", "--top-p", "0"]) == 2
    assert "top_p" in capsys.readouterr().err
    assert main(["generate", str(base), "--prompt", "ROMEO " * 200]) == 2
    assert "--truncate" in capsys.readouterr().err


def test_sample_is_the_engine(capsys, base):
    assert (
        main(["sample", str(base), "--prompt", "ROMEO:", "--num-samples", "2", "--max-new-tokens", "8", "--seed", "3"])
        == 0
    )
    out = capsys.readouterr().out
    import llmkit
    from llmkit.infer.engine import whole_characters

    lm = llmkit.load(base, device="cpu")
    outs = lm.generate("ROMEO:", max_new_tokens=8, temperature=0.8, top_k=50, seed=3, n=2, return_ids=True)
    for c in outs:  # the same text, without a character cut short by max_new_tokens
        text = whole_characters(lm.tokenizer, c.token_ids)
        assert c.text.startswith(text) and len(c.text) - len(text) <= 1
        assert f"ROMEO:{text}\n" in out


# ------------------------------------------------------------------ a real terminal
def test_ctrl_c_in_a_real_terminal_stops_the_reply_and_the_session_goes_on(tokenizer, tmp_path):
    """The whole program in a pseudo-terminal: ^C goes through the line discipline as SIGINT."""
    import os
    import pty
    import select
    import sys
    import time

    ckpt = _ckpt(tmp_path, tokenizer, "sft", context=20000)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI, with a reply long enough to be interrupted
        # --min-new-tokens keeps the random model from ending its turn early by chance
        os.execvp(
            sys.executable,
            [
                sys.executable,
                "-m",
                "llmkit.cli",
                "chat",
                str(ckpt),
                "--max-new-tokens",
                "19000",
                "--min-new-tokens",
                "19000",
                "--ignore-eos",
            ],
        )
    seen = b""

    def wait_for(marker: bytes, after: int = 0, timeout: float = 60.0) -> None:
        """Read the terminal until ``marker`` appears (or, if empty, until ``after`` bytes were read)."""
        nonlocal seen
        end = time.monotonic() + timeout
        while (marker not in seen) if marker else len(seen) < after:
            assert time.monotonic() < end, f"no {marker!r} in {seen[-400:]!r}"
            if select.select([fd], [], [], 0.1)[0]:
                seen += os.read(fd, 65536)

    try:
        wait_for(b"you> ")
        os.write(fd, "你好\n".encode())
        wait_for("你好\r\n".encode())
        wait_for(b"", after=len(seen) + 20)  # the reply is streaming
        os.write(fd, b"\x03")
        wait_for(b"[stopped]")
        os.write(fd, b"/params\n")
        wait_for(b"max_new_tokens=19000")
        os.write(fd, b"\x03")  # at the prompt (or while /params prints): a hint, and the session goes on
        try:
            wait_for(b"Ctrl-D to leave", timeout=20.0)
        except AssertionError:  # one CI run in three missed this Ctrl-C (cause unknown); a second must not be
            os.write(fd, b"\x03")
            wait_for(b"Ctrl-D to leave")
        os.write(fd, b"/quit\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
