"""User-written derivatives in a fresh registry: subtle mistakes fail, naive-but-correct code passes."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gradcheck_cli.plugins import load_builtins
from gradcheck_cli.registry import Registry, register_activation, register_loss, registering
from gradcheck_cli.registry.activations import GELU_A, gelu_tanh, sigmoid, softmax, softmax_jacobian
from gradcheck_cli.results import Verdict
from gradcheck_cli.runner import CheckOptions, run

SEEDS = range(20)
_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    return np.asarray(_erf(x), dtype=np.float64)


def gelu_tanh_derivative_5_digits(x: np.ndarray) -> np.ndarray:
    c = 0.79788  # sqrt(2/pi) = 0.7978845608..., truncated
    t = np.tanh(c * (x + GELU_A * x**3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * GELU_A * x * x)


def sigmoid_derivative_float32(x: np.ndarray) -> np.ndarray:
    s = 1.0 / (1.0 + np.exp(-x.astype(np.float32)))
    return s * (np.float32(1.0) - s)


def seed004_answer(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    return softmax(x) * (g - (softmax(x) * g).sum(-1, keepdims=True))


class Seed004Question:
    """The question's layer, verbatim: sums over the whole array, elementwise delta."""

    def compute(self, incoming: np.ndarray) -> np.ndarray:
        exps = np.exp(incoming)
        return exps / exps.sum()

    def delta(self, incoming: np.ndarray) -> np.ndarray:
        exps = np.exp(incoming)
        others = exps.sum() - exps
        return 1 / (2 + exps / others + others / exps)


