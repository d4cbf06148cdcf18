"""The one entry point: ``llmkit <verb> ...``.

This module only parses arguments and dispatches; each verb lives in ``llmkit/commands/<verb>.py``
and exposes ``register(subparsers)``. User mistakes (``LLMKitError``) are printed as one line
and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from llmkit import __version__
from llmkit.errors import LLMKitError

COMMANDS = ["data", "tokenizer", "pretrain", "sample", "speedrun", "generate", "chat"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmkit",
        description="Build a language model end to end: data -> tokenizer -> pretrain -> sample.",
    )
    parser.add_argument("--version", action="version", version=f"llmkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors (anywhere on the line)")
    sub = parser.add_subparsers(dest="command", metavar="<verb>")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"llmkit.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"llmkit.commands.{name}":
                continue  # a verb that is not part of this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug_flag = "--debug" in argv  # accepted anywhere on the line, not only before the verb
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = debug_flag
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    debug = args.debug or os.environ.get("LLMKIT_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except LLMKitError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
