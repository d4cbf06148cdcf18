"""Scaling-law fits recover the constants of a known law from synthetic, noisy losses."""

import numpy as np
import pytest

from llmkit.eval.perplexity import EvalError
from llmkit.eval.scaling_fit import fit_chinchilla, fit_isoflop, lbfgs

TRUE = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)  # Hoffmann et al.'s fitted law


def law(N, D):
    return TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]


def test_batched_lbfgs_solves_independent_problems_at_once():
    targets = np.array([[1.0, -2.0], [3.0, 0.5], [-1.0, 4.0]])

    def fun(x, rows):  # Rosenbrock-like valleys centred on each row's target
        d = x - targets[rows]
        f = (d[:, 0] ** 2) + 10 * (d[:, 1] - d[:, 0] ** 2) ** 2
        g = np.stack([2 * d[:, 0] - 40 * d[:, 0] * (d[:, 1] - d[:, 0] ** 2), 20 * (d[:, 1] - d[:, 0] ** 2)], 1)
        return f, g

    x, f = lbfgs(fun, np.zeros((3, 2)))
    np.testing.assert_allclose(x, targets, atol=1e-4)
    assert (f < 1e-8).all()


def test_chinchilla_fit_recovers_known_constants_within_5_percent():
    rng = np.random.default_rng(0)
    N = np.repeat(np.logspace(7, 10, 8), 8)
    D = np.tile(np.logspace(9, 12, 8), 8)
    L = law(N, D) * np.exp(rng.normal(0, 0.001, len(N)))
    fit = fit_chinchilla(N, D, L, starts=64, bootstrap=20)
    for name, value in TRUE.items():
        assert getattr(fit, name) == pytest.approx(value, rel=0.05), name
        low, high = fit.ci[name]
        assert low <= getattr(fit, name) <= high
    assert fit.a == pytest.approx(0.28 / 0.62, rel=0.02)
    n_opt, d_opt = fit.optimal(1e21)
    assert 6 * n_opt * d_opt == pytest.approx(1e21, rel=1e-6)


def test_isoflop_fit_recovers_the_known_exponent():
    rng = np.random.default_rng(1)
    rows = []
    a_true = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    for C in np.logspace(18, 21, 4):
        n_star = 0.3 * C**a_true  # roughly the optimum; the grid spans it
        for N in n_star * np.logspace(-1, 1, 9):
            D = C / (6 * N)
            rows.append((C, N, D, law(N, D) * np.exp(rng.normal(0, 0.001))))
    C, N, D, L = map(np.array, zip(*rows, strict=True))
    fit = fit_isoflop(C, N, D, L, bootstrap=50)
    assert fit.a == pytest.approx(a_true, rel=0.05)
    assert fit.b == pytest.approx(1 - a_true, rel=0.05)
    assert fit.ci["a"][0] <= fit.a <= fit.ci["a"][1]


def test_too_few_points_are_one_line_errors():
    with pytest.raises(EvalError, match="at least 5"):
        fit_chinchilla([1e6, 1e7], [1e8, 1e9], [3.0, 2.5])
    with pytest.raises(EvalError, match="fewer than 2 budgets"):
        fit_isoflop([1e18] * 3, [1e6, 2e6, 4e6], [1e8, 5e7, 2.5e7], [3.0, 2.9, 3.1])
