"""Difference methods (richardson, complex step), the float32 dtype, --edges and second derivatives.

Built-ins are the oracle: every correct entry passes and every deliberately wrong variant is
flagged, whatever the method or dtype. User entries probe what each option can and cannot
resolve, how the complex step falls back on code that is not complex-analytic, and how an
overflowing derivative is reported at the edge probes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gradcheck_cli import inputs
from gradcheck_cli.plugins import default_registry
from gradcheck_cli.registry import Registry, register_activation, registering
from gradcheck_cli.registry.activations import sigmoid, softmax, softmax_vjp
from gradcheck_cli.results import CheckResult, Verdict
from gradcheck_cli.runner import CheckOptions, run

Array = np.ndarray
SHAPE = (3, 5)
SEEDS = range(4)

# Layers need their own shapes: tests/unit/test_builtin_layers.py checks them.
_BUILTINS = [spec for spec in default_registry() if spec.kind != "layer"]
CORRECT = [spec.name for spec in _BUILTINS if not spec.is_variant]
VARIANTS = [spec.name for spec in _BUILTINS if spec.is_variant]
WITH_SECOND = [spec.name for spec in _BUILTINS if "derivative2" in spec.second]

def _params(method: str) -> list[Any]:
    # Regression cases: complex step on formulas that cancel (tanh's 1 - y^2, softmax's 1 - S)
    # and Richardson across a jump in f'' (elu, softsign at 0) once failed correct entries.
    return [pytest.param(method, name) for name in CORRECT]


def _rows(registry: Registry, name: str, **options: Any) -> list[CheckResult]:
    return list(run([name], CheckOptions(**{"shape": SHAPE, **options}), registry=registry).results)


def _user(**entries: dict[str, Any]) -> Registry:
    registry = Registry()
    with registering(registry, "test"):
        for name, kwargs in entries.items():
            register_activation(name, **kwargs)
    return registry


def test_the_oracle_lists_are_what_the_readme_names() -> None:
    assert {"softmax", "log_softmax", "sigmoid", "tanh", "relu", "elu", "softsign", "mse", "cross_entropy",
            "binary_cross_entropy", "kl_div"} <= set(CORRECT)
    assert {"softmax@diagonal", "softmax@wrong_input", "tanh@sign_flip", "log_softmax@transposed", "mse@no_mean",
            "mse@factor2", "softmax@batch_sum"} <= set(VARIANTS)
    assert {"identity", "sigmoid", "tanh", "gelu", "softplus", "silu"} <= set(WITH_SECOND)


# --- richardson and complex step -----------------------------------------------------------------

@pytest.mark.parametrize(("method", "name"), _params("richardson") + _params("complex"))
def test_method_passes_every_builtin_correct_entry(registry: Registry, method: str, name: str) -> None:
    for seed in SEEDS:
        for row in _rows(registry, name, seed=seed, method=method):
            assert row.verdict is Verdict.PASS, (seed, row.component, row.diagnosis)
            if row.component == "second_derivative":
                continue  # second differences have one method of their own
            # The method is used, or the row says why not.
            if row.method != method:
                assert method == "complex" and row.method == "central", row.method
                assert any("complex step" in note for note in row.notes), row.notes
            assert f"--method {method}" in row.reproduce


@pytest.mark.parametrize("method", ["richardson", "complex"])
def test_method_flags_every_builtin_variant(registry: Registry, method: str) -> None:
    missed = []
    for seed in SEEDS:
        result = run(VARIANTS, CheckOptions(seed=seed, shape=SHAPE, method=method), registry=registry)
        for name in VARIANTS:
            rows = [r for r in result.results if r.check == name]
            assert rows and not any(r.verdict is Verdict.ERROR for r in rows), [r.diagnosis for r in rows]
            if not any(r.verdict is Verdict.FAIL for r in rows):
                missed.append((seed, name))
            assert all(f"--method {method}" in r.reproduce for r in rows)
    assert not missed, missed


@pytest.mark.parametrize(("name", "why"), [
    ("sigmoid", "complex step not possible"),        # np.where on x drops the imaginary part
    ("softsign", "complex step disagrees"),          # np.abs accepts complex input but is not analytic
    ("softplus", "complex step not possible"),       # np.logaddexp refuses complex input
    ("mae", "complex step not possible"),
])
def test_complex_step_falls_back_on_code_that_is_not_complex_analytic(registry: Registry, name: str,
                                                                      why: str) -> None:
    first = [r for r in _rows(registry, name, seed=0, method="complex") if r.component != "second_derivative"]
    assert first
    for row in first:
        assert row.verdict is Verdict.PASS, row.diagnosis
        assert row.method == "central"
        assert any(why in note and "central differences instead" in note for note in row.notes), row.notes


def test_complex_step_is_used_where_the_code_is_analytic(registry: Registry) -> None:
    for name in ("softmax", "log_softmax", "identity", "cross_entropy"):
        rows = _rows(registry, name, seed=0, method="complex")
        assert all(r.method == "complex" and not r.notes for r in rows if r.component != "second_derivative"), name


def x_abs_x(x: Array) -> Array:
    return x * np.abs(x)


def test_complex_step_fallback_still_judges_by_the_true_derivative() -> None:
    # For x|x| the complex step returns |x| (it treats |x| as a constant), half the true 2|x|:
    # after the fallback the right derivative must pass and the complex-step-shaped one must fail.
    registry = _user(xax=dict(forward=x_abs_x, derivative=lambda x: 2.0 * np.abs(x)),
                     xax_half=dict(forward=x_abs_x, derivative=np.abs))
    right, half = run(["xax", "xax_half"], CheckOptions(seed=0, shape=SHAPE, method="complex"),
                      registry=registry).results
    for row in (right, half):
        assert row.method == "central"
        assert any("complex step disagrees" in n for n in row.notes), row.notes
    assert right.verdict is Verdict.PASS, right.diagnosis
    assert half.verdict is Verdict.FAIL and "factor 1/2" in half.diagnosis


def test_richardson_and_complex_resolve_what_central_differences_cannot() -> None:
    registry = _user(sm_1e10=dict(forward=softmax, vjp=lambda x, g: (1.0 + 1e-10) * softmax_vjp(x, g)))
    for method in ("richardson", "complex"):
        for seed in SEEDS:
            (row,) = _rows(registry, "sm_1e10", seed=seed, method=method)
            assert row.verdict is Verdict.FAIL, (method, seed, row.max_rel_error, row.tolerance)
            assert row.method == method


# --- float32 -------------------------------------------------------------------------------------

def test_float32_passes_every_builtin_correct_entry_and_flags_every_variant(registry: Registry) -> None:
    surprises = []
    for seed in SEEDS:
        result = run(CORRECT + VARIANTS, CheckOptions(seed=seed, shape=SHAPE, dtype="float32"), registry=registry)
        assert all("--dtype float32" in row.reproduce for row in result.results)
        for name in CORRECT + VARIANTS:
            verdicts = [r.verdict for r in result.results if r.check == name]
            ok = (Verdict.FAIL in verdicts) if name in VARIANTS else all(v is Verdict.PASS for v in verdicts)
            if not verdicts or Verdict.ERROR in verdicts or not ok:
                surprises.append((seed, name, [v.value for v in verdicts]))
    assert not surprises, surprises[:5]


def _factor(diagnosis: str) -> float:
    """The factor in 'off by a constant factor: analytic = C x numeric everywhere'."""
    found = re.search(r"off by a constant factor: analytic = ([0-9.eE+-]+) x numeric", diagnosis)
    assert found, diagnosis
    return float(found.group(1))


def _scaled_sigmoid(factor: float) -> dict[str, Any]:
    return dict(forward=sigmoid, derivative_of_output=lambda y: (y * (1.0 - y)) * factor)


def test_float32_resolves_a_one_percent_error() -> None:
    registry = _user(sig_1e2=_scaled_sigmoid(1.0 + 1e-2))
    for seed in SEEDS:
        (row,) = [r for r in _rows(registry, "sig_1e2", seed=seed, dtype="float32") if r.component == "jacobian"]
        assert row.verdict is Verdict.FAIL, (seed, row.max_rel_error, row.tolerance)
        assert _factor(row.diagnosis) == pytest.approx(1.01, abs=2e-4), row.diagnosis


def test_float32_cannot_resolve_a_1e5_relative_error_but_float64_can() -> None:
    # float32 has eps ~ 1.2e-7: central differences in float32 resolve derivatives to about
    # eps^(2/3) ~ 2.4e-5 relative, so a derivative 1e-5 too large is within what the numerical
    # reference itself is unsure of and cannot be flagged. The same code in float64 is flagged:
    # the verdict reflects the dtype's resolution, not a blind spot of the tool.
    registry = _user(sig_1e5=_scaled_sigmoid(1.0 + 1e-5))
    for seed in SEEDS:
        (f32,) = _rows(registry, "sig_1e5", seed=seed, dtype="float32")
        assert f32.verdict is Verdict.PASS, (seed, f32.diagnosis)
        assert f32.tolerance is not None and f32.numeric is not None
        assert f32.tolerance > 1e-5 * abs(f32.numeric), "the float32 tolerance is above the 1e-5 error"
        (f64,) = _rows(registry, "sig_1e5", seed=seed)
        assert f64.verdict is Verdict.FAIL, (seed, f64.tolerance)
        assert _factor(f64.diagnosis) == pytest.approx(1.0 + 1e-5, abs=1e-9), f64.diagnosis


def test_float32_runs_the_checked_code_in_float32() -> None:
    seen: dict[str, set[str]] = {"forward": set(), "derivative": set()}

    def forward(x: Array) -> Array:
        seen["forward"].add(str(x.dtype))
        return np.tanh(x)

    def derivative(x: Array) -> Array:
        seen["derivative"].add(str(x.dtype))
        return 1.0 - np.tanh(x) ** 2

    registry = _user(tanh_spy=dict(forward=forward, derivative=derivative))
    (row,) = _rows(registry, "tanh_spy", seed=0, dtype="float32")
    assert row.verdict is Verdict.PASS, row.diagnosis
    assert seen == {"forward": {"float32"}, "derivative": {"float32"}}


# --- --edges -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_edges_add_three_trials_and_builtins_pass(registry: Registry, dtype: str) -> None:
    surprises = []
    for seed, trials in ((0, 1), (1, 2)):
        result = run(CORRECT, CheckOptions(seed=seed, trials=trials, shape=SHAPE, dtype=dtype, edges=True),
                     registry=registry)
        assert {r.check for r in result.results} == set(CORRECT)
        for row in result.results:
            assert row.trials == trials + inputs.N_EDGES == trials + 3
            assert "--edges" in row.reproduce
            if row.verdict is not Verdict.PASS:
                surprises.append((seed, trials, row.check, row.component, row.verdict.value, row.diagnosis[:90]))
    assert not surprises, surprises[:5]


def naive_sigmoid_derivative(x: Array) -> Array:
    e = np.exp(-x)
    return e / (1.0 + e) ** 2


def test_derivative_that_overflows_at_the_edge_is_flagged_with_where_and_why() -> None:
    registry = _user(naive=dict(forward=sigmoid, derivative=naive_sigmoid_derivative))
    for seed in SEEDS:
        (plain,) = _rows(registry, "naive", seed=seed)
        assert plain.verdict is Verdict.PASS, "random inputs do not reach the overflow"
        (row,) = _rows(registry, "naive", seed=seed, edges=True)
        assert row.verdict is Verdict.FAIL
        assert row.trials == 3 + 3 and row.trial >= 3, "the failing trial is an edge probe"
        assert "x[" in row.diagnosis and "overflow" in row.diagnosis, row.diagnosis
        assert "= -1000" in row.diagnosis
        assert row.analytic is not None and math.isnan(row.analytic)


def test_stable_rewrite_passes_the_edges() -> None:
    def stable(x: Array) -> Array:
        e = np.exp(-np.abs(x))
        return e / (1.0 + e) ** 2

    registry = _user(stable=dict(forward=sigmoid, derivative=stable))
    for seed in SEEDS:
        (row,) = _rows(registry, "stable", seed=seed, edges=True)
        assert row.verdict is Verdict.PASS, row.diagnosis


# --- second derivatives --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_builtin_second_derivatives_pass(registry: Registry, dtype: str) -> None:
    for seed in SEEDS:
        result = run(WITH_SECOND, CheckOptions(seed=seed, shape=SHAPE, dtype=dtype), registry=registry)
        second = [r for r in result.results if r.component == "second_derivative"]
        assert sorted(r.check for r in second) == sorted(WITH_SECOND)
        for row in result.results:
            assert row.verdict is Verdict.PASS, (seed, row.check, row.component, row.diagnosis)
        assert all(r.convention == "derivative2" for r in second)


def _sigmoid_second(x: Array) -> Array:
    s = sigmoid(x)
    return s * (1.0 - s) * (1.0 - 2.0 * s)


@pytest.mark.parametrize(("second", "fragment"), [
    (lambda x: -_sigmoid_second(x), "sign flipped"),
    (lambda x: 2.0 * _sigmoid_second(x), "factor 2"),
    (lambda x: sigmoid(x) * (1.0 - sigmoid(x)), "entries wrong"),  # the first derivative again
], ids=["sign_flip", "factor_2", "first_derivative"])
def test_wrong_second_derivative_fails_on_its_own_row(second: Callable[[Array], Array], fragment: str) -> None:
    registry = _user(sig=dict(forward=sigmoid, derivative_of_output=lambda y: y * (1.0 - y), derivative2=second),
                     sig_ok=dict(forward=sigmoid, derivative_of_output=lambda y: y * (1.0 - y),
                                 derivative2=_sigmoid_second))
    for seed in SEEDS:
        rows = {r.component: r for r in _rows(registry, "sig", seed=seed)}
        assert set(rows) == {"jacobian", "second_derivative"}
        assert rows["jacobian"].verdict is Verdict.PASS
        row = rows["second_derivative"]
        assert (row.verdict, row.convention) == (Verdict.FAIL, "derivative2"), row.diagnosis
        assert fragment in row.diagnosis, row.diagnosis
        assert row.worst_index is not None and len(row.worst_index) == 2
        ok = {r.component: r.verdict for r in _rows(registry, "sig_ok", seed=seed)}
        assert ok == {"jacobian": Verdict.PASS, "second_derivative": Verdict.PASS}


def test_second_derivative_of_a_row_wise_function_is_refused() -> None:
    registry = _user(sm2=dict(forward=softmax, vjp=softmax_vjp, derivative2=lambda x: np.zeros_like(x)))
    rows = {r.component: r for r in _rows(registry, "sm2", seed=0)}
    assert rows["jacobian"].verdict is Verdict.PASS
    assert rows["second_derivative"].verdict is Verdict.ERROR
    assert "not elementwise" in rows["second_derivative"].diagnosis
