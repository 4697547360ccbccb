"""Seed 003's worked example: softmax of [2, 4, 2, 1] and dS_i/dx_j = S_i (delta_ij - S_j)."""

from __future__ import annotations

import numpy as np

from gradcheck_cli import conventions, inputs, numdiff
from gradcheck_cli.explanation import explain
from gradcheck_cli.registry import Registry
from gradcheck_cli.runner import CheckOptions, run

LOGITS = np.array([[2.0, 4.0, 2.0, 1.0]])
PUBLISHED = [0.1025, 0.7573, 0.1025, 0.0377]


def _kronecker_formula(s: np.ndarray) -> np.ndarray:
    k = s.size
    jac = np.empty((k, k))
    for i in range(k):
        for j in range(k):
            jac[i, j] = s[i] * ((1.0 if i == j else 0.0) - s[j])
    return jac


def test_softmax_values_match_the_post(registry: Registry) -> None:
    s = registry.get("softmax").forward(LOGITS)
    np.testing.assert_array_equal(np.round(s, 4), [PUBLISHED])
    # and not the "simple normalisation" the post contrasts it with
    assert not np.allclose(s, LOGITS / LOGITS.sum(), atol=1e-2)


def test_analytic_jacobian_is_the_kronecker_formula(registry: Registry) -> None:
    spec = registry.get("softmax")
    s = spec.forward(LOGITS)[0]
    expected = _kronecker_formula(s)
    # i = j: S_i (1 - S_i); i != j: -S_i S_j
    np.testing.assert_allclose(np.diag(expected), s * (1 - s), rtol=1e-15)
    assert expected[0, 1] == -s[0] * s[1]
    for convention in spec.conventions:
        jac = conventions.analytic_jacobian(spec, convention, LOGITS)
        np.testing.assert_allclose(jac, expected, rtol=1e-13, atol=1e-16, err_msg=convention)
    # outputs sum to 1, so every column of the Jacobian sums to 0
    np.testing.assert_allclose(expected.sum(axis=0), 0.0, atol=1e-15)


def test_numerical_jacobian_agrees(registry: Registry) -> None:
    spec = registry.get("softmax")
    est = numdiff.estimate(spec.forward, LOGITS, inputs.step_scale(LOGITS, "real"))
    np.testing.assert_allclose(est.value, _kronecker_formula(spec.forward(LOGITS)[0]), atol=1e-9)


def test_explain_shows_the_example(registry: Registry) -> None:
    exp = explain("softmax", CheckOptions(input=LOGITS), registry=registry)
    np.testing.assert_array_equal(np.round(exp.output, 4), [PUBLISHED])
    assert exp.analytic is not None and exp.numeric is not None
    np.testing.assert_allclose(exp.analytic, _kronecker_formula(exp.output[0]), rtol=1e-13)
    np.testing.assert_allclose(exp.numeric, exp.analytic, atol=1e-9)
    assert exp.rows.passed
    assert run(["softmax"], CheckOptions(input=LOGITS), registry=registry).passed
