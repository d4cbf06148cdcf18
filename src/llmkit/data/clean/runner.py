"""The local engine: clean sources into ``OUT/corpus/<source>/part-*.jsonl``, streaming, in
parallel, resumable, with the same bytes out whatever the number of processes.

Three passes:

1. **Clean** (parallel): each source is read as a stream and cut into chunks of about
   ``clean.chunk_bytes``; a pool of processes applies :class:`.steps.DocumentCleaner` to each chunk
   and writes ``.work/<source>/c<k>.jsonl`` (kept documents), ``c<k>.npz`` (dedup keys) and, last,
   ``c<k>.json`` (counts and examples: the chunk's completion mark). Chunks depend only on the
   input, never on the number of processes, and at most two per process are in flight, so memory
   stays bounded however large the corpus.
2. **Dedup** (one process, corpus order): exact keys and MinHash signatures of every kept
   document go through :mod:`.dedup`; the first copy wins. Written to ``.work/dedup.json``.
3. **Write**: the kept, deduplicated documents of each source, repeated or subsampled by the mix
   (:mod:`.mix`), into a temporary directory renamed to ``OUT/corpus``; then the report, plots
   and data card (:mod:`.report`), ``report.json`` last. ``.work`` is then removed.

A killed run resumes from the chunks that have their ``.json``: re-running the same command
re-reads the sources (cheap) and cleans only what is missing, and writes exactly what an
uninterrupted run writes. Another config (or other sources) starts ``.work`` over; an ``OUT``
that holds a finished corpus made with other settings is refused, never overwritten.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from llmkit.config import CleanConfig, DataConfig
from llmkit.console import say
from llmkit.data.clean import report as reporting
from llmkit.data.clean.decontaminate import ContaminationIndex
from llmkit.data.clean.steps import DocumentCleaner, rule_field, validate
from llmkit.errors import DataError
from llmkit.files import make_temp_dir

PART_BYTES = 256_000_000  # start a new part-*.jsonl after this many bytes
_CHUNK_DOCS = 5000
_state: dict = {}


def labels_for(sources: list[str]) -> list[str]:
    """Each source's directory name in ``OUT/corpus`` (``shakespeare``, ``notes.jsonl``); repeated
    names get ``-2``, ``-3``."""
    from llmkit.data.splits import source_label

    out: list[str] = []
    for s in sources:
        base = label = source_label(s)
        k = 1
        while label in out:
            k += 1
            label = f"{base}-{k}"
        out.append(label)
    return out


def fingerprint(sources: list[str], cfg: CleanConfig, data_cfg: DataConfig, contamination: ContaminationIndex | None):
    """Everything the output depends on (a resumed or repeated run must match it)."""
    import dataclasses
    import hashlib

    conta = hashlib.blake2b(contamination.hashes.tobytes(), digest_size=8).hexdigest() if contamination else None
    clean = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("workers", "engine")}
    reading = {k: getattr(data_cfg, k) for k in ("text_field", "max_documents", "split", "strict")}
    return {"sources": list(sources), "clean": clean, "reading": reading, "contamination": conta}


# ---------------------------------------------------------------------- pass 1: clean chunks
def _chunks(sources: list[str], labels: list[str], data_cfg: DataConfig, stats: dict, chunk_bytes: int):
    """``(name, label, documents)`` per chunk, in corpus order."""
    from llmkit.data.sources import iter_documents

    for i, (source, label) in enumerate(zip(sources, labels, strict=True)):
        batch, size, k = [], 0, 0
        for doc in iter_documents(source, data_cfg, stats[label]):
            batch.append(doc)
            size += len(doc.encode("utf-8", "replace"))
            if size >= chunk_bytes or len(batch) >= _CHUNK_DOCS:
                yield f"{i:03d}-{label}/c{k:06d}", label, batch
                batch, size, k = [], 0, k + 1
        if batch:
            yield f"{i:03d}-{label}/c{k:06d}", label, batch


def _init_worker(cfg: CleanConfig, contamination: ContaminationIndex | None, work: str) -> None:
    _state.update(cleaner=DocumentCleaner(cfg, contamination), work=Path(work))


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def clean_chunk(name: str, label: str, docs: list[str]) -> dict:
    """Clean one chunk and write its three files (the ``.json`` last); return its counts."""
    cleaner: DocumentCleaner = _state["cleaner"]
    tally = reporting.ChunkTally(label)
    kept, exact, sigs, sizes = [], [], [], []
    for doc in docs:
        res = cleaner(doc)
        tally.add(doc, res)
        if res.text is not None:
            kept.append(json.dumps({"text": res.text, "lang": res.lang}, ensure_ascii=False))
            exact.append(int.from_bytes(res.exact or b"\0" * 8, "little"))
            sizes.append(len(res.text.encode("utf-8")))
            if res.signature is not None:
                sigs.append(res.signature)
    base = _state["work"] / name
    base.parent.mkdir(parents=True, exist_ok=True)
    _atomic(base.with_suffix(".jsonl"), lambda p: p.write_text("".join(k + "\n" for k in kept), encoding="utf-8"))
    sig = np.stack(sigs) if sigs else np.zeros((0, 0), np.uint32)  # (kept, num_perm)

    def write_npz(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, exact=np.array(exact, np.uint64), bytes=np.array(sizes, np.int64), sig=sig)

    _atomic(base.with_suffix(".npz"), write_npz)
    counts = tally.to_dict()
    _atomic(base.with_suffix(".json"), lambda p: p.write_text(json.dumps(counts, ensure_ascii=False), encoding="utf-8"))
    return counts


def _size(docs: list[str]) -> int:
    return sum(len(d.encode("utf-8", "replace")) for d in docs)


def _run_chunks(chunks: Iterator, work: Path, cfg: CleanConfig, contamination, workers: int, bar) -> list[str]:
    """Clean every chunk not already done; return all chunk names in corpus order."""
    names: list[str] = []

    def todo():
        for name, label, docs in chunks:
            names.append(name)
            if (work / name).with_suffix(".json").is_file():  # done by an earlier, interrupted run
                bar.update(_size(docs))
            else:
                yield name, label, docs

    if workers <= 1:
        _init_worker(cfg, contamination, str(work))
        for name, label, docs in todo():
            clean_chunk(name, label, docs)
            bar.update(_size(docs))
        return names
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers, _init_worker, (cfg, contamination, str(work))) as pool:
        pending: deque = deque()
        for name, label, docs in todo():
            pending.append((pool.apply_async(clean_chunk, (name, label, docs)), _size(docs)))
            if len(pending) >= 2 * workers:
                job, size = pending.popleft()
                job.get()
                bar.update(size)
        while pending:
            job, size = pending.popleft()
            job.get()
            bar.update(size)
    return names


# ---------------------------------------------------------------------- pass 2: dedup
def _dedup(work: Path, names: list[str], cfg: CleanConfig) -> dict[str, dict[int, list]]:
    """``{chunk: {index in chunk: [rule, similarity]}}`` of the documents that repeat earlier ones."""
    from llmkit.data.clean.dedup import NearDuplicateIndex

    path = work / "dedup.json"
    if path.is_file():
        return {c: {int(i): v for i, v in d.items()} for c, d in json.loads(path.read_text(encoding="utf-8")).items()}
    removed: dict[str, dict[int, list]] = {}
    if cfg.dedup != "off":
        seen: set[int] = set()
        near = NearDuplicateIndex(cfg.near_threshold, cfg.num_perm) if cfg.dedup == "near" else None
        key = 0
        for name in names:
            with np.load((work / name).with_suffix(".npz")) as z:
                exact, sig = z["exact"], z["sig"]
            for i, e in enumerate(exact.tolist()):
                key += 1
                if e in seen:
                    removed.setdefault(name, {})[i] = ["exact_duplicate", 1.0]
                    continue
                if near is not None:
                    other = near.add(key, sig[i])
                    if other is not None:
                        sim = float(np.mean(sig[i] == near.kept[other]))
                        removed.setdefault(name, {})[i] = ["near_duplicate", sim]
                        continue
                seen.add(e)
    _atomic(path, lambda p: p.write_text(json.dumps(removed), encoding="utf-8"))
    return removed


# ---------------------------------------------------------------------- pass 3: write
def _kept_records(work: Path, names: list[str], label: str, removed: dict, tally) -> Iterator[dict]:
    """The kept, deduplicated records of one source, in order (counting removals into ``tally``)."""
    for name in names:
        if name.split("/")[0].split("-", 1)[1] != label:
            continue
        gone = removed.get(name, {})
        with open((work / name).with_suffix(".jsonl"), encoding="utf-8") as f:
            for i, line in enumerate(f):
                rec = json.loads(line)
                if i in gone:
                    tally.removed_after(label, rec["text"], *gone[i])
                    continue
                yield rec


def _kept_bytes(work: Path, names: list[str], labels: list[str], removed: dict) -> dict[str, int]:
    """Bytes per source after cleaning and dedup (what the mix weights are shares of)."""
    out = dict.fromkeys(labels, 0)
    for name in names:
        with np.load((work / name).with_suffix(".npz")) as z:
            sizes = z["bytes"]
        gone = list(removed.get(name, {}))
        out[name.split("/")[0].split("-", 1)[1]] += int(sizes.sum() - sizes[gone].sum())
    return out


def _epochs(cfg: CleanConfig, labels: list[str], sources: list[str], kept_bytes: dict[str, int]) -> dict[str, float]:
    from llmkit.data.clean.mix import epochs_for_weights

    def by_label(d: dict, field: str) -> dict[str, float]:
        out = {}
        for key, value in d.items():
            key = str(key)
            if key in labels:
                out[key] = float(value)
            elif key in sources:
                out[labels[sources.index(key)]] = float(value)
            else:
                raise DataError(f"{field}: unknown source {key!r}; sources: {', '.join(labels)}")
        return out

    if cfg.mix_weights:
        return epochs_for_weights(kept_bytes, by_label(cfg.mix_weights, "clean.mix_weights"))
    epochs = dict.fromkeys(labels, 1.0)
    epochs.update(by_label(cfg.mix_epochs, "clean.mix_epochs"))
    for label, e in epochs.items():
        if e < 0:
            raise DataError(f"clean.mix_epochs: {label}={e} must be >= 0")
    return epochs


def _write_corpus(tmp: Path, work: Path, names, labels, removed, epochs, tally) -> None:
    from llmkit.data.clean.mix import copies

    for label in labels:
        d = tmp / label
        d.mkdir(parents=True)
        part, size, f = 0, 0, open(d / "part-00000.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        try:
            for rec in _kept_records(work, names, label, removed, tally):
                tally.final(label, rec)
                line = json.dumps({"text": rec["text"]}, ensure_ascii=False) + "\n"
                for _ in range(copies(rec["text"], epochs[label])):
                    if size >= PART_BYTES:
                        f.close()
                        part, size = part + 1, 0
                        f = open(d / f"part-{part:05d}.jsonl", "w", encoding="utf-8")  # noqa: SIM115
                    f.write(line)
                    size += len(line.encode("utf-8"))
                    tally.written(label, rec["text"])
        finally:
            f.close()


def load_report(out_dir: Path) -> dict | None:
    path = Path(out_dir) / "report.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def clean_corpus(
    sources: list[str],
    out_dir: Path,
    cfg: CleanConfig,
    data_cfg: DataConfig | None = None,
    eval_texts: Iterable[str] | None = None,
    show_progress: bool | None = None,
) -> dict:
    """Clean ``sources`` into ``out_dir`` (see the module docstring) and return the report.

    ``eval_texts``: evaluation items to decontaminate against (None or empty: no decontamination).
    A finished ``out_dir`` made with the same settings is returned as is."""
    from tqdm import tqdm

    validate(cfg)
    data_cfg = data_cfg or DataConfig()
    if not sources:
        raise DataError("no sources to clean; name at least one corpus, file, directory, glob or hf:NAME")
    out_dir = Path(out_dir)
    texts = list(eval_texts or [])
    contamination = ContaminationIndex(texts, cfg.decontam_ngram) if cfg.decontaminate and texts else None
    fp = fingerprint(sources, cfg, data_cfg, contamination)
    done = load_report(out_dir)
    if done is not None:
        if done.get("fingerprint") == fp:
            return done
        raise DataError(
            f"{out_dir} already holds a cleaned corpus made with other sources or settings; "
            "choose another --out or delete it"
        )
    work = out_dir / ".work"
    if (work / "config.json").is_file() and json.loads((work / "config.json").read_text(encoding="utf-8")) != fp:
        say(f"clean: {work} was made with other settings; starting over")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    _atomic(work / "config.json", lambda p: p.write_text(json.dumps(fp, ensure_ascii=False), encoding="utf-8"))

    import time

    from llmkit.data.sources import SourceStats

    t0 = time.perf_counter()
    labels = labels_for(sources)
    source_stats = {label: SourceStats() for label in labels}
    workers = cfg.workers or os.cpu_count() or 1
    bar = tqdm(
        desc="cleaning",
        unit="B",
        unit_scale=True,
        mininterval=1.0,
        disable=not (sys.stderr.isatty() if show_progress is None else show_progress),
    )
    names = _run_chunks(
        _chunks(sources, labels, data_cfg, source_stats, cfg.chunk_bytes), work, cfg, contamination, workers, bar
    )
    bar.close()
    t1 = time.perf_counter()
    removed = _dedup(work, names, cfg)
    t2 = time.perf_counter()

    tally = reporting.Tally(labels, sources)
    for name in names:
        tally.add_chunk(json.loads((work / name).with_suffix(".json").read_text(encoding="utf-8")))
    kept_bytes = _kept_bytes(work, names, labels, removed)
    if not any(kept_bytes.values()):
        rule, n = tally.top_rule()
        raise DataError(
            f"clean: every document was removed (most by rule {rule!r}: {n:,} of {tally.docs_in:,}); "
            f"loosen or turn off {rule_field(rule)}"
        )
    epochs = _epochs(cfg, labels, sources, kept_bytes)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out_dir, ".corpus.tmp-")
    try:
        _write_corpus(tmp, work, names, labels, removed, epochs, tally)
        final = out_dir / "corpus"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    t3 = time.perf_counter()
    result = tally.summary(
        fingerprint=fp,
        epochs=epochs,
        warnings={label: st.warnings() for label, st in source_stats.items()},
        outputs=[str(out_dir / "corpus" / label) for label in labels],
        seconds={"clean": t1 - t0, "dedup": t2 - t1, "write": t3 - t2},
        workers=workers,
        contamination={"items": contamination.items, "ignored": contamination.ignored} if contamination else None,
        config=fp["clean"],
    )
    reporting.write_report_files(out_dir, result)
    _atomic(
        out_dir / "report.json",
        lambda p: p.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8"),
    )
    shutil.rmtree(work, ignore_errors=True)
    return result
