"""Byte-level BPE tokenizer: training, loading, saving in Hugging Face layout, chat template.

Training and encoding are done by the Rust ``tokenizers`` library; this module only chooses the
pipeline and keeps the files compatible with ``transformers.AutoTokenizer``:

* **No normalizer** and a **byte-level** model, so every Unicode string round-trips exactly
  (``decode(encode(s)) == s``): leading spaces, ``\\r\\n``, control characters, NUL, emoji and
  combining marks all survive.
* **Pre-tokenizer**: one of :data:`PRE_TOKENIZERS`. The default, ``qwen2``, is GPT-4's regex with
  digits split one by one (Qwen2's, which llama.cpp implements under that name, so a GGUF export
  tokenizes identically there). Against ``llmkit``'s own it packs 0.3% less English and 1.4% more
  Chinese into a token, and a cpu-tiny model trained with it is level overall and 1.2% worse on
  held-out Chinese (docs/BENCHMARKS.md, "Tokenizer pre-tokenizer"). ``llmkit`` is a GPT-4-like regex split
  with two changes. Digits are split one by one, so a
  number always tokenizes the same way whatever its neighbours (``2024`` is ``2 0 2 4``). CJK
  characters (Han ideographs, kana, hangul) are split into short runs (:data:`CJK_RUN` characters),
  because Chinese has no spaces: without this, a whole paragraph would be one pre-token and BPE
  would learn paragraph-sized merges instead of reusable words. The run length was chosen by
  measuring chars/token on Chinese (see docs/tokenizer.md).
* **Special tokens** occupy ids 0..15 in the order of :data:`SPECIAL_TOKENS` (pad=0, bos=1, eos=2).
  :meth:`Tokenizer.encode` adds BOS/EOS only when asked (the engine asks for BOS on every text
  prompt). A **post-processor** in ``tokenizer.json`` prepends BOS when ``transformers`` encodes
  with special tokens (``AutoTokenizer(text)``, ``pipeline("text-generation")``), so a prompt gives
  the same ids, and the same greedy text, in both; with ``add_special_tokens=False`` (what
  ``apply_chat_template`` uses; the chat template writes BOS itself) nothing is added.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Regex, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as _HFTokenizer

from llmkit.errors import CheckpointError, ConfigError, DataError

_NAMED_SPECIALS = [
    "<|pad|>",
    "<|bos|>",
    "<|eos|>",
    "<|unk|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<|tool|>",
    "<|tool_result|>",
]
NUM_SPECIAL = 16
SPECIAL_TOKENS: list[str] = _NAMED_SPECIALS + [f"<|reserved_{i}|>" for i in range(NUM_SPECIAL - len(_NAMED_SPECIALS))]
PAD, BOS, EOS, UNK = SPECIAL_TOKENS[:4]

CJK_RUN = 2
"""Longest run of consecutive CJK characters kept in one pre-token. Measured (docs/tokenizer.md):
runs of 2 beat single characters on Chinese chars/token (+2% at 4k vocab, +9% at 16k), while
longer runs add little compression and cost training time."""

_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}"

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Qwen2's split regex (GPT-4's with single digits), llama.cpp's ``qwen2`` pre-tokenizer."""

PRE_TOKENIZERS = ("qwen2", "llmkit")
"""Split regexes a tokenizer can be trained with: ``qwen2`` (:data:`QWEN2_PATTERN`, the default) or
``llmkit`` (:func:`split_pattern`: CJK in runs of at most :data:`CJK_RUN`; no llama.cpp equivalent)."""

