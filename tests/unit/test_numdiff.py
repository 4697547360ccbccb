"""numdiff: the stacking probe, estimates on known functions, their error bounds."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from gradcheck_cli import inputs, numdiff
from gradcheck_cli.compare import SAFETY
from gradcheck_cli.numdiff import Central, EvaluationError, Evaluator, Richardson


def softmax_rows(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def softmax_whole_array(x: np.ndarray) -> np.ndarray:
    # seed 004's compute(): exps.sum() over everything, batch rows included.
    exps = np.exp(x)
    return exps / exps.sum()


def softmax_axis0(x: np.ndarray) -> np.ndarray:
    exps = np.exp(x)
    return exps / exps.sum(axis=0, keepdims=True)


def mean_over_batch(x: np.ndarray) -> np.ndarray:
    return x**2 / x.shape[0]


def jac_whole_array(x: np.ndarray) -> np.ndarray:
    y = softmax_whole_array(x).ravel()
    return np.diag(y) - np.outer(y, y)


def jac_axis0(x: np.ndarray) -> np.ndarray:
    b, k = x.shape
    y = softmax_axis0(x)
    jac = np.zeros((b * k, b * k))
    for bo in range(b):
        for i in range(k):
            for bi in range(b):
                jac[bo * k + i, bi * k + i] = y[bo, i] * ((bo == bi) - y[bi, i])
    return jac


def jac_rows(x: np.ndarray) -> np.ndarray:
    b, k = x.shape
    y = softmax_rows(x)
    jac = np.zeros((b * k, b * k))
    for r in range(b):
        jac[r * k:(r + 1) * k, r * k:(r + 1) * k] = np.diag(y[r]) - np.outer(y[r], y[r])
    return jac


def _estimate(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, method: str = "central",
              domain: str = "real") -> tuple[Evaluator, numdiff.Estimate]:
    scale = inputs.step_scale(x, domain)
    evaluator = Evaluator(f, x, scale)
    return evaluator, numdiff.estimate(f, x, scale, method, evaluator)


# --- the stacking probe ----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 4), (2, 3), (3, 5), (4, 2)])
def test_row_wise_function_is_evaluated_stacked(rng: np.random.Generator, shape: tuple[int, int]) -> None:
    x = rng.normal(size=shape)
    evaluator, est = _estimate(softmax_rows, x)
    assert evaluator.stacks
    np.testing.assert_allclose(est.value, jac_rows(x), atol=1e-9)


@pytest.mark.parametrize(
    ("f", "exact"),
    [(softmax_whole_array, jac_whole_array), (softmax_axis0, jac_axis0),
     (mean_over_batch, lambda x: np.diag(2.0 * x.ravel() / x.shape[0]))],
    ids=["sum-over-whole-array", "sum-over-axis-0", "divides-by-shape0"],
)
@pytest.mark.parametrize("shape", [(1, 4), (2, 3), (3, 5), (4, 2)])
def test_non_stacking_function_is_detected_and_still_exact(
        rng: np.random.Generator, f: Callable[[np.ndarray], np.ndarray],
        exact: Callable[[np.ndarray], np.ndarray], shape: tuple[int, int]) -> None:
    x = rng.normal(size=shape)
    evaluator, est = _estimate(f, x)
    assert not evaluator.stacks, "a function mixing the stacked axis must be evaluated point by point"
    expected = exact(x)
    assert est.value.shape == expected.shape == (x.size, x.size)
    np.testing.assert_allclose(est.value, expected, atol=1e-9)
    if shape[0] > 1 and f is not mean_over_batch:
        # rows of the batch really are mixed: the estimate must show it
        assert np.abs(est.value[0, shape[1]:]).max() > 1e-3


def test_evaluator_rejects_in_place_changes_and_protects_the_caller(rng: np.random.Generator) -> None:
    x = rng.normal(size=(2, 3))
    original = x.copy()

    def clobber(v: np.ndarray) -> np.ndarray:
        out = np.sin(v)
        v[...] = 0.0
        return out

    with pytest.raises(EvaluationError, match=r"changes its input in place: x\[0, 0\] was"):
        Evaluator(clobber, x, inputs.step_scale(x, "real"))
    np.testing.assert_array_equal(x, original)


def test_evaluator_rejects_non_deterministic_functions(rng: np.random.Generator) -> None:
    noise = np.random.default_rng(0)
    x = rng.normal(size=(2, 3))
    with pytest.raises(EvaluationError, match="is not deterministic"):
        Evaluator(lambda v: v * noise.uniform(0.9, 1.1, v.shape), x, inputs.step_scale(x, "real"))


def test_evaluator_wraps_exceptions(rng: np.random.Generator) -> None:
    def boom(v: np.ndarray) -> np.ndarray:
        raise ValueError("boom")

    x = rng.normal(size=(2, 3))
    with pytest.raises(EvaluationError, match="raised ValueError: boom"):
        Evaluator(boom, x, inputs.step_scale(x, "real"))


def test_evaluator_rejects_non_numbers() -> None:
    x = np.ones((1, 2))
    with pytest.raises(EvaluationError, match="dtype <U"):
        Evaluator(lambda v: np.array(["a", "b"]), x, inputs.step_scale(x, "real"))


# --- estimates on known functions ------------------------------------------------------


KNOWN: list[tuple[str, Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = [
    ("sin", np.sin, lambda x: np.diag(np.cos(x).ravel())),
    ("exp", np.exp, lambda x: np.diag(np.exp(x).ravel())),
    ("cube", lambda x: x**3, lambda x: np.diag(3.0 * x.ravel() ** 2)),
    ("scalar-loss", lambda x: np.sum(x**3, axis=(-2, -1)), lambda x: (3.0 * x**2).reshape(1, -1)),
    ("row-norm", lambda x: np.sqrt(np.sum(x**2, axis=-1)),
     lambda x: np.kron(np.eye(x.shape[0]), np.ones((1, x.shape[1]))) * (x / np.linalg.norm(x, axis=-1,
                                                                                           keepdims=True)).ravel()),
]


@pytest.mark.parametrize("method", ["central", "richardson", "complex"])
@pytest.mark.parametrize(("name", "f", "exact"), KNOWN, ids=[k[0] for k in KNOWN])
def test_estimate_known_functions(rng: np.random.Generator, method: str, name: str,
                                  f: Callable[[np.ndarray], np.ndarray],
                                  exact: Callable[[np.ndarray], np.ndarray]) -> None:
    x = rng.uniform(-2.0, 2.0, size=(2, 3))
    _, est = _estimate(f, x, method)
    expected = exact(x)
    assert est.value.shape == expected.shape
    assert est.step.shape == (x.size,)
    assert est.method == method
    true_error = np.abs(est.value - expected)
    # the method's own error bound covers the true error, as compare() relies on
    assert np.all(true_error <= SAFETY * est.error + 1e-15), (name, (true_error / est.error).max())
    # and it is accurate to the method's order
    limit = {"central": 1e-8, "richardson": 1e-10, "complex": 1e-13}[method]
    assert true_error.max() <= limit * max(1.0, np.abs(expected).max())


def test_linear_map_is_exact(rng: np.random.Generator) -> None:
    a = rng.normal(size=(4, 3))
    x = rng.normal(size=(2, 3))
    _, est = _estimate(lambda v: v @ a.T, x)
    np.testing.assert_allclose(est.value, np.kron(np.eye(2), a), atol=1e-10)


def test_complex_step_falls_back_when_code_is_not_analytic(rng: np.random.Generator) -> None:
    x = rng.uniform(0.5, 2.0, size=(1, 3)) * np.array([[1.0, -1.0, 1.0]])
    _, est = _estimate(lambda v: np.abs(v) ** 3, x, "complex")
    assert est.method == "central"
    assert "complex step" in est.note
    np.testing.assert_allclose(est.value, np.diag(3.0 * x.ravel() * np.abs(x.ravel())), atol=1e-8)


def test_method_objects_print_as_their_names() -> None:
    assert [str(m) for m in numdiff.METHODS.values()] == ["central", "richardson", "complex"]
    assert str(Central()) == "central" and str(Richardson()) == "richardson"


def test_steps_are_exactly_representable(rng: np.random.Generator) -> None:
    x = rng.normal(size=(3, 4)) * 1e3
    est = numdiff.estimate(np.sin, x, inputs.step_scale(x, "real"))
    h = est.step.reshape(x.shape)
    np.testing.assert_array_equal((x + h) - x, h)
    np.testing.assert_array_equal(x - (x - h), h)
    np.testing.assert_allclose(h, np.maximum(1.0, np.abs(x)) * numdiff.EPS ** (1 / 3), rtol=1e-3)


def test_one_sided_differences_at_a_kink() -> None:
    x = np.array([[0.0, 1.0, -1.0]])
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    scale = inputs.step_scale(x, "real")
    evaluator = Evaluator(relu, x, scale)
    h = numdiff.estimate(relu, x, scale, evaluator=evaluator).step.reshape(x.shape)
    left, right = numdiff.one_sided(evaluator, x, h)
    assert left[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert right[0, 0] == pytest.approx(1.0, rel=1e-9)
    assert left[1, 1] == pytest.approx(1.0) and right[1, 1] == pytest.approx(1.0)
    assert left[2, 2] == 0.0 and right[2, 2] == 0.0
