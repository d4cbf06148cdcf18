"""Scaling-law fits: Chinchilla's parametric law and the IsoFLOP method, with bootstrap intervals.

**Parametric law** (Hoffmann et al. 2022, approach 3, as corrected by Besiroglu et al. 2024, the
Epoch AI replication): ``L(N, D) = E + A / N^alpha + B / D^beta``, fitted by minimising the Huber
loss (delta = 1e-3) between ``log L`` and ``LSE(a - alpha log N, b - beta log D, e)`` (``A = e^a``,
``B = e^b``, ``E = e^e``) with L-BFGS from a grid of initialisations (alpha, beta in {0, 0.5, ..., 2},
e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}). The objective is cheap, so the whole grid is
evaluated first and L-BFGS starts from its ``starts`` best points (default 256; 0 = all 4,500, which
took 33 s on 42 points and found the same optimum), every start at once (:func:`lbfgs` is batched
over independent problems). Under ``C = 6ND`` the
compute-optimal allocation is ``N_opt = G (C/6)^a``, ``D_opt = (C/6)^b / G`` with
``a = beta / (alpha + beta)``, ``b = alpha / (alpha + beta)``, ``G = (alpha A / (beta B))^(1 / (alpha + beta))``.

**IsoFLOP** (approach 2): for each compute budget a parabola of loss against ``log N`` (and against
``log D``) gives the budget's optimal N (and D); a line through ``log N_opt`` against ``log C`` gives
``N_opt ∝ C^a`` (and ``D_opt ∝ C^b``).

Confidence intervals are percentile bootstraps: the points are resampled with replacement (within
each budget for IsoFLOP) and the fit repeated.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from llmkit.eval.perplexity import EvalError

HUBER_DELTA = 1e-3
GRID = {
    "a": np.arange(0, 30, 5.0),
    "b": np.arange(0, 30, 5.0),
    "e": np.arange(-1, 1.5, 0.5),
    "alpha": np.arange(0, 2.5, 0.5),
    "beta": np.arange(0, 2.5, 0.5),
}
PARAMS = ("E", "A", "B", "alpha", "beta")


def _objective(theta: np.ndarray, logN: np.ndarray, logD: np.ndarray, logL: np.ndarray, delta: float):
    """Huber loss summed over points, and its gradient, for each row of ``theta`` (K, 5) = (a, b, e,
    alpha, beta); the data are (n,) or one row per theta (K, n) (bootstrap samples)."""
    a, b, e, alpha, beta = (theta[:, i : i + 1] for i in range(5))  # (K, 1) each
    t = np.stack(np.broadcast_arrays(a - alpha * logN, b - beta * logD, e))  # (3, K, n)
    top = t.max(axis=0)
    w = np.exp(t - top)
    total = w.sum(axis=0)
    lse = top + np.log(total)  # (K, n)
    w /= total  # softmax weights = d lse / d t
    r = lse - logL
    small = np.abs(r) <= delta
    loss = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)).sum(axis=1)  # (K,)
    g = np.where(small, r, delta * np.sign(r))  # (K, n): d huber / d r
    grad = np.stack(
        [
            (g * w[0]).sum(1),
            (g * w[1]).sum(1),
            (g * w[2]).sum(1),
            -(g * w[0] * logN).sum(1),
            -(g * w[1] * logD).sum(1),
        ],
        axis=1,
    )  # (K, 5)
    return loss, grad


def lbfgs(
    fun, x0: np.ndarray, *, iters: int = 500, memory: int = 10, gtol: float = 1e-12, ftol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise K independent problems at once with L-BFGS (two-loop recursion, backtracking Armijo
    line search). ``fun(x, rows) -> (f, grad)`` evaluates the problems ``rows`` (indices into the K)
    at ``x`` (len(rows), P) together, so thousands of initialisations cost about what one does. A
    problem stops when its line search fails, its gradient vanishes (``gtol``) or a step improves it
    by less than ``ftol`` relatively. Returns (x (K, P), f (K,))."""
    x = np.array(x0, dtype=float)
    active = np.arange(len(x))
    f, g = fun(x, active)
    hist: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (s, y, rho), oldest first
    for _ in range(iters):
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(hist):
            a = rho * (s * q).sum(1)
            q -= a[:, None] * y
            alphas.append(a)
        if hist:
            s, y, _ = hist[-1]
            sy, yy = (s * y).sum(1), (y * y).sum(1)
            gamma = np.where((sy > 0) & (yy > 0), sy / np.where(yy > 0, yy, 1.0), 1.0)
        else:  # first step: at most 1 in any coordinate
            gamma = 1.0 / np.maximum(np.abs(g).max(1), 1e-12)
        r = gamma[:, None] * q
        for (s, y, rho), a in zip(hist, reversed(alphas), strict=True):
            r += s * (a - rho * (y * r).sum(1))[:, None]
        d = -r
        uphill = (d * g).sum(1) >= 0  # curvature pairs gone bad: fall back to steepest descent
        d[uphill] = -gamma[uphill, None] * g[uphill]
        slope = (d * g).sum(1)
        step = np.ones(len(x))
        todo = active.copy()
        x_new, f_new, g_new = x.copy(), f.copy(), g.copy()
        for _ in range(40):
            if not len(todo):
                break
            xt = x[todo] + step[todo, None] * d[todo]
            ft, gt = fun(xt, todo)
            ok = ft <= f[todo] + 1e-4 * step[todo] * slope[todo]
            done = todo[ok]
            x_new[done], f_new[done], g_new[done] = xt[ok], ft[ok], gt[ok]
            step[todo[~ok]] *= 0.5
            todo = todo[~ok]
        s, y = x_new - x, g_new - g
        sy = (s * y).sum(1)
        rho = np.where(sy > 1e-20, 1.0 / np.where(sy > 1e-20, sy, 1.0), 0.0)  # rho = 0 skips the pair
        hist = [*hist[-(memory - 1) :], (s, y, rho)]
        # a row is finished when its line search failed, its gradient vanished or it stopped improving
        gain = f[active] - f_new[active]
        keep = (gain > ftol * np.maximum(np.abs(f[active]), 1e-30)) & (np.abs(g_new[active]).max(1) > gtol)
        active = active[keep]
        x, f, g = x_new, f_new, g_new
        if not len(active):
            break
    return x, f


