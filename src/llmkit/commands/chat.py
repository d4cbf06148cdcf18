"""``llmkit chat CKPT``: a terminal chat that streams, keeps history and survives Ctrl-C.

A chat model (config.json ``llmkit_stage`` is sft/dpo/ppo/grpo and the tokenizer has a chat
template) gets the conversation in its template; anything else is a base model, and the session is
one running text that the model continues. When the prompt would not leave room for a reply, the
oldest turns (or, for a base model, the oldest tokens) are dropped and the session says so.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import TextIO

from llmkit.errors import LLMKitError, os_error_line

HELP = """commands:
  /system [TEXT]        set the system prompt (no text: show it; chat models only)
  /reset                forget the conversation (keeps the system prompt)
  /params [KEY=VALUE ...]  show or change decoding options, e.g. /params temperature=0.2 top_p=0.9
  /save FILE            write the conversation and options to FILE as JSON
  /help                 this text
  /quit                 leave (Ctrl-D too); Ctrl-C stops a reply that is being written"""

CTRL_C_HINT = "\n(Ctrl-C: type /quit or press Ctrl-D to leave)"


class ChatSession:
    """Conversation state + one streaming reply at a time (the REPL below drives it)."""

    def __init__(self, lm, params, system: str | None = None, notice=print, rag=None, tools=()):
        from llmkit.api import is_chat_model
        from llmkit.infer.engine import chat_stop_ids

        self.lm, self.tok, self.params = lm, lm.tokenizer, params
        # each turn's prompt continues the previous turn: reuse its keys/values instead of prefilling again
        lm.engine.prefixes.capacity = max(lm.engine.prefixes.capacity, 1)
        self.chat = is_chat_model(lm.path, lm.tokenizer)
        self.stop_ids = chat_stop_ids(self.tok) if self.chat else []
        self.system = system
        self.messages: list[dict] = []  # chat model: alternating user/assistant turns
        self.text = ""  # base model: the running text
        self.notice = notice
        self.rag = rag  # a RagIndex: each question is answered from numbered passages, then sources shown
        self.tools = list(tools)  # Tool objects the model may call (the tool loop runs them)

    @property
    def context(self) -> int:
        return self.lm.engine.context

    def _budget(self) -> int:
        """Prompt tokens allowed: the context minus room for a reply (at most half the context)."""
        return self.context - min(self.params.max_new_tokens, self.context // 2)

    def reset(self) -> None:
        self.messages, self.text = [], ""

    def _chat_prompt(self) -> list[int]:
        from llmkit.infer.engine import chat_prompt_ids

        budget, dropped = self._budget(), 0
        while True:
            msgs = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
            ids = chat_prompt_ids(self.tok, msgs)
            if len(ids) <= budget or len(self.messages) <= 1:
                break
            del self.messages[:2]  # the oldest user turn and the reply to it
            dropped += 1
        if dropped:
            self.notice(f"(context full: dropped the oldest {dropped} turn{'s' * (dropped > 1)})")
        if len(ids) > budget:
            self.notice(f"(message longer than the context: kept its last {budget} tokens)")
            ids = ids[-budget:]
        return ids

    def _base_prompt(self, user: str) -> list[int]:
        if self.text and not self.text[-1].isspace():
            self.text += "\n"
        self.text += user
        ids = self.tok.encode(self.text, bos=True)
        budget = self._budget()
        if len(ids) > budget:
            dropped = len(ids) - budget
            ids = [self.tok.bos_id, *ids[-(budget - 1) :]]
            self.text = self.tok.decode(ids[1:]).lstrip("\ufffd")
            self.notice(f"(context full: dropped the oldest {dropped} tokens of the text)")
        return ids

    def respond(self, user: str) -> Iterator[str]:
        """Stream the reply to ``user``; whatever was written (even if interrupted) joins the history."""
        hits = []
        if self.chat and self.rag is not None:
            from llmkit.rag.answer import grounded_messages

            grounded, hits = grounded_messages(self.rag, user, self.tok, self._budget() // 2)
            user = grounded[-1]["content"]
        if self.chat and self.tools:
            yield from self._respond_with_tools(user)
            return
        if self.chat:
            self.messages.append({"role": "user", "content": user})
            ids = self._chat_prompt()
        else:
            ids = self._base_prompt(user)
        params = replace(
            self.params, stop_token_ids=list(self.params.stop_token_ids) + self.stop_ids, truncate_prompt=True
        )
        parts: list[str] = []
        try:
            for out in self.lm.engine.stream(ids, params):
                if out.text:
                    parts.append(out.text)
                    yield out.text
        finally:
            reply = "".join(parts)
            if self.chat:
                self.messages.append({"role": "assistant", "content": reply})
            else:
                self.text += reply
        for i, h in enumerate(hits, 1):
            self.notice(f"{'' if i > 1 else chr(10)}[{i}] {h.chunk.source} ({h.chunk.where})")

    def _respond_with_tools(self, user: str) -> Iterator[str]:
        """One turn through the tool loop: each call and result is shown, then the final reply."""
        import json

        from llmkit.infer.tools import run_tools

        def show(message: dict) -> None:
            for call in message.get("tool_calls") or []:
                fn = call["function"]
                self.notice(f"[{fn['name']} {fn['arguments']}]")
            if message["role"] == "tool":
                self.notice(f"[-> {json.dumps(message['content'], ensure_ascii=False)[1:-1][:300]}]")

        self.messages.append({"role": "user", "content": user})
        history = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        params = replace(self.params, truncate_prompt=True)
        turn = run_tools(self.lm.engine, self.tok, history, self.tools, params, on_message=show)
        self.messages += turn.messages
        yield turn.reply

    def set_params(self, assignments: list[str]) -> None:
        """``["temperature=0.2", "top-p=0.9"]`` -> new validated params (unchanged on error)."""
        import yaml

        from llmkit.infer.sampling import PARAM_NAMES, GenerationError

        kw = {}
        for a in assignments:
            if "=" not in a:
                raise GenerationError(f"{a!r}: write KEY=VALUE, e.g. temperature=0.7")
            key, raw = a.split("=", 1)
            key = key.strip().replace("-", "_")
            if key not in PARAM_NAMES:
                raise GenerationError(f"unknown option {key!r}; known: {', '.join(PARAM_NAMES)}")
            kw[key] = yaml.safe_load(raw)
        self.params = replace(self.params, **kw).validate()

    def describe_params(self) -> str:
        from llmkit.infer.sampling import SamplingParams

        default = SamplingParams()
        return (
            "  ".join(
                f"{f.name}={getattr(self.params, f.name)!r}"
                for f in fields(self.params)
                if getattr(self.params, f.name) != getattr(default, f.name)
                or f.name in ("max_new_tokens", "temperature", "top_k", "top_p")
            )
            or "(defaults)"
        )

    def save(self, path: Path) -> None:
        from llmkit.files import atomic_write_json

        atomic_write_json(
            Path(path),
            {
                "checkpoint": str(self.lm.path),
                "mode": "chat" if self.chat else "base",
                "system": self.system,
                "messages": self.messages if self.chat else None,
                "text": None if self.chat else self.text,
                "params": {f.name: getattr(self.params, f.name) for f in fields(self.params)},
            },
        )


ORDER = 46  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    from llmkit.commands._common import add_model_args
    from llmkit.commands.generate import add_decoding_args

    p = sub.add_parser(
        "chat",
        help="chat with a checkpoint in the terminal (streams; /help inside)",
        description="Chat with a checkpoint. Replies stream as they are written; Ctrl-C stops a "
        "reply without leaving; /help lists the commands. Base models (before SFT) "
        "continue the text plainly.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint directory")
    p.add_argument("--system", default=None, help="system prompt (chat models)")
    p.add_argument("--rag", type=Path, default=None, metavar="INDEX", help="answer from an index (llmkit rag index)")
    p.add_argument(
        "--tools",
        default="",
        metavar="NAMES",
        help="tools the model may call: calculator, python (a sandbox), search (needs --rag); comma-separated",
    )
    add_model_args(p)
    add_decoding_args(p, max_new_tokens=256, temperature=0.8, top_k=50)
    p.set_defaults(func=run)


def run(args, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    from llmkit.commands._common import load_for_inference
    from llmkit.commands.generate import params_from_args

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    params = params_from_args(args)
    lm = load_for_inference(args)

    def say(msg: str) -> None:
        stdout.write(msg + "\n")
        stdout.flush()

    rag, tools = _rag_and_tools(args)
    session = ChatSession(lm, params, system=args.system, notice=say, rag=None if "search" in args.tools else rag,
                          tools=tools)  # fmt: skip
    mode = "chat model" if session.chat else "base model: plain continuation"
    say(f"llmkit chat: {args.checkpoint} ({mode}; context {session.context} tokens). /help for commands.")
    interactive = stdin.isatty()
    while True:
        try:
            if interactive:
                line = input("you> ")
            else:
                stdout.write("you> ")
                line = stdin.readline()
                if not line:
                    raise EOFError
                line = line.rstrip("\n")
        except EOFError:
            say("")
            return 0
        except KeyboardInterrupt:
            say(CTRL_C_HINT)
            continue
        try:
            if _turn(session, line, say, stdout):
                return 0
        except KeyboardInterrupt:  # Ctrl-C while a command ran or its output was printed
            say(CTRL_C_HINT)


def _rag_and_tools(args):
    """The index of ``--rag`` and the Tool objects of ``--tools`` (``search`` = the index as a tool,
    instead of passages in every prompt)."""
    from llmkit.infer.sampling import GenerationError

    rag = None
    if args.rag is not None:
        from llmkit.rag.index import RagIndex

        rag = RagIndex.open(args.rag)
    tools = []
    for name in [n.strip() for n in args.tools.split(",") if n.strip()]:
        if name == "search":
            if rag is None:
                raise GenerationError("--tools search needs an index: add --rag INDEX")
            from llmkit.rag.tool import retrieval_tool

            tools.append(retrieval_tool(rag))
        else:
            from llmkit.infer.tools import ToolError, builtin_tool

            try:
                tools.append(builtin_tool(name))
            except ToolError as e:
                raise GenerationError(f"--tools: {e}") from None
    return rag, tools


def _turn(session: ChatSession, line: str, say, stdout: TextIO) -> bool:
    """One line of input: a /command or a message to answer. True when the user asked to leave."""
    if not line.strip():
        return False
    if line.startswith("/"):
        return _command(session, line, say)
    reply = session.respond(line)
    try:
        for delta in reply:
            stdout.write(delta)
            stdout.flush()
        say("")
    except KeyboardInterrupt:
        reply.close()
        say("\n[stopped]")
    except LLMKitError as e:
        reply.close()
        say(f"error: {e}")
    return False


def _command(session: ChatSession, line: str, say) -> bool:
    """Run a /command; True for /quit."""
    cmd, _, rest = line[1:].partition(" ")
    rest = rest.strip()
    try:
        if cmd in ("quit", "exit", "q"):
            return True
        elif cmd == "help":
            say(HELP)
        elif cmd == "reset":
            session.reset()
            say("(conversation cleared)")
        elif cmd == "system":
            if not session.chat:
                say("(a base model has no system prompt; it continues the text)")
            elif rest:
                session.system = rest
                say("(system prompt set)")
            else:
                say(f"system: {session.system or '(none)'}")
        elif cmd == "params":
            if rest:
                session.set_params(rest.split())
            say(session.describe_params())
        elif cmd == "save":
            if not rest:
                say("usage: /save FILE")
            else:
                session.save(Path(rest))
                say(f"(saved to {rest})")
        else:
            say(f"unknown command /{cmd}; /help lists them")
    except LLMKitError as e:
        say(f"error: {e}")
    except OSError as e:  # /save to a path that cannot be written: the conversation stays
        say(f"error: {os_error_line(e)}")
    return False
