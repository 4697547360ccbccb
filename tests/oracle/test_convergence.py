"""Convergence order: central differences are O(h^2), Richardson extrapolation O(h^4).

The step is h = scale * eps^power, so the tests drive h through ``scale`` and fit the slope
of log(error) against log(h) where truncation dominates rounding by orders of magnitude.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from gradcheck_cli import numdiff
from gradcheck_cli.numdiff import Central, Evaluator, Richardson

X = np.array([[0.3, 1.1, -0.7, 2.0]])


def _errors(method: Central | Richardson, f: Callable[[np.ndarray], np.ndarray],
            df: Callable[[np.ndarray], np.ndarray], steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True error, estimated error bound and the step actually used, per step and coordinate."""
    true, bound, used = [], [], []
    for h in steps:
        scale = np.full(X.shape, h / numdiff.EPS**method.power)
        est = method.estimate(Evaluator(f, X, scale), X, scale)
        true.append(np.abs(np.diag(est.value) - df(X).ravel()))
        bound.append(np.diag(est.error))
        used.append(est.step)
    return np.array(true), np.array(bound), np.array(used)


def _slopes(err: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.array([np.polyfit(np.log(h[:, j]), np.log(err[:, j]), 1)[0] for j in range(err.shape[1])])


@pytest.mark.parametrize(("name", "f", "df"), [("sin", np.sin, np.cos), ("exp", np.exp, np.exp)])
def test_central_differences_are_second_order(name: str, f: Callable[[np.ndarray], np.ndarray],
                                              df: Callable[[np.ndarray], np.ndarray]) -> None:
    true, bound, used = _errors(Central(), f, df, np.geomspace(1e-1, 3e-3, 6))
    slopes = _slopes(true, used)
    assert np.all((slopes > 1.85) & (slopes < 2.15)), slopes
    # |D(h) - D(2h)| / 3 is the truncation error itself when it dominates
    ratio = bound / true
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio


@pytest.mark.parametrize(("name", "f", "df"), [("sin", np.sin, np.cos), ("exp", np.exp, np.exp)])
def test_richardson_is_fourth_order(name: str, f: Callable[[np.ndarray], np.ndarray],
                                    df: Callable[[np.ndarray], np.ndarray]) -> None:
    true, bound, used = _errors(Richardson(), f, df, np.geomspace(2e-1, 2.5e-2, 6))
    slopes = _slopes(true, used)
    assert np.all((slopes > 3.7) & (slopes < 4.3)), slopes
    ratio = bound / true
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio


def test_richardson_beats_central_at_the_default_steps() -> None:
    scale = np.maximum(1.0, np.abs(X))
    central = numdiff.estimate(np.sin, X, scale, "central")
    richardson = numdiff.estimate(np.sin, X, scale, "richardson")
    complex_step = numdiff.estimate(np.sin, X, scale, "complex")
    exact = np.diag(np.cos(X).ravel())
    errs = [np.abs(e.value - exact).max() for e in (central, richardson, complex_step)]
    assert errs[0] < 1e-9
    assert errs[1] < errs[0] / 10
    assert errs[2] < 1e-15
    assert complex_step.method == "complex" and complex_step.note == ""
