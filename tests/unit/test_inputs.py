"""inputs: parsing --input / --shape, sampling, and the step scale near domain edges."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_cli import inputs, numdiff
from gradcheck_cli.compare import SAFETY
from gradcheck_cli.errors import ExitCode, UsageError

# --- parse_matrix -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2,4,2,1", [[2.0, 4.0, 2.0, 1.0]]),
        ("1,2;3,4", [[1.0, 2.0], [3.0, 4.0]]),
        (" 1, 2 ; 3 ,4 ", [[1.0, 2.0], [3.0, 4.0]]),
        ("1,2;3,4;", [[1.0, 2.0], [3.0, 4.0]]),
        ("-1.5e3,2.25", [[-1500.0, 2.25]]),
        ("7", [[7.0]]),
    ],
)
def test_parse_matrix_good(text: str, expected: list[list[float]]) -> None:
    out = inputs.parse_matrix(text)
    assert out.dtype == np.float64
    assert out.shape == np.asarray(expected).shape
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty row"),
        ("   ", "empty row"),
        (";", "empty row"),
        ("1,2;;3,4", "empty row"),
        ("2,x,1", r"row 0 has 'x', which is not a number"),
        ("1,2;3,abc", r"row 1 has 'abc', which is not a number"),
        ("1,,2", r"'', which is not a number"),
        ("1 2,3", r"'1 2', which is not a number"),
        ("1,2;3", r"same length, but the rows have 2, 1 values"),
        ("1;2,3;4,5,6", r"rows have 1, 2, 3 values"),
    ],
)
def test_parse_matrix_malformed(text: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment) as info:
        inputs.parse_matrix(text)
    assert info.value.exit_code is ExitCode.USAGE
    # The message names the option and shows how to write it.
    assert "--input" in info.value.message


def test_parse_matrix_names_the_option() -> None:
    with pytest.raises(UsageError, match=r"^--target expects comma-separated numbers"):
        inputs.parse_matrix("1,q", "--target")


# --- parse_shape --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4,10", (4, 10)), ("3, 5", (3, 5)), ("5", (5,)), ((2, 7), (2, 7)), ([1, 1], (1, 1)), ("1,2,3", (1, 2, 3)),
     ("2,3,8,8", (2, 3, 8, 8))],
)
def test_parse_shape_good(text: str | tuple[int, ...] | list[int], expected: tuple[int, ...]) -> None:
    assert inputs.parse_shape(text) == expected


@pytest.mark.parametrize("text", ["0,3", "3,0", "-1,4", "abc", "", "2.5,3", "4,10,", "a,b", (0, 2), []])
def test_parse_shape_malformed(text: str | tuple[int, ...] | list[int]) -> None:
    with pytest.raises(UsageError, match=r"--shape expects positive integers .*B,K .*e\.g\. --shape 4,10; got"):
        inputs.parse_shape(text)


@pytest.mark.parametrize("text", ["٤,١٠", "４,10", "4_0,10", "+4,10", (True, 3), [4.0, 3]])
def test_parse_shape_takes_ascii_digits_only(text: str | tuple[object, ...] | list[object]) -> None:
    # int() reads all of these (Arabic-Indic and full-width digits, underscores, signs, bools).
    with pytest.raises(UsageError, match=r"written in ASCII digits 0-9, e\.g\. --shape 4,10; got"):
        inputs.parse_shape(text)  # type: ignore[arg-type]


def test_parse_shape_names_the_config_key() -> None:
    with pytest.raises(UsageError, match=r"^shape expects .* e\.g\. shape: \[4, 10\]; got list \['x', 3\]"):
        inputs.parse_shape(["x", 3], option="shape")


def test_parse_shape_too_large() -> None:
    with pytest.raises(UsageError, match=r"--shape 100000,100000 has 10,000,000,000 elements, more than"):
        inputs.parse_shape("100000,100000")


# --- step_scale near the edges of the domain ------------------------------------------


def test_step_scale_real_is_max_one_abs() -> None:
    x = np.array([[-1e6, -2.0, -1e-3, 0.0, 0.5, 3.0, 1e6]])
    np.testing.assert_array_equal(inputs.step_scale(x, "real"), [[1e6, 2.0, 1.0, 1.0, 1.0, 3.0, 1e6]])


def test_step_scale_positive_shrinks_with_x() -> None:
    x = np.array([[1e-300, 1e-8, 0.5, 1.0, 40.0]])
    np.testing.assert_array_equal(inputs.step_scale(x, "positive"), [[1e-300, 1e-8, 0.5, 1.0, 40.0]])


def test_step_scale_unit_is_distance_to_nearest_edge() -> None:
    x = np.array([[1e-8, 0.25, 0.5, 0.75, 1.0 - 1e-8]])
    np.testing.assert_allclose(inputs.step_scale(x, "unit"), [[1e-8, 0.25, 0.5, 0.25, 1e-8]], rtol=1e-7)


def _log_barrier(x: np.ndarray) -> np.ndarray:
    # finite only strictly inside (0, 1): a stencil that leaves the domain shows up as nan
    return np.log(x) + np.log1p(-x)


@pytest.mark.parametrize("method", ["central", "richardson"])
@pytest.mark.parametrize(
    ("domain", "values"),
    [
        ("unit", [1e-12, 1e-8, 1e-3, 0.5, 1.0 - 1e-3, 1.0 - 1e-8, 1.0 - 1e-12, 1.0 - 1e-13]),
        ("positive", [1e-300, 1e-12, 1e-3, 1.0, 1e6]),
    ],
)
def test_stencil_stays_inside_domain(method: str, domain: str, values: list[float]) -> None:
    x = np.array([values])
    f = _log_barrier if domain == "unit" else np.log
    exact = 1.0 / x - 1.0 / (1.0 - x) if domain == "unit" else 1.0 / x
    est = numdiff.estimate(f, x, inputs.step_scale(x, domain), method)
    h = est.step.reshape(x.shape)
    reach = {"central": 2.0, "richardson": 4.0}[method] * h
    assert np.all(h > 0), "a zero step cannot difference anything"
    assert np.all(x - reach > 0)
    if domain == "unit":
        assert np.all(x + reach < 1)
    assert np.all(np.isfinite(est.value))
    # near an edge the step is a sizeable fraction of the distance to it: the estimate is
    # rougher there, but its own error bound must say so
    true_error = np.abs(np.diag(est.value) - exact.ravel())
    assert np.all(true_error <= SAFETY * np.diag(est.error)), true_error / np.diag(est.error)
    np.testing.assert_allclose(np.diag(est.value), exact.ravel(), rtol=1e-2)


# --- sampling --------------------------------------------------------------------------


@pytest.mark.parametrize(("domain", "low", "high"), [("real", -np.inf, np.inf), ("positive", 0.0, np.inf),
                                                     ("unit", 0.0, 1.0)])
def test_sample_domain_stays_inside(rng: np.random.Generator, domain: str, low: float, high: float) -> None:
    x = inputs.sample_domain(domain, (50, 20), rng)
    assert x.shape == (50, 20)
    assert np.all(np.isfinite(x))
    assert np.all((x > low) & (x < high))
    assert inputs.outside_domain(x, domain) is None


def test_sample_domain_keeps_away_from_kinks(rng: np.random.Generator) -> None:
    kinks = (-1.0, 0.0, 3.0)
    x = inputs.sample_domain("real", (200, 50), rng, kinks)
    for k in kinks:
        margin = inputs.KINK_MARGIN * max(1.0, abs(k))
        assert np.min(np.abs(x - k)) >= margin * (1 - 1e-12)


def test_sample_prediction_keeps_residual_off_kinks(rng: np.random.Generator) -> None:
    target = inputs.sample_target("real", (100, 20), rng)
    pred = inputs.sample_prediction("real", target, rng, kinks=(-1.0, 1.0))
    residual = pred - target
    assert np.min(np.abs(np.abs(residual) - 1.0)) >= inputs.KINK_MARGIN * (1 - 1e-9)


def test_sample_target_kinds(rng: np.random.Generator) -> None:
    onehot = inputs.sample_target("onehot", (30, 6), rng)
    assert set(np.unique(onehot)) <= {0.0, 1.0}
    np.testing.assert_array_equal(onehot.sum(axis=1), np.ones(30))
    probs = inputs.sample_target("probabilities", (30, 6), rng)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    binary = inputs.sample_target("binary", (30, 6), rng)
    assert set(np.unique(binary)) == {0.0, 1.0}
    assert np.all(inputs.sample_target("positive", (30, 6), rng) > 0)


def test_sampling_is_reproducible() -> None:
    a = inputs.sample_domain("real", (3, 4), np.random.default_rng([7, 0]))
    b = inputs.sample_domain("real", (3, 4), np.random.default_rng([7, 0]))
    c = inputs.sample_domain("real", (3, 4), np.random.default_rng([8, 0]))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("x", "domain", "expected"),
    [
        ([[0.5, 0.2]], "unit", None),
        ([[0.5, 1.0]], "unit", (0, 1)),
        ([[0.5, 0.3], [0.0, 0.2]], "unit", (1, 0)),
        ([[1.0, -2.0]], "positive", (0, 1)),
        ([[1.0, np.inf]], "real", (0, 1)),
        ([[np.nan, 1.0]], "real", (0, 0)),
        ([[-1e300, 1e300]], "real", None),
    ],
)
def test_outside_domain(x: list[list[float]], domain: str, expected: tuple[int, ...] | None) -> None:
    assert inputs.outside_domain(np.array(x), domain) == expected
