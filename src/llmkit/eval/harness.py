"""The ``lm-eval`` model adapter: run any lm-evaluation-harness task on an llmkit checkpoint in-process.

Importing this module registers :class:`LLMKitLM` as ``llmkit`` in lm-eval's model registry, so::

    import llmkit.eval.harness  # noqa: F401  (registers "llmkit")
    lm_eval.simple_evaluate(model="llmkit", model_args="pretrained=runs/cpu-tiny/base", tasks=[...])

works like any built-in backend (``llmkit eval CKPT --lm-eval TASKS`` does exactly this).
Log-likelihood requests go through :func:`llmkit.infer.scoring.score` in sorted, batched form (the
pair split exactly as lm-eval's own ``hf`` backend splits it); rolling log-likelihoods through the
same sliding windows as bits per byte; generation through the engine (greedy, batched, stop strings).
"""

from __future__ import annotations

from pathlib import Path

from llmkit.eval.perplexity import EvalError, rolling_requests
from llmkit.eval.runner import encode_pair
from llmkit.infer.scoring import score

try:
    import lm_eval.models  # noqa: F401  lm-eval's own models first: it imports them only while its registry is empty
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as e:  # lm-eval is an optional dependency
    raise EvalError("the lm-eval adapter needs lm-eval: pip install 'llmkit[eval]' (or pip install lm-eval)") from e


@register_model("llmkit")
class LLMKitLM(LM):
    """An llmkit checkpoint behind lm-eval's ``LM`` interface (``pretrained=PATH``, ``device``,
    ``dtype``, ``batch_size``, ``max_gen_toks``)."""

    def __init__(
        self,
        pretrained: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 16,
        max_gen_toks: int = 256,
        loaded=None,
        **_ignored,
    ):
        super().__init__()
        import llmkit

        if loaded is None:
            if not pretrained:
                raise EvalError("lm-eval model_args: give pretrained=PATH (an llmkit checkpoint directory)")
            loaded = llmkit.load(pretrained, device=device, dtype=dtype, inference_only=True)
        self.loaded = loaded
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16
        self.max_gen_toks = int(max_gen_toks)

    @property
    def tokenizer_name(self) -> str:
        return str(self.loaded.path)

    def _prefix(self) -> list[int]:
        tok = self.loaded.tokenizer
        return [tok.bos_id if tok.bos_id is not None else tok.eos_id]

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = [encode_pair(self.loaded.tokenizer, *req.args) for req in requests]
        scored = score(self.loaded.model, pairs, batch_size=self.batch_size)
        out = []
        for req, s in zip(requests, scored, strict=True):
            answer = (s.logprob, s.is_greedy)
            self.cache_hook.add_partial("loglikelihood", req.args, answer)
            out.append(answer)
        return out

    def loglikelihood_rolling(self, requests) -> list[float]:
        max_len = self.loaded.config.max_position_embeddings
        tok = self.loaded.tokenizer
        pairs, owner = [], []
        for i, req in enumerate(requests):
            ids = tok.encode(req.args[0])
            for pair in rolling_requests(ids, self._prefix(), max_len, max_len):
                pairs.append(pair)
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, s in zip(owner, score(self.loaded.model, pairs, batch_size=self.batch_size), strict=True):
            totals[i] += s.logprob
        return totals

    def generate_until(self, requests) -> list[str]:
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            _, kwargs = req.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            key = (tuple(until), int(kwargs.get("max_gen_toks", self.max_gen_toks)))
            groups.setdefault(key, []).append(i)
        out = [""] * len(requests)
        for (until, max_new), rows in groups.items():
            texts = self.loaded.generate(
                [requests[i].args[0] for i in rows],
                max_new_tokens=max_new,
                temperature=0.0,
                stop=list(until),
                truncate_prompt=True,
            )
            for i, text in zip(rows, texts, strict=True):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out


def run_harness(
    checkpoint: Path,
    tasks: list[str],
    out_dir: Path,
    *,
    num_fewshot: int = 0,
    batch_size: int = 16,
    limit: int | None = None,
    include_path: Path | None = None,
    device: str | None = None,
    dtype: str = "auto",
    seed: int = 1234,
) -> str:
    """``lm_eval.simple_evaluate`` on ``checkpoint`` through this adapter; writes ``lm_eval.json`` and
    ``lm_eval.md`` into ``out_dir`` and returns lm-eval's own results table."""
    import json

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    from llmkit.files import atomic_write_text

    manager = None
    if include_path:  # indexing lm-eval's ~15,000 built-in tasks takes minutes on a small CPU: skip when not needed
        manager = TaskManager(include_path=str(include_path), include_defaults=False)
        if any(t not in manager.all_tasks for t in tasks):
            manager = None
    manager = manager or TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise EvalError(
            f"--lm-eval: unknown task {unknown[0]!r}; list them with `lm-eval ls tasks`, or add --include-path DIR"
        )
    lm = LLMKitLM(str(checkpoint), device=device, dtype=dtype, batch_size=batch_size)
    results = simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=manager,
        random_seed=seed,
        fewshot_random_seed=seed,
        log_samples=False,
    )
    table = make_table(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "lm_eval.json", json.dumps(results["results"], indent=2, default=str) + "\n")
    atomic_write_text(out_dir / "lm_eval.md", table)
    return table
