"""Correct built-ins at extreme explicit inputs: saturation, huge logits, probabilities near 0 and 1."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_cli.registry import Registry
from gradcheck_cli.results import Verdict
from gradcheck_cli.runner import CheckOptions, run

CASES = [
    ("softmax", [[1000.0, -1000.0, 0.0, 999.5]], None),
    ("softmax", [[1000.0, -1000.0, 0.0, 999.5], [-3.0, 700.0, 699.0, -700.0]], None),
    ("log_softmax", [[1000.0, -1000.0, 0.0, 999.5]], None),
    ("softmax", [[0.0, -40.0], [0.0, -300.0]], None),
    ("sigmoid", [[40.0, -40.0, 0.0, 1e-3]], None),
    ("sigmoid", [[-40.0, -20.0, 20.0, 40.0]], None),
    ("tanh", [[20.0, -20.0, 0.0, 0.5]], None),
    ("tanh", [[-20.0, -10.0, 10.0, 20.0]], None),
    ("softplus", [[40.0, -40.0, 0.0, 600.0]], None),
    ("silu", [[40.0, -40.0, -1.0, 2.0]], None),
    ("gelu", [[8.0, -8.0, -0.75, 3.0]], None),
    ("gelu_tanh", [[8.0, -8.0, -0.75, 3.0]], None),
    ("elu", [[-30.0, 30.0, -1e-3, 1e-3]], None),
    ("mish", [[30.0, -30.0, 0.3, -1.2]], None),
    ("cross_entropy", [[1e-8, 0.6, 0.4 - 1e-8]], [[1.0, 0.0, 0.0]]),
    ("cross_entropy", [[1e-8, 0.6, 0.4 - 1e-8], [0.2, 1e-12, 0.8]], [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]),
    ("binary_cross_entropy", [[1e-8, 1.0 - 1e-8, 1e-8, 1.0 - 1e-8]], [[0.0, 1.0, 1.0, 0.0]]),
    ("binary_cross_entropy", [[1e-300, 0.5, 1.0 - 1e-11]], [[1.0, 0.0, 1.0]]),
    ("kl_div", [[1e-8, 1.0 - 1e-8]], [[0.5, 0.5]]),
    ("mse", [[1e8, -1e8, 1e-300]], [[0.0, 1.0, 0.0]]),
    ("log_cosh", [[400.0, -400.0, 1e-9]], [[0.0, 0.0, 0.0]]),
    ("sigmoid+binary_cross_entropy", [[20.0, -20.0, 0.5]], [[1.0, 0.0, 1.0]]),
    ("softmax+cross_entropy", [[20.0, -20.0, 0.0]], [[0.0, 1.0, 0.0]]),
    ("log_softmax+nll", [[1000.0, -1000.0, 0.0, 999.5]], [[0.0, 1.0, 0.0, 0.0]]),
]


@pytest.mark.parametrize(("spec", "x", "t"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_extreme_explicit_input_passes(registry: Registry, spec: str, x: list[list[float]],
                                       t: list[list[float]] | None) -> None:
    options = CheckOptions(input=np.array(x), target=None if t is None else np.array(t))
    result = run([spec], options, registry=registry)
    assert result.results
    assert [(r.component, r.verdict.value, r.diagnosis) for r in result.results
            if r.verdict is not Verdict.PASS] == []
    assert all(r.trials == 1 and r.shape == np.array(x).shape for r in result.results)


def test_softmax_extreme_logits_outputs_are_exact(registry: Registry) -> None:
    x = np.array([[1000.0, -1000.0, 0.0, 999.5]])
    y = registry.get("softmax").forward(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(), 1.0, rtol=1e-15)
    np.testing.assert_allclose(y, [[1 / (1 + np.exp(-0.5)), 0.0, 0.0, np.exp(-0.5) / (1 + np.exp(-0.5))]],
                               rtol=1e-14)


@pytest.mark.parametrize("gap", [40.0, 300.0])
def test_log_softmax_large_logit_gap_passes(registry: Registry, gap: float) -> None:
    result = run(["log_softmax"], CheckOptions(input=np.array([[0.0, -gap]])), registry=registry)
    assert [r.verdict for r in result.results] == [Verdict.PASS, Verdict.PASS], result.results[0].diagnosis


def test_log_softmax_nll_large_logit_gap_passes(registry: Registry) -> None:
    options = CheckOptions(input=np.array([[0.0, -40.0]]), target=np.array([[1.0, 0.0]]))
    result = run(["log_softmax+nll"], options, registry=registry)
    assert all(r.verdict is Verdict.PASS for r in result.results), [(r.component, r.verdict) for r in result.results]


def test_softmax_subnormal_output_passes(registry: Registry) -> None:
    result = run(["softmax"], CheckOptions(input=np.array([[0.0, -740.0]])), registry=registry)
    assert all(r.verdict is Verdict.PASS for r in result.results), result.results[0].diagnosis


def test_softmax_tiny_output_does_not_raise(registry: Registry) -> None:
    result = run(["softmax"], CheckOptions(input=np.array([[0.0, -720.0]])), registry=registry)
    assert all(r.verdict is Verdict.PASS for r in result.results)


@pytest.mark.parametrize(
    ("spec", "x", "t"),
    [
        ("binary_cross_entropy", [[1.0 - 1e-12, 0.5]], [[1.0, 0.0]]),
        ("cross_entropy", [[1.0 - 1e-13, 0.5]], [[1.0, 0.0]]),
        ("sigmoid+binary_cross_entropy", [[30.0, -30.0, 0.5]], [[1.0, 0.0, 1.0]]),
        ("softmax+cross_entropy", [[30.0, -30.0, 0.0]], [[0.0, 1.0, 0.0]]),
    ],
)
def test_prediction_very_close_to_one_passes(registry: Registry, spec: str, x: list[list[float]],
                                             t: list[list[float]]) -> None:
    result = run([spec], CheckOptions(input=np.array(x), target=np.array(t)), registry=registry)
    assert all(r.verdict is Verdict.PASS for r in result.results), [(r.component, r.diagnosis)
                                                                   for r in result.results]


def test_softmax_outputs_outside_a_loss_domain_are_reported_not_crashed(registry: Registry) -> None:
    # softmax(1000, -1000) underflows to an exact 0, which cross_entropy cannot take: the
    # activation's own Jacobian rows still run, the loss side says why it cannot.
    options = CheckOptions(input=np.array([[1000.0, -1000.0, 0.0, 999.5]]), target=np.array([[0.0, 0.0, 0.0, 1.0]]))
    result = run(["softmax+cross_entropy"], options, registry=registry)
    by_component = {(r.component, r.convention): r for r in result.results}
    assert by_component[("jacobian", "jacobian")].verdict is Verdict.PASS
    loss_side = [r for r in result.results if r.component in ("gradient", "chain", "fused")]
    assert loss_side and all(r.verdict is Verdict.ERROR for r in loss_side)
    assert "outside cross_entropy's prediction domain" in loss_side[0].diagnosis
    assert result.exit_code == 3


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_overflowing_gradient_is_a_row_not_an_exception(registry: Registry, loss: str) -> None:
    options = CheckOptions(input=np.array([[1e-320, 0.5]]), target=np.array([[1.0, 0.0]]))
    (row,) = run([loss], options, registry=registry).results
    assert row.verdict in (Verdict.ERROR, Verdict.PASS)


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_smallest_subnormal_prediction_is_an_error_row(registry: Registry, loss: str) -> None:
    options = CheckOptions(input=np.array([[5e-324, 0.5]]), target=np.array([[1.0, 0.0]]))
    result = run([loss], options, registry=registry)
    (row,) = result.results
    assert row.verdict is Verdict.ERROR
    assert "not finite" in row.diagnosis
    assert result.exit_code == 3
