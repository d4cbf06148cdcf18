"""The one entry point: ``llmkit <verb> ...``.

This module only parses arguments and dispatches; each verb lives in ``llmkit/commands/<verb>.py``
and exposes ``register(subparsers)``. User mistakes (``LLMKitError``) are printed as one line
and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from llmkit import __version__
from llmkit.errors import LLMKitError, os_error_line


def command_names() -> list[str]:
    """Every verb: the modules of ``llmkit.commands`` (``_``-prefixed ones are shared helpers).
    A module's ``ORDER`` places it in ``--help`` (pipeline order); ties sort by name."""
    import llmkit.commands as package

    names = [m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")]
    modules = {n: importlib.import_module(f"llmkit.commands.{n}") for n in names}
    return sorted(names, key=lambda n: (getattr(modules[n], "ORDER", 100), n))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmkit",
        description="Build a language model end to end: data -> tokenizer -> pretrain -> SFT -> RL -> eval -> serve.",
    )
    parser.add_argument("--version", action="version", version=f"llmkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors (anywhere on the line)")
    sub = parser.add_subparsers(dest="command", metavar="<verb>")
    for name in command_names():
        importlib.import_module(f"llmkit.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug_flag = "--debug" in argv  # accepted anywhere on the line, not only before the verb
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = debug_flag
    if not getattr(args, "func", None):  # no verb: a usage mistake, like any other (exit 2)
        parser.print_help(sys.stderr)
        return 2
    debug = args.debug or os.environ.get("LLMKIT_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except LLMKitError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # the reader of our output left (`llmkit generate ... | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # a path on the command line that cannot be read or written
        if debug:
            raise
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return LLMKitError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
