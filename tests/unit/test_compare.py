"""compare: entrywise tolerance, worst index, no blow-up near zero."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_cli.compare import SAFETY, Tolerance, compare, recompare, relative_errors


def _reference(rng: np.random.Generator, shape: tuple[int, int] = (6, 8)) -> tuple[np.ndarray, np.ndarray]:
    numeric = rng.normal(size=shape)
    error = np.full(shape, 1e-11)
    return numeric, error


def test_equal_arrays_pass(rng: np.random.Generator) -> None:
    numeric, error = _reference(rng)
    comp = compare(numeric.copy(), numeric, error)
    assert comp.passed
    assert comp.n_bad == 0
    assert comp.bad == ()
    assert comp.n_total == numeric.size
    assert comp.max_abs_err == 0.0
    assert comp.max_rel_err == 0.0
    assert comp.max_ratio == 0.0


def test_error_within_the_bound_passes(rng: np.random.Generator) -> None:
    numeric, error = _reference(rng)
    analytic = numeric + 0.9 * SAFETY * error * rng.choice([-1.0, 1.0], numeric.shape)
    comp = compare(analytic, numeric, error, Tolerance(rtol=0.0))
    assert comp.passed
    assert 0.85 < comp.max_ratio < 0.95


@pytest.mark.parametrize("index", [(0, 0), (2, 3), (5, 7)])
def test_perturbed_entry_fails_at_the_right_index(rng: np.random.Generator, index: tuple[int, int]) -> None:
    numeric, error = _reference(rng)
    analytic = numeric.copy()
    analytic[index] += 1e-4
    comp = compare(analytic, numeric, error)
    assert not comp.passed
    assert comp.n_bad == 1
    assert comp.worst.index == index
    assert comp.worst.analytic == analytic[index]
    assert comp.worst.numeric == numeric[index]
    assert comp.worst.abs_err == pytest.approx(1e-4, rel=1e-6)
    assert comp.max_abs_err == pytest.approx(1e-4, rel=1e-6)
    assert comp.worst.abs_err > comp.worst.tolerance
    assert [e.index for e in comp.bad] == [index]


def test_worst_is_the_largest_failing_entry(rng: np.random.Generator) -> None:
    numeric, error = _reference(rng)
    analytic = numeric.copy()
    for index, delta in (((1, 1), 1e-5), ((4, 2), -3e-3), ((0, 6), 2e-4)):
        analytic[index] += delta
    comp = compare(analytic, numeric, error)
    assert comp.n_bad == 3
    assert comp.worst.index == (4, 2)
    assert [e.index for e in comp.bad] == [(4, 2), (0, 6), (1, 1)]


def test_bad_entries_are_truncated_to_keep(rng: np.random.Generator) -> None:
    numeric, error = _reference(rng)
    comp = compare(numeric + 1.0, numeric, error, keep=3)
    assert comp.n_bad == numeric.size
    assert len(comp.bad) == 3


def test_worst_when_passing_is_the_largest_error(rng: np.random.Generator) -> None:
    numeric, error = _reference(rng)
    analytic = numeric.copy()
    analytic[3, 4] += 1e-12
    analytic[1, 2] += 3e-12
    comp = compare(analytic, numeric, error)
    assert comp.passed
    assert comp.worst.index == (1, 2)


def test_no_blow_up_near_zero() -> None:
    # Exact zeros everywhere: passes, and no 0/0 in the relative error.
    zeros = np.zeros((3, 3))
    comp = compare(zeros, zeros, zeros)
    assert comp.passed
    assert comp.max_rel_err == 0.0
    assert np.isfinite(comp.max_ratio)
    # Tiny reference values judged by what differencing resolves there, not relatively.
    numeric = np.array([[0.0, 1e-20, -1e-14], [1.0, 0.0, 2.0]])
    error = np.full(numeric.shape, 1e-12)
    analytic = numeric + np.array([[1e-13, -2e-13, 3e-13], [0.0, 1e-13, 0.0]])
    comp = compare(analytic, numeric, error)
    assert comp.passed
    assert np.isfinite(comp.max_rel_err) and comp.max_rel_err <= 1.0


def test_wrong_value_near_zero_is_caught_where_the_reference_is_precise() -> None:
    numeric = np.array([[0.0, 0.5]])
    error = np.array([[1e-12, 1e-12]])
    analytic = np.array([[1e-6, 0.5]])
    comp = compare(analytic, numeric, error)
    assert not comp.passed
    assert comp.worst.index == (0, 0)


def test_nonfinite_analytic_always_fails(rng: np.random.Generator) -> None:
    numeric, error = _reference(rng)
    for bad in (np.nan, np.inf, -np.inf):
        analytic = numeric.copy()
        analytic[2, 5] = bad
        comp = compare(analytic, numeric, error, Tolerance(rtol=1.0, atol=1.0))
        assert not comp.passed
        assert comp.worst.index == (2, 5)
        assert comp.max_abs_err == np.inf


def test_rtol_and_atol_widen_the_tolerance(rng: np.random.Generator) -> None:
    numeric, error = _reference(rng)
    analytic = numeric + 1e-3
    assert not compare(analytic, numeric, error).passed
    assert compare(analytic, numeric, error, Tolerance(atol=2e-3)).passed
    scaled = numeric * (1 + 1e-3)
    assert not compare(scaled, numeric, error).passed
    assert compare(scaled, numeric, error, Tolerance(rtol=2e-3)).passed


def test_relative_errors_are_finite_and_bounded() -> None:
    analytic = np.array([[0.0, 1.0, -1.0, 1e-300]])
    numeric = np.array([[0.0, 1.0, 1.0, 0.0]])
    rel = relative_errors(analytic, numeric, np.zeros_like(numeric))
    np.testing.assert_array_equal(rel, [[0.0, 0.0, 2.0, 1.0]])


def test_tiny_tolerance_does_not_warn() -> None:
    comp = compare(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]]), np.array([[1e-320, 0.0]]))
    assert not comp.passed
    assert comp.max_ratio > 1e10  # far above 1, and no overflow warning


def _entrywise(analytic: np.ndarray, numeric: np.ndarray, error: np.ndarray,
               tolerance: Tolerance) -> tuple[np.ndarray, np.ndarray]:
    """The criterion written out plainly: (failing mask, |a - n| with nan as inf)."""
    diff = np.abs(analytic - numeric)
    diff[np.isnan(diff)] = np.inf
    return diff > tolerance.entries(numeric, error, analytic), diff


@pytest.mark.parametrize("shape", [(1, 7), (300, 5), (40, 2000)])  # one block, many blocks, wide rows
def test_blocked_scan_agrees_with_the_plain_criterion(rng: np.random.Generator, shape: tuple[int, int]) -> None:
    numeric = rng.normal(size=shape)
    error = rng.uniform(0, 1e-10, shape)
    analytic = numeric + rng.normal(scale=3e-10, size=shape)
    analytic.flat[rng.choice(analytic.size, 3, replace=False)] = [np.nan, np.inf, -np.inf]
    tolerance = Tolerance(atol=1e-12)
    comp = compare(analytic, numeric, error, tolerance)
    mask, diff = _entrywise(analytic, numeric, error, tolerance)
    assert comp.n_bad == int(mask.sum()) > 3
    np.testing.assert_array_equal(comp.bad_mask, mask)
    assert comp.max_abs_err == np.inf and comp.max_rel_err == np.inf
    assert [e.abs_err for e in comp.bad[:3]] == [np.inf] * 3
    assert comp.bad[3].abs_err == np.sort(diff[np.isfinite(diff) & mask])[-1]
    np.testing.assert_array_equal(comp.failing_columns(), np.flatnonzero(mask.any(axis=0)))


def test_recompare_equals_a_full_comparison(rng: np.random.Generator) -> None:
    numeric, error = _reference(rng, (50, 30))
    analytic = numeric + rng.normal(scale=1e-11, size=numeric.shape)
    analytic[:, [3, 17]] += 1e-9  # fails on the first estimate ...
    first = compare(analytic, numeric, error)
    assert list(first.failing_columns()) == [3, 17]
    better_error = error.copy()
    better_error[:, 3] = 1e-9  # ... column 3 passes once its error bound is widened
    again = recompare(first, analytic, numeric, better_error, np.array([3, 17]))
    full = compare(analytic, numeric, better_error)
    assert again.n_bad == full.n_bad == 50
    assert again.max_ratio == full.max_ratio and again.max_abs_err == full.max_abs_err
    assert again.max_rel_err == full.max_rel_err and again.worst == full.worst
    assert again.bad == full.bad
    np.testing.assert_array_equal(again.bad_mask, full.bad_mask)
    fixed = recompare(again, analytic - np.where(np.arange(30) == 17, 1e-9, 0.0), numeric, better_error,
                      np.array([17]))
    assert fixed.passed and fixed.bad_mask is None and fixed.max_ratio < 1.0