def _grid() -> np.ndarray:
    return np.array(list(itertools.product(GRID["a"], GRID["b"], GRID["e"], GRID["alpha"], GRID["beta"])))


@dataclass
class ChinchillaFit:
    """The fitted law, its bootstrap intervals (``ci[name] = (low, high)``, 95%), and the objective."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    n_points: int
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    bootstrap: int = 0

    def loss(self, N, D):
        return (
            self.E
            + self.A / np.asarray(N, dtype=float) ** self.alpha
            + self.B / np.asarray(D, dtype=float) ** self.beta
        )

    @property
    def a(self) -> float:
        """N_opt ∝ C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """D_opt ∝ C^b."""
        return self.alpha / (self.alpha + self.beta)

    def optimal(self, compute: float) -> tuple[float, float]:
        """Compute-optimal (N, D) for ``compute`` FLOPs under C = 6ND."""
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        return G * (compute / 6) ** self.a, (compute / 6) ** self.b / G

    def to_dict(self) -> dict:
        return {
            **{k: getattr(self, k) for k in PARAMS},
            "a": self.a,
            "b": self.b,
            "objective": self.objective,
            "n_points": self.n_points,
            "bootstrap": self.bootstrap,
            "ci": {k: list(v) for k, v in self.ci.items()},
        }


def _fit_rows(x0: np.ndarray, logN, logD, logL, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """L-BFGS from every row of ``x0``; data are shared (n,) or one sample per row (K, n)."""
    per_row = logN.ndim == 2

    def fun(x, rows):
        if per_row:
            return _objective(x, logN[rows], logD[rows], logL[rows], delta)
        return _objective(x, logN, logD, logL, delta)

    return lbfgs(fun, x0)


def _check_points(N, D, L) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    N, D, L = (np.asarray(x, dtype=float) for x in (N, D, L))
    if not len(N) == len(D) == len(L):
        raise EvalError("scaling fit: N, D and loss must have one value per run")
    if len(N) < 5:
        raise EvalError(f"scaling fit: {len(N)} runs cannot determine 5 constants; run at least 5 (better 15+)")
    if (N <= 0).any() or (D <= 0).any() or (L <= 0).any() or not np.isfinite(L).all():
        raise EvalError("scaling fit: N, D and loss must be positive and finite")
    return np.log(N), np.log(D), np.log(L)


def fit_chinchilla(
    N: Sequence[float],
    D: Sequence[float],
    L: Sequence[float],
    *,
    starts: int = 256,
    bootstrap: int = 200,
    seed: int = 0,
    delta: float = HUBER_DELTA,
) -> ChinchillaFit:
    """Fit ``L = E + A/N^alpha + B/D^beta`` (see the module doc); ``bootstrap`` resamples give the
    95% intervals (each refit starts from the full fit and the grid's 3 best points)."""
    logN, logD, logL = _check_points(N, D, L)
    grid = _grid()
    grid_loss, _ = _objective(grid, logN, logD, logL, delta)
    order = np.argsort(grid_loss)
    x, f = _fit_rows(grid[order[:starts]] if starts else grid, logN, logD, logL, delta)
    best = int(np.nanargmin(np.where(np.isfinite(f), f, np.inf)))
    fit = _to_fit(x[best], float(f[best]), len(logN))
    if bootstrap:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(logN), (bootstrap, len(logN)))  # (B, n) resampled points
        x0 = np.concatenate([x[best : best + 1], grid[order[:3]]])  # (S, 5): the full fit, the grid's best
        S = len(x0)
        rows = np.repeat(idx, S, axis=0)  # (B * S, n)
        xb, fb = _fit_rows(np.tile(x0, (bootstrap, 1)), logN[rows], logD[rows], logL[rows], delta)
        fb = np.where(np.isfinite(fb), fb, np.inf).reshape(bootstrap, S)
        pick = xb.reshape(bootstrap, S, 5)[np.arange(bootstrap), fb.argmin(1)]  # (B, 5)
        fits = [_to_fit(t, 0.0, len(logN)) for t in pick]
        arr = np.array([[getattr(one, k) for k in (*PARAMS, "a", "b")] for one in fits])
        fit.ci = {k: _interval(arr[:, i]) for i, k in enumerate((*PARAMS, "a", "b"))}
        fit.bootstrap = bootstrap
    return fit


