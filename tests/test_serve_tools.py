"""``llmkit serve`` with tools and retrieval, through the ``openai`` client against a real server
process: ``tools`` in, ``tool_calls`` out, the ``tool`` result back in, the final answer; the same
streamed; malformed tools and tool messages refused with 400; ``--rag`` sources in the response.

The model's choices are real weights: a micro chat model trained (by the one Trainer) on the
exact transcripts below, rendered by the real chat template, so greedy decoding writes the call
or the answer that a capable model would; everything after the weights is the production path.
"""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

from serving import API_KEY, TEXT, Server, scripted_checkpoint

pytestmark = pytest.mark.xdist_group("serve_tools")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
ANSWER = "It is 18 C and sunny in Paris."
ROME = [{"role": "user", "content": "And in Rome?"}]
ROME_REPLY = 'Let me check. <tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
CALLED = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ],
}
TRANSCRIPTS = [
    (ASK, [WEATHER], CALL),
    ([*ASK, CALLED, {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}], [WEATHER], ANSWER),
    (ROME, [WEATHER], ROME_REPLY),
]
NO_RAG = {"rag": False}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from llmkit.rag.index import IndexSettings, update_index
    from llmkit.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("serve_tools")
    docs = root / "docs"
    docs.mkdir()
    (docs / "warehouse.md").write_text("# Access\n\nThe access code for the north warehouse is 4417.\n")
    (docs / "公司.txt").write_text("北区仓库的门禁密码是四四一七。\n", encoding="utf-8")
    update_index(root / "idx", [docs], IndexSettings(retrievers=["bm25"]))
    texts = [json.dumps(WEATHER), CALL, ANSWER, ROME_REPLY, "Tools you can call: To call one, write"]
    tok = Tokenizer.train([TEXT, *texts * 20], vocab_size=320, show_progress=False)
    ckpt = scripted_checkpoint(root / "tools", tok, TRANSCRIPTS, steps=60, context=512)
    srv = Server([ckpt, "--served-model-name", "tools", "--api-key", API_KEY, "--rag", root / "idx"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def _ask(client, messages, **kw):
    return client.chat.completions.create(
        model="tools", messages=messages, tools=[WEATHER], temperature=0, max_tokens=48, extra_body=NO_RAG, **kw
    )


def test_tool_call_out_result_in_answer_out(client):
    first = _ask(client, ASK)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    # the client's usual loop: the assistant message as returned, then the tool's result
    messages = [*ASK, choice.message, {"role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"}]
    final = _ask(client, messages)
    assert final.choices[0].message.content == ANSWER and final.choices[0].message.tool_calls is None
    assert final.choices[0].finish_reason == "stop"
    # the tools stay out of the prompt with tool_choice "none": no call comes back
    plain = _ask(client, ASK, tool_choice="none")
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].finish_reason != "tool_calls"
    assert plain.usage.prompt_tokens < first.usage.prompt_tokens
    # a named tool (and "required") begins the call for the model: the same call comes back
    for tool_choice in ({"type": "function", "function": {"name": "get_weather"}}, "required"):
        forced = _ask(client, ASK, tool_choice=tool_choice)
        assert forced.choices[0].finish_reason == "tool_calls", tool_choice
        assert json.loads(forced.choices[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}


def test_streamed_tool_calls_are_assembled_by_the_client(client):
    with client.chat.completions.stream(
        model="tools", messages=ROME, tools=[WEATHER], temperature=0, max_tokens=48, extra_body=NO_RAG
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Rome"}
    # the raw chunks: content first, then the call as one delta with its index, then the finish
    chunks = list(
        client.chat.completions.create(
            model="tools",
            messages=ROME,
            tools=[WEATHER],
            temperature=0,
            max_tokens=48,
            stream=True,
            extra_body=NO_RAG,
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    text = "".join(d.content or "" for d in deltas)
    calls = [tc for d in deltas for tc in d.tool_calls or []]
    assert text == "Let me check." and "<tool_call>" not in text
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id and calls[0].function.name == "get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "body, message",
    [
        ({"tools": "get_weather"}, "tools must be a list of function tools"),
        ({"tools": [{"type": "retrieval"}]}, 'tools[0]: only {"type": "function"'),
        ({"tools": [{"type": "function", "function": {"name": "get weather!"}}]}, "tools[0].function.name must be"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
         "tools[0].function.parameters must be a JSON schema of an object"),
        ({"tools": [WEATHER, WEATHER]}, "a second tool named 'get_weather'"),
        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice 'always' is not one of"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "f"}}},
         "tool_choice names the tool 'f', which is not in tools"),
        ({"tool_choice": "required"}, 'tool_choice "required" needs tools'),
        ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}]},
         "a tool message must follow an assistant message with tool_calls"),
        ({"messages": [*ASK, CALLED, {"role": "tool", "content": "18 C"}]}, "needs the tool_call_id it answers"),
        ({"messages": [*ASK, CALLED, {"role": "tool", "tool_call_id": "call_9", "content": "18 C"}]},
         "tool_call_id 'call_9' answers no call of the assistant message before it (its calls: call_1)"),
        ({"messages": [*ASK, {**CALLED, "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{x"}}]}]},
         "messages[1].tool_calls[0].function.arguments is not valid JSON"),
        ({"messages": [*ASK, {**CALLED, "tool_calls": [{"function": {"name": "f"}}]}]},
         'messages[1].tool_calls[0] must be {"id": ...'),
        ({"messages": [{"role": "user", "content": "hi", "tool_calls": CALLED["tool_calls"]}]},
         "only assistant messages carry tool_calls"),
        ({"rag": True, "messages": ASK, "model": "tools"}, None),
    ],
)  # fmt: skip
def test_malformed_tools_and_tool_messages_get_400(server, body, message):
    body = {"model": "tools", "messages": ASK, "max_tokens": 2, **body}
    r = httpx.post(
        server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    )
    if message is None:  # this server has an index: asking for retrieval is fine
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and message in error["message"], error


