"""The same cleaning on datatrove, for corpora that outgrow one machine (``clean.engine=datatrove``).

datatrove (Hugging Face's data-processing library) runs a pipeline as ``tasks`` independent
shards on an *executor*: ``LocalPipelineExecutor`` (processes on this machine; what ``llmkit data
clean`` uses here and what the tests run), ``SlurmPipelineExecutor`` (one Slurm array job per
stage) or ``RayPipelineExecutor``. Nothing here schedules work itself; every stage is a datatrove
pipeline and completed tasks are skipped when a stage is run again (datatrove's own resume).

Stages (each waits for the previous one):

1. ``clean``: a reader step gives task ``r`` the documents ``i % tasks == r`` of the sources, then
   :class:`CleanStep` applies :class:`.steps.DocumentCleaner` (the very code the local engine
   runs) and writes the kept documents with their source and language;
2. ``minhash``: datatrove's four MinHash stages (signatures -> buckets -> clusters -> filter).
   :class:`ShingleSignature` gives them llmkit's shingles (characters for Chinese, words
   elsewhere) instead of datatrove's word tokenizer, which needs spaCy and jieba for Chinese;
   the bands come from the same threshold as the local engine;
3. the filter stage writes ``OUT/corpus/<source>/part-<task>.jsonl``.

Differences from the local engine: a duplicate cluster keeps datatrove's choice of copy (not
necessarily the first in corpus order), candidates sharing a band are not re-checked against the
threshold, documents are grouped by task inside each source, and mixing (``clean.mix_*``) is not
applied. Counts per rule and per source, histograms and the data card are the same.

On a cluster, pass ``make_executor`` (see docs/data-cleaning.md for a Slurm example) and put
``OUT`` on storage every node sees.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from llmkit.config import CleanConfig, DataConfig
from llmkit.console import say
from llmkit.errors import ConfigError, DataError


def _steps():
    """datatrove classes, imported on first use (it is an optional dependency)."""
    try:
        from datatrove.data import Document
        from datatrove.pipeline.base import PipelineStep
        from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    except ImportError:
        raise ConfigError("clean.engine=datatrove needs datatrove: pip install 'llmkit[datatrove]'") from None

    class SourceReader(PipelineStep):
        """Task ``rank`` reads every source and keeps documents ``i % world_size == rank``."""

        name = "llmkit sources"
        type = "📖 - READER"

        def __init__(self, sources, labels, data_cfg):
            super().__init__()
            self.sources, self.labels, self.data_cfg = sources, labels, data_cfg

        def run(self, data=None, rank: int = 0, world_size: int = 1):
            from llmkit.data.sources import SourceStats, iter_documents

            i = 0
            for source, label in zip(self.sources, self.labels, strict=True):
                for text in iter_documents(source, self.data_cfg, SourceStats()):
                    if i % world_size == rank:
                        self.stat_update("documents")
                        yield Document(text=text, id=str(i), metadata={"source": label})
                    i += 1

    class CleanStep(PipelineStep):
        """llmkit's per-document cleaning; its counts go to ``tallies/<rank>.json``."""

        name = "llmkit clean"
        type = "🔻 - FILTER"

        def __init__(self, cfg, eval_texts, tally_dir):
            super().__init__()
            self.cfg, self.eval_texts, self.tally_dir = cfg, eval_texts, tally_dir

        def run(self, data, rank: int = 0, world_size: int = 1):
            from llmkit.data.clean.decontaminate import ContaminationIndex
            from llmkit.data.clean.report import ChunkTally
            from llmkit.data.clean.steps import DocumentCleaner

            index = ContaminationIndex(self.eval_texts, self.cfg.decontam_ngram) if self.eval_texts else None
            cleaner = DocumentCleaner(self.cfg, index)
            tallies: dict[str, ChunkTally] = {}
            for doc in data:
                label = doc.metadata["source"]
                res = cleaner(doc.text)
                tallies.setdefault(label, ChunkTally(label)).add(doc.text, res)
                if res.text is None:
                    self.stat_update(res.rule)
                    continue
                doc.text = res.text
                doc.metadata["lang"] = res.lang
                yield doc
            Path(self.tally_dir).mkdir(parents=True, exist_ok=True)
            out = [t.to_dict() for t in tallies.values()]
            (Path(self.tally_dir) / f"{rank:05d}.json").write_text(
                json.dumps(out, ensure_ascii=False), encoding="utf-8"
            )

    class ShingleSignature(MinhashDedupSignature):
        """datatrove's MinHash signatures over llmkit's shingles (Chinese in characters)."""

        def __init__(self, output_folder, config, shingle_size: int):
            from datatrove.utils.word_tokenizers import WhitespaceTokenizer

            # datatrove's tokenizer is never used (get_shingles is ours); this one needs no spaCy
            super().__init__(output_folder, config=config, language=WhitespaceTokenizer())
            self.shingle_size = shingle_size

        def get_shingles(self, text: str) -> np.ndarray:
            from llmkit.data.clean.tokens import ngram_hashes, tokens

            return ngram_hashes(tokens(text), self.shingle_size).reshape((-1, 1))  # (S, 1) uint64

    return SourceReader, CleanStep, ShingleSignature, MinhashConfig


def _bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) that datasketch picks for this threshold, favouring recall like the local index."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
    return lsh.b, lsh.r


def local_executor(pipeline: list, name: str, tasks: int, logging_dir: str, depends=None):
    """datatrove's LocalPipelineExecutor with ``tasks`` processes."""
    from datatrove.executor import LocalPipelineExecutor

    return LocalPipelineExecutor(
        pipeline=pipeline, tasks=tasks, workers=tasks, logging_dir=logging_dir, depends=depends, start_method="fork"
    )


