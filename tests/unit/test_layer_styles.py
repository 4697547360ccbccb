"""Layers in every style of shared/PRODUCT.md "Layers", registered as written: right code PASSes.

Each test registers code from tests/layer_code.py (CS231n functions, nnfs classes, Keras-like
dictionaries) into a private registry (the built-ins loaded, so names cannot clash
silently) with :func:`register_layer` / :func:`register_loss`, and checks it with
:func:`gradcheck_cli.run`: one row per argument and parameter, named by ``wrt``. Also the
engine's edges found by trying to break it: scalar parameters, python floats and lists,
an argument named ``target``, constants that cannot be copied, too many outputs.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import layer_code as L
import numpy as np
import pytest
from procs import Proc

from gradcheck_cli import CheckOptions, register_layer, register_loss, run
from gradcheck_cli.errors import PluginError
from gradcheck_cli.plugins import load_builtins
from gradcheck_cli.registry import Registry, registering
from gradcheck_cli.results import CheckResult, Verdict

ORIGIN = "tests/unit/test_layer_styles.py"
OPTIONS = CheckOptions(seed=0, trials=2)
AFFINE = {"x": (4, 2, 5), "w": (10, 3), "b": (3,)}
DENSE = {"x": (4, 5), "w": (5, 3), "b": (3,)}
LSTM = {"x": (3, 4), "prev_h": (3, 5), "prev_c": (3, 5), "Wx": (4, 20), "Wh": (5, 20), "b": (20,)}
NNFS_DENSE: dict[str, Any] = dict(init={"n_inputs": 6, "n_neurons": 4}, args={"inputs": (3, 6)}, output_attr="output",
                                  grad_attr="dinputs", params={"weights": "dweights", "biases": "dbiases"})


@pytest.fixture
def reg() -> Registry:
    registry = Registry()
    load_builtins(registry)
    return registry


def layer(reg: Registry, name: str, forward: Callable[..., Any], options: CheckOptions = OPTIONS,
          **kwargs: Any) -> list[CheckResult]:
    """Register one layer ``name`` and return its rows."""
    with registering(reg, ORIGIN):
        register_layer(name, forward, **kwargs)
    return list(run([name], options, registry=reg).results)


def verdicts(rows: list[CheckResult]) -> dict[str, Verdict]:
    return {r.wrt: r.verdict for r in rows}


def all_pass(rows: list[CheckResult]) -> bool:
    return bool(rows) and all(r.verdict is Verdict.PASS for r in rows)


def explain(rows: list[CheckResult]) -> str:
    return "\n".join(f"{r.component} {r.wrt}: {r.verdict.value} {r.diagnosis}" for r in rows)


# --- cache style (CS231n) --------------------------------------------------------------------

def test_cache_style_affine_with_x_of_rank_3(reg: Registry) -> None:
    rows = layer(reg, "affine", L.affine_forward, backward=L.affine_backward, args=AFFINE)
    assert all_pass(rows), explain(rows)
    assert [(r.wrt, r.shape, r.component, r.convention) for r in rows] == [
        ("x", (4, 2, 5), "jacobian", "backward (cache)"),
        ("w", (10, 3), "jacobian", "backward (cache)"),
        ("b", (3,), "jacobian", "backward (cache)")]
    assert rows[1].worst_entry.startswith("dout[") and "/dw[" in rows[1].worst_entry


def test_conv_like_layer_of_rank_4_with_keyword_constants(reg: Registry) -> None:
    rows = layer(reg, "conv", L.conv_forward_naive, CheckOptions(seed=0, trials=1), backward=L.conv_backward_naive,
                 args={"x": (1, 2, 5, 5), "w": (2, 2, 3, 3), "b": (2,)}, kwargs={"conv_param": {"stride": 2, "pad": 1}})
    assert all_pass(rows), explain(rows)
    assert [r.shape for r in rows] == [(1, 2, 5, 5), (2, 2, 3, 3), (2,)]


def test_several_outputs_lstm_step(reg: Registry) -> None:
    rows = layer(reg, "lstm_step", L.lstm_step_forward, backward=L.lstm_step_backward, args=LSTM,
                 outputs=("next_h", "next_c"))
    assert all_pass(rows), explain(rows)
    assert [r.wrt for r in rows] == list(LSTM)
    # Worst entries name the output they come from.
    assert all(r.worst_entry.startswith(("dnext_h[", "dnext_c[")) for r in rows), [r.worst_entry for r in rows]


def test_a_two_output_layer_registered_with_one_output_is_refused_when_it_registers(reg: Registry) -> None:
    # Its backward takes (dnext_h, dnext_c, cache): one upstream gradient per output, and only one was declared.
    with pytest.raises(PluginError, match=r"backward\(dnext_h, dnext_c, cache\) cannot be called as "
                                          r"backward\(dout, cache\).*'outputs' its outputs"), registering(reg, ORIGIN):
        register_layer("lstm_unnamed", L.lstm_step_forward, backward=L.lstm_step_backward, args=LSTM)


def test_a_forward_returning_more_values_than_outputs_and_cache_is_told_to_name_its_outputs(reg: Registry) -> None:
    def backward(*parts: Any) -> Any:  # takes anything: only the forward's return can tell
        return L.lstm_step_backward(*parts)

    rows = layer(reg, "lstm_unnamed", L.lstm_step_forward, backward=backward, args=LSTM)
    assert {r.verdict for r in rows} == {Verdict.ERROR}
    assert "forward returned a tuple of 3; expected (out, cache)" in rows[0].diagnosis
    assert "outputs" in rows[0].diagnosis


# --- vjp style ---------------------------------------------------------------------------

@pytest.mark.parametrize("vjp", [L.dense_vjp, L.dense_vjp_dict], ids=["tuple", "dict"])
def test_multi_argument_vjp(reg: Registry, vjp: Callable[..., Any]) -> None:
    rows = layer(reg, "dense_v", L.dense, vjp=vjp, args=DENSE)
    assert all_pass(rows), explain(rows)
    assert [(r.wrt, r.convention) for r in rows] == [("x", "vjp"), ("w", "vjp"), ("b", "vjp")]


def test_vjp_with_two_outputs_takes_one_upstream_gradient_each(reg: Registry) -> None:
    rows = layer(reg, "bilinear", L.bilinear, vjp=L.bilinear_vjp, args={"x": (4, 5), "y": (4, 3), "w": (5, 3)},
                 outputs=("prod", "lin"))
    assert all_pass(rows), explain(rows)


def test_a_vjp_dict_missing_an_argument_is_an_error_naming_it(reg: Registry) -> None:
    def vjp(x: Any, w: Any, b: Any, g: Any) -> dict[str, Any]:
        return {"x": g @ w.T, "w": x.T @ g}

    rows = layer(reg, "dense_missing", L.dense, vjp=vjp, args=DENSE)
    assert {r.verdict for r in rows} == {Verdict.ERROR}
    assert "vjp returned a dict without 'b'" in rows[0].diagnosis


# --- stateful classes (nnfs, Keras-like) ---------------------------------------------------

def test_stateful_class_from_unbound_methods_and_init(reg: Registry) -> None:
    rows = layer(reg, "nnfs_dense", L.Layer_Dense.forward, backward=L.Layer_Dense.backward, **NNFS_DENSE)
    assert all_pass(rows), explain(rows)
    assert [(r.wrt, r.shape) for r in rows] == [("inputs", (3, 6)), ("weights", (6, 4)), ("biases", (1, 4))]
    assert rows[0].convention == "backward (stateful)"


def test_stateful_class_from_a_bound_instance(reg: Registry) -> None:
    instance = L.Layer_Dense(6, 4)
    weights = instance.weights.copy()
    rows = layer(reg, "nnfs_dense_bound", instance.forward, backward=instance.backward,
                 **{k: v for k, v in NNFS_DENSE.items() if k != "init"})
    assert all_pass(rows), explain(rows)
    assert np.array_equal(instance.weights, weights) and not hasattr(instance, "dinputs")  # worked on copies


def test_parameters_in_dictionaries(reg: Registry) -> None:
    rows = layer(reg, "dict_dense", L.DictDense.forward, backward=L.DictDense.backward, init={"n_in": 4, "n_out": 3},
                 args={"x": (5, 4)}, params={"params[W]": "grads[W]", "params[b]": "grads[b]"})
    assert all_pass(rows), explain(rows)
    assert [(r.wrt, r.shape) for r in rows] == [("x", (5, 4)), ("params[W]", (4, 3)), ("params[b]", (3,))]


class CountedDense(L.Layer_Dense):
    """Counts its constructions: the layer is built once per registration, then copied."""

    built = 0

    def __init__(self, n_inputs: int, n_neurons: int) -> None:
        type(self).built += 1
        super().__init__(n_inputs, n_neurons)

    def forward(self, inputs: Any) -> None:
        super().forward(inputs)

    def backward(self, dvalues: Any) -> None:
        super().backward(dvalues)


def test_a_constructor_drawing_random_weights_is_built_once_and_is_not_non_deterministic(reg: Registry) -> None:
    CountedDense.built = 0
    rows = layer(reg, "counted", CountedDense.forward, backward=CountedDense.backward, **NNFS_DENSE)
    assert all_pass(rows), explain(rows)
    assert CountedDense.built == 1
    assert not any("deterministic" in r.diagnosis for r in rows)


def test_a_subclass_overriding_only_backward_is_checked_with_its_own_backward(reg: Registry) -> None:
    # Layer_Dense_Mean_Bias.forward *is* Layer_Dense.forward: the subclass must still be built.
    rows = layer(reg, "mean_bias", L.Layer_Dense_Mean_Bias.forward, backward=L.Layer_Dense_Mean_Bias.backward,
                 **NNFS_DENSE)
    assert verdicts(rows) == {"inputs": Verdict.PASS, "weights": Verdict.PASS, "biases": Verdict.FAIL}, explain(rows)
    assert "factor" in rows[2].diagnosis


def test_methods_of_two_unrelated_classes_are_refused(reg: Registry) -> None:
    with registering(reg, ORIGIN), pytest.raises(PluginError, match=r"backward=Layer_Dropout.backward is not the "
                                                                   r"method gradcheck calls on the layer"):
        register_layer("mixed", L.Layer_Dense.forward, backward=L.Layer_Dropout.backward, **NNFS_DENSE)


# --- stochastic layers -------------------------------------------------------------------

DROPOUT = dict(args={"x": (4, 5)}, kwargs={"dropout_param": {"p": 0.5, "mode": "train"}})
NNFS_DROPOUT: dict[str, Any] = dict(init={"rate": 0.3}, args={"inputs": (4, 5)}, output_attr="output",
                                    grad_attr="dinputs")


@pytest.mark.parametrize(("forward", "backward", "keys"), [
    (L.dropout_forward, L.dropout_backward, DROPOUT),
    (L.Layer_Dropout.forward, L.Layer_Dropout.backward, NNFS_DROPOUT),
], ids=["cs231n", "nnfs"])
def test_dropout_passes_when_stochastic_and_is_an_error_otherwise(reg: Registry, forward: Any, backward: Any,
                                                                  keys: dict[str, Any]) -> None:
    rows = layer(reg, "drop", forward, backward=backward, stochastic=True, **keys)
    assert all_pass(rows), explain(rows)
    rows = layer(reg, "drop_plain", forward, backward=backward, **keys)
    assert [r.verdict for r in rows] == [Verdict.ERROR]
    assert "not deterministic" in rows[0].diagnosis and "stochastic: true" in rows[0].diagnosis


def test_stochastic_code_drawing_from_its_own_generator_is_told_to_use_the_global_state(reg: Registry) -> None:
    def forward(x: Any) -> Any:
        mask = np.random.default_rng().random(x.shape) < 0.5
        return x * mask, mask

    rows = layer(reg, "own_rng", forward, backward=lambda dout, mask: dout * mask, args={"x": (3, 4)},
                 stochastic=True)
    assert [r.verdict for r in rows] == [Verdict.ERROR]
    assert "numpy's global random state" in rows[0].diagnosis


# --- constants -----------------------------------------------------------------------------

def test_keyword_constants_mutated_by_forward_do_not_leak(reg: Registry) -> None:
    bn_param = {"mode": "train"}
    rows = layer(reg, "bn", L.batchnorm_forward, backward=L.batchnorm_backward,
                 args={"x": (5, 3), "gamma": (3,), "beta": (3,)}, kwargs={"bn_param": bn_param})
    assert all_pass(rows), explain(rows)
    assert bn_param == {"mode": "train"}  # the running averages went into copies


def test_a_constant_forward_counts_in_is_fresh_for_every_call(reg: Registry) -> None:
    def forward(x: Any, state: dict[str, int]) -> Any:
        state["calls"] = state.get("calls", 0) + 1  # leaked state would make forward differ call to call
        return x * state["calls"], state["calls"]

    rows = layer(reg, "counter", forward, backward=lambda dout, calls: dout * calls, args={"x": (3, 4)},
                 kwargs={"state": {}})
    assert all_pass(rows), explain(rows)


def test_a_constant_that_cannot_be_copied_is_passed_as_it_is(reg: Registry) -> None:
    def forward(x: Any, xp: Any) -> Any:  # array-module style: xp is numpy or cupy
        return xp.tanh(x), x

    rows = layer(reg, "xp_tanh", forward, backward=lambda dout, x: dout * (1 - np.tanh(x) ** 2), args={"x": (3, 4)},
                 kwargs={"xp": np})
    assert all_pass(rows), explain(rows)


# --- rows, JSON, shapes --------------------------------------------------------------------

def test_json_rows_carry_wrt(reg: Registry) -> None:
    with registering(reg, ORIGIN):
        register_layer("affine_json", L.affine_forward, backward=L.affine_backward, args=AFFINE)
    data = run(["affine_json"], OPTIONS, registry=reg).to_dict()
    assert [(r["wrt"], r["shape"]) for r in data["results"]] == [("x", [4, 2, 5]), ("w", [10, 3]), ("b", [3])]
    assert data["results"][1]["worst_entry"].split("/")[1].startswith("dw[")


def test_shape_by_name_and_a_bare_shape_of_any_rank(reg: Registry) -> None:
    with registering(reg, ORIGIN):
        register_layer("affine_shapes", L.affine_forward, backward=L.affine_backward, args=AFFINE)
    by_name = run(["affine_shapes"], CheckOptions(seed=0, trials=1, arg_shapes=(("x", (2, 3, 2)), ("w", (6, 4)),
                                                                               ("b", (4,)))), registry=reg)
    assert [r.shape for r in by_name.results] == [(2, 3, 2), (6, 4), (4,)]
    assert by_name.passed
    bare = run(["affine_shapes"], CheckOptions(seed=0, trials=1, shape=(3, 5, 2), arg_shapes=(("w", (10, 3)),)),
               registry=reg)
    assert [r.shape for r in bare.results] == [(3, 5, 2), (10, 3), (3,)]  # a bare --shape is the first input's
    assert bare.passed


def test_a_shape_of_any_rank_for_the_first_input_of_a_conv(reg: Registry) -> None:
    with registering(reg, ORIGIN):
        register_layer("conv_shape", L.conv_forward_naive, backward=L.conv_backward_naive,
                       args={"x": (1, 2, 5, 5), "w": (2, 2, 3, 3), "b": (2,)}, kwargs={"conv_param": {"stride": 1,
                                                                                                    "pad": 1}})
    rows = run(["conv_shape"], CheckOptions(seed=0, trials=1, shape=(2, 2, 4, 3)), registry=reg).results
    assert [r.shape for r in rows] == [(2, 2, 4, 3), (2, 2, 3, 3), (2,)]
    assert all_pass(list(rows)), explain(list(rows))


PLUGIN = '''\
import sys
sys.path.insert(0, {tests!r})
import layer_code as L
from gradcheck_cli import register_layer

register_layer("affine_cli", L.affine_forward, backward=L.affine_backward, args={{"x": [4, 2, 5], "w": [10, 3],
                                                                                 "b": [3]}})
register_layer("affine_cli@transposed", L.affine_forward, backward=L.affine_backward_transposed,
               args={{"x": [4, 5], "w": [5, 5], "b": [5]}}, mistake="dw = dout.T @ x")
'''


def test_the_cli_takes_shapes_by_name_and_of_any_rank(tmp_path: Path) -> None:
    plugin = tmp_path / "affine_plugin.py"
    plugin.write_text(PLUGIN.format(tests=str(Path(__file__).parents[1])))
    out = tmp_path / "report.json"
    good = Proc([sys.executable, "-m", "gradcheck_cli", "run", "affine_cli", "--plugin", str(plugin), "--trials", "1",
                 "--shape", "3,2,2,2", "--shape", "w=8,3", "--json", str(out)], tmp_path)
    bad = Proc([sys.executable, "-m", "gradcheck_cli", "run", "affine_cli@transposed", "--plugin", str(plugin),
                "--trials", "1", "--shape", "w=5,5", "--shape", "b=5"], tmp_path)
    assert good.done.returncode == 0, good.done.stdout + good.done.stderr
    rows = json.loads(out.read_text())["results"]
    assert [(r["wrt"], r["shape"], r["verdict"]) for r in rows] == [
        ("x", [3, 2, 2, 2], "PASS"), ("w", [8, 3], "PASS"), ("b", [3], "PASS")]
    assert bad.done.returncode == 1, bad.done.stdout + bad.done.stderr
    assert "wrt w" in bad.done.stdout and "transposed" in bad.done.stdout


# --- losses --------------------------------------------------------------------------------

def test_value_and_grad_on_integer_labels(reg: Registry) -> None:
    with registering(reg, ORIGIN):
        register_loss("softmax_loss", value_and_grad=L.softmax_loss, target="labels")
    rows = run(["softmax_loss"], OPTIONS, registry=reg).results
    assert [(r.component, r.wrt, r.shape, r.verdict) for r in rows] == [("gradient", "", (4, 10), Verdict.PASS)]


def test_per_sample_loss_with_mean_reduction_and_a_stateful_backward(reg: Registry) -> None:
    loss = L.Loss_CategoricalCrossentropy()
    with registering(reg, ORIGIN):
        register_loss("nnfs_cce", loss.forward, backward=loss.backward, grad_attr="dinputs", reduction="mean",
                      target="labels", domain="unit")
    rows = run(["nnfs_cce"], OPTIONS, registry=reg).results
    assert [(r.component, r.verdict) for r in rows] == [("gradient", Verdict.PASS)], rows[0].diagnosis
    assert not hasattr(loss, "dinputs")  # backward ran on copies of the instance


def test_per_sample_loss_without_its_reduction_is_refused_by_reduction_sum(reg: Registry) -> None:
    loss = L.Loss_MeanAbsoluteError()
    with registering(reg, ORIGIN):
        # The gradient is that of the mean: declared a sum, it is 1/N of the right one.
        register_loss("mae_as_sum", loss.forward, backward=loss.backward, grad_attr="dinputs", reduction="sum")
    rows = run(["mae_as_sum"], OPTIONS, registry=reg).results
    assert [r.verdict for r in rows] == [Verdict.FAIL]
    assert "factor" in rows[0].diagnosis


def test_labels_of_leading_shape_n_t_through_a_temporal_layer(reg: Registry) -> None:
    with registering(reg, ORIGIN):
        register_layer("temporal_affine", L.temporal_affine_forward, backward=L.temporal_affine_backward,
                       args={"x": (2, 3, 4), "w": (4, 5), "b": (5,)})
        register_loss("temporal_softmax_loss", value_and_grad=L.temporal_softmax_loss, target="labels")
    rows = run(["temporal_affine+temporal_softmax_loss"], OPTIONS, registry=reg).results
    assert all_pass(list(rows)), explain(list(rows))
    assert [(r.component, r.wrt, r.shape) for r in rows] == [
        ("jacobian", "x", (2, 3, 4)), ("jacobian", "w", (4, 5)), ("jacobian", "b", (5,)),
        ("gradient", "", (2, 3, 5)),
        ("chain", "x", (2, 3, 4)), ("chain", "w", (4, 5)), ("chain", "b", (5,))]


def test_layer_plus_loss_gives_layer_rows_a_gradient_row_and_chain_rows(reg: Registry) -> None:
    with registering(reg, ORIGIN):
        register_layer("my_dense", L.Layer_Dense.forward, backward=L.Layer_Dense.backward, **NNFS_DENSE)
    rows = run(["my_dense+mse"], OPTIONS, registry=reg).results
    assert all_pass(list(rows)), explain(list(rows))
    assert [(r.component, r.wrt) for r in rows] == [
        ("jacobian", "inputs"), ("jacobian", "weights"), ("jacobian", "biases"), ("gradient", ""),
        ("chain", "inputs"), ("chain", "weights"), ("chain", "biases")]
    assert {r.check for r in rows} == {"my_dense+mse"}


def test_a_layer_argument_named_target_is_not_the_losss_target(reg: Registry) -> None:
    def forward(pred: Any, target: Any) -> Any:
        return pred * target, (pred, target)

    with registering(reg, ORIGIN):
        register_layer("product", forward, backward=lambda dout, c: (dout * c[1], dout * c[0]),
                       args={"pred": (3, 4), "target": (3, 4)})
    rows = run(["product+mse"], OPTIONS, registry=reg).results
    assert all_pass(list(rows)), explain(list(rows))


# --- dtypes --------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "forward", "backward", "keys"), [
    ("affine32", L.affine_forward, L.affine_backward, dict(args=AFFINE)),
    ("lstm32", L.lstm_step_forward, L.lstm_step_backward, dict(args=LSTM, outputs=("next_h", "next_c"))),
    ("bn32", L.batchnorm_forward, L.batchnorm_backward, dict(args={"x": (5, 3), "gamma": (3,), "beta": (3,)},
                                                             kwargs={"bn_param": {"mode": "train"}})),
])
def test_float32_passes_correct_layers(reg: Registry, name: str, forward: Any, backward: Any,
                                       keys: dict[str, Any]) -> None:
    rows = layer(reg, name, forward, CheckOptions(seed=0, trials=2, dtype="float32"), backward=backward, **keys)
    assert all_pass(rows), explain(rows)


# --- what the engine takes that a user may write --------------------------------------------

def prelu_forward(x: Any, alpha: Any) -> Any:
    return np.where(x > 0, x, alpha * x), (x, alpha)


def prelu_backward(dout: Any, cache: Any) -> Any:
    x, alpha = cache
    return np.where(x > 0, dout, alpha * dout), np.sum(dout * np.where(x > 0, 0.0, x))


def test_a_scalar_parameter_of_shape_empty(reg: Registry) -> None:
    rows = layer(reg, "prelu", prelu_forward, backward=prelu_backward, args={"x": (4, 5), "alpha": []})
    assert all_pass(rows), explain(rows)
    assert rows[1].wrt == "alpha" and rows[1].shape == ()


def test_one_element_arrays(reg: Registry) -> None:
    rows = layer(reg, "affine_1", L.affine_forward, backward=L.affine_backward,
                 args={"x": (1, 1), "w": (1, 1), "b": (1,)})
    assert all_pass(rows), explain(rows)


def test_python_floats_and_nested_lists_as_outputs_and_gradients(reg: Registry) -> None:
    def total(x: Any) -> Any:
        return float((x ** 2).sum()), x

    def lists(x: Any) -> Any:
        return (3.0 * x).tolist(), None

    rows = layer(reg, "total", total, backward=lambda dout, x: (2.0 * x * dout).tolist(), args={"x": (3, 4)})
    assert all_pass(rows), explain(rows)
    rows = layer(reg, "lists", lists, backward=lambda dout, _: [list(r) for r in 3.0 * np.asarray(dout)],
                 args={"x": (3, 4)})
    assert all_pass(rows), explain(rows)


def test_large_magnitude_weights(reg: Registry) -> None:
    def forward(x: Any, w: Any) -> Any:
        return x @ (1e6 * w), (x, w)

    rows = layer(reg, "huge", forward, backward=lambda dout, c: (dout @ (1e6 * c[1]).T, 1e6 * c[0].T @ dout),
                 args={"x": (4, 5), "w": (5, 3)})
    assert all_pass(rows), explain(rows)


def test_integer_valued_outputs_of_a_step_function(reg: Registry) -> None:
    rows = layer(reg, "quantise", lambda x: (np.round(4 * x).astype(int), None),
                 backward=lambda dout, _: np.zeros(dout.shape), args={"x": (3, 4)})
    assert all_pass(rows), explain(rows)


@pytest.mark.parametrize(("name", "forward", "backward", "keys"), [
    ("relu_kinks", L.relu_forward, L.relu_backward, dict(args={"x": (10, 40)})),
    ("pool_kinks", L.max_pool_forward_naive, L.max_pool_backward_naive,
     dict(args={"x": (2, 2, 6, 6)}, kwargs={"pool_param": {"pool_height": 2, "pool_width": 2, "stride": 2}})),
])
def test_kinks_of_relu_and_max_pool_are_no_false_alarm(reg: Registry, name: str, forward: Any, backward: Any,
                                                       keys: dict[str, Any]) -> None:
    # float32: the step is large (~1e-3), so some of the 400 inputs sit within a step of 0.
    rows = layer(reg, name, forward, CheckOptions(seed=0, trials=2, dtype="float32"), backward=backward, **keys)
    assert {r.verdict for r in rows} <= {Verdict.PASS, Verdict.KINK}, explain(rows)


def test_too_many_outputs_for_whole_jacobians_are_checked_by_projections(reg: Registry) -> None:
    def tile(x: Any) -> Any:
        return np.tile(x, (1, 1000)), x.shape

    def untile(dout: Any, shape: Any) -> Any:
        return dout.reshape(shape[0], 1000, shape[1]).sum(axis=1)

    def untile_wrong(dout: Any, shape: Any) -> Any:
        return dout.reshape(shape[0], 1000, shape[1]).mean(axis=1)

    start = time.perf_counter()
    rows = layer(reg, "tile", tile, backward=untile, args={"x": (5, 10)})
    wrong = layer(reg, "tile@mean", tile, backward=untile_wrong, args={"x": (5, 10)})
    assert time.perf_counter() - start < 5.0  # one backward per output entry would be 50,000 calls
    assert [r.verdict for r in rows] == [Verdict.PASS] and [r.verdict for r in wrong] == [Verdict.FAIL]
    assert "50,000 output entries" in rows[0].notes[0] and "random projections" in rows[0].notes[0]
    assert "random projection" in wrong[0].diagnosis and "without --fast" in wrong[0].diagnosis


def test_parameters_in_lists_are_reached_by_index(reg: Registry) -> None:
    class ListDense:  # Keras-like: self.weights = [W, b], self.grads = [dW, db], called as layer(x)
        def __init__(self, n_in: int, n_out: int) -> None:
            self.weights = [np.random.randn(n_in, n_out), np.zeros(n_out)]

        def __call__(self, x: Any) -> Any:
            self.x = x
            return x @ self.weights[0] + self.weights[1]

        def backward(self, grad: Any) -> Any:
            self.grads = [self.x.T @ grad, grad.sum(axis=0)]
            return grad @ self.weights[0].T

    layer_instance = ListDense(4, 3)
    rows = layer(reg, "list_dense", layer_instance.__call__, backward=layer_instance.backward, args={"x": (5, 4)},
                 params={"weights[0]": "grads[0]", "weights[1]": "grads[1]"})
    assert [(r.wrt, r.shape, r.verdict) for r in rows] == [
        ("x", (5, 4), Verdict.PASS), ("weights[0]", (4, 3), Verdict.PASS), ("weights[1]", (3,), Verdict.PASS)]


def test_a_gradient_off_only_by_size_1_axes_fails_and_still_has_its_values_judged(reg: Registry) -> None:
    class PReLU:
        def __init__(self, flip: bool = False) -> None:
            self.alpha = np.full(1, 0.25)  # shape (1,), as torch's default
            self.flip = flip

        def forward(self, x: Any) -> Any:
            self.x = x
            return np.where(x > 0, x, self.alpha * x)

        def backward(self, dout: Any) -> Any:
            self.dalpha = (-1.0 if self.flip else 1.0) * np.sum(dout * np.minimum(self.x, 0.0))  # shape ()
            return dout * np.where(self.x > 0, 1.0, self.alpha)

    right, flipped = PReLU(), PReLU(flip=True)
    rows = layer(reg, "prelu", right.forward, backward=right.backward, args={"x": (4, 5)}, params={"alpha": "dalpha"})
    rows += layer(reg, "prelu@sign", flipped.forward, backward=flipped.backward, args={"x": (4, 5)},
                  params={"alpha": "dalpha"})
    alpha = [r for r in rows if r.wrt == "alpha"]
    assert [r.verdict for r in alpha] == [Verdict.FAIL, Verdict.FAIL]
    assert "only size-1 axes differ" in alpha[0].diagnosis and alpha[0].max_abs_error is not None
    assert "sign flipped" in alpha[1].diagnosis and "only size-1 axes differ" in alpha[1].diagnosis


def test_a_python_float_parameter_is_a_scalar_argument(reg: Registry) -> None:
    class Scale:
        def __init__(self) -> None:
            self.alpha = 0.5

        def forward(self, x: Any) -> Any:
            assert isinstance(self.alpha, float)  # written back as the float it was
            self.x = x
            return self.alpha * x

        def backward(self, dout: Any) -> Any:
            self.dalpha = float(np.sum(dout * self.x))
            return dout * self.alpha

    s = Scale()
    rows = layer(reg, "scale", s.forward, backward=s.backward, args={"x": (3, 2)}, params={"alpha": "dalpha"})
    assert [(r.wrt, r.shape, r.verdict) for r in rows] == [("x", (3, 2), Verdict.PASS), ("alpha", (), Verdict.PASS)]


def test_a_forward_of_several_inputs_stores_each_gradient_in_its_own_attribute(reg: Registry) -> None:
    class Multiply:
        def forward(self, a: Any, b: Any) -> Any:
            self.a, self.b = a, b
            return a * b

        def backward(self, dout: Any) -> None:
            self.da, self.db = dout * self.b, dout * self.a

    m = Multiply()
    rows = layer(reg, "mul", m.forward, backward=m.backward, args={"a": (3, 2), "b": (3, 2)},
                 grad_attr={"a": "da", "b": "db"})
    assert [(r.wrt, r.verdict) for r in rows] == [("a", Verdict.PASS), ("b", Verdict.PASS)]
    with pytest.raises(PluginError, match=r"grad_attr maps each input to the attribute .* the inputs are a, b"), \
            registering(reg, ORIGIN):
        register_layer("mul2", m.forward, backward=m.backward, args={"a": (3, 2), "b": (3, 2)}, grad_attr={"a": "da"})


def test_a_loss_taking_the_target_first_is_mapped_with_target_first(reg: Registry) -> None:
    def bce_with_logits(labels: Any, logits: Any) -> Any:  # TensorFlow's order
        return np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits))))

    def bce_with_logits_grad(labels: Any, logits: Any) -> Any:
        return (1.0 / (1.0 + np.exp(-logits)) - labels) / logits.size

    with registering(reg, ORIGIN):
        register_loss("tf_bce", bce_with_logits, gradient=bce_with_logits_grad, target="binary", target_first=True)
        register_loss("tf_bce@unswapped", bce_with_logits, gradient=bce_with_logits_grad, target="binary")
    rows = run(["tf_bce", "tf_bce@unswapped"], OPTIONS, registry=reg).results
    assert [r.verdict for r in rows] == [Verdict.PASS, Verdict.FAIL]


def test_float_arrays_that_params_does_not_list_are_noted_on_every_row(reg: Registry) -> None:
    class Dense:
        def __init__(self) -> None:
            self.kernel, self.bias = np.ones((4, 3)), np.zeros(3)

        def __call__(self, x: Any) -> Any:
            self.x = x
            return x @ self.kernel + self.bias

        def backward(self, dout: Any) -> Any:
            self.bias_grad = dout.sum(axis=1)  # wrong, and unchecked without params
            return dout @ self.kernel.T

    d = Dense()
    rows = layer(reg, "forgot_params", d.__call__, backward=d.backward, args={"x": (5, 4)})
    assert [(r.wrt, r.verdict) for r in rows] == [("x", Verdict.PASS)]
    assert "params does not list (kernel 4x3, bias 3)" in rows[0].notes[0]


def test_a_vjp_dict_may_key_gradients_as_d_plus_the_name_and_a_wrong_key_is_shown(reg: Registry) -> None:
    def dense(x: Any, w: Any) -> Any:
        return x @ w

    rows = layer(reg, "dkeys", dense, vjp=lambda x, w, g: {"dx": g @ w.T, "dw": x.T @ g},
                 args={"x": (3, 4), "w": (4, 2)})
    assert [(r.wrt, r.verdict) for r in rows] == [("x", Verdict.PASS), ("w", Verdict.PASS)]
    bad = layer(reg, "badkeys", dense, vjp=lambda x, w, g: {"grad_x": g @ w.T, "dw": x.T @ g},
                args={"x": (3, 4), "w": (4, 2)})
    assert bad[0].verdict is Verdict.ERROR and "its keys: 'grad_x', 'dw'" in bad[0].diagnosis


def _temporal_softmax_loss(x: Any, y: Any, mask: Any, apply_mask: bool = True) -> tuple[Any, Any]:
    n, t, v = x.shape
    flat = x.reshape(n * t, v)
    probs = np.exp(flat - flat.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    m = mask.reshape(n * t)
    loss = -np.sum(m * np.log(probs[np.arange(n * t), y.reshape(n * t)])) / n
    dx = probs.copy()
    dx[np.arange(n * t), y.reshape(n * t)] -= 1
    dx /= n
    if apply_mask:
        dx *= m[:, None]
    return loss, dx.reshape(n, t, v)


def test_value_and_grad_layer_with_labels_and_a_mask(reg: Registry) -> None:
    args = {"x": (2, 3, 5), "y": {"shape": (2, 3), "domain": "labels", "classes": 5},
            "mask": {"shape": (2, 3), "domain": "mask"}}
    rows = layer(reg, "tsl", None, value_and_grad=_temporal_softmax_loss, args=args)  # type: ignore[arg-type]
    wrong = layer(reg, "tsl@unmasked", None,  # type: ignore[arg-type]
                  value_and_grad=lambda x, y, mask: _temporal_softmax_loss(x, y, mask, apply_mask=False), args=args)
    assert [(r.component, r.wrt, r.verdict) for r in rows] == [("gradient", "x", Verdict.PASS)]
    assert [(r.wrt, r.verdict) for r in wrong] == [("x", Verdict.FAIL)]


def test_an_argument_may_be_drawn_at_its_own_scale_or_held_constant(reg: Registry) -> None:
    seen: dict[str, float] = {}

    def scaled(x: Any, w: Any, c: Any) -> tuple[Any, Any]:
        seen["w"] = max(seen.get("w", 0.0), float(np.abs(w).max()))
        return np.tanh(x @ w) * c, (x, w, c)

    def scaled_backward(dout: Any, cache: Any) -> tuple[Any, Any]:
        x, w, c = cache
        d = dout * c * (1.0 - np.tanh(x @ w) ** 2)
        return d @ w.T, x.T @ d

    rows = layer(reg, "scaled", scaled, backward=scaled_backward,
                 args={"x": (4, 3), "w": {"shape": (3, 2), "scale": 0.01}, "c": {"shape": (4, 2), "constant": True}})
    assert [(r.wrt, r.verdict) for r in rows] == [("x", Verdict.PASS), ("w", Verdict.PASS)]
    assert seen["w"] < 0.2  # drawn at a hundredth of the default spread (normal, sigma 2)


def test_a_loss_class_whose_backward_takes_nothing_is_a_layer_with_a_constant_target(reg: Registry) -> None:
    class MeanSquaredError:  # Keras order, backward() starts from what __call__ stored
        def __init__(self, half: bool = False) -> None:
            self.half = half

        def __call__(self, y_true: Any, y_pred: Any) -> Any:
            self.y_true, self.y_pred = y_true, y_pred
            return np.mean((y_pred - y_true) ** 2)

        def backward(self) -> Any:
            self.grad = (1.0 if self.half else 2.0) * (self.y_pred - self.y_true) / self.y_pred.size
            return self.grad

    args = {"y_true": {"shape": (4, 3), "constant": True}, "y_pred": (4, 3)}
    right, half = MeanSquaredError(), MeanSquaredError(half=True)
    rows = layer(reg, "kmse", right.__call__, backward=right.backward, args=args, grad_attr={"y_pred": "grad"})
    rows += layer(reg, "kmse@half", half.__call__, backward=half.backward, args=args, grad_attr={"y_pred": "grad"})
    assert [(r.wrt, r.verdict) for r in rows] == [("y_pred", Verdict.PASS), ("y_pred", Verdict.FAIL)]
    assert "factor 1/2" in rows[1].diagnosis
