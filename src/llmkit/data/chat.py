"""Conversations for instruction tuning: reading every common shape, the loss mask, packing, mixing.

Reading (:func:`read_conversations`): JSONL, JSON lists, Parquet, saved ``datasets`` directories
and ``hf:NAME[:CONFIG]`` hub datasets, whose records are any of

* OpenAI ``{"messages": [{"role", "content"}, ...]}`` (system, user, assistant, tool);
* ``{"prompt", "completion"}`` (prompt may itself be a message list);
* Alpaca ``{"instruction", "input", "output"}`` (``system`` optional);
* ShareGPT ``{"conversations": [{"from": "human"|"gpt"|"system", "value"}]}``.

A record that cannot be a conversation (no assistant turn, an unknown role, empty content, a
wrong shape) is skipped and counted with its line number, or raises at once with ``strict``.

Encoding (:func:`encode_conversation`) renders the tokenizer's chat template and marks the tokens
that the loss covers: exactly each assistant message's tokens and its end-of-turn token, found by
rendering the conversation up to each assistant turn (so any template works, ours or an imported
model's). Packing (:func:`pack`) fills rows of ``seq_len`` tokens with whole conversations; each keeps
its own segment id so that attention stays inside it, and positions restart at 0.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmkit.errors import DataError

ROLES = ("system", "user", "assistant", "tool")
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}
END_OF_TURN = ("<|end|>", "<|im_end|>", "<|eot_id|>", "<|end_of_turn|>", "<end_of_turn>", "<|endofturn|>")
"""End-of-turn markers of common templates; the loss mask stops after the last one in a reply."""


@dataclass
class ChatStats:
    """What reading and encoding did: conversations kept, skipped (by reason, first line number),
    truncated or dropped for length."""

    read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    first_skip: dict[str, str] = field(default_factory=dict)
    truncated: int = 0
    dropped_long: int = 0

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.first_skip.setdefault(reason, where)

    def summary(self) -> str:
        parts = [f"{self.read} conversations"]
        parts += [f"{n} skipped: {r} (first at {self.first_skip[r]})" for r, n in self.skipped.items()]
        if self.truncated:
            parts.append(f"{self.truncated} truncated to the context")
        if self.dropped_long:
            parts.append(f"{self.dropped_long} dropped as longer than the context")
        return ", ".join(parts)


class BadRecord(ValueError):
    """A record that is not a conversation (the message says why)."""


# ------------------------------------------------------------------------------- shapes
def _content(value, where: str) -> str:
    if isinstance(value, list):  # OpenAI content parts: keep the text parts
        value = "".join(p.get("text", "") for p in value if isinstance(p, dict) and p.get("type", "text") == "text")
    if not isinstance(value, str):
        raise BadRecord(f"content is not text ({where})")
    if not value.strip():
        raise BadRecord("empty content")
    return value


def _messages(raw, key: str) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise BadRecord(f"{key!r} must be a non-empty list of messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise BadRecord(f"{key}[{i}] is not an object")
        if "role" in m:
            role = m["role"]
        elif "from" in m:
            role = _SHAREGPT_ROLES.get(str(m["from"]).lower(), m["from"])
        else:
            raise BadRecord(f"{key}[{i}] has no role")
        if role not in ROLES:
            raise BadRecord(f"unknown role {role!r}")
        text = m.get("content", m.get("value"))
        if text is None and role == "assistant" and m.get("tool_calls"):
            text = json.dumps(m["tool_calls"], ensure_ascii=False)
        out.append({"role": role, "content": _content(text, f"{key}[{i}]")})
    return out


def to_conversation(rec) -> list[dict]:
    """A record of any supported shape -> a validated list of ``{"role", "content"}`` messages
    with at least one assistant turn (raises :class:`BadRecord`)."""
    if not isinstance(rec, dict):
        raise BadRecord("not a JSON object")
    if "messages" in rec:
        msgs = _messages(rec["messages"], "messages")
    elif "conversations" in rec:
        msgs = _messages(rec["conversations"], "conversations")
    elif "prompt" in rec and ("completion" in rec or "response" in rec):
        prompt = rec["prompt"]
        head = (
            _messages(prompt, "prompt")
            if isinstance(prompt, list)
            else [{"role": "user", "content": _content(prompt, "prompt")}]
        )
        completion = rec.get("completion", rec.get("response"))
        tail = (
            _messages(completion, "completion")
            if isinstance(completion, list)
            else [{"role": "assistant", "content": _content(completion, "completion")}]
        )
        msgs = head + tail
    elif "instruction" in rec and "output" in rec:
        instruction = _content(rec["instruction"], "instruction")
        extra = rec.get("input") or ""
        user = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
        msgs = [{"role": "system", "content": _content(rec["system"], "system")}] if rec.get("system") else []
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": _content(rec["output"], "output")}]
    else:
        raise BadRecord("no messages, conversations, prompt/completion or instruction/output fields")
    if not any(m["role"] == "assistant" for m in msgs):
        raise BadRecord("no assistant turn")
    return msgs


# ------------------------------------------------------------------------------- reading
def _records(source: str, split: str) -> Iterator[tuple[str, object]]:
    """(where, record) for every record of a source."""
    if source.startswith("hf:"):
        import datasets

        name, _, config = source[3:].partition(":")
        try:
            ds = datasets.load_dataset(name, config or None, split=split)
        except Exception as e:
            reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
            raise DataError(
                f"{source}: cannot load hub dataset ({reason}); check the name, split and network"
            ) from None
        for i, rec in enumerate(ds):
            yield f"{source}#{i}", rec
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"{source}: no such file or directory; give a .jsonl/.json/.parquet file, a saved dataset or hf:NAME"
        )
    if path.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:
            raise DataError(
                f"{path}: not a saved dataset ({type(e).__name__}); save it with Dataset.save_to_disk"
            ) from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: has no split {split!r} (splits: {', '.join(ds)})")
            ds = ds[split]
        for i, rec in enumerate(ds):
            yield f"{path}#{i}", rec
    elif path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        for i, rec in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}#{i}", rec
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: a .json file must hold a list of records; use .jsonl for one per line")
        for i, rec in enumerate(data):
            yield f"{path}#{i}", rec
    else:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    yield where, json.loads(line)
                except json.JSONDecodeError as e:
                    yield where, BadRecord(f"not valid JSON ({e.msg})")


def read_conversations(
    source: str, stats: ChatStats | None = None, strict: bool = False, split: str = "train"
) -> list[list[dict]]:
    """Every conversation of ``source`` (see the module docstring); bad records are counted in
    ``stats`` (or raise a one-line DataError naming the line with ``strict``)."""
    stats = stats if stats is not None else ChatStats()
    out = []
    for where, rec in _records(source, split):
        try:
            if isinstance(rec, BadRecord):
                raise rec
            out.append(to_conversation(rec))
            stats.read += 1
        except BadRecord as e:
            if strict:
                raise DataError(f"{where}: {e}; fix the record or drop strict to skip it") from None
            stats.skip(str(e).split(" (")[0], where)
    if not out:
        raise DataError(f"{source}: no usable conversation ({stats.summary()}); see docs/sft.md for the shapes")
    return out


# ------------------------------------------------------------------------------- encoding
@dataclass
class Encoded:
    """A conversation as token ids and the loss mask (True where the model learns the token)."""

    ids: list[int]
    mask: list[bool]

    def __len__(self) -> int:
        return len(self.ids)


def _end_of_turn_tokens(tokenizer) -> list[str]:
    names = [t for t in END_OF_TURN if tokenizer.token_to_id(t) is not None]
    eos = tokenizer.id_to_token(tokenizer.eos_id) if getattr(tokenizer, "eos_id", None) is not None else None
    return names + ([eos] if eos and eos not in names else [])


def encode_conversation(tokenizer, messages: Sequence[dict]) -> Encoded:
    """Token ids of ``messages`` in the tokenizer's chat template (BOS first unless the template
    writes one, as the chat engine does) and the mask of assistant tokens plus their end-of-turn
    token. The template is rendered up to each assistant turn to find its characters, so the
    mask is exact for any template; tokens are assigned by their character offsets."""
    text = tokenizer.apply_chat_template(list(messages))
    spans = []
    ends = _end_of_turn_tokens(tokenizer)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(list(messages[:i]), add_generation_prompt=True) if i else ""
        through = tokenizer.apply_chat_template(list(messages[: i + 1]))
        if not text.startswith(through) or not through.startswith(before):
            raise DataError(
                "chat template: a conversation's rendering is not built turn by turn; "
                "this template cannot mark assistant tokens"
            )
        start, stop = len(before), len(through)
        reply = through[start:stop]
        cut = max((reply.rfind(e) + len(e) for e in ends if e in reply), default=-1)
        spans.append((start, start + cut if cut > 0 else stop))
    enc = tokenizer.inner.encode(text, add_special_tokens=False)
    ids, offsets = list(enc.ids), list(enc.offsets)
    mask = [any(a < hi and b > lo for lo, hi in spans) for a, b in offsets]
    bos = getattr(tokenizer, "bos_id", None)
    if bos is not None and not (ids and ids[0] == bos):
        ids, mask = [bos, *ids], [False, *mask]
    return Encoded(ids, mask)


def fit_length(enc: Encoded, max_len: int, overlong: str, stats: ChatStats) -> Encoded | None:
    """Keep a conversation that fits; otherwise truncate it to ``max_len`` (``overlong="truncate"``,
    kept only if a trained token remains) or drop it (``"drop"``), counting either in ``stats``."""
    if len(enc) <= max_len:
        return enc
    if overlong == "truncate" and any(enc.mask[:max_len]):
        stats.truncated += 1
        return Encoded(enc.ids[:max_len], enc.mask[:max_len])
    stats.dropped_long += 1
    return None


# ------------------------------------------------------------------------------- mixing, packing
def parse_source(spec: str) -> tuple[str, float]:
    """``path@weight`` -> (path, weight); weight defaults to 1 and must be positive."""
    path, sep, weight = spec.rpartition("@")
    if not sep or not path:
        return spec, 1.0
    try:
        w = float(weight)
    except ValueError:
        return spec, 1.0
    if not w > 0:
        raise DataError(f"{spec}: a mix weight must be positive, got {weight}; write PATH@2.5 or leave it out")
    return path, w


def mix(datasets: Sequence[Sequence], weights: Sequence[float], seed: int) -> list:
    """One epoch of a weighted mix: as many items as all datasets hold together, dataset ``i``
    contributing ``weight_i / sum(weights)`` of them (its items shuffled, repeated if it is small,
    subsampled if large); the result is shuffled. Deterministic for ``seed``."""
    if any(not w > 0 for w in weights):
        raise DataError(f"mix weights must be positive, got {list(weights)}")
    total, wsum = sum(len(d) for d in datasets), sum(weights)
    rng = random.Random(seed)
    out = []
    for d, w in zip(datasets, weights, strict=True):
        want = round(total * w / wsum)
        order = list(range(len(d)))
        picked = []
        while len(picked) < want and order:
            rng.shuffle(order)
            picked += order[: want - len(picked)]
        out += [d[i] for i in picked]
    rng.shuffle(out)
    return out


def pack(lengths: Sequence[int], seq_len: int) -> list[list[int]]:
    """Group item indices into rows of at most ``seq_len`` tokens, in order, each item going into
    the first open row it fits (best use of space without reordering much; at most 8 rows open)."""
    rows: list[list[int]] = []
    room: list[int] = []
    open_rows: list[int] = []
    for i, n in enumerate(lengths):
        if n > seq_len:
            raise DataError(f"item {i} has {n} tokens, more than seq_len={seq_len}; fit it first")
        for r in open_rows:
            if room[r] >= n:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(seq_len - n)
            open_rows.append(len(rows) - 1)
            if len(open_rows) > 8:
                open_rows.pop(0)
        open_rows = [r for r in open_rows if room[r] > 0]
    return rows
