"""Documents for the retrieval tests: planted facts hidden in real filler text, and a PDF writer.

The facts (tests/data/rag/facts.jsonl) are short statements with a paraphrased question each, in
English and Chinese. They are planted as paragraphs at seeded random places in Shakespeare (English)
or in fortunes-zh (Chinese), the two offline corpora, so retrieval has to find a needle among real
text rather than among other planted facts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

FACTS = Path(__file__).parent / "data" / "rag" / "facts.jsonl"


def facts(lang: str | None = None) -> list[dict]:
    rows = [json.loads(line) for line in FACTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if lang is None or r["lang"] == lang]


def filler(lang: str, chars: int, seed: int = 0) -> list[str]:
    """Paragraphs of real text, about ``chars`` characters in all."""
    from llmkit.data.corpora import fetch_corpus

    if lang == "en":
        text = fetch_corpus("shakespeare")[seed % 7].read_text(encoding="utf-8")
        paras = [p.strip() for p in text.split("\n\n") if len(p.strip()) > 40]
    else:
        paras = []
        for f in fetch_corpus("fortunes-zh"):
            paras += [json.loads(line)["text"].strip() for line in f.read_text(encoding="utf-8").splitlines()]
        paras = [p for p in paras if len(p) > 20]
    rng = random.Random(seed)
    start = rng.randrange(0, max(1, len(paras) - 400))
    out, total = [], 0
    for p in paras[start:]:
        if total >= chars:
            break
        out.append(p)
        total += len(p)
    return out


def write_planted(directory: Path, lang: str, chars: int, files: int = 3, seed: int = 0) -> list[dict]:
    """Write ``files`` text files of filler with this language's facts planted in them; returns the
    facts, each with the file it went to."""
    rng = random.Random(seed)
    paras = filler(lang, chars, seed)
    planted = []
    per_file = [paras[i::files] for i in range(files)]
    for f in facts(lang):
        i = rng.randrange(files)
        per_file[i].insert(rng.randrange(len(per_file[i]) + 1), f["fact"])
        planted.append({**f, "file": f"{lang}_{i}.txt"})
    directory.mkdir(parents=True, exist_ok=True)
    for i, ps in enumerate(per_file):
        (directory / f"{lang}_{i}.txt").write_text("\n\n".join(ps) + "\n", encoding="utf-8")
    return planted


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF (Helvetica text, one line per ``\\n``) written by hand, for ASCII text."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, text in enumerate(pages):
        ops = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) Tj T*" for line in text.split("\n")) + " ET"
        stream = ops.encode("latin-1")
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)