def _interval(values: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def _to_fit(theta, objective, n) -> ChinchillaFit:
    a, b, e, alpha, beta = (float(x) for x in theta)
    return ChinchillaFit(
        E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta, objective=objective, n_points=n
    )


@dataclass
class IsoFlopFit:
    """``N_opt = exp(kN) C^a`` and ``D_opt = exp(kD) C^b``; per budget the parabolas' optima."""

    a: float
    kN: float
    b: float
    kD: float
    budgets: list[dict]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    bootstrap: int = 0

    def optimal(self, compute: float) -> tuple[float, float]:
        return math.exp(self.kN) * compute**self.a, math.exp(self.kD) * compute**self.b

    def to_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "kN": self.kN,
            "kD": self.kD,
            "budgets": self.budgets,
            "bootstrap": self.bootstrap,
            "ci": {k: list(v) for k, v in self.ci.items()},
        }


def _parabola_min(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray] | None:
    """The minimum of a parabola fitted to (x, y), or None when it opens downwards."""
    if len(np.unique(x)) < 3:
        return None
    c = np.polyfit(x, y, 2)
    if c[0] <= 0:
        return None
    return -c[1] / (2 * c[0]), c


def _isoflop_once(C, N, D, L) -> tuple[float, float, float, float, list[dict]]:
    budgets = []
    for c in np.unique(C):
        m = c == C
        n_min = _parabola_min(np.log(N[m]), L[m])
        d_min = _parabola_min(np.log(D[m]), L[m])
        if n_min is None or d_min is None:
            continue
        budgets.append(
            {
                "compute": float(c),
                "N_opt": math.exp(n_min[0]),
                "D_opt": math.exp(d_min[0]),
                "parabola_N": n_min[1].tolist(),
                "parabola_D": d_min[1].tolist(),
            }
        )
    if len(budgets) < 2:
        raise EvalError(
            "IsoFLOP fit: fewer than 2 budgets have a loss minimum inside their model sizes "
            "(each budget needs >= 3 sizes around its optimum); widen the sizes or change the budgets"
        )
    logC = np.log([b["compute"] for b in budgets])
    a, kN = np.polyfit(logC, np.log([b["N_opt"] for b in budgets]), 1)
    b, kD = np.polyfit(logC, np.log([b["D_opt"] for b in budgets]), 1)
    return float(a), float(kN), float(b), float(kD), budgets


def fit_isoflop(
    C: Sequence[float],
    N: Sequence[float],
    D: Sequence[float],
    L: Sequence[float],
    *,
    bootstrap: int = 200,
    seed: int = 0,
) -> IsoFlopFit:
    """Fit the IsoFLOP exponents (see the module doc). Points with the same ``C`` form a budget."""
    C, N, D, L = (np.asarray(x, dtype=float) for x in (C, N, D, L))
    a, kN, b, kD, budgets = _isoflop_once(C, N, D, L)
    fit = IsoFlopFit(a, kN, b, kD, budgets)
    if bootstrap:
        rng = np.random.default_rng(seed)
        groups = [np.flatnonzero(c == C) for c in np.unique(C)]
        samples = []
        for _ in range(bootstrap):
            idx = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
            try:
                sa, _, sb, _, _ = _isoflop_once(C[idx], N[idx], D[idx], L[idx])
            except EvalError:
                continue
            samples.append((sa, sb))
        if samples:
            arr = np.array(samples)
            fit.ci = {"a": _interval(arr[:, 0]), "b": _interval(arr[:, 1])}
            fit.bootstrap = len(samples)
    return fit