# One line, no blocks that trim whitespace differently: renders identically under jinja2 and under
# transformers' own sandboxed environment (trim_blocks/lstrip_blocks). BOS is written by the template
# (so transformers' apply_chat_template(tokenize=True) gives the ids llmkit trains on); the roles are
# system, user, assistant and tool (tool results), anything else is an error.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    # OpenAI-style tools: their schemas open the conversation as (part of) the system message
    "{% if tools %}{{ '<|system|>\n' }}"
    "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}{% endif %}"
    "{{ 'Tools you can call:\n' }}"
    "{% for tool in tools %}{{ (tool['function'] if tool['function'] is defined else tool) | tojson }}{{ '\n' }}"
    "{% endfor %}"
    "{{ 'To call one, write <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>' + '<|end|>\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}"
    "{{ raise_exception('unknown role ' + message['role'] + ': use system, user, assistant or tool') }}"
    "{% endif %}"
    "{% if not (tools and loop.first and message['role'] == 'system') %}"
    "{{ '<|' + message['role'] + '|>\n' + (message['content'] or '') }}"
    # an assistant's tool calls, each as <tool_call>{"name": ..., "arguments": {...}}</tool_call>
    "{% if message['tool_calls'] is defined and message['tool_calls'] %}{% for call in message['tool_calls'] %}"
    "{% set f = call['function'] if call['function'] is defined else call %}"
    "{{ '<tool_call>{\"name\": ' + (f['name'] | tojson) + ', \"arguments\": ' }}"
    "{% if f['arguments'] is string %}{{ f['arguments'] }}{% else %}{{ f['arguments'] | tojson }}{% endif %}"
    "{{ '}</tool_call>' }}{% endfor %}{% endif %}"
    "{{ '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
CHAT_ROLES = ("system", "user", "assistant", "tool")


def split_pattern(cjk_run: int = CJK_RUN) -> str:
    """The pre-tokenizer regex (Oniguruma syntax, as used by ``tokenizers``).

    GPT-4's pattern with letters excluding CJK, CJK in runs of at most ``cjk_run`` characters
    (0 = unlimited, i.e. GPT-4 behaviour), and single digits.
    """
    cjk = f"[{_CJK}]" + ("+" if cjk_run <= 0 else ("" if cjk_run == 1 else f"{{1,{cjk_run}}}"))
    return (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
        rf"|[^\r\n\p{{L}}\p{{N}}]?[\p{{L}}&&[^{_CJK}]]+"
        rf"|{cjk}"
        r"|\p{N}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+"
        r"|\s+(?!\S)"
        r"|\s+"
    )


def _empty_tokenizer(pattern: str) -> _HFTokenizer:
    tok = _HFTokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes->printable-unicode map used by the ByteLevel pre-tokenizer."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


