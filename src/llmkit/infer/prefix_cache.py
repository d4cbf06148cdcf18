"""Keys/values of recently finished sequences, reused by prompts that continue them.

A chat's next turn is the whole conversation so far plus a new message, so without this every
turn prefills the whole history again. The engine remembers the KV of its last ``capacity``
finished (or stopped) sequences; a new prompt that starts with one of them copies that prefix
into its cache row and prefills only the rest (``Engine(prefix_cache=N)``; ``llmkit chat`` turns
it on). Matching is on token ids, so a re-tokenized history reuses exactly as far as its tokens
agree. The result is the same computation split in two passes: equal up to float rounding.
"""

from __future__ import annotations

from llmkit.infer.kv_cache import KVCache

MIN_REUSE = 16
"""Shorter shared prefixes are prefilled again (the separate pass would cost more than it saves)."""


class PrefixCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: list[tuple[list[int], int]] = []  # (tokens whose KV is stored, store row), oldest first
        self._kv: KVCache | None = None
        self.reused_tokens = 0
        """Prompt tokens that were not prefilled again (for stats and tests)."""

    def remember(self, tokens: list[int], cache: KVCache, row: int) -> None:
        """Keep the KV of ``tokens`` (their keys/values fill ``cache`` row ``row`` from slot 0)."""
        n = len(tokens)
        if self.capacity <= 0 or n < MIN_REUSE:
            return
        if self._kv is None or type(self._kv) is not type(cache):
            self._kv = cache.like(self.capacity, n)
            self._entries = []
        elif n > self._kv.max_len:
            self._kv.grow(self.capacity, n)
        # an entry this continues is replaced (a chat's next turn); else the oldest makes room
        old = next((i for i, (t, _) in enumerate(self._entries) if tokens[: len(t)] == t), None)
        if old is None and len(self._entries) >= self.capacity:
            old = 0
        if old is not None:
            dst = self._entries.pop(old)[1]
        else:
            dst = min(set(range(self.capacity)) - {r for _, r in self._entries})
        for store, live in zip(self._kv.tensors(), cache.tensors(), strict=True):
            store[dst, :, :n].copy_(live[row, :, :n])
        self._entries.append((list(tokens), dst))

    def restore(self, prompt: list[int], cache: KVCache, row: int) -> int:
        """Copy the longest stored prefix of ``prompt`` (leaving at least its last token to
        prefill) into ``cache`` row ``row``; returns its length (0: nothing reusable)."""
        best, best_row = 0, -1
        for tokens, store_row in self._entries:
            n = 0
            limit = min(len(tokens), len(prompt) - 1)
            while n < limit and tokens[n] == prompt[n]:
                n += 1
            if n > best:
                best, best_row = n, store_row
        if best < MIN_REUSE:
            return 0
        if type(self._kv) is not type(cache):
            return 0
        for store, live in zip(self._kv.tensors(), cache.tensors(), strict=True):
            live[row, :, :best].copy_(store[best_row, :, :best])
        self.reused_tokens += best
        return best
