"""Tools: the calculator refuses everything but arithmetic, the sandbox contains code, calls are
parsed (malformed ones answered with an error), and the loop runs rounds through a real engine."""

from __future__ import annotations

import json

import pytest

from llmkit.infer.tools import Tool, ToolError, format_call, parse_tool_calls, run_call, run_tools
from llmkit.infer.tools.calculator import CALCULATOR, MAX_DIGITS, calculate
from llmkit.infer.tools.sandbox import SandboxLimits, run_python


@pytest.mark.parametrize(
    "expression, result",
    [
        ("1234*5678", "7006652"),
        ("(3+4)**2/7", "7"),
        ("2^10", "1024"),
        ("5!", "120"),
        ("(2+1)! * 2", "12"),
        ("３×４＋１０÷５", "14"),
        ("-7 // 2", "-4"),
        ("7 % 3", "1"),
        ("sqrt(2)", "1.41421356237"),
        ("round(pi, 3)", "3.142"),
        ("max(3, 9, 4) - gcd(12, 18)", "3"),
        ("0.1 + 0.2", "0.3"),
        ("12345678901234567890 * 98765432109876543210", "1219326311370217952237463801111263526900"),
    ],
)
def test_calculator_computes(expression, result):
    assert calculate(expression) == result


@pytest.mark.parametrize(
    "expression, message",
    [
        ("__import__('os')", "calling '__import__' is not allowed"),
        ("__import__('os').system('ls')", "an attribute is not arithmetic"),
        ("x + 1", "unknown name 'x'"),
        ("(1).__class__", "an attribute is not arithmetic"),
        ("[i for i in range(9)]", "a comprehension is not arithmetic"),
        ("open('f')", "calling 'open' is not allowed"),
        ("'a' * 3", "'a' is not a number"),
        ("9**9**9", "digits; the limit is"),
        ("2**100000", "digits; the limit is"),
        ("100000!", "has more than"),
        ("factorial(10**6)", "has more than"),
        ("1/0", "division by zero"),
        ("2 ** -1000000 + 1e308 * 10", "too large"),
        ("1 if 2 else 3", "a conditional is not arithmetic"),
        ("lambda: 1", "a lambda is not arithmetic"),
        ("1 << 3", "bitwise operators are refused"),
        ("1 +", "cannot parse"),
        ("9" * 600, "the limit is 500"),
        ("", "give an arithmetic expression"),
    ],
)
def test_calculator_refuses_what_is_not_arithmetic(expression, message):
    with pytest.raises(ToolError, match=message.replace("(", r"\(").replace("*", r"\*")):
        calculate(expression)


def test_calculator_result_size_is_capped():
    big = "9" * 160
    assert len(calculate(f"({big}*{big})**3")) == 960
    with pytest.raises(ToolError, match=f"more than {MAX_DIGITS} digits"):
        calculate(f"({big}*{big})**3 * {big}")


def test_tool_calls_are_parsed_and_malformed_ones_answered_with_errors():
    tools = {"calculator": CALCULATOR}
    text = "Let me compute. " + format_call("calculator", {"expression": "37*8"})
    content, (call,) = parse_tool_calls(text, tools)
    assert content == "Let me compute." and call.name == "calculator" and call.error is None
    assert run_call(call, tools) == "296"
    assert json.loads(call.to_openai()["function"]["arguments"]) == {"expression": "37*8"}
    for bad, message in [
        ('<tool_call>{"name": "calculator", "arguments": {"expression": "37*8"</tool_call>', "not valid JSON"),
        ('<tool_call>{"arguments": {}}</tool_call>', 'needs a "name"'),
        ('<tool_call>{"name": "weather", "arguments": {}}</tool_call>', "no tool 'weather'; tools: calculator"),
        ('<tool_call>{"name": "calculator", "arguments": {}}</tool_call>', "missing argument 'expression'"),
        ('<tool_call>{"name": "calculator", "arguments": {"expression": 5}}</tool_call>', "must be a string"),
        ('<tool_call>{"name": "calculator", "arguments": {"expr": "1"}}</tool_call>', "unknown argument 'expr'"),
        ('<tool_call>{"name": "calculator", "arguments": {"expression": "x"}}</tool_call>', "unknown name 'x'"),
        ('<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"2+2\\"}"}', None),
    ]:
        _, (call,) = parse_tool_calls(bad, tools)
        result = run_call(call, tools)
        if message is None:
            assert result == "4"  # arguments as a JSON string, unterminated block: still understood
        else:
            assert result.startswith("error: ") and message in result, result
    broken = Tool("boom", "fails", {"type": "object", "properties": {}}, lambda a: 1 / 0)
    _, (call,) = parse_tool_calls('<tool_call>{"name": "boom"}</tool_call>', {"boom": broken})
    assert run_call(call, {"boom": broken}) == "error: boom failed (ZeroDivisionError: division by zero)"


