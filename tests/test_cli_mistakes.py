"""A new user's mistakes and surprises, verb by verb: each is one line naming the file, field or
option and the fix, exit status 2, nothing written; help says what will really happen."""

import argparse
import io
import json

import pytest
import torch

import llmkit
from llmkit.checkpoint import save_checkpoint
from llmkit.cli import build_parser, main
from llmkit.config import ModelConfig
from llmkit.errors import LLMKitError
from llmkit.model.transformer import Transformer

TEXT = "ROMEO: But soft, what light through yonder window breaks? 床前明月光，疑是地上霜。 " * 30


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from llmkit.tokenizer import Tokenizer

    tok = Tokenizer.train([TEXT], vocab_size=320, show_progress=False)
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64
    )
    return save_checkpoint(
        tmp_path_factory.mktemp("ck") / "base", Transformer(cfg), tokenizer=tok, extra_config={"llmkit_stage": "base"}
    )


def one_line(capsys, argv, *needles) -> str:
    """Run the CLI in-process; expect exit 2 and exactly one ``error:`` line holding ``needles``."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


# ------------------------------------------------------------------ decoding options and checkpoint files
def test_a_decoding_option_of_the_wrong_type_is_an_error_not_a_traceback(monkeypatch, capsys, base):
    lm = llmkit.load(base, device="cpu")
    with pytest.raises(LLMKitError, match=r"temperature='abc': must be a number"):
        lm.generate("hi", temperature="abc")
    with pytest.raises(LLMKitError, match=r"max_new_tokens='5': must be an integer"):
        lm.generate("hi", max_new_tokens="5")
    # in a chat, the session goes on: the next line is still answered
    lines = "/params temperature=abc\n/params top_k=1.5\n/save /dev/null/x.json\nROMEO:\n/quit\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert main(["chat", str(base), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "error: temperature='abc': must be a number" in out and "error: top_k=1.5: must be an integer" in out
    assert "error: /dev/null: file exists; check the path" in out
    assert out.count("you> ") == 5


def test_a_config_json_field_of_the_wrong_type_names_the_file_and_field(capsys, base, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in base.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((bad / "config.json").read_text())
    cfg["num_attention_heads"] = "four"
    (bad / "config.json").write_text(json.dumps(cfg))
    one_line(capsys, ["sample", bad, "--prompt", "hi"], "config.json: num_attention_heads must be int, got 'four'")
    with pytest.raises(LLMKitError, match=r"config.json: num_attention_heads"):
        llmkit.load(bad, device="cpu")
    cfg["num_attention_heads"] = 3  # does not divide the width: the file is named too
    (bad / "config.json").write_text(json.dumps(cfg))
    one_line(capsys, ["sample", bad], "config.json: model.num_attention_heads=3 is not divisible")


def test_samples_never_end_in_a_cut_character(base):
    from llmkit.infer.engine import whole_characters

    tok = llmkit.load(base, device="cpu").tokenizer
    byte_token = {b[0]: i for i, b in enumerate(tok.token_byte_strings()) if len(b) == 1}
    ids = [byte_token[b] for b in "霜。".encode()]  # 3 + 3 bytes, one token each
    assert whole_characters(tok, ids) == "霜。"
    assert whole_characters(tok, ids[:5]) == whole_characters(tok, ids[:4]) == "霜"


def test_a_file_given_as_the_checkpoint(capsys, base):
    one_line(capsys, ["sample", base / "model.safetensors"], "is a file", f"did you mean {base}?")


# ------------------------------------------------------------------ generate
def test_generate_options_that_used_to_surprise(capsys, base):
    one_line(capsys, ["generate", base, "--prompt", "hi", "--device", "cuda:99"], "device 'cuda:99' is not available")
    one_line(capsys, ["generate", base, "--prompt", "hi", "--device", "gpu"], "'gpu' is not a device name")
    one_line(capsys, ["generate", base, "--prompt", "hi", "--logprobs", "100000"], "there are only 320 tokens")
    # beam search with the command's own sampling defaults (temperature 0.8, top-k 50) just works
    assert main(["generate", str(base), "--prompt", "hi", "--num-beams", "2", "--max-new-tokens", "3"]) == 0
    # one prompt with --logprobs is JSON (streamed text would drop the log-probabilities)
    assert main(["generate", str(base), "--prompt", "hi", "--logprobs", "2", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(json.loads(out[-1])["completions"][0]["logprobs"]) == 3
    with pytest.raises(SystemExit) as e:
        main(["generate", str(base), "--prompt", "hi", "--batch-size", "0"])
    assert e.value.code == 2 and "--batch-size: 0 must be at least 1" in capsys.readouterr().err


def test_a_prompt_longer_than_the_context_prints_nothing_before_the_error(capfd, base):
    assert main(["generate", str(base), "--prompt", "ROMEO " * 100]) == 2
    out = capfd.readouterr()
    assert out.out == "" and "--truncate" in out.err
    assert main(["sample", str(base), "--prompt", "ROMEO " * 100, "--max-new-tokens", "3", "--truncate"]) == 0


def test_generate_chat_on_a_base_model_warns_and_prints_the_reply_alone(capfd, base):
    assert main(["generate", str(base), "--chat", "--prompt", "PROMPT-TEXT", "--max-new-tokens", "3"]) == 0
    out = capfd.readouterr()
    assert "is a base model" in out.err and "drop --chat" in out.err
    assert "PROMPT-TEXT" not in out.out  # a chat reply is not a continuation of the user's text


# ------------------------------------------------------------------ presets, overrides, validation
def test_no_verb_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "usage: llmkit" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--preset", "/nonexistent/preset.yaml"], "/nonexistent/preset.yaml: preset file not found"),
        (["foo.bar=1"], "error: unknown config section 'foo'; sections: data, "),
        (["train.seq_len=1024"], "train.seq_len=1024 exceeds model.max_position_embeddings=256"),
        (["sample.temperature=-1"], "sample.temperature"),
        (["train.ckpt_every=0"], "train.ckpt_every must be positive"),
        (["train.device=cuda:99"], "train.device 'cuda:99' is not available on this machine; it has:"),
        (["pipeline.stages=[]"], "pipeline.stages is empty"),
        (["pipeline.stages=[data,samples]"], "has no pretrain stage"),
    ],
)
def test_config_mistakes_are_found_before_any_work(capsys, tmp_path, argv, needle):
    one_line(capsys, ["pretrain", "--preset", "cpu-micro", "--run-dir", tmp_path / "run", *argv], needle)
    assert not (tmp_path / "run").exists()


def _all_parsers(parser, path=("llmkit",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*path, name))


def test_help_names_each_default_once_and_only_when_it_says_something():
    for path, parser in _all_parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for bad in ("(default: None)", "(default: [])", "(default: False)"):
            assert bad not in text, f"{' '.join(path)}: {bad}"
        options = parser.format_help().split("\nconfig fields")[0]  # field docs after it may say "(default ...)"
        for line in options.split("\n  -"):
            assert " ".join(line.split()).count("(default") <= 1, f"{' '.join(path)}: {line}"


def test_pretrain_help_shows_the_presets_values(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = capsys.readouterr().out
    assert "values of preset 'cpu-tiny'" in text and "model.num_hidden_layers = 6" in text
    assert "train.optimizer = 'muon'" in text and "bf16 matmul instructions" in text  # what dtype=auto does
    with pytest.raises(SystemExit):
        main(["pretrain", "--preset", "cpu-micro", "--help"])
    assert "model.num_hidden_layers = 2" in capsys.readouterr().out


def test_paths_that_are_files_or_cannot_be_written(capsys, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    one_line(capsys, ["speedrun", "--preset", "cpu-micro", "--run-dir", a_file], "is a file, not a run directory")
    src = tmp_path / "t.txt"
    src.write_text(TEXT, encoding="utf-8")
    one_line(capsys, ["tokenizer", "train", src, "--out", a_file / "tok", "--vocab-size", "300"], str(a_file))


# ------------------------------------------------------------------ tokenizer and data verbs
def test_tokenizer_train_on_a_text_file(capfd, tmp_path):
    src = tmp_path / "t.txt"
    src.write_text(TEXT, encoding="utf-8")
    assert main(["tokenizer", "train", str(src), "--out", str(tmp_path / "tok"), "--vocab-size", "300"]) == 0
    out = capfd.readouterr().out
    assert "on 1 document (" in out and "\n\n" not in out and not out.startswith("\n")


def test_data_stats_names_the_flag_the_command_has(capsys, tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "one"}\n{not json\n{"text": "two"}\n', encoding="utf-8")
    assert main(["data", "stats", str(p)]) == 0
    assert "--strict" in capsys.readouterr().out
