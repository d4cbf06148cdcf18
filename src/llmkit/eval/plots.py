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


def plot_loss_vs_compute(results: list[dict], fits: dict, path: Path) -> Path:
    """Each run's final loss against its compute (colour = model size), with the parametric law's
    compute-optimal frontier L(N_opt(C), D_opt(C))."""
    import numpy as np

    from llmkit.eval.scaling_fit import ChinchillaFit

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=100)
    sizes = sorted({r["N"] for r in results})
    cmap = plt.get_cmap("viridis")
    for i, n in enumerate(sizes):
        rows = sorted((r for r in results if r["N"] == n), key=lambda r: r["compute"])
        name = rows[0]["shape"]
        ax.plot(
            [r["compute"] for r in rows],
            [r["val_loss"] for r in rows],
            "o-",
            color=cmap(i / max(len(sizes) - 1, 1)),
            label=f"{name} ({n / 1e6:.2f}M)",
            markersize=4,
        )
    c = fits["chinchilla"]
    fit = ChinchillaFit(c["E"], c["A"], c["B"], c["alpha"], c["beta"], c["objective"], c["n_points"])
    lo, hi = min(r["compute"] for r in results), max(r["compute"] for r in results)
    grid = np.logspace(np.log10(lo) - 0.2, np.log10(hi) + 0.5, 50)
    n_opt, d_opt = fit.optimal(grid)
    ax.plot(grid, fit.loss(n_opt, d_opt), "k--", label="fitted compute-optimal frontier")
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save(fig, path)


def plot_isoflop(results: list[dict], fits: dict, path: Path) -> Path:
    """Left: loss against N for each budget, the fitted parabola and its minimum. Right: the optima
    against C with the fitted power laws N_opt ∝ C^a (IsoFLOP and parametric)."""
    import numpy as np

    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    iso = fits["isoflop"]
    budgets = sorted({r["budget"] for r in results})
    cmap = plt.get_cmap("plasma")
    by_budget = {b["compute"]: b for b in iso["budgets"]}
    for i, budget in enumerate(budgets):
        color = cmap(i / max(len(budgets) - 1, 1) * 0.85)
        rows = sorted((r for r in results if r["budget"] == budget), key=lambda r: r["N"])
        ax.plot([r["N"] for r in rows], [r["val_loss"] for r in rows], "o", color=color, label=f"C = {budget:.1e}")
        b = by_budget.get(budget)
        if b:
            x = np.linspace(np.log(rows[0]["N"]), np.log(rows[-1]["N"]), 60)
            ax.plot(np.exp(x), np.polyval(b["parabola_N"], x), "-", color=color, linewidth=1)
            ax.plot([b["N_opt"]], [np.polyval(b["parabola_N"], np.log(b["N_opt"]))], "*", color=color, markersize=12)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("validation loss (nats/token)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    cs = np.array([b["compute"] for b in iso["budgets"]])
    bx.plot(cs, [b["N_opt"] for b in iso["budgets"]], "o", color="C0", label="IsoFLOP optima")
    grid = np.logspace(np.log10(cs.min()) - 0.3, np.log10(cs.max()) + 0.3, 20)
    bx.plot(grid, np.exp(iso["kN"]) * grid ** iso["a"], "-", color="C0", label=f"IsoFLOP: N_opt ∝ C^{iso['a']:.2f}")
    c = fits["chinchilla"]
    G = (c["alpha"] * c["A"] / (c["beta"] * c["B"])) ** (1 / (c["alpha"] + c["beta"]))
    bx.plot(grid, G * (grid / 6) ** c["a"], "--", color="C1", label=f"parametric: N_opt ∝ C^{c['a']:.2f}")
    bx.set_xscale("log")
    bx.set_yscale("log")
    bx.set_xlabel("training compute C (FLOPs)")
    bx.set_ylabel("compute-optimal N")
    bx.grid(alpha=0.3, which="both")
    bx.legend(fontsize=7)
    return save(fig, path)


def plot_emergence(rows: list[dict], path: Path) -> Path:
    """2 x 2: exact match (top) and per-token answer loss (bottom) against compute (left, one line per
    model size) and against model size (right, one line per budget)."""
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=100, sharey="row")
    task = rows[0]["task"]
    for col, (x, group, cmap_name) in enumerate((("compute", "N", "viridis"), ("N", "budget", "plasma"))):
        keys = sorted({r[group] for r in rows})
        cmap = plt.get_cmap(cmap_name)
        for i, key in enumerate(keys):
            line = sorted((r for r in rows if r[group] == key), key=lambda r: r[x])
            color = cmap(i / max(len(keys) - 1, 1) * 0.85)
            label = f"{line[0]['shape']}" if group == "N" else f"C = {key:.0e}"
            xs = [r[x] for r in line]
            axes[0, col].errorbar(
                xs,
                [100 * r["acc"] for r in line],
                yerr=[100 * r["acc_stderr"] for r in line],
                marker="o",
                color=color,
                capsize=2,
                markersize=3,
                label=label,
            )
            axes[1, col].errorbar(
                xs,
                [r["answer_loss"] for r in line],
                yerr=[r["answer_loss_stderr"] for r in line],
                marker="o",
                color=color,
                capsize=2,
                markersize=3,
                label=label,
            )
        for row in range(2):
            axes[row, col].set_xscale("log")
            axes[row, col].grid(alpha=0.3, which="both")
        axes[1, col].set_xlabel("training compute C (FLOPs)" if x == "compute" else "parameters N")
        axes[0, col].legend(fontsize=7)
    axes[0, 0].set_ylabel(f"{task}: exact match (%)")
    axes[1, 0].set_ylabel("answer loss (nats/token)")
    return save(fig, path)
