"""Unicode repair and normalisation: mojibake, HTML entities, control characters, whitespace.

Mojibake (``doesnâ€™t`` for ``doesn't``: UTF-8 read as Windows-1252) is repaired by ``ftfy``, the
library that does this well. Two of ftfy's defaults are turned off because they damage Chinese:
``fix_character_width`` turns full-width punctuation (``，。！：（）``) into ASCII, and
``uncurl_quotes`` turns ``“好”`` into ``"好"``. ftfy runs only on documents that contain a
character it could act on (a UTF-8 lead byte read as Latin-1, a C1 control, ``&entity;``), which
skips it for plain ASCII and plain Chinese (it repairs about 1 MB/s, the slowest step otherwise).

Then: NFC (not NFKC, which would also rewrite full-width punctuation), no control characters
other than newline and tab, no zero-width characters or byte-order marks, non-breaking spaces as
spaces, ``\\r\\n`` and ``\\r`` as ``\\n``, no trailing spaces, at most two blank lines in a row, and
no blank lines at either end. Indentation is kept (verse and quoted poems use it).
"""

from __future__ import annotations

import re
import unicodedata

# Mojibake of UTF-8 always shows a lead byte read as Latin-1/Windows-1252 (Â..ô) or a C1 control.
_SUSPECT = re.compile(r"[\x80-\x9f\xc2-\xf4]|&#?\w+;")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_NBSP = re.compile(r"[\xa0\u202f]")
_TRAILING = re.compile(r"[ \t]+$", re.M)
_BLANKS = re.compile(r"\n{4,}")


def fix_encoding(text: str) -> str:
    """Repair mojibake and HTML entities with ftfy, leaving Chinese punctuation and quotes alone."""
    if not _SUSPECT.search(text):
        return text
    import ftfy

    return ftfy.fix_text(text, fix_character_width=False, uncurl_quotes=False, normalization="NFC")


def normalise(text: str) -> str:
    """The normalised text (see the module docstring); ``""`` when nothing printable is left."""
    text = fix_encoding(text)
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _NBSP.sub(" ", text)
    text = _TRAILING.sub("", text)
    text = _BLANKS.sub("\n\n\n", text)
    return text.strip("\n") if text.strip() else ""
