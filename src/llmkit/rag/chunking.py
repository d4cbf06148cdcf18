"""Cut documents into overlapping chunks of at most N tokens that follow the text's structure.

A chunk never crosses a heading (``# ...`` lines; every loader writes headings that way), prefers
to end where a paragraph ends, and otherwise ends at a sentence end: ``. ! ?`` followed by space in
English, ``。！？；…`` (and a closing quote) in Chinese, where no space follows. Only a sentence
longer than the whole budget is cut by lines and then by tokens. Consecutive chunks of a section
share their last sentences up to ``overlap`` tokens, so a fact that straddles a boundary is whole
in one of them.

Tokens are counted with a ``tokenizers`` tokenizer (by default the embedder's, so a chunk fits the
embedder's window). A chunk's text is an exact slice of its document (``text[start:end]``), which
is what lets a citation point at a page and line.
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from llmkit.errors import ConfigError
from llmkit.rag.loaders import Document, page_of


@dataclass
class ChunkingConfig:
    """How documents are cut; recorded in the index manifest (an index is never updated with
    different settings, which would mix two chunkings)."""

    tokens: int = 200
    """Most tokens in one chunk (the default embedder reads 256)."""
    overlap: int = 40
    """Tokens of trailing sentences a chunk repeats from the previous one in the same section."""

    def validate(self) -> ChunkingConfig:
        if self.tokens < 16:
            raise ConfigError(f"chunk tokens={self.tokens} is too small; use at least 16 (default 200)")
        if not 0 <= self.overlap < self.tokens // 2:
            raise ConfigError(f"chunk overlap={self.overlap} must be >= 0 and below half of tokens={self.tokens}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Chunk:
    """A piece of a document: its text, where it came from, and how many tokens it holds."""

    source: str
    start: int
    end: int
    text: str
    heading: str
    """The headings above it, outermost first, joined with `` > ``."""
    tokens: int
    line: int
    line_end: int
    page: int | None = None
    page_end: int | None = None

    @property
    def where(self) -> str:
        """Position for a citation: ``p. 3``, ``pp. 3-4`` or ``lines 12-20``."""
        if self.page is not None:
            return f"p. {self.page}" if self.page == self.page_end else f"pp. {self.page}-{self.page_end}"
        return f"line {self.line}" if self.line == self.line_end else f"lines {self.line}-{self.line_end}"

    @property
    def indexed_text(self) -> str:
        """What retrieval sees: the text with its heading path in front when the chunk does not
        begin with its own heading (a section's later chunks keep their context)."""
        if self.heading and not self.text.lstrip().startswith("#"):
            return f"{self.heading}\n{self.text}"
        return self.text

    def to_dict(self) -> dict:
        return asdict(self)


class TokenCounter:
    """Token counts and token-boundary cuts from a ``tokenizer.json`` (no special tokens, no
    truncation, no padding, whatever the file asks for)."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise ConfigError(f"{file}: no tokenizer.json to count chunk tokens with; point at a model directory")
        self.inner = Tokenizer.from_file(str(file))
        self.inner.no_truncation()
        self.inner.no_padding()
        self.path = file

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in self.inner.encode_batch(texts, add_special_tokens=False)]

    def cuts(self, text: str, limit: int) -> list[int]:
        """Character offsets that cut ``text`` into pieces of at most ``limit`` tokens."""
        offsets = self.inner.encode(text, add_special_tokens=False).offsets
        return [offsets[i][0] for i in range(limit, len(offsets), limit)]


# ---------------------------------------------------------------------- structure
_HEADING = re.compile(r"#{1,6}[ \t]+\S")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
SENTENCE_END = re.compile(
    r"[。！？；…]+[”’」』）》\"']*\s*"  # Chinese: no space needed after the end mark
    r"|[!?]+[\"'”’)\]]*\s+"
    r"|(?<![A-Z])(?<!\b[Mm]r)(?<!\b[Mm]rs)(?<!\b[Dd]r)(?<!\b[Ss]t)\.+[\"'”’)\]]*\s+"  # not after an initial or title
)


@dataclass
class _Unit:
    start: int
    end: int
    tokens: int = 0
    paragraph: bool = False
    """First unit of a paragraph."""


def _sections(text: str) -> list[tuple[str, list[tuple[int, int]]]]:
    """``[(heading path, [(start, end) of each paragraph])]``; a heading line is the first paragraph
    of its section."""
    sections: list[tuple[str, list[tuple[int, int]]]] = [("", [])]
    stack: list[tuple[int, str]] = []
    headings_only = False  # the last section holds nothing but its heading (so far)
    pos = 0
    for m in [*_PARAGRAPH_BREAK.finditer(text), None]:
        end = m.start() if m else len(text)
        para_start = pos
        pos = m.end() if m else len(text)
        # a heading may be followed by text on the next line without a blank line
        while para_start < end:
            line_end = text.find("\n", para_start, end)
            line_end = end if line_end < 0 else line_end
            line = text[para_start:line_end]
            if _HEADING.match(line.lstrip()):
                level = len(line.lstrip()) - len(line.lstrip().lstrip("#"))
                stack = [(lv, h) for lv, h in stack if lv < level] + [(level, line.strip("# \t"))]
                path, paras = " > ".join(h for _, h in stack), [(para_start, line_end)]
                if headings_only:  # a heading with no text of its own joins the next section
                    paras = sections.pop()[1] + paras
                sections.append((path, paras))
                headings_only = True
                para_start = line_end + 1
                continue
            if text[para_start:end].strip():
                sections[-1][1].append((para_start, end))
                headings_only = False
            break
    return [(h, paras) for h, paras in sections if paras]


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return _split_after(SENTENCE_END, text, start, end)


def _lines(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return _split_after(re.compile(r"\n"), text, start, end)


_CLAUSE_END = re.compile(r"[，、：,;:]+\s*")


def _clauses(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return _split_after(_CLAUSE_END, text, start, end)


def _split_after(pattern: re.Pattern, text: str, start: int, end: int) -> list[tuple[int, int]]:
    out, pos = [], start
    for m in pattern.finditer(text, start, end):
        if m.end() > pos:
            out.append((pos, m.end()))
            pos = m.end()
    if pos < end:
        out.append((pos, end))
    return out


def _units(text: str, paras: list[tuple[int, int]], counter: TokenCounter, limit: int) -> list[_Unit]:
    """Sentences of each paragraph; a sentence over ``limit`` tokens is cut into lines, then
    clauses (at commas and colons), then windows of ``limit`` tokens."""
    units: list[_Unit] = []
    for p_start, p_end in paras:
        first = len(units)
        units += [_Unit(s, e) for s, e in _sentences(text, p_start, p_end)]
        if len(units) > first:
            units[first].paragraph = True
    _count(text, units, counter)
    return _fit(text, units, counter, limit, [_lines, _clauses])


def _fit(text: str, units: list[_Unit], counter: TokenCounter, limit: int, splitters: list) -> list[_Unit]:
    out: list[_Unit] = []
    for u in units:
        if u.tokens <= limit:
            out.append(u)
            continue
        if splitters:
            pieces = [_Unit(s, e) for s, e in splitters[0](text, u.start, u.end)]
            _count(text, pieces, counter)
            pieces = _fit(text, pieces, counter, limit, splitters[1:])
        else:
            cuts = [u.start + c for c in counter.cuts(text[u.start : u.end], limit)]
            bounds = [u.start, *cuts, u.end]
            pieces = [_Unit(a, b) for a, b in itertools.pairwise(bounds) if b > a]
            _count(text, pieces, counter)
        pieces[0].paragraph = u.paragraph
        out += pieces
    return out


def _count(text: str, units: list[_Unit], counter: TokenCounter) -> None:
    for u, n in zip(units, counter.count([text[u.start : u.end] for u in units]), strict=True):
        u.tokens = n


def _pack(units: list[_Unit], cfg: ChunkingConfig) -> list[list[_Unit]]:
    """Greedy packing: fill up to ``cfg.tokens``; end early at a paragraph start when the chunk is
    at least half full and the paragraph would not fit whole; carry trailing sentences over."""
    groups: list[list[_Unit]] = []
    cur: list[_Unit] = []
    fresh = False  # cur holds units not yet emitted
    para_tokens = _paragraph_sizes(units)
    for i, u in enumerate(units):
        size = sum(x.tokens for x in cur)
        full = size + u.tokens > cfg.tokens
        early = u.paragraph and size >= cfg.tokens // 2 and size + para_tokens[i] > cfg.tokens
        if cur and fresh and (full or early):
            groups.append(cur)
            tail: list[_Unit] = []
            for x in reversed(cur):
                if sum(t.tokens for t in tail) + x.tokens > cfg.overlap:
                    break
                tail.insert(0, x)
            while tail and sum(t.tokens for t in tail) + u.tokens > cfg.tokens:
                tail.pop(0)
            cur = tail
        cur.append(u)
        fresh = True
    if cur and fresh:
        groups.append(cur)
    return groups


def _paragraph_sizes(units: list[_Unit]) -> list[int]:
    """For each unit that starts a paragraph: the tokens of that whole paragraph."""
    sizes = [0] * len(units)
    start = 0
    for i in range(1, len(units) + 1):
        if i == len(units) or units[i].paragraph:
            sizes[start] = sum(u.tokens for u in units[start:i])
            start = i
    return sizes


def chunk_document(doc: Document, counter: TokenCounter, cfg: ChunkingConfig) -> list[Chunk]:
    """The chunks of one document, in reading order."""
    text = doc.text
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    out: list[Chunk] = []
    for heading, paras in _sections(text):
        for group in _pack(_units(text, paras, counter, cfg.tokens), cfg):
            start, end = group[0].start, group[-1].end
            while end > start and text[end - 1].isspace():
                end -= 1
            if end <= start:
                continue
            out.append(
                Chunk(
                    source=doc.source,
                    start=start,
                    end=end,
                    text=text[start:end],
                    heading=heading,
                    tokens=sum(u.tokens for u in group),
                    line=_line_of(line_starts, start),
                    line_end=_line_of(line_starts, end - 1),
                    page=page_of(doc, start),
                    page_end=page_of(doc, end - 1),
                )
            )
    return out


def _line_of(line_starts: list[int], offset: int) -> int:
    return bisect.bisect_right(line_starts, offset)