def test_openai_client_gets_400_for_a_bad_tool(client):
    with pytest.raises(openai.BadRequestError, match=r"tools\[0\]\.function\.name must be"):
        client.chat.completions.create(
            model="tools", messages=ASK, tools=[{"type": "function", "function": {"name": ""}}], extra_body=NO_RAG
        )


def test_retrieval_returns_the_sources(client):
    reply = client.chat.completions.create(
        model="tools", messages=[{"role": "user", "content": "What code opens the north warehouse?"}], max_tokens=4
    )
    sources = reply.model_extra["sources"]
    assert sources[0]["n"] == 1 and sources[0]["source"].endswith("warehouse.md")
    assert sources[0]["where"] == "lines 1-3" and "4417" in sources[0]["text"]
    # the passages went into the prompt: many more prompt tokens than the question alone
    plain = client.chat.completions.create(
        model="tools",
        messages=[{"role": "user", "content": "What code opens the north warehouse?"}],
        max_tokens=4,
        extra_body=NO_RAG,
    )
    assert "sources" not in plain.model_extra and reply.usage.prompt_tokens > plain.usage.prompt_tokens + 10
    # streamed: the sources come with the first chunk; Chinese finds the Chinese file
    chunks = list(
        client.chat.completions.create(
            model="tools", messages=[{"role": "user", "content": "仓库密码？"}], max_tokens=4, stream=True
        )
    )
    assert chunks[0].model_extra["sources"][0]["source"].endswith("公司.txt")
    assert all("sources" not in c.model_extra for c in chunks[1:])


def test_the_chat_page_shows_the_sources(server):
    """In a real browser, under the page's own Content-Security-Policy: the sources of a reply
    are listed under it, as text, and follow the interface's language."""
    from playwright.sync_api import expect, sync_playwright

    from test_serve_page import CHROMIUM, FLAGS, _install_chromium

    _install_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        page.goto(server.url + "/")
        page.click("#settings-toggle")
        page.fill("#api-key", API_KEY)
        page.press("#api-key", "Tab")
        page.locator("#model option").first.wait_for(state="attached")
        page.fill("#max-tokens", "4")
        page.fill("#input", "What code opens the north warehouse?")
        page.press("#input", "Enter")
        first = page.locator(".msg.assistant .sources li").first
        expect(first).to_have_text(re.compile(r"^\[1\] .*warehouse\.md \(lines 1-3\)$"), timeout=60_000)
        assert "4417" in first.get_attribute("title")
        page.click("#lang")
        expect(page.locator(".msg.assistant .sources .label")).to_have_text("资料来源")
        browser.close()


@pytest.mark.parametrize(
    "reply",
    [ROME_REPLY, CALL, "No call here, <b>but markup</b> <tool", "Let me see.  \n<tool_call>{broken", CALL + CALL, ""],
)
def test_a_streamed_reply_splits_as_the_whole_reply_does(reply):
    """Whatever pieces the text arrives in, the content sent and the calls at the end are what the
    non-streamed response has, and no part of a call is ever sent as content."""
    from llmkit.serve.tools import ToolStream, split_reply, tool_mode

    for tool_choice in (None, "none", {"type": "function", "function": {"name": "get_weather"}}):
        mode = tool_mode([WEATHER], tool_choice, None)
        text = reply[len(mode.prefix) :] if reply.startswith(mode.prefix) else reply
        content, calls = split_reply(mode.prefix + text, mode, "call")
        for size in (1, 2, 5):
            stream = ToolStream(mode, "call")
            sent = "".join(stream.push(text[i : i + size]) for i in range(0, len(text), size))
            rest, streamed_calls = stream.finish()
            assert sent + rest == (content or "") and streamed_calls == calls, (tool_choice, size)
            if calls:
                assert "<tool_call" not in sent
    # two calls in one reply are two calls (parallel_tool_calls is on by default)
    assert len(split_reply(CALL + CALL, tool_mode([WEATHER], None, None), "call")[1]) == 2
