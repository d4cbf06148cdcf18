"""Continuous batching seen from clients: concurrent greedy requests give exactly what they give
one at a time (and what the engine gives in-process), a late short request is not held behind long
ones, and a client that hangs up frees its batch row."""

import asyncio
import time

import httpx
import openai
import pytest

import llmkit
from serving import API_KEY, metric, one_thread

pytestmark = pytest.mark.xdist_group("serve")

PROMPTS = [
    "Hello",
    "你好，世界",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "床前明月光",
    "😀🎉",
    "a",
    "Hello world, this is a test of the server.",
    "举头望明月，低头思故乡。",
    "The lazy dog",
    "test " * 20,
    "疑是地上霜",
    "fox",
    "The quick brown fox jumps over the lazy dog. 你好",
    "world",
    "server " * 7,
    "低头",
]


def aclient(server):
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)


def test_16_concurrent_greedy_requests_equal_the_same_requests_one_at_a_time(server, serve_models):
    lengths = [8 + 2 * i for i in range(len(PROMPTS))]

    async def one(client, prompt, n):
        r = await client.completions.create(
            model="talker", prompt=prompt, max_tokens=n, temperature=0, extra_body={"ignore_eos": True}
        )
        return r.choices[0].text

    async def together():
        async with aclient(server) as c:
            return await asyncio.gather(*(one(c, p, n) for p, n in zip(PROMPTS, lengths, strict=True)))

    async def in_turn():
        async with aclient(server) as c:
            return [await one(c, p, n) for p, n in zip(PROMPTS, lengths, strict=True)]

    batched = asyncio.run(together())
    alone = asyncio.run(in_turn())
    assert batched == alone
    lm = llmkit.load(serve_models["talker"], device="cpu", dtype="float32", inference_only=True)
    with one_thread():
        engine = [
            lm.generate(p, max_new_tokens=n, temperature=0, ignore_eos=True)
            for p, n in zip(PROMPTS, lengths, strict=True)
        ]
    assert batched == engine


def test_a_late_short_request_gets_its_first_token_before_long_ones_finish(server):
    async def stream(client, prompt, n, marks):
        s = await client.completions.create(
            model="talker", prompt=prompt, max_tokens=n, temperature=0, stream=True, extra_body={"ignore_eos": True}
        )
        async for chunk in s:
            if chunk.choices and chunk.choices[0].text:
                marks.setdefault("first", time.monotonic())
        marks["done"] = time.monotonic()

    async def main():
        async with aclient(server) as c:
            longs = [{} for _ in range(4)]
            tasks = [asyncio.create_task(stream(c, PROMPTS[i], 700, longs[i])) for i in range(4)]
            while not all("first" in m for m in longs):  # the long ones are running
                await asyncio.sleep(0.01)
            short = {}
            await stream(c, "Hello", 4, short)
            await asyncio.gather(*tasks)
            return longs, short

    longs, short = asyncio.run(main())
    assert short["first"] < min(m["done"] for m in longs)
    assert short["done"] < min(m["done"] for m in longs)


def test_a_client_that_disconnects_frees_its_row_and_the_batch_fills_again(server):
    url = server.url + "/v1/completions"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    cancelled = metric(server.url, "llmkit_sequences_finished_total", model="talker", reason="cancelled")
    body = {"model": "talker", "prompt": "Hello", "max_tokens": 1000, "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=60) as c:
        for _ in range(6):
            with c.stream("POST", url, json=body, headers=headers) as r:
                next(r.iter_lines())  # the first event arrived: the request is running
            # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 30
    while metric(server.url, "llmkit_batch_sequences", model="talker") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(server.url, "llmkit_batch_sequences", model="talker") == 0
    assert metric(server.url, "llmkit_sequences_finished_total", model="talker", reason="cancelled") == cancelled + 6

    # the freed rows are usable: 16 new requests run together, the full batch
    async def fill():
        async with aclient(server) as client:
            seen = 0

            async def watch():
                nonlocal seen
                while True:
                    now = await asyncio.to_thread(metric, server.url, "llmkit_batch_sequences", model="talker")
                    seen = max(seen, now)
                    await asyncio.sleep(0.02)

            w = asyncio.create_task(watch())
            await asyncio.gather(
                *(
                    client.completions.create(
                        model="talker", prompt=p, max_tokens=400, temperature=0, extra_body={"ignore_eos": True}
                    )
                    for p in PROMPTS
                )
            )
            w.cancel()
            return seen

    assert asyncio.run(fill()) == 16
