"""``GET /metrics``: the server's counters in Prometheus' text format (``prometheus_client``).

Each app has its own registry, so several servers in one process (tests) never share counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_TOKEN_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


disable_created_metrics()  # the *_created series only repeat the start time


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "llmkit_http_requests",
            "HTTP requests answered, by endpoint and status code",
            ["endpoint", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "llmkit_prompt_tokens", "Prompt tokens of accepted requests", ["model"], registry=r
        )
        self.generation_tokens = Counter("llmkit_generation_tokens", "Tokens generated", ["model"], registry=r)
        self.finished = Counter(
            "llmkit_sequences_finished",
            "Generated sequences (choices) that ended, by finish reason (stop, length, cancelled, abort)",
            ["model", "reason"],
            registry=r,
        )
        self.running = Gauge("llmkit_requests_running", "Requests producing tokens", ["model"], registry=r)
        self.waiting = Gauge("llmkit_requests_waiting", "Requests queued, not yet producing tokens", registry=r)
        self.batch = Gauge("llmkit_batch_sequences", "Sequences in the engine's running batch", ["model"], registry=r)
        self.prefix_reused = Gauge(
            "llmkit_prefix_cache_reused_tokens",
            "Prompt tokens whose keys/values came from the prefix cache instead of a prefill",
            ["model"],
            registry=r,
        )
        self.ttft = Histogram(
            "llmkit_time_to_first_token_seconds",
            "From a request's arrival to its first token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "llmkit_time_per_output_token_seconds",
            "Per sequence: (finish - first token) / (tokens - 1)",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