_SP_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _token_content(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, an AddedToken dict, or null."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _pick_template(value) -> str | None:
    """``chat_template`` is a string, or a list of ``{"name", "template"}`` (use "default")."""
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default")
    return value if isinstance(value, str) and value else None


def _read_hf_config(directory: Path) -> dict:
    """tokenizer_config.json (plus a separate chat_template.jinja, as newer transformers save it);
    {} when absent or unreadable (the tokenizer itself is still usable)."""
    cfg: dict = {}
    path = directory / "tokenizer_config.json"
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            cfg = loaded if isinstance(loaded, dict) else {}
        except (ValueError, UnicodeDecodeError):
            cfg = {}
    jinja = directory / "chat_template.jinja"
    if not _pick_template(cfg.get("chat_template")) and jinja.is_file():
        cfg["chat_template"] = jinja.read_text(encoding="utf-8")
    return cfg


class Tokenizer:
    """A trained byte-level BPE tokenizer; ``inner`` is the ``tokenizers.Tokenizer``."""

    def __init__(
        self,
        inner: _HFTokenizer,
        json_text: str | None = None,
        model_max_length: int = 1_000_000,
        hf_config: dict | None = None,
    ):
        self.inner = inner
        self._json = json_text if json_text is not None else inner.to_str()
        self.model_max_length = model_max_length
        """Written to tokenizer_config.json; set it to the model's context length before saving."""
        self._special_ids = {i for i, t in inner.get_added_tokens_decoder().items() if t.special}
        # A tokenizer_config.json read from disk (e.g. an imported Llama/Qwen checkpoint) names its
        # own special tokens and chat template; ours are the defaults when there is none.
        self._loaded_config = dict(hf_config) if hf_config else None
        cfg = self._loaded_config or {}
        self._tokens = {
            k: _token_content(cfg[k]) if k in cfg else default
            for k, default in (("bos_token", BOS), ("eos_token", EOS), ("pad_token", PAD))
        }
        self.chat_template: str = _pick_template(cfg.get("chat_template")) or CHAT_TEMPLATE
        """The Jinja chat template: the one saved with the tokenizer, else :data:`CHAT_TEMPLATE`."""

    # ------------------------------------------------------------------ training, files
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        min_frequency: int = 2,
        show_progress: bool = True,
        cjk_run: int = CJK_RUN,
        pre_tokenizer: str = "qwen2",
    ) -> Tokenizer:
        """Train BPE on ``texts`` with the split regex ``pre_tokenizer`` (:data:`PRE_TOKENIZERS`).
        ``cjk_run`` (of the ``llmkit`` regex) exists for the benchmark that chose :data:`CJK_RUN`."""
        if pre_tokenizer not in PRE_TOKENIZERS:
            raise ConfigError(f"tokenizer.pre_tokenizer={pre_tokenizer!r}: use one of {', '.join(PRE_TOKENIZERS)}")
        need = 256 + len(SPECIAL_TOKENS)
        if vocab_size < need:
            raise ConfigError(
                f"tokenizer.vocab_size={vocab_size} is too small: needs at least {need} "
                f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens)"
            )
        seen = {"chars": 0}

        def counted():
            for t in texts:
                if t:
                    seen["chars"] += len(t)
                    yield t

        inner = _empty_tokenizer(QWEN2_PATTERN if pre_tokenizer == "qwen2" else split_pattern(cjk_run))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            show_progress=show_progress,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        inner.train_from_iterator(counted(), trainer=trainer)
        if seen["chars"] == 0:
            raise DataError("tokenizer training text is empty; give it a source with text")
        bos = (BOS, inner.token_to_id(BOS))
        inner.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[bos]
        )
        return cls(inner)

    @classmethod
    def load(cls, path) -> Tokenizer:
        """Load ``tokenizer.json`` from a directory (or the file itself)."""
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() or not path.suffix else path
        if not file.is_file():
            raise CheckpointError(
                f"{file}: tokenizer not found; train one with `llmkit tokenizer train` "
                "or point at a directory that has tokenizer.json"
            )
        try:
            text = file.read_text(encoding="utf-8")
            inner = _HFTokenizer.from_str(text)
        except Exception as e:  # corrupt JSON or unknown components
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{file}: not a valid tokenizer ({reason}); delete it and re-train") from None
        cfg = _read_hf_config(file.parent)
        try:
            max_len = int(cfg.get("model_max_length", 1_000_000))
        except (ValueError, TypeError):
            max_len = 1_000_000
        return cls(inner, json_text=text, model_max_length=max_len, hf_config=cfg)

    def save(self, directory) -> None:
        """Write tokenizer.json and tokenizer_config.json (atomically) so that
        ``transformers.AutoTokenizer.from_pretrained(directory)`` behaves exactly like this object."""
        from llmkit.files import atomic_write_json, atomic_write_text

        directory = Path(directory)
        atomic_write_text(directory / "tokenizer.json", self._json)
        atomic_write_json(directory / "tokenizer_config.json", self.hf_config())

    def hf_config(self) -> dict:
        """The ``tokenizer_config.json`` that makes ``PreTrainedTokenizerFast`` match us (a loaded
        one is written back as it was, with this object's context length and chat template)."""
        if self._loaded_config is not None:
            return {
                **self._loaded_config,
                "model_max_length": self.model_max_length,
                "chat_template": self.chat_template,
            }
        return {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": PAD,
            "unk_token": UNK,
            "add_bos_token": self.inner.post_processor is not None,  # tokenizers trained before it have none
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": self.model_max_length,
            "chat_template": self.chat_template,
        }

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of ``text``; ``bos``/``eos`` add those tokens where the tokenizer has them (an
        imported Qwen2 tokenizer has no BOS, and transformers adds none either)."""
        ids = self.inner.encode(text, add_special_tokens=False).ids
        pre = [self.bos_id] if bos and self.bos_id is not None else []
        return pre + ids + ([self.eos_id] if eos and self.eos_id is not None else [])

    def encode_batch(self, texts: list[str], bos: bool = False, eos: bool = False) -> list[list[int]]:
        """Encode many texts in parallel (Rust threads; the GIL is released)."""
        out = (
            self.inner.encode_batch_fast(list(texts), add_special_tokens=False)
            if hasattr(self.inner, "encode_batch_fast")
            else self.inner.encode_batch(list(texts), add_special_tokens=False)
        )
        pre = [self.bos_id] if bos and self.bos_id is not None else []
        post = [self.eos_id] if eos and self.eos_id is not None else []
        return [pre + e.ids + post for e in out]

    def decode(self, ids, skip_special: bool = False) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.inner.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def token_to_id(self, s) -> int | None:
        return self.inner.token_to_id(s)

    def id_to_token(self, i) -> str | None:
        return self.inner.id_to_token(int(i))

    @property
    def vocab_size(self) -> int:
        return self.inner.get_vocab_size(with_added_tokens=True)

    def _id(self, key: str) -> int | None:
        token = self._tokens[key]
        return None if token is None else self.inner.token_to_id(token)

    @property
    def pad_id(self) -> int:
        return self._id("pad_token")

    @property
    def bos_id(self) -> int:
        """1 for llmkit tokenizers; None for an imported one without a BOS token (e.g. Qwen2)."""
        return self._id("bos_token")

    @property
    def eos_id(self) -> int:
        return self._id("eos_token")

    @property
    def special_ids(self) -> set[int]:
        return set(self._special_ids)

    # ------------------------------------------------------------------ bytes, identity, chat
    def token_byte_strings(self) -> list[bytes]:
        """The raw UTF-8 bytes of every token id (``b""`` for special tokens)."""
        dec = _byte_decoder()
        out = []
        for i in range(self.vocab_size):
            piece = self.inner.id_to_token(i)
            if i in self._special_ids or piece is None:
                out.append(b"")
            elif all(c in dec for c in piece):
                out.append(bytes(dec[c] for c in piece))
            else:  # an imported SentencePiece-style vocabulary: "▁" is a space, "<0x0A>" a byte
                m = _SP_BYTE.fullmatch(piece)
                out.append(bytes([int(m.group(1), 16)]) if m else piece.replace("▁", " ").encode("utf-8"))
        return out

    def token_bytes(self) -> torch.Tensor:
        """int64 (vocab_size,): bytes each token stands for, 0 for specials. Summed over a text's
        tokens this gives its UTF-8 length, which turns loss per token into bits per byte."""
        return torch.tensor([len(b) for b in self.token_byte_strings()], dtype=torch.int64)

    def fingerprint(self) -> str:
        """First 16 hex digits of sha256(tokenizer.json): token shards record it so they are never
        read with a different tokenizer."""
        return hashlib.sha256(self._json.encode("utf-8")).hexdigest()[:16]

    def apply_chat_template(
        self, messages: list[dict], add_generation_prompt: bool = False, tools: list[dict] | None = None
    ) -> str:
        """Render ``messages`` with the same template and Jinja settings transformers uses;
        ``tools`` are OpenAI tool schemas (``{"type": "function", "function": {...}}``)."""
        import jinja2

        try:
            return _compiled_template(self.chat_template).render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                tools=tools or None,
                **{k: v or "" for k, v in self._tokens.items()},
            )
        except jinja2.TemplateError as e:
            raise DataError(
                f"chat template: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                "check the messages (role and content of each)"
            ) from None

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, fingerprint={self.fingerprint()})"


@functools.lru_cache(maxsize=8)
def _compiled_template(source: str):
    """A chat template compiled once (compiling costs ~1000x a render; SFT renders each
    conversation several times to find its assistant tokens)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(source)
    except jinja2.TemplateError as e:
        raise DataError(
            f"chat template does not compile: {str(e).splitlines()[0]}; fix tokenizer_config.json"
        ) from None


def tokenizer_stats(tok: Tokenizer, texts: dict[str, str]) -> list[dict]:
    """Compression per named text: chars, bytes, tokens, bytes/token, chars/token."""
    rows = []
    for name, text in texts.items():
        n_tok = len(tok.encode(text))
        n_bytes = len(text.encode("utf-8"))
        rows.append(
            {
                "name": name,
                "chars": len(text),
                "bytes": n_bytes,
                "tokens": n_tok,
                "bytes_per_token": n_bytes / max(n_tok, 1),
                "chars_per_token": len(text) / max(n_tok, 1),
            }
        )
    return rows
