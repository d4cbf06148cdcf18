"""Evaluation plots (PNG, matplotlib's Agg backend): the in-context curve, scaling fits, emergence."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    """Write ``fig`` atomically (temp file + rename) and close it."""
    plt = _plt()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_icl(results: list[dict], path: Path) -> Path:
    """Accuracy (± one standard error) against the number of shots, one line per task and
    checkpoint; chance level dashed where the task has a fixed number of choices."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=100)
    for r in results:
        tasks = list(dict.fromkeys(t["task"] for t in r["tasks"]))
        for name in tasks:
            rows = sorted((t for t in r["tasks"] if t["task"] == name), key=lambda t: t["shots"])
            label = name if len(results) == 1 else f"{name} ({Path(r['checkpoint']).name})"
            line = ax.errorbar(
                [t["shots"] for t in rows],
                [100 * t["acc"] for t in rows],
                yerr=[100 * t["acc_stderr"] for t in rows],
                marker="o",
                capsize=3,
                label=label,
            )
            if rows[0].get("chance"):
                ax.axhline(100 * rows[0]["chance"], color=line[0].get_color(), linestyle="--", linewidth=0.8)
    ax.set_xscale("symlog", linthresh=1)
    shots = sorted({t["shots"] for r in results for t in r["tasks"]})
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.set_xlabel("shots in the prompt")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)
