"""The per-document steps, in order: one function turns a raw document into a cleaned one (or the
name of the rule that removed it). Both engines (the local one in :mod:`.runner` and the
datatrove steps in :mod:`.datatrove_engine`) call :func:`clean_document`, so they clean alike.

Order: HTML extraction -> normalisation -> PII scrubbing -> language identification ->
boilerplate lines -> quality rules -> repetition rules -> decontamination -> dedup keys. Cheap
rules run before expensive ones; the text the dedup keys are computed from is the final text.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from llmkit.config import CleanConfig
from llmkit.data.clean import decontaminate, dedup, html, langid, normalise, pii, quality, repetition
from llmkit.data.clean.tokens import tokens
from llmkit.errors import ConfigError

RULE_FIELDS = {
    "html": "clean.html",
    "empty": "clean.normalise",
    "language": "clean.languages",
    "language_score": "clean.lang_thresholds",
    "boilerplate": "clean.boilerplate",
    "too_short": "clean.min_tokens",
    "too_long": "clean.max_tokens",
    "broken_encoding": "clean.quality",
    "mean_word_length": "clean.quality",
    "symbol_ratio": "clean.max_symbol_ratio",
    "bullet_lines": "clean.quality",
    "ellipsis_lines": "clean.quality",
    "alpha_tokens": "clean.min_alpha_tokens",
    "lorem_ipsum": "clean.quality",
    "stop_words": "clean.quality",
    "decontaminate": "clean.decontaminate",
    "exact_duplicate": "clean.dedup",
    "near_duplicate": "clean.near_threshold",
}
"""The config field that loosens or turns off each rule (repetition rules: ``clean.repetition``)."""


def rule_field(rule: str) -> str:
    return RULE_FIELDS.get(rule, "clean.repetition")


def validate(cfg: CleanConfig) -> None:
    """One-line errors for settings that cannot work (checked before any document is read)."""
    choices = {"html": ("auto", "on", "off"), "dedup": ("near", "exact", "off"), "decontam_mode": ("document", "span")}
    choices["engine"] = ("local", "datatrove")
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"clean.{name}={getattr(cfg, name)!r}: use one of {', '.join(allowed)}")
    langid.check_languages(cfg.languages)
    langid.check_languages(cfg.lang_thresholds, "clean.lang_thresholds")
    if not 0 < cfg.near_threshold <= 1:
        raise ConfigError(f"clean.near_threshold={cfg.near_threshold} must be in (0, 1]")
    for name in ("shingle_size", "num_perm", "decontam_ngram", "chunk_bytes"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"clean.{name} must be positive, got {getattr(cfg, name)}")
    if cfg.workers < 0:
        raise ConfigError(f"clean.workers={cfg.workers} must be 0 (one per core) or a number of processes")


@dataclass
class Cleaned:
    """What happened to one document."""

    text: str | None  # the cleaned text, or None when removed
    rule: str = ""  # the rule that removed it
    value: float = 0.0  # what the rule measured
    lang: str = ""  # the main language ("" before identification)
    exact: bytes = b""  # dedup key (exact)
    signature: np.ndarray | None = None  # dedup key (near), (num_perm,) uint32
    events: Counter = field(default_factory=Counter)  # changes that kept the document (pii, spans, lines)


class DocumentCleaner:
    """The configured steps, ready to apply (one per process: holds the decontamination index)."""

    def __init__(self, cfg: CleanConfig, contamination: decontaminate.ContaminationIndex | None = None):
        self.cfg = cfg
        self.contamination = contamination if cfg.decontaminate and contamination is not None else None
        self.allowed = set(cfg.languages)
        self.q = quality.QualityThresholds(
            min_tokens=cfg.min_tokens,
            max_tokens=cfg.max_tokens,
            min_alpha_tokens=cfg.min_alpha_tokens,
            max_symbol_ratio=cfg.max_symbol_ratio,
        )
        self.r = repetition.RepetitionThresholds()

    def __call__(self, text: str, is_html: bool = False) -> Cleaned:
        cfg, events = self.cfg, Counter()
        if cfg.html == "on" or (cfg.html == "auto" and (is_html or html.looks_like_html(text))):
            text = html.html_to_text(text)
            events["html_pages"] += 1
            if not text.strip():
                return Cleaned(None, "html")
        if cfg.normalise:
            text = normalise.normalise(text)
        if not text.strip():
            return Cleaned(None, "empty")
        if cfg.pii:
            text, found = pii.scrub(text)
            events.update({f"pii_{k.lower()}": v for k, v in found.items()})
        langs = langid.identify(text)
        lang = langs[0][0]
        if self.allowed:
            ok = [(code, p) for code, p in langs if code in self.allowed]
            if not ok:
                return Cleaned(None, "language", langs[0][1], lang)
            if not any(p >= cfg.lang_thresholds.get(code, 0.0) for code, p in ok):
                return Cleaned(None, "language_score", ok[0][1], lang)
        elif cfg.lang_thresholds and langs[0][1] < cfg.lang_thresholds.get(lang, 0.0):
            return Cleaned(None, "language_score", langs[0][1], lang)
        if cfg.boilerplate:
            text, removed = quality.strip_boilerplate(text)
            if removed:
                events["boilerplate_lines"] += removed
                if not text.strip():
                    return Cleaned(None, "boilerplate", removed, lang)
        toks = tokens(text)
        if cfg.quality:
            failed = quality.check(text, toks, [code for code, _ in langs], self.q)
            if failed:
                return Cleaned(None, failed[0], failed[1], lang)
        if cfg.repetition:
            failed = repetition.check(text, toks, self.r)
            if failed:
                return Cleaned(None, failed[0], failed[1], lang)
        if self.contamination is not None:
            hits = self.contamination.matches(toks)
            if hits:
                if cfg.decontam_mode == "document":
                    return Cleaned(None, "decontaminate", len(hits), lang)
                text = decontaminate.cut_spans(text, hits).strip()
                events["decontaminated_spans"] += len(hits)
                if not text:
                    return Cleaned(None, "decontaminate", len(hits), lang)
                toks = tokens(text)
        out = Cleaned(text, lang=lang, events=events)
        if cfg.dedup != "off":
            out.exact = dedup.exact_key(toks)
        if cfg.dedup == "near":
            out.signature = dedup.signature(toks, cfg.shingle_size, cfg.num_perm)
        return out