def test_sandbox_runs_code_and_contains_it():
    limits = SandboxLimits(cpu_seconds=2, wall_seconds=20)
    r = run_python("print(sum(i * i for i in range(10)))", limits)
    assert (r.reason, r.stdout) == ("ok", "285\n")
    r = run_python("open('note.txt', 'w').write('kept'); print(open('note.txt').read())", limits)
    assert r.stdout == "kept\n"
    net = run_python(
        "import socket\n"
        "for host, port in [('127.0.0.1', 22), ('1.1.1.1', 53)]:\n"
        "    s = socket.socket(); s.settimeout(3)\n"
        "    try:\n        s.connect((host, port)); print('connected')\n"
        "    except OSError as e:\n        print('refused', e.errno)\n",
        limits,
    )
    assert "connected" not in net.stdout and net.stdout.count("refused") == 2, net
    for path in ("/tmp/llmkit-sandbox-escape.txt", "/root/escape.txt", "/work/escape.txt"):
        r = run_python(f"open({path!r}, 'w').write('x')", limits)
        assert r.reason == "error" and "PermissionError" in r.stderr, r
    r = run_python("print(open('/etc/passwd').read())", limits)
    assert r.reason == "error" and "PermissionError" in r.stderr
    r = run_python("x = bytearray(4 * 1024**3)", SandboxLimits(memory_mb=256))
    assert r.reason == "error" and "MemoryError" in r.stderr
    r = run_python("while True: pass", SandboxLimits(cpu_seconds=1, wall_seconds=4))
    assert r.reason in ("cpu", "timeout")
    r = run_python("print('x' * 100000)", SandboxLimits(output_chars=100))
    assert r.stdout.endswith("[output truncated]") and len(r.stdout) < 200


class ScriptedEngine:
    """Stands in for the model's choices only: returns the given replies in turn and records the
    prompts, which are rendered by the real tokenizer and chat template (with tools and results)."""

    def __init__(self, tok, replies: list[str]):
        self.tok, self.replies, self.prompts = tok, list(replies), []

    def generate(self, prompts, params):
        from llmkit.infer.engine import Completion

        out = []
        for prompt in prompts:
            self.prompts.append(self.tok.decode(prompt))
            text = self.replies.pop(0)
            for stop in params.stop:  # the engine withholds a stop string and what follows it
                text = text.split(stop)[0]
            out.append([Completion(text, [], "stop", len(prompt))])
        return out


@pytest.fixture(scope="module")
def tok():
    from llmkit.tokenizer import Tokenizer

    return Tokenizer.train(["calculator expression tool_call Answer: 296 0123456789"] * 20, 300, show_progress=False)


def test_the_loop_runs_tool_rounds_and_answers_errors(tok):
    from llmkit.infer.sampling import SamplingParams

    replies = [
        "Let me compute. " + format_call("calculator", {"expression": "37*"}),  # malformed: an error comes back
        format_call("calculator", {"expression": "37*8"}),
        "Answer: 296",
    ]
    engine, seen = ScriptedEngine(tok, replies), []
    turn = run_tools(
        engine,
        tok,
        [{"role": "user", "content": "What is 37*8?"}],
        [CALCULATOR],
        SamplingParams(),
        on_message=seen.append,
    )
    roles = [m["role"] for m in turn.messages]
    assert roles == ["assistant", "tool", "assistant", "tool", "assistant"] and seen == turn.messages
    assert turn.messages[0]["content"] == "Let me compute."
    assert turn.messages[1]["content"].startswith("error: cannot parse '37*'")
    assert turn.messages[3]["content"] == "296" and turn.reply == "Answer: 296" and turn.rounds == 2
    call = turn.messages[2]["tool_calls"][0]
    assert call["function"]["name"] == "calculator" and turn.messages[3]["tool_call_id"] == call["id"]
    # what the model saw last: the tools listed, its own calls and both results, in the template
    last = engine.prompts[-1]
    assert '{"name": "calculator", "description"' in last.split("<|user|>")[0]
    assert (
        last.split("<|user|>")[1].count("<tool_call>") == 2
        and "<|tool|>\n296<|end|>" in last
        and last.endswith("<|assistant|>\n")
    )


def test_the_batched_loop_answers_each_conversation_as_alone(tok):
    from llmkit.infer.sampling import SamplingParams
    from llmkit.infer.tools.runner import run_tools_batch

    call = format_call("calculator", {"expression": "37*8"})
    asks = [[{"role": "user", "content": "What is 37*8?"}], [{"role": "user", "content": "Say 5."}]]
    # round 1 answers both (the first with a call), round 2 only the one still calling
    engine = ScriptedEngine(tok, [call, "Answer: 5", "Answer: 296"])
    turns = run_tools_batch(engine, tok, asks, [[CALCULATOR], [CALCULATOR]], SamplingParams(), max_rounds=2)
    alone = [
        run_tools(ScriptedEngine(tok, replies), tok, ask, [CALCULATOR], SamplingParams(), max_rounds=2)
        for ask, replies in zip(asks, [[call, "Answer: 296"], ["Answer: 5"]], strict=True)
    ]
    assert [t.messages for t in turns] == [t.messages for t in alone]
    assert [t.reply for t in turns] == ["Answer: 296", "Answer: 5"] and [t.rounds for t in turns] == [1, 0]
    assert len(engine.prompts) == 3


