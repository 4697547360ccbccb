"""Deliberately wrong layer backwards MUST fail, on the right argument, with the right diagnosis.

The mistakes are the ones found in real layer libraries (issue 11) and the classic ones of
parameter gradients: a wrongly shaped dx (CS231n's conv backward for pad 0), a transposed
dW, a missing 1/N, a flipped sign, two gradients swapped, batchnorm without its batch
terms, an upstream gradient changed in place, a gradient never computed. Each is
registered next to its correct counterpart (``NAME`` and ``NAME@mistake``, from
tests/layer_code.py) and both are checked in one run: the right one PASSes on every
argument, the wrong one FAILs on exactly the arguments it gets wrong.
"""

from __future__ import annotations

from typing import Any

import layer_code as L
import numpy as np
import pytest

from gradcheck_cli import CheckOptions, register_layer, register_loss, run
from gradcheck_cli.plugins import load_builtins
from gradcheck_cli.registry import Registry, registering
from gradcheck_cli.results import CheckResult, Verdict

ORIGIN = "tests/mutants/test_layer_mistakes.py"
OPTIONS = CheckOptions(seed=0, trials=2)
SQUARE = {"x": (4, 5), "w": (5, 5), "b": (5,)}
LSTM = {"x": (3, 4), "prev_h": (3, 5), "prev_c": (3, 5), "Wx": (4, 20), "Wh": (5, 20), "b": (20,)}
NNFS_DENSE: dict[str, Any] = dict(init={"n_inputs": 6, "n_neurons": 4}, args={"inputs": (4, 6)}, output_attr="output",
                                  grad_attr="dinputs", params={"weights": "dweights", "biases": "dbiases"})


def relu_backward_on_dout(dout: Any, x: Any) -> Any:
    """The gradient itself put through the relu: agrees with the right one on 0/1 upstream gradients."""
    return np.maximum(dout, 0) * (x > 0)


# name, forward, right backward, wrong backward, registration keywords, arguments that FAIL,
# fragments of their diagnosis (every one must appear).
MISTAKES: list[tuple[str, Any, Any, Any, dict[str, Any], set[str], tuple[str, ...]]] = [
    ("conv_pad0", L.conv_forward_naive, L.conv_backward_naive, L.conv_backward_naive_pad_slice,
     dict(args={"x": (2, 3, 5, 5), "w": (2, 3, 3, 3), "b": (2,)}, kwargs={"conv_param": {"stride": 1, "pad": 0}}),
     {"x"}, ("dx has shape (2, 3, 0, 0)", "x has shape (2, 3, 5, 5)")),
    ("affine_square", L.affine_forward, L.affine_backward, L.affine_backward_transposed, dict(args=SQUARE),
     {"w"}, ("dw is transposed", "square")),
    ("readout", L.affine_relu_readout_forward, L.affine_relu_readout_backward,
     L.affine_relu_readout_backward_no_mean, dict(args={"x": (4, 5), "w": (5, 3), "b": (3,)}),
     {"b"}, ("db is off by a constant factor 3", "1/N is missing")),
    ("scale_shift", L.scale_shift_forward, L.scale_shift_backward, L.scale_shift_backward_swapped,
     dict(args={"x": (4, 3), "gamma": (3,), "beta": (3,)}),
     {"gamma", "beta"}, ("swapped",)),
    ("batchnorm", L.batchnorm_forward, L.batchnorm_backward, L.batchnorm_backward_no_batch_terms,
     dict(args={"x": (5, 3), "gamma": (3,), "beta": (3,)}, kwargs={"bn_param": {"mode": "train"}}),
     {"x"}, ("dx misses part of the dependence", "batch statistic")),
    ("lstm_step", L.lstm_step_forward, L.lstm_step_backward, L.lstm_step_backward_in_place,
     dict(args=LSTM, outputs=("next_h", "next_c")),
     set(LSTM), ("changes its upstream gradient dnext_c in place", "dnext_c += ...")),
    ("affine_db", L.affine_forward, L.affine_backward, L.affine_backward_zero_db, dict(args=SQUARE),
     {"b"}, ("db is zero everywhere",)),
    ("relu_dout", L.relu_forward, L.relu_backward, relu_backward_on_dout, dict(args={"x": (4, 6)}),
     {"x"}, ("not linear in its upstream gradient", "np.maximum(dout, 0)")),
    ("nnfs_dense", L.Layer_Dense.forward, L.Layer_Dense.backward, L.Layer_Dense_Mean_Bias.backward, NNFS_DENSE,
     {"biases"}, ("dbiases is off by a constant factor", "0.25")),
]


