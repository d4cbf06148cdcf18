"""Run reports: the loss plot and ``report.md`` (markdown tables a person can read in a minute)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_metrics(metrics_path: Path, png_path: Path) -> Path | None:
    """Training loss per step and validation loss at each evaluation, in one PNG."""
    rows = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", linewidth=1.2)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="val loss", linewidth=1.5, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png_path)
    return png_path


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def write_report(run_dir: Path, sections: dict[str, Any]) -> Path:
    """Write ``run_dir/report.md`` from the run's saved artefacts plus ``sections`` of key/values.

    ``sections`` maps a heading to a dict (rendered as a table), a list of samples or a string.
    """
    from llmkit.files import atomic_write_text

    run_dir = Path(run_dir)
    parts = [f"# Run report: `{run_dir.name}`", ""]
    for title, body in sections.items():
        parts += [f"## {title}", ""]
        if isinstance(body, dict):
            parts.append(_table([(k, _fmt(v)) for k, v in body.items()]))
        elif isinstance(body, list):
            for item in body:
                prompt, text = item["prompt"], item["text"]
                parts += [f"**{prompt}**", "", "```text", prompt + text, "```", ""]
        else:
            parts.append(str(body))
        parts.append("")
    cfg = run_dir / "config.yaml"
    if cfg.is_file():
        parts += ["## Config", "", "```yaml", cfg.read_text(encoding="utf-8").rstrip(), "```", ""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(parts))
    return path


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
