"""Run reports: the loss plot, ``report.md`` (markdown tables a person can read in a minute) and
``report.html`` (the same page in one file, plots inline, to open in a browser)."""

from __future__ import annotations

import json
import re
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


def _cell(v: Any) -> str:
    """A table cell stays in its row: no newlines, no bare column separators."""
    return " ".join(str(v).split()).replace("|", "\\|")


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in rows]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """``text`` as one line of markdown that renders as itself: whitespace runs (a prompt's newlines
    too) become one space, and characters markdown would read as formatting are escaped."""
    return re.sub(r"([\\`*_\[\]<>#|~])", r"\\\1", " ".join(text.split())) or "(empty)"


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
                fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", prompt + text)), default=0))
                parts += [f"**{_inline(prompt)}**", "", fence + "text", prompt + text, fence, ""]
        else:
            parts.append(str(body))
        parts.append("")
    cfg = run_dir / "config.yaml"
    if cfg.is_file():
        parts += ["## Config", "", "```yaml", cfg.read_text(encoding="utf-8").rstrip(), "```", ""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(parts))
    write_html(path)
    return path


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 15px/1.5 system-ui, "PingFang SC", "Noto Sans CJK SC", sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }}
pre {{ background: #f6f6f6; padding: 0.6rem; overflow-x: auto; white-space: pre-wrap; }}
img {{ max-width: 100%; }}
</style></head><body>
{body}
</body></html>
"""


def write_html(markdown_path: Path) -> Path:
    """``report.html`` beside ``report.md``: the same content with every local image embedded (base64),
    so the one file can be opened, mailed or archived on its own."""
    import base64
    import html
    import re

    from markdown_it import MarkdownIt

    from llmkit.files import atomic_write_text

    markdown_path = Path(markdown_path)
    text = markdown_path.read_text(encoding="utf-8")
    body = MarkdownIt("commonmark").enable("table").render(text)

    def inline(match: re.Match) -> str:
        src = html.unescape(match.group(1))
        file = markdown_path.parent / src
        if src.startswith(("http:", "https:", "data:")) or not file.is_file():
            return match.group(0)
        data = base64.b64encode(file.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+)"', inline, body)
    title = text.splitlines()[0].lstrip("# ").replace("`", "") if text else markdown_path.stem
    out = markdown_path.with_suffix(".html")
    atomic_write_text(out, _HTML.format(title=html.escape(title), body=body))
    return out


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
