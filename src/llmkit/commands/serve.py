"""``llmkit serve CKPT [NAME=CKPT ...]``: the OpenAI-compatible API and the chat page, under uvicorn.

Ctrl-C or SIGTERM shuts down gracefully: new requests get 503, running ones finish (or, after
``--shutdown-timeout`` seconds, end with ``finish_reason="abort"``), then the process exits 0. A
second Ctrl-C exits at once.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from llmkit.errors import ConfigError

ORDER = 90  # place in `llmkit --help`: pipeline order

API_KEY_ENV = "LLMKIT_API_KEY"


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve checkpoints over an OpenAI-compatible API, with a chat page",
        description="Serve one or more checkpoints over the OpenAI API (/v1/chat/completions, "
        "/v1/completions, /v1/models, streaming) with continuous batching, and a chat page at /. "
        "Name models with NAME=PATH; clients choose one with the `model` field.",
    )
    p.add_argument("models", nargs="+", metavar="[NAME=]CKPT", help="checkpoint directories (the first is the default)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port; the start-up line names it)")
    p.add_argument(
        "--served-model-name", default=None, help="the name clients use for the (single) model (default: its path)"
    )
    p.add_argument(
        "--lora",
        action="append",
        default=None,
        metavar="NAME=DIR",
        help="also serve a LoRA adapter (PEFT format) as model NAME, on the checkpoint its adapter_config.json "
        "names (else the first); it shares the base's weights (repeatable)",
    )
    p.add_argument(
        "--api-key",
        action="append",
        default=None,
        help=f"require 'Authorization: Bearer KEY' (repeatable; or set {API_KEY_ENV})",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights' dtype; auto = bfloat16 where the hardware computes in it natively, else float32",
    )
    p.add_argument("--rope-scaling", default=None, metavar="TYPE:FACTOR", help="read past the trained context")
    p.add_argument(
        "--rag",
        type=Path,
        default=None,
        metavar="INDEX",
        help="answer chat requests from this index (llmkit rag index): the best passages go into the prompt as "
        'numbered sources, and the response lists them in "sources" (a request may send "rag": false)',
    )
    g = p.add_argument_group("batching (per model)")
    g.add_argument("--max-batch", type=int, default=32, help="sequences decoded together")
    g.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="KV-cache budget: rows x longest (prompt + max_tokens) of the running batch (default: no bound "
        "beyond max-batch x context)",
    )
    g.add_argument(
        "--prefill-budget", type=int, default=2048, help="prompt tokens admitted per step (bounds decode stalls)"
    )
    g.add_argument("--prefix-cache", type=int, default=8, help="finished sequences whose KV is kept for reuse")
    g.add_argument(
        "--kv-cache",
        default="auto",
        choices=["auto", "int8"],
        help="key/value cache storage: int8 holds about a quarter of fp32's bytes (more concurrent "
        "long requests in the same memory) at a small quality cost",
    )
    g = p.add_argument_group("limits")
    g.add_argument("--max-n", type=int, default=16, help="largest n a request may ask for")
    g.add_argument("--max-tokens", type=int, default=None, help="largest max_tokens (default: the context)")
    g.add_argument("--max-prompts", type=int, default=256, help="most prompts in one completions request")
    g.add_argument("--max-queue", type=int, default=256, help="waiting requests beyond this get 429")
    g.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="larger request bodies get 413")
    g.add_argument(
        "--cors-origin", action="append", default=None, help="allow browser calls from this origin (repeatable)"
    )
    g.add_argument(
        "--shutdown-timeout", type=float, default=30.0, help="seconds running requests get to finish at shutdown"
    )
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    p.set_defaults(func=run)


def _check(args) -> None:
    for name in ("max_batch", "prefill_budget", "max_n", "max_prompts", "max_queue", "max_body_bytes"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("max_batch_tokens", "max_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.prefix_cache < 0:
        raise ConfigError(f"--prefix-cache must be >= 0, got {args.prefix_cache}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: use 0..65535")
    if args.served_model_name is not None and len(args.models) != 1:
        raise ConfigError("--served-model-name names a single model; with several, write NAME=PATH for each")
    for spec in args.models:
        path = Path(spec.partition("=")[2] or spec)
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{path}: not a checkpoint directory (no config.json); give a directory that llmkit wrote"
            )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port or --host") from None
    sock.set_inheritable(True)
    return sock


def run(args) -> int:
    import uvicorn

    from llmkit.console import say
    from llmkit.serve.app import ServerSettings, create_app
    from llmkit.serve.models import EngineOptions, load_models
    from llmkit.serve.translate import Limits

    _check(args)
    specs = list(args.models)
    if args.served_model_name:
        specs = [f"{args.served_model_name}={specs[0].partition('=')[2] or specs[0]}"]
    sock = _bind(args.host, args.port)
    options = EngineOptions(
        max_batch=args.max_batch,
        max_batch_tokens=args.max_batch_tokens,
        prefill_budget=args.prefill_budget,
        prefix_cache=args.prefix_cache,
        kv_cache=args.kv_cache,
    )
    rope = None
    if args.rope_scaling:
        from llmkit.model.rope import parse_rope_scaling

        rope = parse_rope_scaling(args.rope_scaling)
    rag = None
    if args.rag is not None:
        from llmkit.rag.index import RagIndex

        rag = RagIndex.open(args.rag)
        if "dense" in rag.settings.retrievers:
            rag.embedder  # noqa: B018 -- load it now: a missing embedder is a start-up error, not a 400 later
    models = load_models(specs, options, device=args.device, dtype=args.dtype, rope_scaling=rope, adapters=args.lora)
    keys = list(args.api_key or [])
    if not keys and os.environ.get(API_KEY_ENV):
        keys = [os.environ[API_KEY_ENV]]
    settings = ServerSettings(
        api_keys=keys,
        limits=Limits(max_n=args.max_n, max_tokens=args.max_tokens, max_prompts=args.max_prompts),
        max_body_bytes=args.max_body_bytes,
        max_queue=args.max_queue,
        cors_origins=list(args.cors_origin or []),
    )
    app = create_app(models, settings, rag=rag)
    scheduler = app.state.scheduler
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=args.access_log,
        timeout_graceful_shutdown=int(args.shutdown_timeout) + 5,
        timeout_keep_alive=5,
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                names = ", ".join(
                    f"{n} ({m.context} tokens{f', LoRA on {m.base}' if m.base else ''})" for n, m in models.items()
                )
                key = "; API key required" if keys else ""
                say(f"serving {names}")
                if rag is not None:
                    say(f"answering chat requests from {args.rag} ({len(rag.chunks)} passages)")
                say(f"chat page: http://{shown}:{port}/   API: http://{shown}:{port}/v1{key}   (Ctrl-C to stop)")

        def handle_exit(self, sig, frame):
            if not self.should_exit:
                say(f"shutting down: finishing running requests (at most {args.shutdown_timeout:g} s)")
                scheduler.drain(args.shutdown_timeout)
            super().handle_exit(sig, frame)
            self._captured_signals.clear()  # a graceful stop is a normal end: exit 0, not by the signal

    Server(config).run(sockets=[sock])
    say("stopped")
    return 0
