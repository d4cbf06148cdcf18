"""After a sweep: both fits, the compute-optimal prediction, plots and the markdown summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmkit.eval.scaling_fit import fit_chinchilla, fit_isoflop

CHINCHILLA_TOKENS_PER_PARAM = 20.0


def analyse(results: list[dict], predict: float, bootstrap: int = 200) -> dict:
    """Fit the parametric law and the IsoFLOP exponents to the points; predict N and D for ``predict``."""
    N = np.array([r["N"] for r in results], dtype=float)
    D = np.array([r["D"] for r in results], dtype=float)
    L = np.array([r["val_loss"] for r in results], dtype=float)
    C = np.array([r["budget"] for r in results], dtype=float)
    chin = fit_chinchilla(N, D, L, bootstrap=bootstrap)
    out: dict = {"chinchilla": chin.to_dict(), "predict": {"compute": predict}}
    n, d = chin.optimal(predict)
    out["predict"]["chinchilla"] = {"N": n, "D": d, "tokens_per_param": d / n}
    try:
        iso = fit_isoflop(C, N, D, L, bootstrap=bootstrap)
        out["isoflop"] = iso.to_dict()
        n, d = iso.optimal(predict)
        out["predict"]["isoflop"] = {"N": n, "D": d, "tokens_per_param": d / n}
    except Exception as e:  # an IsoFLOP fit needs minima inside the sizes; say why there is none
        out["isoflop"] = {"error": str(e)}
    return out


def _ci(fit: dict, name: str, fmt: str = "{:.3f}") -> str:
    value = fmt.format(fit[name])
    if name in fit.get("ci", {}):
        low, high = fit["ci"][name]
        return f"{value} [{fmt.format(low)}, {fmt.format(high)}]"
    return value


def markdown(results: list[dict], fits: dict) -> str:
    """The points, both fits with 95% bootstrap intervals, and the prediction for the named budget."""
    lines = [
        "| point | N | D | C (FLOPs) | steps | val loss | time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (r["budget"], r["N"])):
        lines.append(
            f"| {r['name']} | {r['N'] / 1e6:.3f}M | {r['D'] / 1e6:.2f}M | {r['compute']:.2e} | {r['steps']} | "
            f"{r['val_loss']:.4f} | {r['seconds']:.0f} s |"
        )
    c = fits["chinchilla"]
    lines += [
        "",
        f"**Parametric fit** (Chinchilla approach 3, {c['n_points']} points, {c['bootstrap']} bootstrap resamples; "
        "95% intervals in brackets):",
        "",
        "| constant | value |",
        "|---|---|",
        f"| E | {_ci(c, 'E')} |",
        f"| A | {_ci(c, 'A', '{:.4g}')} |",
        f"| B | {_ci(c, 'B', '{:.4g}')} |",
        f"| alpha | {_ci(c, 'alpha')} |",
        f"| beta | {_ci(c, 'beta')} |",
        f"| a = beta/(alpha+beta) (N_opt ∝ C^a) | {_ci(c, 'a')} |",
        f"| b = alpha/(alpha+beta) (D_opt ∝ C^b) | {_ci(c, 'b')} |",
        "",
    ]
    iso = fits.get("isoflop", {})
    if "a" in iso:
        lines += [
            f"**IsoFLOP fit** ({len(iso['budgets'])} budgets with a minimum inside the sizes): "
            f"a = {_ci(iso, 'a')}, b = {_ci(iso, 'b')}",
            "",
        ]
    else:
        lines += [f"**IsoFLOP fit**: none ({iso.get('error', 'not run')})", ""]
    p = fits["predict"]
    lines += [
        f"**Compute-optimal model for C = {p['compute']:.2e} FLOPs:**",
        "",
        "| method | N | D | tokens per parameter |",
    ]
    lines.append("|---|---:|---:|---:|")
    for method in ("chinchilla", "isoflop"):
        if method in p:
            q = p[method]
            lines.append(f"| {method} | {q['N']:.3g} | {q['D']:.3g} | {q['tokens_per_param']:.1f} |")
    lines.append(f"| Hoffmann et al. (2022) | | | ~{CHINCHILLA_TOKENS_PER_PARAM:.0f} |")
    return "\n".join(lines)


def write_report(out_dir: Path, results: list[dict], fits: dict) -> Path:
    from llmkit.eval.plots import plot_isoflop, plot_loss_vs_compute
    from llmkit.files import atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "scaling.json", {"points": results, "fits": fits})
    plot_loss_vs_compute(results, fits, out_dir / "loss_vs_compute.png")
    parts = ["# Scaling sweep", "", markdown(results, fits), "", "![loss against compute](loss_vs_compute.png)", ""]
    if "a" in fits.get("isoflop", {}):
        plot_isoflop(results, fits, out_dir / "isoflop.png")
        parts += ["![IsoFLOP curves](isoflop.png)", ""]
    if (out_dir / "emergence.png").is_file():
        parts += [
            "Emergence: exact match (all-or-nothing) and the per-token loss of the same answers, per point:",
            "",
            "![emergence](emergence.png)",
            "",
        ]
    atomic_write_text(out_dir / "scaling.md", "\n".join(parts))
    return out_dir / "scaling.md"
