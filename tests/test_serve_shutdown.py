"""Limits and shutdown of ``llmkit serve``: a full queue answers 429, SIGTERM lets short requests
finish and ends long ones cleanly (``finish_reason="abort"``, then ``[DONE]``) before the process
exits 0, a draining server answers 503, and start-up mistakes are one line with exit status 2."""

import json
import signal
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from llmkit.cli import main
from serving import Server, random_checkpoint, train_tokenizer

pytestmark = pytest.mark.xdist_group("serve-shutdown")

KEY = {"Authorization": "Bearer from-the-environment"}


@pytest.fixture(scope="module")
def long_talker(tmp_path_factory):
    """Random weights with a 4096-token context: a reply can run for thousands of tokens."""
    return random_checkpoint(tmp_path_factory.mktemp("shutdown") / "talker", train_tokenizer(), context=4096)


class Stream(threading.Thread):
    """One streaming completion in a thread: its events; ``hang_up()`` closes the connection."""

    def __init__(self, url: str, max_tokens: int):
        super().__init__(daemon=True)
        self.url, self.max_tokens = url, max_tokens
        self.events: list[str] = []
        self.status = None
        self.started = threading.Event()
        self._hang_up = threading.Event()
        self.start()

    def run(self):
        body = {"prompt": "Hello", "max_tokens": self.max_tokens, "stream": True, "ignore_eos": True}
        with httpx.stream("POST", self.url + "/v1/completions", json=body, headers=KEY, timeout=120) as r:
            self.status = r.status_code
            for line in r.iter_lines():
                if line.startswith("data: "):
                    self.events.append(line[6:])
                    self.started.set()
                if self._hang_up.is_set():
                    return

    def hang_up(self):
        self._hang_up.set()
        self.join(30)

    def finish_reasons(self):
        chunks = [json.loads(e) for e in self.events if e != "[DONE]"]
        return [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]


def wait_metric(url: str, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in httpx.get(url + "/metrics").text:
        assert time.monotonic() < deadline, f"{text!r} never appeared in /metrics"
        time.sleep(0.01)


def test_full_queue_gets_429_and_sigterm_ends_every_stream_cleanly(long_talker):
    srv = Server(
        [long_talker, "--max-batch", "3", "--max-queue", "1", "--shutdown-timeout", "4", "--device", "cpu"],
        env={"LLMKIT_API_KEY": "from-the-environment"},
    )
    try:
        assert httpx.get(srv.url + "/v1/models").status_code == 401  # the key came from the environment
        # three long streams fill the batch, a fourth waits: the queue is full
        longs = [Stream(srv.url, 4000) for _ in range(3)]
        assert all(s.started.wait(60) for s in longs)
        queued = Stream(srv.url, 4000)
        wait_metric(srv.url, "llmkit_requests_waiting 1.0")
        r = httpx.post(srv.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 5}, headers=KEY, timeout=30)
        assert r.status_code == 429 and r.headers["retry-after"] and "busy" in r.json()["error"]["message"]

        # two running clients hang up: the waiting request takes a freed row, a short one the other,
        # and both are running at SIGTERM
        for s in longs[1:]:
            s.hang_up()
        wait_metric(srv.url, 'llmkit_batch_sequences{model="' + str(long_talker) + '"} 2.0')
        assert queued.started.wait(60)
        short = Stream(srv.url, 60)
        assert short.started.wait(60)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(60) == 0
        for s in (longs[0], queued, short):
            s.join(30)
            assert s.status == 200 and s.events[-1] == "[DONE]"
        assert short.finish_reasons() == ["length"]  # it finished within the grace period
        assert longs[0].finish_reasons() == queued.finish_reasons() == ["abort"]  # cut at its end, cleanly
        assert srv.wait_log("shutting down") and srv.wait_log("stopped")
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url + "/health", timeout=5)
    finally:
        srv.stop(signal.SIGKILL)


def test_a_draining_server_answers_503(long_talker):
    import llmkit
    from llmkit.serve.app import create_app
    from llmkit.serve.models import EngineOptions, serve_model

    lm = llmkit.load(long_talker, device="cpu", inference_only=True)
    app = create_app({"m": serve_model("m", long_talker, lm, EngineOptions())})
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        app.state.scheduler.drain(5)
        assert client.get("/health").status_code == 503
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 503 and "shutting down" in r.json()["error"]["message"]


def test_start_up_mistakes_are_one_line(long_talker, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a checkpoint directory" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(long_talker), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot listen on 127.0.0.1" in err
    assert main(["serve", str(long_talker), "--max-batch", "0"]) == 2
    assert "--max-batch must be at least 1" in capsys.readouterr().err