def rows_by_check(rows: tuple[CheckResult, ...], check: str) -> dict[str, CheckResult]:
    return {r.wrt: r for r in rows if r.check == check}


@pytest.mark.parametrize(("name", "forward", "right", "wrong", "keys", "failing", "fragments"), MISTAKES,
                         ids=[m[0] for m in MISTAKES])
def test_the_mistake_fails_on_its_argument_and_the_right_code_passes(
        name: str, forward: Any, right: Any, wrong: Any, keys: dict[str, Any], failing: set[str],
        fragments: tuple[str, ...]) -> None:
    reg = Registry()
    with registering(reg, ORIGIN):
        register_layer(name, forward, backward=right, **keys)
        # Layer_Dense_Mean_Bias overrides only backward: its forward is the one it inherits.
        wrong_forward = L.Layer_Dense_Mean_Bias.forward if forward is L.Layer_Dense.forward else forward
        register_layer(f"{name}@mistake", wrong_forward, backward=wrong, mistake="deliberately wrong", **keys)
    options = CheckOptions(seed=0, trials=1) if name.startswith("conv") else OPTIONS  # naive loops: keep it quick
    result = run([name, f"{name}@mistake"], options, registry=reg)
    good = rows_by_check(result.results, name)
    bad = rows_by_check(result.results, f"{name}@mistake")
    assert set(good) == set(bad) and set(good) >= failing
    assert all(r.verdict is Verdict.PASS for r in good.values()), {k: r.diagnosis for k, r in good.items()}
    assert {k for k, r in bad.items() if r.verdict is not Verdict.PASS} == failing, \
        {k: (r.verdict, r.diagnosis) for k, r in bad.items()}
    for wrt in failing:
        row = bad[wrt]
        assert row.verdict is Verdict.FAIL, (wrt, row.verdict, row.diagnosis)
        for fragment in fragments:
            assert fragment in row.diagnosis, (wrt, row.diagnosis)
    assert result.exit_code == 1


def test_the_swapped_diagnosis_names_the_other_argument() -> None:
    reg = Registry()
    with registering(reg, ORIGIN):
        register_layer("swap", L.scale_shift_forward, backward=L.scale_shift_backward_swapped,
                       args={"x": (4, 3), "gamma": (3,), "beta": (3,)})
    rows = rows_by_check(run(["swap"], OPTIONS, registry=reg).results, "swap")
    assert "dgamma holds the gradient of beta" in rows["gamma"].diagnosis
    assert "dbeta holds the gradient of gamma" in rows["beta"].diagnosis


def test_a_flipped_sign_on_one_argument_of_a_vjp() -> None:
    reg = Registry()
    with registering(reg, ORIGIN):
        register_layer("dense", L.dense, vjp=L.dense_vjp, args={"x": (4, 5), "w": (5, 3), "b": (3,)})
        register_layer("dense@flipped", L.dense, vjp=L.dense_vjp_flipped_dx, args={"x": (4, 5), "w": (5, 3), "b": (3,)})
    result = run(["dense", "dense@flipped"], OPTIONS, registry=reg)
    assert all(r.verdict is Verdict.PASS for r in rows_by_check(result.results, "dense").values())
    bad = rows_by_check(result.results, "dense@flipped")
    assert {k: r.verdict for k, r in bad.items()} == {"x": Verdict.FAIL, "w": Verdict.PASS, "b": Verdict.PASS}
    assert "sign flipped" in bad["x"].diagnosis
    assert any(e.startswith("dout[") and "/dx[" in e for e in bad["x"].worst_entries), bad["x"].worst_entries