def test_the_loop_stops_after_max_rounds(tok):
    from llmkit.infer.sampling import SamplingParams

    call = format_call("calculator", {"expression": "1+1"})
    engine = ScriptedEngine(tok, [call, call, call])
    turn = run_tools(engine, tok, [{"role": "user", "content": "loop"}], [CALCULATOR], SamplingParams(), max_rounds=2)
    assert turn.rounds == 2 and turn.finish_reason == "tool_rounds" and turn.messages[-1]["role"] == "assistant"


def test_template_renders_openai_tool_messages_like_transformers(tok, tmp_path):
    from transformers import AutoTokenizer

    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "37*8?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c0",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "37*8"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c0", "content": "296"},
        {"role": "assistant", "content": "Answer: 296"},
    ]
    tok.save(tmp_path)
    ours = tok.apply_chat_template(msgs, tools=[CALCULATOR.schema()])
    theirs = AutoTokenizer.from_pretrained(tmp_path).apply_chat_template(
        msgs, tools=[CALCULATOR.schema()], tokenize=False
    )
    assert ours == theirs
    assert (
        '<|assistant|>\n<tool_call>{"name": "calculator", "arguments": {"expression": "37*8"}}</tool_call><|end|>'
        in ours
    )
    assert ours.startswith("<|bos|><|system|>\nBe brief.\n\nTools you can call:") and ours.count("<|system|>") == 1
    assert tok.apply_chat_template(msgs[1:2]) == "<|bos|><|user|>\n37*8?<|end|>\n"  # no tools: as before


def test_grounded_citation_task_checks_answer_and_source_number():
    from llmkit.tasks import get_task
    from llmkit.tasks.grounded import cited, grounded_prompt

    task = get_task("rag_cite")
    train, test = task.make("train", 200, seed=0), task.make("test", 50, seed=0)
    assert not {e.meta["key"] for e in train} & {e.meta["key"] for e in test}
    assert {e.lang for e in train} == {"en", "zh"} and any(e.meta["cite"] == 0 for e in train)
    for e in train[:40]:
        assert task.verify(e, e.solution)
        n = e.meta["cite"]
        if n:
            value = e.answer.split(" [")[0]
            assert e.answer == f"{value} [{n}]" and value in e.prompt.split(f"[{n}]")[1].split("\n")[0]
            assert not task.verify(e, e.solution.replace(f"[{n}]", f"[{n % 3 + 1}]"))  # wrong source
            assert not task.verify(e, e.solution.replace(f" [{n}]", ""))  # no citation
        else:
            assert not task.verify(e, "Answer: 1234 [1]")
    assert grounded_prompt("Q?", ["a", "b"]) == "Sources:\n[1] a\n[2] b\nQuestion: Q?"
    assert cited("Answer: 12 [2] and [3]") == [2, 3]


def test_calculator_tasks_teach_the_call_and_the_loop_answers_them(tok):
    from llmkit.config import ModelConfig
    from llmkit.data.chat import encode_conversation
    from llmkit.model.transformer import Transformer
    from llmkit.tasks import get_task, to_messages
    from llmkit.tasks.runner import evaluate_tasks

    calc, skip = get_task("calc_mul3"), get_task("tool_compare2")
    ex = calc.make("train", 5, seed=1)[0]
    msgs = to_messages(ex)
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant"]
    expression = json.loads(msgs[1]["tool_calls"][0]["function"]["arguments"])["expression"]
    assert msgs[2]["content"] == ex.answer == calculate(expression)
    enc = encode_conversation(tok, msgs, ex.meta["tools"])
    learned = tok.decode([i for i, m in zip(enc.ids, enc.mask, strict=True) if m])
    assert learned.startswith("<tool_call>") and learned.endswith(f"{ex.solution}<|end|>")  # not the result
    assert [m["role"] for m in to_messages(skip.make("train", 1)[0])] == ["user", "assistant"]
    # the runner answers tool examples through the loop (a random model: the path, not the skill)
    import torch

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      max_position_embeddings=1024)  # fmt: skip
    model = Transformer(cfg).eval()
    items = calc.make("test", 2) + skip.make("test", 1)
    with_tools = evaluate_tasks(model, tok, items, mode="chat")
    without = evaluate_tasks(model, tok, items, mode="chat", tools=False)
    assert len(with_tools.responses) == len(without.responses) == 3
    assert set(with_tools.scores) == {"calc_mul3", "tool_compare2"}
