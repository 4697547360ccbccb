"""Small numeric faults in user code are reported as what they are, through run()."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from gradcheck_cli.explanation import explain
from gradcheck_cli.plugins import default_registry
from gradcheck_cli.registry import Registry, register_activation, register_loss, registering
from gradcheck_cli.results import Verdict
from gradcheck_cli.runner import CheckOptions, run


def _tanh_longdouble(x: np.ndarray) -> np.ndarray:
    return np.tanh(np.asarray(x, dtype=np.longdouble))


def _tanh_half(x: np.ndarray) -> np.ndarray:
    return np.tanh(np.asarray(x)).astype(np.float16)


def _per_sample_mse(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.mean((p - t) ** 2, axis=-1)  # shape (B,): not reduced over the batch


@pytest.fixture(scope="module")
def reg() -> Registry:
    registry = default_registry()
    with registering(registry, "test"):
        register_activation("tanh_longdouble", forward=_tanh_longdouble,
                            derivative=lambda x: 1.0 - np.tanh(np.asarray(x, dtype=np.longdouble)) ** 2)
        register_activation("tanh_longdouble_wrong", forward=_tanh_longdouble,
                            derivative=lambda x: 1.0 + np.tanh(np.asarray(x, dtype=np.longdouble)) ** 2)
        register_activation("tanh_half", forward=_tanh_half, derivative=lambda x: 1.0 - np.tanh(x) ** 2)
        register_loss("per_sample_mse", forward=_per_sample_mse, target="real",
                      gradient=lambda p, t: 2.0 * (p - t) / p.shape[-1])
    return registry


@pytest.mark.parametrize("options", [CheckOptions(), CheckOptions(dtype="float32"), CheckOptions(fast=True)])
def test_a_longdouble_forward_is_checked_not_called_nondeterministic(reg: Registry, options: CheckOptions) -> None:
    # The determinism probe's repeat call is cast to float64 before comparing: so is the first.
    result = run(["tanh_longdouble", "tanh_longdouble_wrong"], options, registry=reg)
    right, wrong = result.results
    assert right.verdict is Verdict.PASS, right.diagnosis
    assert wrong.verdict is Verdict.FAIL
    assert not any("deterministic" in r.diagnosis for r in result.results)


def test_a_float16_forward_is_refused_without_blaming_the_analytic_side(reg: Registry) -> None:
    for options in (CheckOptions(), CheckOptions(dtype="float32"), CheckOptions(fast=True)):
        result = run(["tanh_half"], options, registry=reg)
        (row,) = result.results
        assert row.verdict is Verdict.ERROR
        assert "tanh_half forward returned float16 values" in row.diagnosis
        assert "finite differences cannot be trusted" in row.diagnosis
        assert "analytic side is not at fault" in row.diagnosis
        assert result.exit_code == 3


@pytest.mark.parametrize("spec", ["per_sample_mse", "sigmoid+per_sample_mse"])
@pytest.mark.parametrize("fast", [False, True])
def test_a_loss_returning_per_sample_values_must_return_a_scalar(reg: Registry, spec: str, fast: bool) -> None:
    result = run([spec], CheckOptions(shape=(4, 10), fast=fast), registry=reg)
    rows = [r for r in result.results if r.component in ("gradient", "chain")]
    assert rows and all(r.verdict is Verdict.ERROR for r in rows)
    for row in rows:
        assert "returned an array of shape (4,)" in row.diagnosis
        assert "a loss must return a scalar" in row.diagnosis
        assert "np.mean or np.sum" in row.diagnosis
        assert "broadcast" not in row.diagnosis
    assert result.exit_code == 3


@pytest.fixture
def raising() -> Iterator[None]:
    """numpy set to raise on every floating-point event, as a plugin might at import."""
    old = np.seterr(all="raise")
    try:
        yield
    finally:
        np.seterr(**old)


def _verdicts(registry: Registry, options: CheckOptions) -> list[tuple[str, str, str]]:
    specs = ["softmax+cross_entropy", "log_softmax+nll", "sigmoid+binary_cross_entropy", "relu+mae",
             "softmax@diagonal", "mse@no_mean", "elu+huber", "tanh+log_cosh", "gelu+mse", "gelu_tanh+mae"]
    return [(r.check, r.component, r.verdict.value) for r in run(specs, options, registry=registry).results]


@pytest.mark.parametrize("options", [CheckOptions(), CheckOptions(dtype="float32", edges=True),
                                     CheckOptions(fast=True), CheckOptions(method="richardson")])
def test_seterr_raise_in_a_plugin_changes_no_verdict(registry: Registry, options: CheckOptions) -> None:
    expected = _verdicts(registry, options)
    old = np.seterr(all="raise")
    try:
        got = _verdicts(registry, options)
        explanation = explain("softmax", registry=registry)
    finally:
        np.seterr(**old)
    assert got == expected
    assert explanation.numeric is not None


def _exp_forward(x: np.ndarray) -> np.ndarray:
    return np.exp(x)


def test_user_code_warnings_are_still_recorded_under_seterr_raise(raising: None) -> None:
    registry = default_registry()
    with registering(registry, "test"):
        # derivative overflows where forward does not matter: the warning is evidence
        register_activation("exp_overflowing", forward=_exp_forward, derivative=lambda x: np.exp(x * 1000.0))
    (row,) = run(["exp_overflowing"], CheckOptions(), registry=registry).results
    assert row.verdict is Verdict.FAIL
    assert "overflow" in row.diagnosis