def clean_with_datatrove(
    sources: list[str],
    out_dir: Path,
    cfg: CleanConfig,
    data_cfg: DataConfig | None = None,
    eval_texts: Iterable[str] | None = None,
    show_progress: bool | None = None,
    make_executor: Callable = local_executor,
) -> dict:
    """Clean ``sources`` into ``out_dir`` with datatrove executors (see the module docstring).

    ``make_executor(pipeline, name, tasks, logging_dir, depends)`` builds each stage's executor;
    the default runs ``clean.workers`` local processes."""
    import os

    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from llmkit.data.clean import report as reporting
    from llmkit.data.clean.runner import fingerprint, labels_for, load_report
    from llmkit.data.clean.steps import rule_field

    if cfg.mix_epochs or cfg.mix_weights:
        raise ConfigError("clean.mix_epochs and clean.mix_weights need clean.engine=local; mix the output afterwards")
    if cfg.dedup == "exact":
        raise ConfigError("clean.engine=datatrove deduplicates with MinHash only; use clean.dedup=near or off")
    SourceReader, CleanStep, ShingleSignature, MinhashConfig = _steps()
    data_cfg = data_cfg or DataConfig()
    out_dir = Path(out_dir)
    texts = list(eval_texts or [])
    fp = {**fingerprint(sources, cfg, data_cfg, None), "engine": "datatrove", "eval_items": len(texts)}
    done = load_report(out_dir)
    if done is not None:
        if done.get("fingerprint") == fp:
            return done
        raise DataError(f"{out_dir} already holds a cleaned corpus made with other settings; choose another --out")
    labels = labels_for(sources)
    tasks = cfg.workers or os.cpu_count() or 1
    work = out_dir / ".datatrove"
    logs = str(work / "logs")
    filtered = str(work / "filtered")
    clean = make_executor(
        [SourceReader(sources, labels, data_cfg), CleanStep(cfg, texts, str(work / "tallies")), JsonlWriter(filtered)],
        "clean",
        tasks,
        f"{logs}/clean",
    )
    final_dir = work / "corpus"
    writer = JsonlWriter(str(final_dir), output_filename="${source}/part-${rank}.jsonl", compression=None)
    if cfg.dedup == "off":
        last = make_executor([JsonlReader(filtered), writer], "write", tasks, f"{logs}/write", depends=clean)
    else:
        bands, rows = _bands(cfg.near_threshold, cfg.num_perm)
        mh = MinhashConfig(n_grams=cfg.shingle_size, num_buckets=bands, hashes_per_bucket=rows)
        sigs, buckets, clusters = (str(work / d) for d in ("signatures", "buckets", "clusters"))
        stage1 = make_executor(
            [JsonlReader(filtered), ShingleSignature(sigs, mh, cfg.shingle_size)], "sig", tasks, f"{logs}/sig", clean
        )
        stage2 = make_executor([MinhashDedupBuckets(sigs, buckets, config=mh)], "buckets", bands, f"{logs}/b", stage1)
        stage3 = make_executor([MinhashDedupCluster(buckets, clusters, config=mh)], "cluster", 1, f"{logs}/c", stage2)
        last = make_executor(
            [JsonlReader(filtered), MinhashDedupFilter(clusters), writer], "filter", tasks, f"{logs}/f", stage3
        )
    say(f"clean: datatrove, {tasks} tasks -> {work}")
    last.run()

    tally = reporting.Tally(labels, sources)
    for path in sorted((work / "tallies").glob("*.json")):
        for chunk in json.loads(path.read_text(encoding="utf-8")):
            tally.add_chunk(chunk)
    for label in labels:
        files = sorted((final_dir / label).glob("part-*.jsonl")) if (final_dir / label).is_dir() else []
        for f in files:
            for line in f.open(encoding="utf-8"):
                rec = json.loads(line)
                rec["lang"] = (rec.get("metadata") or {}).get("lang", "")
                tally.final(label, rec)
                tally.written(label, rec["text"])
    before = dict.fromkeys(labels, 0)
    for path in sorted((work / "tallies").glob("*.json")):
        for chunk in json.loads(path.read_text(encoding="utf-8")):
            before[chunk["label"]] += chunk["docs"] - sum(n for n, _ in chunk["removed"].values())
    for label, p in tally.per.items():
        dups = before[label] - p["documents_kept"]
        if dups:
            tally._remove(label, "near_duplicate", dups, 0, [])
    if not any(p["documents_kept"] for p in tally.per.values()):
        rule, n = tally.top_rule()
        raise DataError(
            f"clean: every document was removed (most by rule {rule!r}: {n:,} of {tally.docs_in:,}); "
            f"loosen or turn off {rule_field(rule)}"
        )
    corpus = out_dir / "corpus"
    if corpus.exists():
        shutil.rmtree(corpus)
    corpus.mkdir(parents=True)
    for label in labels:  # datatrove's records carry metadata; llmkit's corpus is {"text"} per line
        (corpus / label).mkdir()
        src = final_dir / label
        for f in sorted(src.glob("part-*.jsonl")) if src.is_dir() else []:
            with open(corpus / label / f.name, "w", encoding="utf-8") as out:
                for line in f.open(encoding="utf-8"):
                    out.write(json.dumps({"text": json.loads(line)["text"]}, ensure_ascii=False) + "\n")
    result = tally.summary(
        fingerprint=fp,
        epochs=dict.fromkeys(labels, 1.0),
        warnings={},
        outputs=[str(corpus / label) for label in labels],
        seconds={},
        workers=tasks,
        engine="datatrove",
        contamination=None,
        config=fp["clean"],
    )
    reporting.write_report_files(out_dir, result)
    (out_dir / "report.json").write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    return result