def gelu_naive(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def gelu_naive_derivative(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + erf(x / math.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def softplus_naive(x: np.ndarray) -> np.ndarray:
    return np.log(1.0 + np.exp(x))


def softplus_naive_derivative(x: np.ndarray) -> np.ndarray:
    return np.exp(x) / (1.0 + np.exp(x))


@pytest.fixture
def reg() -> Registry:
    registry = Registry()
    load_builtins(registry)
    question = Seed004Question()
    with registering(registry, "test"):
        register_activation("gelu_tanh_c5", forward=gelu_tanh, derivative=gelu_tanh_derivative_5_digits)
        register_activation("sigmoid_f32", forward=sigmoid, derivative=sigmoid_derivative_float32)
        register_activation("softmax_004", forward=softmax, vjp=seed004_answer)
        register_activation("softmax_question", forward=question.compute, derivative=question.delta)
        register_activation("gelu_naive", forward=gelu_naive, derivative=gelu_naive_derivative)
        register_activation("softplus_naive", forward=softplus_naive, derivative=softplus_naive_derivative)
        register_activation("sigmoid_fed_x", forward=sigmoid, derivative=lambda a: a * (1.0 - a))
        register_activation("sigmoid_of_output_wants_x", forward=sigmoid,
                            derivative_of_output=lambda y: sigmoid(y) * (1.0 - sigmoid(y)))
        register_activation("softmax_basis_only", forward=softmax,
                            vjp=lambda x, g: seed004_answer(x, g / np.abs(g).max()))
        register_activation("softmax_one_entry", forward=softmax, jacobian=_one_entry_off)
        register_loss("ce_no_batch_mean", forward=lambda p, t: -np.sum(t * np.log(p), axis=(-2, -1)) / p.shape[-2],
                      gradient=lambda p, t: -t / p, target="onehot", domain="unit")
    return registry


def _one_entry_off(x: np.ndarray) -> np.ndarray:
    s = softmax(x)
    jac = s[..., :, None] * (np.eye(s.shape[-1]) - s[..., None, :])
    jac[0, 1, 2] *= 1.001
    return jac


def _verdicts(reg: Registry, spec: str, seeds: range = SEEDS, **opts: Any) -> list[tuple[int, list[Verdict]]]:
    out = []
    for seed in seeds:
        result = run([spec], CheckOptions(seed=seed, **opts), registry=reg)
        out.append((seed, [r.verdict for r in result.results]))
    return out


@pytest.mark.parametrize(
    ("name", "opts"),
    [
        ("gelu_tanh_c5", {"trials": 1, "shape": (3, 5)}),
        ("sigmoid_f32", {"trials": 3, "shape": (4, 10)}),
    ],
)
def test_subtly_wrong_derivative_fails_every_seed(reg: Registry, name: str, opts: dict[str, Any]) -> None:
    passed = [seed for seed, verdicts in _verdicts(reg, name, **opts) if Verdict.FAIL not in verdicts]
    assert passed == []


def test_truncated_constant_is_off_by_more_than_rounding(reg: Registry) -> None:
    (row,) = run(["gelu_tanh_c5"], CheckOptions(seed=0, trials=1, shape=(3, 5)), registry=reg).results
    assert row.max_rel_error is not None and 1e-7 < row.max_rel_error < 1e-3


@pytest.mark.parametrize("name", ["softmax_004", "gelu_naive", "softplus_naive"])
def test_naive_but_correct_code_passes_every_seed(reg: Registry, name: str) -> None:
    verdicts = _verdicts(reg, name, trials=1, shape=(3, 5))
    assert [(seed, v) for seed, v in verdicts if v != [Verdict.PASS]] == []


def test_seed004_answer_passes_inside_a_pair(reg: Registry) -> None:
    result = run(["softmax_004+cross_entropy", "softmax_004+mse"], CheckOptions(seed=4), registry=reg)
    assert result.passed, [(r.check, r.component, r.diagnosis) for r in result.results]


@pytest.mark.parametrize("shape", [(1, 4), (3, 4)])
def test_seed004_question_flags_the_diagonal(reg: Registry, shape: tuple[int, int]) -> None:
    (row,) = run(["softmax_question"], CheckOptions(seed=0, shape=shape), registry=reg).results
    assert row.verdict is Verdict.FAIL
    assert "only the Jacobian's diagonal" in row.diagnosis


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("sigmoid_fed_x", "fed f(x)"),
        ("sigmoid_of_output_wants_x", "matches once fed x instead of y = f(x)"),
        ("softmax_one_entry", "wrong at only 1 of"),
        ("ce_no_batch_mean", "1/B"),
    ],
)
def test_convention_mistakes_are_named(reg: Registry, name: str, fragment: str) -> None:
    result = run([name], CheckOptions(seed=0, shape=(4, 6)), registry=reg)
    (row,) = result.results
    assert row.verdict is Verdict.FAIL
    assert fragment in row.diagnosis, row.diagnosis


def test_one_entry_off_reports_that_entry(reg: Registry) -> None:
    (row,) = run(["softmax_one_entry"], CheckOptions(seed=0, shape=(4, 6)), registry=reg).results
    assert row.worst_index == (0, 1, 0, 2)


def test_vjp_right_only_for_basis_vectors_fails_the_chain(reg: Registry) -> None:
    result = run(["softmax_basis_only+mse"], CheckOptions(seed=0), registry=reg)
    by = {r.component: r for r in result.results}
    assert by["jacobian"].verdict is Verdict.PASS
    assert by["gradient"].verdict is Verdict.PASS
    assert by["chain"].verdict is Verdict.FAIL
    assert "mishandles the upstream gradient" in by["chain"].diagnosis


def test_user_entries_keep_their_origin(reg: Registry) -> None:
    (row,) = run(["gelu_tanh_c5"], CheckOptions(seed=0), registry=reg).results
    assert row.origin == "test"



def _scaled_softmax(factor: float) -> Registry:
    registry = Registry()
    with registering(registry, "test"):
        register_activation("scaled_softmax", forward=softmax, jacobian=lambda v: factor * softmax_jacobian(v))
    return registry


@pytest.mark.parametrize("factor", [2.0, 0.5, -3.0])
@pytest.mark.parametrize("x", [[[0.3, -1.2, 2.0]], [[1.5, 0.2], [-0.7, 0.9]]])
def test_scaled_jacobian_is_named_a_constant_factor(factor: float, x: list[list[float]]) -> None:
    result = run(["scaled_softmax"], CheckOptions(input=np.array(x)), registry=_scaled_softmax(factor))
    (row,) = result.results
    assert row.verdict is Verdict.FAIL
    assert "constant factor" in row.diagnosis, row.diagnosis
    assert f"{factor:.6g} x numeric" in row.diagnosis


def test_scaled_jacobian_with_uneven_error_bounds_is_named() -> None:
    x = np.array([[4.08183824, -5.11133006]])
    (row,) = run(["scaled_softmax"], CheckOptions(input=x), registry=_scaled_softmax(2.0)).results
    assert row.verdict is Verdict.FAIL
    assert "constant factor 2" in row.diagnosis, row.diagnosis


@pytest.mark.parametrize(
    ("second", "verdict"),
    [
        (lambda x: -2.0 * np.tanh(x) * (1.0 - np.tanh(x) ** 2), Verdict.PASS),
        (lambda x: 2.0 * np.tanh(x) * (1.0 - np.tanh(x) ** 2), Verdict.FAIL),
        (lambda x: -np.tanh(x) * (1.0 - np.tanh(x) ** 2), Verdict.FAIL),
    ],
    ids=["correct", "sign-flipped", "missing-factor-2"],
)
def test_second_derivative_is_checked_on_its_own_row(second: Callable[[np.ndarray], np.ndarray],
                                                     verdict: Verdict) -> None:
    registry = Registry()
    with registering(registry, "test"):
        register_activation("my_tanh", forward=np.tanh, derivative_of_output=lambda y: 1.0 - y * y,
                            derivative2=second)
    for seed in range(5):
        rows = {r.component: r for r in run(["my_tanh"], CheckOptions(seed=seed), registry=registry).results}
        assert rows["jacobian"].verdict is Verdict.PASS
        assert rows["second_derivative"].verdict is verdict, rows["second_derivative"].diagnosis
