"""A library's relu mapped without declaring its kink: KINK at 0, still FAIL when wrong."""

from __future__ import annotations

import numpy as np

from gradcheck_cli.plugins import load_builtins
from gradcheck_cli.registry import Registry, register_activation, registering
from gradcheck_cli.results import Verdict
from gradcheck_cli.runner import CheckOptions, run


def _registry() -> Registry:
    reg = Registry()
    load_builtins(reg)
    with registering(reg, "test"):
        register_activation("lib_relu", forward=lambda x: np.maximum(x, 0.0), derivative=lambda x: (x > 0) * 1.0)
        register_activation("lib_relu_scaled", forward=lambda x: np.maximum(x, 0.0),
                            derivative=lambda x: (x > 0) * 1.000001)
        register_activation("lib_relu_outside", forward=lambda x: np.maximum(x, 0.0),
                            derivative=lambda x: np.where(x > 0, 1.0, np.where(x < 0, 0.0, 2.0)))
    return reg


def test_undeclared_kink_at_zero_is_a_kink() -> None:
    row = run(["lib_relu"], CheckOptions(input=np.array([[0.0, 1.0, -1.0]])), registry=_registry()).results[0]
    assert row.verdict is Verdict.KINK, row.diagnosis
    assert "not declared" in row.diagnosis


def test_wrong_value_elsewhere_is_not_excused_by_the_kink() -> None:
    row = run(["lib_relu_scaled"], CheckOptions(input=np.array([[0.0, 1.0, -1.0]])), registry=_registry()).results[0]
    assert row.verdict is Verdict.FAIL


def test_value_outside_the_one_sided_derivatives_fails() -> None:
    row = run(["lib_relu_outside"], CheckOptions(input=np.array([[0.0, 1.0, -1.0]])), registry=_registry()).results[0]
    assert row.verdict is Verdict.FAIL