def test_mean_absolute_error_backward_with_its_sign_flipped() -> None:
    reg = Registry()
    load_builtins(reg)
    loss, flipped = L.Loss_MeanAbsoluteError(), L.Loss_MeanAbsoluteError_Flipped()
    with registering(reg, ORIGIN):
        register_loss("nnfs_mae", loss.forward, backward=loss.backward, grad_attr="dinputs", reduction="mean")
        register_loss("nnfs_mae@flipped", flipped.forward, backward=flipped.backward, grad_attr="dinputs",
                      reduction="mean", mistake="np.sign(y_true - dvalues)")
    result = run(["nnfs_mae", "nnfs_mae@flipped"], OPTIONS, registry=reg)
    assert [(r.check, r.component, r.verdict) for r in result.results] == [
        ("nnfs_mae", "gradient", Verdict.PASS), ("nnfs_mae@flipped", "gradient", Verdict.FAIL)]
    assert "sign" in result.results[1].diagnosis


def half_squared_error(pred: Any, target: Any) -> Any:
    return 0.5 * np.sum((pred - target) ** 2)


def test_a_wrong_shape_fails_also_through_a_loss() -> None:
    reg = Registry()
    conv = dict(args={"x": (1, 2, 4, 4), "w": (2, 2, 3, 3), "b": (2,)}, kwargs={"conv_param": {"stride": 1, "pad": 0}})
    with registering(reg, ORIGIN):
        register_loss("half_se", half_squared_error, gradient=lambda pred, target: pred - target)
        register_layer("conv0", L.conv_forward_naive, backward=L.conv_backward_naive, **conv)
        register_layer("conv0@pad_slice", L.conv_forward_naive, backward=L.conv_backward_naive_pad_slice, **conv)
    rows = run(["conv0+half_se", "conv0@pad_slice+half_se"], CheckOptions(seed=0, trials=1), registry=reg).results
    assert all(r.verdict is Verdict.PASS for r in rows if r.check == "conv0+half_se"), \
        [(r.component, r.wrt, r.diagnosis) for r in rows]
    failed = [(r.component, r.wrt) for r in rows if r.verdict is not Verdict.PASS]
    assert failed == [("jacobian", "x"), ("chain", "x")], [(r.component, r.wrt, r.diagnosis) for r in rows]
    assert all("dx has shape (1, 2, 0, 0)" in r.diagnosis for r in rows if r.verdict is Verdict.FAIL)


def _centred_forward(x: Any, w: Any) -> tuple[Any, Any]:
    xc = x - x.mean(axis=0)
    return xc @ w, (x, w)


def _centred_backward(dout: Any, cache: Any) -> tuple[Any, Any]:
    x, w = cache
    xc = x - x.mean(axis=0)
    dxc = dout @ w.T
    return dxc - dxc.mean(axis=0), xc.T @ dout


def _centred_backward_writes_x(dout: Any, cache: Any) -> tuple[Any, Any]:
    x, w = cache
    x -= x.mean(axis=0)  # the caller's x, reached through the cache
    dxc = dout @ w.T
    return dxc - dxc.mean(axis=0), x.T @ dout


def _centred_vjp_writes_x(x: Any, w: Any, dout: Any) -> tuple[Any, Any]:
    x -= x.mean(axis=0)
    dxc = dout @ w.T
    return dxc - dxc.mean(axis=0), x.T @ dout


@pytest.mark.parametrize("style", ["cache", "vjp"])
def test_a_backward_writing_into_the_forwards_input_is_flagged(style: str) -> None:
    # Its numbers are right (it centres x the way the forward does): only the write gives it away.
    registry = Registry()
    with registering(registry, "test"):
        register_layer("centred", _centred_forward, backward=_centred_backward, args={"x": (4, 3), "w": (3, 2)})
        if style == "cache":
            register_layer("centred@writes", _centred_forward, backward=_centred_backward_writes_x,
                           args={"x": (4, 3), "w": (3, 2)})
        else:
            register_layer("centred@writes", lambda x, w: _centred_forward(x, w)[0], vjp=_centred_vjp_writes_x,
                           args={"x": (4, 3), "w": (3, 2)})
    rows = run(["centred", "centred@writes"], OPTIONS, registry=registry).results
    assert all(r.verdict is Verdict.PASS for r in rows if r.check == "centred")
    wrong = [r for r in rows if r.check == "centred@writes"]
    assert all(r.verdict is Verdict.FAIL and "changes the forward's input x in place" in r.diagnosis for r in wrong)
