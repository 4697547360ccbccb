"""Explicit inputs on a declared kink: a valid subgradient is KINK (not a bug), anything else FAIL."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_cli.plugins import default_registry
from gradcheck_cli.registry import Registry, register_activation, register_loss, registering
from gradcheck_cli.results import Verdict
from gradcheck_cli.runner import CheckOptions, run


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


@pytest.fixture(scope="module")
def reg() -> Registry:
    registry = default_registry()
    with registering(registry, "test"):
        register_activation("relu_at_zero_two", forward=_relu, kinks=(0.0,),
                            derivative=lambda x: np.where(x > 0, 1.0, np.where(x == 0, 2.0, 0.0)))
        register_activation("relu_at_zero_half", forward=_relu, kinks=(0.0,),
                            derivative=lambda x: np.where(x > 0, 1.0, np.where(x == 0, 0.5, 0.0)))
    return registry


@pytest.mark.parametrize(
    ("name", "x", "where"),
    [
        ("relu", [[0.0, 1.0, -1.0]], "x[0,0] = 0 is a kink of relu"),
        ("leaky_relu", [[0.0, 2.0]], "x[0,0] = 0 is a kink of leaky_relu"),
        ("hard_tanh", [[1.0, -1.0, 0.3]], "is a kink of hard_tanh"),
        ("hard_sigmoid", [[3.0, 0.0]], "x[0,0] = 3 is a kink of hard_sigmoid"),
    ],
)
def test_subgradient_at_a_kink_is_kink(reg: Registry, name: str, x: list[list[float]], where: str) -> None:
    result = run([name], CheckOptions(input=np.array(x)), registry=reg)
    (row,) = result.results
    assert row.verdict is Verdict.KINK
    assert where in row.diagnosis and "valid subgradient" in row.diagnosis
    assert result.exit_code == 0


def test_midpoint_of_the_one_sided_derivatives_passes(reg: Registry) -> None:
    # central differences of relu at 0 are exactly 1/2
    (row,) = run(["relu_at_zero_half"], CheckOptions(input=np.array([[0.0, 1.0]])), registry=reg).results
    assert row.verdict in (Verdict.PASS, Verdict.KINK)


def test_value_outside_the_one_sided_derivatives_fails(reg: Registry) -> None:
    result = run(["relu_at_zero_two"], CheckOptions(input=np.array([[0.0, 1.0]])), registry=reg)
    (row,) = result.results
    assert row.verdict is Verdict.FAIL
    assert row.worst_index == (0, 0, 0, 0)
    assert result.exit_code == 1


def test_kink_in_a_loss_residual() -> None:
    registry = default_registry()
    options = CheckOptions(input=np.array([[2.0, 0.5]]), target=np.array([[1.0, 0.0]]))
    (row,) = run(["huber"], options, registry=registry).results  # residual 1 = delta: the kink
    assert row.verdict in (Verdict.KINK, Verdict.PASS)


def test_chain_through_a_kink_is_not_flagged(reg: Registry) -> None:
    result = run(["relu+mse"], CheckOptions(input=np.array([[0.0, 2.0]])), registry=reg)
    assert [r.verdict for r in result.results if r.verdict is Verdict.FAIL] == []
    assert result.exit_code == 0


def _mae(p: np.ndarray, t: np.ndarray) -> float:
    return float(np.mean(np.abs(p - t)))


def _mae_gradient_wrong_at_last(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    g = np.sign(p - t) / p.size
    g[..., -1] *= 2.0  # wrong away from any kink
    return g


@pytest.fixture(scope="module")
def loss_reg() -> Registry:
    registry = default_registry()
    with registering(registry, "test"):
        register_loss("mae_wrong_at_last", forward=_mae, gradient=_mae_gradient_wrong_at_last, target="real",
                      kinks=(0.0,))
    return registry


def test_a_loss_kink_reached_through_the_activation_is_a_kink() -> None:
    # relu is smooth at z = 0.5; pred - target = -1e-9 there is within a step of mae's kink.
    options = CheckOptions(input=np.array([[0.5, 2.0, -1.0]]), target=np.array([[0.5 + 1e-9, 1.0, 0.3]]))
    result = run(["relu+mae", "softmax+mae"], options, registry=default_registry())
    chain = next(r for r in result.results if r.check == "relu+mae" and r.component == "chain")
    assert chain.verdict is Verdict.KINK, chain.diagnosis
    assert "pred - target at [0,0] = -1e-09 is a kink of mae, reached through relu from z[0,0] = 0.5" in chain.diagnosis
    assert result.exit_code == 0


@pytest.mark.parametrize("act", ["relu", "identity", "softmax"])
def test_a_wrong_entry_away_from_the_loss_kink_still_fails(loss_reg: Registry, act: str) -> None:
    # Entry 0 sits on the kink (any subgradient is fine there); the last entry is wrong, far from it.
    x = np.array([[0.5, 2.0, 1.5]])
    target = np.array([[0.5, 1.0, 0.2]]) if act != "softmax" else np.array([[0.25, 1.0, 0.1]])
    result = run([f"{act}+mae_wrong_at_last"], CheckOptions(input=x, target=target), registry=loss_reg)
    rows = {r.component: r for r in result.results}
    assert rows["gradient"].verdict is Verdict.FAIL
    assert rows["chain"].verdict is Verdict.FAIL, rows["chain"].diagnosis
    assert result.exit_code == 1


def test_rows_of_an_activation_shared_by_pairs_name_their_own_pair() -> None:
    result = run(["softmax+mse", "softmax+mae", "softmax"], CheckOptions(), registry=default_registry())
    jacobians = [r for r in result.results if r.component == "jacobian"]
    assert [r.check for r in jacobians] == ["softmax+mse"] * 2 + ["softmax+mae"] * 2 + ["softmax"] * 2
    assert all(r.reproduce.startswith(f"gradcheck run {r.check} ") for r in jacobians)
    assert len({(r.convention, r.max_abs_error) for r in jacobians}) == 2
