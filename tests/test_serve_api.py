"""``llmkit serve`` through the clients people use: the ``openai`` package (completions, chat,
streaming, logprobs, usage) and plain HTTP for the errors, each answer checked against the same
engine run in this process."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch

import llmkit
from llmkit.infer.engine import chat_prompt_ids, chat_stop_ids
from llmkit.infer.scoring import score
from serving import API_KEY, metric, one_thread

pytestmark = pytest.mark.xdist_group("serve")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def local(serve_models):
    """The talker checkpoint in this process, as the server loads it (fp32), on one thread."""
    with one_thread():
        yield llmkit.load(serve_models["talker"], device="cpu", dtype="float32", inference_only=True)


def auth():
    return {"Authorization": f"Bearer {API_KEY}"}


def test_models_are_listed(client):
    assert [m.id for m in client.models.list().data] == ["talker", "xss", "talker-lora"]
    assert client.models.retrieve("xss").id == "xss"
    assert client.models.retrieve("talker-lora").parent == "talker"


def test_a_lora_adapter_is_served_beside_its_base(client, local, serve_models):
    with one_thread():
        adapted = llmkit.load(
            serve_models["talker"], device="cpu", dtype="float32", adapter=serve_models["talker-lora"]
        )
        want = adapted.generate("Hello world", max_new_tokens=16, temperature=0, ignore_eos=True)
        base = local.generate("Hello world", max_new_tokens=16, temperature=0, ignore_eos=True)
    assert want != base

    def complete(model):
        return client.completions.create(
            model=model, prompt="Hello world", max_tokens=16, temperature=0, extra_body={"ignore_eos": True}
        )

    with ThreadPoolExecutor(4) as pool:  # both at once: each engine steps in turn
        outs = list(pool.map(complete, ["talker-lora", "talker", "talker-lora", "talker"]))
    assert [o.choices[0].text for o in outs] == [want, base, want, base]


def test_completion_equals_the_engine_with_logprobs_and_usage(client, local):
    out = client.completions.create(
        model="talker", prompt="Hello world", max_tokens=12, temperature=0, logprobs=2, extra_body={"ignore_eos": True}
    )
    want = local.generate("Hello world", max_new_tokens=12, temperature=0, ignore_eos=True, logprobs=2, return_ids=True)
    (choice,) = out.choices
    assert choice.text == want.text and choice.finish_reason == "length"
    prompt_ids = local.tokenizer.encode("Hello world", bos=True)
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(prompt_ids), 12)
    assert out.usage.total_tokens == len(prompt_ids) + 12
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 12
    for got, ref, top in zip(lp.token_logprobs, want.logprobs, lp.top_logprobs, strict=True):
        assert got == pytest.approx(ref.logprob, abs=1e-4)
        assert len(top) == 2 and max(top.values()) == pytest.approx(ref.top[0][1], abs=1e-4)
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0


def test_streamed_completion_concatenates_to_the_whole_one(client):
    kw = dict(model="talker", prompt="The quick brown fox", max_tokens=20, temperature=0)
    whole = client.completions.create(**kw).choices[0].text
    chunks = list(client.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_chat_equals_the_engine_and_streams_the_same_reply(client, local):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好，世界"}]
    out = client.chat.completions.create(model="talker", messages=messages, max_tokens=16, temperature=0)
    ids = chat_prompt_ids(local.tokenizer, messages)
    want = local.generate(ids, max_new_tokens=16, temperature=0, stop_token_ids=chat_stop_ids(local.tokenizer))
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == want
    assert out.usage.prompt_tokens == len(ids)
    stream = client.chat.completions.create(
        model="talker",
        messages=messages,
        max_tokens=16,
        temperature=0,
        stream=True,
        logprobs=True,
        top_logprobs=3,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want
    entries = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert entries and all(len(e.top_logprobs) == 3 for e in entries)
    assert all(e.top_logprobs[0].logprob >= e.logprob - 1e-6 for e in entries)  # greedy: the top choice
    assert chunks[-1].usage.prompt_tokens == len(ids)


def test_n_choices_are_seeded_and_reproducible(client):
    kw = dict(model="talker", prompt="Hello", max_tokens=10, temperature=1.0, n=3, seed=7)
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert len({c.text for c in a.choices}) > 1


def test_stop_strings_and_penalties_are_applied(client, local):
    full = client.completions.create(model="talker", prompt="Hello", max_tokens=30, temperature=0).choices[0].text
    cut = full[5:8]
    stopped = client.completions.create(model="talker", prompt="Hello", max_tokens=30, temperature=0, stop=[cut])
    assert stopped.choices[0].text == full[: full.index(cut)] and stopped.choices[0].finish_reason == "stop"
    biased = client.completions.create(
        model="talker",
        prompt="Hello",
        max_tokens=8,
        temperature=0,
        logit_bias={"65": 100},
        extra_body={"ignore_eos": True},
    )
    assert biased.choices[0].text == local.tokenizer.decode([65] * 8)


def test_echo_with_logprobs_scores_the_prompt_like_the_scorer(client, local):
    ids = local.tokenizer.encode("床前明月光，疑是地上霜。", bos=True)
    out = client.completions.create(model="talker", prompt=ids, max_tokens=0, echo=True, logprobs=1, temperature=0)
    lp = out.choices[0].logprobs
    assert lp.token_logprobs[0] is None and len(lp.token_logprobs) == len(ids)
    (ref,) = score(local.model, [(ids[:1], ids[1:])], top_k=1)
    torch.testing.assert_close(torch.tensor(lp.token_logprobs[1:]), torch.tensor(ref.token_logprobs), atol=1e-4, rtol=0)
    assert out.choices[0].text == local.tokenizer.decode(ids, skip_special=True)
    assert out.usage.completion_tokens == 0


def test_tokenize_detokenize_tokenizer_info(server, local):
    tok = local.tokenizer
    r = httpx.post(server.url + "/tokenize", json={"prompt": "你好 world"}, headers=auth()).json()
    assert r["tokens"] == tok.encode("你好 world", bos=True) and r["max_model_len"] == 1024
    r = httpx.post(server.url + "/tokenize", json={"prompt": "你好", "add_special_tokens": False}, headers=auth())
    assert r.json()["tokens"] == tok.encode("你好")
    back = httpx.post(server.url + "/detokenize", json={"tokens": tok.encode("你好 world")}, headers=auth())
    assert back.json()["prompt"] == "你好 world"
    info = httpx.get(server.url + "/tokenizer_info", headers=auth()).json()
    assert info["eos_token"] == "<|eos|>" and info["chat_template"]


def test_health_metrics_and_page_headers(server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "llmkit_http_requests_total",
        "llmkit_prompt_tokens_total",
        "llmkit_generation_tokens_total",
        "llmkit_requests_running",
        "llmkit_requests_waiting",
        "llmkit_time_to_first_token_seconds_bucket",
        "llmkit_time_per_output_token_seconds_bucket",
    ):
        assert name in text
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(server.url + "/web/app.js").headers["x-content-type-options"] == "nosniff"
    assert httpx.get(server.url + "/openapi.json").json()["paths"]["/v1/chat/completions"]


CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "path,body,headers,status,says",
    [
        (CHAT, b'{"messages": [', None, 400, "malformed JSON"),
        (CHAT, b"[1, 2]", None, 422, "JSON object"),
        (CHAT, {"messages": "hi"}, None, 422, "messages"),
        (CHAT, {"messages": MSG, "temperature": "hot"}, None, 422, "temperature"),
        (CHAT, {"messages": MSG, "max_tokens": -5}, None, 422, "max_tokens"),
        (CHAT, {"messages": MSG, "n": 0}, None, 422, "n"),
        (CHAT, {"messages": MSG, "n": 100}, None, 400, "n=100 is more than this server allows (8)"),
        (CHAT, {"messages": MSG, "n": 10**12}, None, 422, "n"),
        (CHAT, {"messages": MSG, "max_tokens": 10**9}, None, 400, "max_tokens=1000000000 is more than"),
        (CHAT, {"messages": MSG, "model": "gpt-9"}, None, 404, "'gpt-9' is not served here"),
        (CHAT, {"messages": MSG}, {}, 401, "missing API key"),
        (CHAT, {"messages": MSG}, {"Authorization": "Bearer wrong"}, 401, "incorrect API key"),
        (CHAT, {"messages": [{"role": "user", "content": "x" * 70000}]}, None, 413, "larger than this server accepts"),
        (CHAT, {"messages": [{"role": "user", "content": "hello " * 1500}]}, None, 400, "context is 1024"),
        (CHAT, {"messages": MSG, "logit_bias": {"abc": 1}}, None, 422, "logit_bias"),
        (CHAT, {"messages": MSG, "logit_bias": {"99999": 1}}, None, 400, "outside the vocabulary"),
        (CHAT, {"messages": MSG, "response_format": {"type": "json_object"}}, None, 400, "not supported"),
        (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, None, 400, "reads text"),
        ("/v1/completions", {"prompt": [1, 5, 99999]}, None, 400, "outside the vocabulary"),
        ("/v1/completions", {"prompt": "hi", "suffix": "end"}, None, 400, "suffix"),
        ("/v1/nothing", {}, None, 404, "no such endpoint"),
    ],
)
def test_bad_requests_get_the_right_4xx_with_a_clear_message(server, path, body, headers, status, says):
    h = auth() if headers is None else headers
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + path, content=content, headers={**h, "Content-Type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert says in err["message"] and err["type"]


def test_openai_client_raises_its_own_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=MSG)
    bad = openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_an_adapter_view_shares_the_base_weights_and_leaves_the_base_alone(serve_models):
    from llmkit.model.inference import prepare_for_inference
    from llmkit.model.lora import lora_layers
    from llmkit.serve.models import adapted_view

    with one_thread():
        lm = llmkit.load(serve_models["talker"], device="cpu", dtype="float32")
        prepare_for_inference(lm.model)
        before = lm.generate("你好", max_new_tokens=12, temperature=0, ignore_eos=True)
        view = adapted_view(lm.model, serve_models["talker-lora"])
        after = lm.generate("你好", max_new_tokens=12, temperature=0, ignore_eos=True)
    base_storage = {p.data_ptr() for p in lm.model.parameters()}
    wrapped = lora_layers(view)
    assert wrapped and all(layer.base_layer.weight.data_ptr() in base_storage for layer in wrapped.values())
    assert view.model.layers[0].mlp.fast is lm.model.model.layers[0].mlp.fast  # untouched blocks share kernels
    assert after == before and not lora_layers(lm.model)


def test_streamed_echo_and_max_tokens_zero(client):
    chunks = list(
        client.completions.create(model="talker", prompt=["你好", "Hi"], max_tokens=0, echo=True, stream=True)
    )
    texts = {c.choices[0].index: c.choices[0].text for c in chunks if c.choices and c.choices[0].text}
    assert texts == {0: "你好", 1: "Hi"}
    ends = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert ends == ["length", "length"]
    plain = client.completions.create(model="talker", prompt="Hi", max_tokens=0)
    assert plain.choices[0].text == "" and plain.usage.completion_tokens == 0


def test_a_follow_up_turn_reuses_the_cached_prefix(client, server):
    before = metric(server.url, "llmkit_prefix_cache_reused_tokens", model="talker")
    history = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 2}]
    first = client.chat.completions.create(model="talker", messages=history, max_tokens=20, temperature=0)
    history += [{"role": "assistant", "content": first.choices[0].message.content}, {"role": "user", "content": "ok"}]
    client.chat.completions.create(model="talker", messages=history, max_tokens=4, temperature=0)
    assert metric(server.url, "llmkit_prefix_cache_reused_tokens", model="talker") - before >= 16


def test_a_long_prompt_is_cut_when_asked(client, local):
    long = "hello " * 1500  # past the 1024-token context
    out = client.completions.create(
        model="talker", prompt=long, max_tokens=4, temperature=0, extra_body={"truncate_prompt_tokens": 100}
    )
    assert out.usage.prompt_tokens == 100


def test_cors_is_off_unless_an_origin_is_allowed(server, serve_models):
    from fastapi.testclient import TestClient

    from llmkit.serve.app import ServerSettings, create_app

    r = httpx.get(server.url + "/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    app = create_app({}, ServerSettings(cors_origins=["http://app.example"]))
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    with TestClient(app) as c:
        r = c.options("/v1/chat/completions", headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"
