"""HTML pages to their main text, with trafilatura (navigation, scripts, footers and ads dropped).

``clean.html=auto`` (the default) extracts documents that look like an HTML page (a doctype,
``<html>`` or ``<body>`` near the start); ``on`` treats every document as HTML and ``off`` never
does. A page with no main text left is removed under the rule ``html``.
"""

from __future__ import annotations

import re

_LOOKS_HTML = re.compile(r"^\s*(?:<!--.*?-->\s*)*(?:<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>])", re.I | re.S)


def looks_like_html(text: str) -> bool:
    return _LOOKS_HTML.match(text[:4096]) is not None


def html_to_text(html: str) -> str:
    """The main text of a page, paragraphs on their own lines (``""`` when there is none)."""
    import trafilatura

    text = trafilatura.extract(
        html, include_comments=False, include_tables=True, favor_recall=True, deduplicate=False, with_metadata=False
    )
    return text or ""
