"""Documents from files: txt, md, html, pdf (pypdf), docx (python-docx), jsonl.

Every loader returns :class:`Document` objects whose ``text`` is plain text with paragraphs
separated by blank lines and headings written as Markdown (``# Title``), so one chunker handles
every format and respects its structure. A document remembers where its pages start (PDF) so a
chunk can later say ``p. 3``; a JSONL file gives one document per record (``record 7``).

A file that cannot be read (encrypted or corrupt PDF, broken docx, bad JSON line) raises a
:class:`~llmkit.errors.DataError` naming the file and the fix; a file with no text is reported
as empty, never silently indexed as nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from llmkit.data.sources import SourceStats, read_text_file
from llmkit.errors import DataError

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".jsonl")
"""File types the index reads; other files found in a directory are skipped and counted."""


@dataclass
class Document:
    """One indexable text. ``source`` names the file (``notes/a.md``, or ``faq.jsonl#7`` for the
    7th record); ``page_starts`` holds the character offset where each PDF page begins."""

    source: str
    text: str
    kind: str
    page_starts: list[int] = field(default_factory=list)
    record: int | None = None


def find_files(paths: list[Path]) -> tuple[list[tuple[Path, str]], list[Path]]:
    """Expand files and directories into ``(file, display name)`` pairs, sorted, plus the files
    skipped for their type. A directory's files are named relative to it (with its own name in
    front); hidden files and folders are skipped. A named file of an unknown type is an error."""
    found: list[tuple[Path, str]] = []
    skipped: list[Path] = []
    for root in paths:
        root = Path(root)
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                rel = p.relative_to(root)
                if not p.is_file() or any(part.startswith(".") for part in rel.parts):
                    continue
                if p.suffix.lower() in SUFFIXES:
                    found.append((p, (Path(root.name) / rel).as_posix()))
                else:
                    skipped.append(p)
        elif root.is_file():
            if root.suffix.lower() not in SUFFIXES:
                kind = root.suffix or "extensionless"
                raise DataError(f"{root}: cannot index {kind} files; convert it to one of {', '.join(SUFFIXES)}")
            found.append((root, root.name))
        else:
            raise DataError(f"{root}: no such file or directory")
    return found, skipped


def load_file(path: Path, name: str, text_field: str = "text") -> list[Document]:
    """The documents in one file (one, or one per record for JSONL). Empty documents are kept
    (the caller reports them), unreadable files raise :class:`DataError`."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return [_load_pdf(path, name)]
    if suffix == ".docx":
        return [Document(name, _load_docx(path), "docx")]
    if suffix == ".jsonl":
        return _load_jsonl(path, name, text_field)
    text = read_text_file(path, SourceStats())
    if suffix in (".html", ".htm"):
        return [Document(name, html_to_text(text), "html")]
    return [Document(name, text.replace("\r\n", "\n"), "md" if suffix in (".md", ".markdown") else "txt")]


def _load_pdf(path: Path, name: str) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):  # an empty user password opens many "protected" PDFs
            raise DataError(f"{path}: the PDF is encrypted; decrypt it first (qpdf --decrypt IN OUT) or leave it out")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except DataError:
        raise
    except (PdfReadError, ValueError, KeyError, OSError, TypeError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise DataError(f"{path}: not a readable PDF ({reason}); re-save or export it again, or leave it out") from None
    starts, parts, pos = [], [], 0
    for text in pages:
        starts.append(pos)
        parts.append(text)
        pos += len(text) + 2  # the "\n\n" joining pages
    return Document(name, "\n\n".join(parts), "pdf", page_starts=starts)


def _load_docx(path: Path) -> str:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        d = docx.Document(str(path))
    except (PackageNotFoundError, KeyError, ValueError, OSError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise DataError(f"{path}: not a readable .docx ({reason}); re-save it from Word or LibreOffice") from None
    blocks = []
    for para in d.paragraphs:
        text = para.text.strip()
        if not text:
            continue
        style = (para.style.name if para.style is not None else "") or ""
        m = re.match(r"Heading (\d)", style)
        if m or style == "Title":
            text = "#" * (int(m.group(1)) if m else 1) + " " + text
        blocks.append(text)
    for table in d.tables:
        for row in table.rows:
            cells = [c.text.strip() for c in row.cells]
            if any(cells):
                blocks.append(" | ".join(c for c in cells if c))
    return "\n\n".join(blocks)


def _load_jsonl(path: Path, name: str, text_field: str) -> list[Document]:
    docs = []
    raw = read_text_file(path, SourceStats())
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or delete that line") from None
        if not isinstance(rec, dict) or not isinstance(rec.get(text_field), str):
            raise DataError(f"{path}:{lineno}: no string field {text_field!r}; each line needs {{{text_field!r}: ...}}")
        text = rec[text_field]
        title = rec.get("title")
        if isinstance(title, str) and title.strip():
            text = f"# {title.strip()}\n\n{text}"
        docs.append(Document(f"{name}#{lineno}", text, "jsonl", record=lineno))
    return docs


# ---------------------------------------------------------------------- HTML
_BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "header", "footer", "aside", "nav", "li", "ul", "ol",
    "table", "tr", "blockquote", "pre", "br", "hr", "dt", "dd", "figcaption", "form",
}  # fmt: skip
_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "head"}


class _TextExtractor(HTMLParser):
    """Visible text of an HTML page: block elements become paragraphs, ``h1``-``h6`` (and the
    ``title``) become Markdown headings, scripts and styles are dropped."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.current: list[str] = []
        self.skip = 0
        self.in_title = False
        self.heading = 0
        self.pre = 0

    def _flush(self):
        text = "".join(self.current)
        text = text.strip("\n") if self.pre else re.sub(r"\s+", " ", text).strip()
        if text:
            self.blocks.append(("#" * self.heading + " " if self.heading else "") + text)
        self.current = []

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.in_title = True
            self._flush()
        elif tag in _SKIP_TAGS:
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self.heading = int(tag[1])
        elif tag in _BLOCK_TAGS:
            self._flush()
            self.pre += tag == "pre"
        elif tag == "td" or tag == "th":
            self.current.append(" ")

    def handle_endtag(self, tag):
        if tag == "title":
            text = re.sub(r"\s+", " ", "".join(self.current)).strip()
            if text:
                self.blocks.append("# " + text)
            self.current, self.in_title = [], False
        elif tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self.heading = 0
        elif tag in _BLOCK_TAGS:
            self._flush()
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data):
        if self.in_title or not self.skip:
            self.current.append(data)


def html_to_text(source: str) -> str:
    """Plain text of an HTML document, paragraphs separated by blank lines, headings as ``#``."""
    parser = _TextExtractor()
    parser.feed(source)
    parser.close()
    parser._flush()
    return "\n\n".join(parser.blocks)


def page_of(doc: Document, offset: int) -> int | None:
    """1-based PDF page holding character ``offset`` (None for documents without pages)."""
    if not doc.page_starts:
        return None
    page = 1
    for i, start in enumerate(doc.page_starts):
        if start <= offset:
            page = i + 1
    return page
