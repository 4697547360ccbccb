"""User code in every derivative convention: right answers PASS, wrong ones FAIL with a reason.

Each test registers plain numpy code into a fresh registry (built-ins loaded, so names
cannot clash silently) and checks it with :func:`gradcheck_cli.runner.run`, the way a
plugin's entries are checked. Also: validation at registration, origins, and the
pytest-facing :func:`gradcheck_cli.assert_gradients`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gradcheck_cli import assert_gradients
from gradcheck_cli.errors import PluginError
from gradcheck_cli.plugins import load_builtins
from gradcheck_cli.registry import Registry, register_activation, register_loss, registering
from gradcheck_cli.results import CheckResult, Verdict
from gradcheck_cli.runner import CheckOptions, run

ORIGIN = "tests/unit/test_user_conventions.py"
OPTIONS = CheckOptions(seed=0, trials=2, shape=(3, 4))


# --- plain numpy code, as a user writes it ------------------------------------------------

def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_jacobian(x: np.ndarray) -> np.ndarray:
    y = softmax(x)
    return np.einsum("bi,ij->bij", y, np.eye(y.shape[-1])) - np.einsum("bi,bj->bij", y, y)


def seed004_answer(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Seed 004's accepted answer: dx = y * (g - sum(y * g))."""
    y = softmax(x)
    return y * (g - np.sum(y * g, axis=-1, keepdims=True))


def seed004_question(x: np.ndarray) -> np.ndarray:
    """Seed 004's formula 1 / (2 + e/others + others/e): p(1 - p), the diagonal only."""
    e = np.exp(x)
    others = e.sum(axis=-1, keepdims=True) - e
    return 1.0 / (2.0 + e / others + others / e)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def sigmoid_of_output(y: np.ndarray) -> np.ndarray:
    return y * (1.0 - y)


def tanh_derivative(x: np.ndarray) -> np.ndarray:
    return 1.0 - np.tanh(x) ** 2


def mse(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.mean((pred - target) ** 2, axis=(-2, -1))


def mse_gradient(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    return 2.0 * (pred - target) / pred.size


def mse_gradient_no_mean(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    return 2.0 * (pred - target)


class SoftmaxLayer:
    """Stateful: appends every forward input, answers backward for the last one."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.seen.append(x)
        return softmax(x)

    def backward(self, g: np.ndarray) -> np.ndarray:
        return seed004_answer(self.seen[-1], g)


class FirstInputLayer(SoftmaxLayer):
    """Answers backward for the *first* input it ever saw: right only on a fresh instance."""

    def backward(self, g: np.ndarray) -> np.ndarray:
        return seed004_answer(self.seen[0], g)


class ElementwiseBackwardLayer(SoftmaxLayer):
    """The classic bug: backward multiplies by the Jacobian's diagonal only."""

    def backward(self, g: np.ndarray) -> np.ndarray:
        y = softmax(self.seen[-1])
        return y * (1.0 - y) * g


class StoresGradLayer:
    """backward returns None and leaves the input gradient in self.dx."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.y = softmax(x)
        return self.y

    def backward(self, g: np.ndarray) -> None:
        self.dx = self.y * (g - np.sum(self.y * g, axis=-1, keepdims=True))


class StoresOutputLayer:
    """forward returns None and leaves the output in self.out."""

    def forward(self, x: np.ndarray) -> None:
        self.out = softmax(x)

    def backward(self, g: np.ndarray) -> np.ndarray:
        return self.out * (g - np.sum(self.out * g, axis=-1, keepdims=True))


# --- helpers ------------------------------------------------------------------------------

@pytest.fixture
def reg() -> Registry:
    registry = Registry()
    load_builtins(registry)
    return registry


def check(reg: Registry, name: str, options: CheckOptions = OPTIONS, **kwargs: Any) -> CheckResult:
    """Register one activation ``name`` and return its single jacobian row."""
    with registering(reg, ORIGIN):
        register_activation(name, **kwargs)
    rows = run([name], options, registry=reg).results
    assert len(rows) == 1, rows
    return rows[0]


def check_loss(reg: Registry, name: str, **kwargs: Any) -> CheckResult:
    with registering(reg, ORIGIN):
        register_loss(name, **kwargs)
    rows = run([name], OPTIONS, registry=reg).results
    assert [r.component for r in rows] == ["gradient"]
    return rows[0]


def assert_pass(row: CheckResult) -> None:
    assert row.verdict is Verdict.PASS, f"{row.check} {row.convention}: {row.verdict} {row.diagnosis}"
    assert row.diagnosis == ""


def assert_fail(row: CheckResult, fragment: str = "") -> None:
    assert row.verdict is Verdict.FAIL, f"{row.check} {row.convention}: {row.verdict} {row.diagnosis}"
    assert fragment in row.diagnosis, row.diagnosis


# --- 1. every convention, both directions ------------------------------------------------

CORRECT: dict[str, dict[str, Callable[..., Any]]] = {
    "derivative": {"forward": np.tanh, "derivative": tanh_derivative},
    "derivative_of_output": {"forward": sigmoid, "derivative_of_output": sigmoid_of_output},
    "jacobian": {"forward": softmax, "jacobian": softmax_jacobian},
    "vjp": {"forward": softmax, "vjp": seed004_answer},
    "jvp": {"forward": softmax, "jvp": seed004_answer},  # softmax's Jacobian is symmetric
}

WRONG: dict[str, tuple[dict[str, Callable[..., Any]], str]] = {
    "derivative": ({"forward": np.tanh, "derivative": lambda x: 1.0 - np.tanh(x)}, "entries wrong"),
    "derivative_of_output": ({"forward": sigmoid, "derivative_of_output": lambda y: -y * (1.0 - y)},
                             "sign flipped"),
    "jacobian": ({"forward": softmax, "jacobian": lambda x: 2.0 * softmax_jacobian(x)},
                 "constant factor"),
    "vjp": ({"forward": softmax, "vjp": lambda x, g: softmax(x) * g}, "entries wrong"),
    "jvp": ({"forward": softmax, "jvp": lambda x, v: -seed004_answer(x, v)}, "sign flipped"),
}


@pytest.mark.parametrize("convention", sorted(CORRECT))
def test_correct_convention_passes(reg: Registry, convention: str) -> None:
    row = check(reg, f"user_{convention}", **CORRECT[convention])
    assert row.convention == convention
    assert row.origin == ORIGIN
    assert_pass(row)


@pytest.mark.parametrize("convention", sorted(WRONG))
def test_wrong_convention_fails(reg: Registry, convention: str) -> None:
    kwargs, fragment = WRONG[convention]
    row = check(reg, f"user_{convention}_bad", **kwargs)
    assert row.convention == convention
    assert_fail(row, fragment)
    assert row.max_abs_error is not None and row.max_abs_error > 1e-3


def test_transposed_jacobian_is_named(reg: Registry) -> None:
    weights = np.arange(16.0).reshape(4, 4)
    row = check(reg, "user_linear_transposed", forward=lambda x: x @ weights.T,
                jacobian=lambda x: np.broadcast_to(weights.T, (x.shape[0], 4, 4)).copy())
    assert_fail(row, "transposed")


def test_seed004_answer_as_vjp_passes(reg: Registry) -> None:
    assert_pass(check(reg, "seed004_answer", forward=softmax, vjp=seed004_answer))


def test_seed004_question_as_derivative_is_the_diagonal_only(reg: Registry) -> None:
    row = check(reg, "seed004_question", forward=softmax, derivative=seed004_question)
    assert_fail(row, "only the Jacobian's diagonal")
    i_out, i_in = row.worst_index[1], row.worst_index[3]  # type: ignore[index]
    assert i_out != i_in, "the worst entry is an off-diagonal one, which the formula leaves out"


def test_derivative_written_for_the_output_but_fed_x(reg: Registry) -> None:
    row = check(reg, "sigmoid_fed_x", forward=sigmoid, derivative=sigmoid_of_output)
    assert_fail(row, "fed f(x)")


def test_derivative_of_output_written_for_x(reg: Registry) -> None:
    row = check(reg, "sigmoid_of_output_for_x", forward=sigmoid,
                derivative_of_output=lambda x: sigmoid(x) * (1.0 - sigmoid(x)))
    assert_fail(row, "fed x instead of y")


def test_several_conventions_make_one_row_each(reg: Registry) -> None:
    with registering(reg, ORIGIN):
        register_activation("user_multi", forward=softmax, jacobian=softmax_jacobian,
                            vjp=lambda x, g: softmax(x) * g)
    rows = run(["user_multi"], OPTIONS, registry=reg).results
    assert [(r.convention, r.verdict) for r in rows] == [("jacobian", Verdict.PASS), ("vjp", Verdict.FAIL)]


# --- backward: stateful layers -------------------------------------------------------------

def test_layer_backward_passes(reg: Registry) -> None:
    layer = SoftmaxLayer()
    row = check(reg, "layer", forward=layer.forward, backward=layer.backward)
    assert row.convention == "backward"
    assert_pass(row)
    assert layer.seen == [], "the registered instance is never used: each pair runs on a copy"


def test_layer_answering_for_its_first_input_passes_on_fresh_instances(reg: Registry) -> None:
    layer = FirstInputLayer()
    assert_pass(check(reg, "first_input_layer", forward=layer.forward, backward=layer.backward))


def test_layer_with_a_wrong_backward_fails(reg: Registry) -> None:
    layer = ElementwiseBackwardLayer()
    row = check(reg, "elementwise_layer", forward=layer.forward, backward=layer.backward)
    assert_fail(row, "entries wrong")


def test_layer_storing_its_gradient_in_an_attribute(reg: Registry) -> None:
    layer = StoresGradLayer()
    assert_pass(check(reg, "grad_attr_layer", forward=layer.forward, backward=layer.backward, grad_attr="dx"))


def test_layer_returning_none_without_grad_attr_says_so(reg: Registry) -> None:
    layer = StoresGradLayer()
    row = check(reg, "grad_attr_missing", forward=layer.forward, backward=layer.backward)
    assert row.verdict is Verdict.ERROR
    assert "returned None" in row.diagnosis and "grad_attr" in row.diagnosis


def test_layer_with_a_misspelt_grad_attr_lists_the_attributes(reg: Registry) -> None:
    layer = StoresGradLayer()
    row = check(reg, "grad_attr_typo", forward=layer.forward, backward=layer.backward, grad_attr="d_x")
    assert row.verdict is Verdict.ERROR
    assert "no attribute 'd_x'" in row.diagnosis and "'dx'" in row.diagnosis


def test_layer_storing_its_output_in_an_attribute(reg: Registry) -> None:
    layer = StoresOutputLayer()
    assert_pass(check(reg, "output_attr_layer", forward=layer.forward, backward=layer.backward,
                      output_attr="out"))


def test_output_attr_without_backward(reg: Registry) -> None:
    layer = StoresOutputLayer()
    assert_pass(check(reg, "output_attr_vjp", forward=layer.forward, vjp=seed004_answer, output_attr="out"))


def test_class_decorator_with_forward_and_vjp(reg: Registry) -> None:
    with registering(reg, ORIGIN):
        @register_activation("decorated_softmax", formula="y * (g - sum(y * g))")
        class DecoratedSoftmax:
            def forward(self, x: np.ndarray) -> np.ndarray:
                return softmax(x)

            def vjp(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
                return seed004_answer(x, g)

    assert isinstance(DecoratedSoftmax, type), "the decorator returns the class itself"
    spec = reg.get("decorated_softmax")
    assert spec.conventions == ("vjp",) and spec.origin == ORIGIN
    assert spec.formula == "y * (g - sum(y * g))"
    rows = run(["decorated_softmax"], OPTIONS, registry=reg).results
    assert [r.verdict for r in rows] == [Verdict.PASS]


def test_class_decorator_with_a_wrong_vjp_fails(reg: Registry) -> None:
    with registering(reg, ORIGIN):
        @register_activation("decorated_bad")
        class DecoratedBad:
            def forward(self, x: np.ndarray) -> np.ndarray:
                return softmax(x)

            def vjp(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
                return softmax(x) * g

    assert DecoratedBad is not None
    assert_fail(run(["decorated_bad"], OPTIONS, registry=reg).results[0])


def test_class_decorator_on_a_stateful_layer(reg: Registry) -> None:
    with registering(reg, ORIGIN):
        register_activation("decorated_layer")(FirstInputLayer)
    spec = reg.get("decorated_layer")
    assert spec.conventions == ("backward",)
    assert_pass(run(["decorated_layer"], OPTIONS, registry=reg).results[0])


def test_class_decorator_needs_a_no_argument_constructor(reg: Registry) -> None:
    class NeedsAxis:
        def __init__(self, axis: int) -> None:
            self.axis = axis

        def forward(self, x: np.ndarray) -> np.ndarray:
            return softmax(x)

        def vjp(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
            return seed004_answer(x, g)

    with pytest.raises(PluginError, match=r"constructible with no arguments.*NeedsAxis\(\) raised TypeError"), \
            registering(reg, ORIGIN):
        register_activation("needs_axis")(NeedsAxis)
    assert "needs_axis" not in reg


def test_loss_class_decorator(reg: Registry) -> None:
    with registering(reg, ORIGIN):
        @register_loss("decorated_mse", target="real")
        class DecoratedMse:
            def forward(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
                return mse(pred, target)

            def gradient(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
                return mse_gradient(pred, target)

    assert DecoratedMse is not None
    assert reg.get("decorated_mse").kind == "loss"
    assert_pass(run(["decorated_mse"], OPTIONS, registry=reg).results[0])


# --- losses -----------------------------------------------------------------------------

def test_loss_gradient_passes(reg: Registry) -> None:
    row = check_loss(reg, "user_mse", forward=mse, gradient=mse_gradient)
    assert row.convention == "gradient" and row.origin == ORIGIN
    assert_pass(row)


def test_loss_gradient_missing_the_mean_fails(reg: Registry) -> None:
    row = check_loss(reg, "user_mse_no_mean", forward=mse, gradient=mse_gradient_no_mean)
    assert_fail(row, "constant factor 12")  # B*K = 3*4


def test_user_activation_with_user_loss_checks_the_chain(reg: Registry) -> None:
    with registering(reg, ORIGIN):
        register_activation("pair_softmax", forward=softmax, vjp=seed004_answer)
        register_loss("pair_mse", forward=mse, gradient=mse_gradient)
    rows = run(["pair_softmax+pair_mse"], OPTIONS, registry=reg).results
    assert [(r.component, r.verdict) for r in rows] == [
        ("jacobian", Verdict.PASS), ("gradient", Verdict.PASS), ("chain", Verdict.PASS)]
    assert {r.origin for r in rows} == {ORIGIN}


def test_loss_target_kind_is_honoured(reg: Registry) -> None:
    def binary_only(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        if not np.isin(target, (0.0, 1.0)).all():
            raise ValueError("targets must be 0 or 1")
        return mse_gradient(pred, target)

    assert_pass(check_loss(reg, "binary_mse", forward=mse, gradient=binary_only, target="binary"))
    row = check_loss(reg, "real_mse", forward=mse, gradient=binary_only, target="real")
    assert row.verdict is Verdict.ERROR
    assert "raised ValueError: targets must be 0 or 1" in row.diagnosis


def test_activation_domain_is_honoured(reg: Registry) -> None:
    assert_pass(check(reg, "user_log", forward=np.log, derivative=lambda x: 1.0 / x, domain="positive"))
    row = check(reg, "user_log_real", forward=np.log, derivative=lambda x: 1.0 / x)
    assert row.verdict is Verdict.ERROR
    assert "nan" in row.diagnosis


# --- 2. validation at registration ---------------------------------------------------------

def _two_layers() -> dict[str, Any]:
    return {"forward": SoftmaxLayer().forward, "backward": SoftmaxLayer().backward}


def _plain_backward(g: np.ndarray) -> np.ndarray:
    return g


INVALID: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
    ("not_callable", lambda: {"forward": softmax, "vjp": seed004_answer(np.zeros((1, 2)), np.ones((1, 2)))},
     r"vjp= must be callable; got array\(.*of type ndarray\. Pass the function itself"),
    ("forward_not_callable", lambda: {"forward": "softmax", "vjp": seed004_answer},
     r"forward= must be callable; got 'softmax' of type str"),
    ("typo", lambda: {"forward": softmax, "jacobain": softmax_jacobian},
     r"unknown keyword 'jacobain' for a activation\. Expected one of: .*Did you mean 'jacobian'\?"),
    ("loss_keyword", lambda: {"forward": softmax, "gradient": seed004_answer},
     r"unknown keyword 'gradient'"),
    ("plain_backward", lambda: {"forward": softmax, "backward": _plain_backward},
     r"backward= must be a method of a layer instance"),
    ("unbound_backward", lambda: {"forward": SoftmaxLayer().forward, "backward": SoftmaxLayer.backward},
     r"backward= must be a method of a layer instance"),
    ("two_instances", _two_layers, r"two different instances"),
    ("bad_domain", lambda: {"forward": softmax, "vjp": seed004_answer, "domain": "postive"},
     r"domain='postive' is not one of real, positive, unit\. Did you mean 'positive'\?"),
    ("no_derivative", lambda: {"forward": softmax}, r"no derivative to check"),
    ("second_order_only", lambda: {"forward": np.tanh, "derivative2": np.tanh}, r"no derivative to check"),
]


@pytest.mark.parametrize(("case", "kwargs", "pattern"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_activation_is_rejected_naming_its_origin(reg: Registry, case: str,
                                                          kwargs: Callable[[], dict[str, Any]],
                                                          pattern: str) -> None:
    before = reg.names()
    with pytest.raises(PluginError, match=pattern) as info, registering(reg, "my_plugin.py"):
        register_activation(f"bad_{case}", **kwargs())
    assert f"'bad_{case}' (registered by my_plugin.py)" in info.value.message
    assert reg.names() == before, "nothing is registered from a rejected call"


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"target": "one_hot"}, r"target='one_hot' is not one of real, onehot, .*Did you mean 'onehot'\?"),
    ({"domain": "units"}, r"domain='units' is not one of real, positive, unit\. Did you mean 'unit'\?"),
    ({"vjp": seed004_answer}, r"unknown keyword 'vjp' for a loss\. Expected one of: gradient"),
    ({"gradient": 0.5}, r"gradient= must be callable; got 0\.5 of type float"),
])
def test_invalid_loss_is_rejected(reg: Registry, kwargs: dict[str, Any], pattern: str) -> None:
    kwargs = {"gradient": mse_gradient, **kwargs}
    if "vjp" in kwargs:
        del kwargs["gradient"]
    with pytest.raises(PluginError, match=pattern), registering(reg, "my_plugin.py"):
        register_loss("bad_loss", forward=mse, **kwargs)
    assert "bad_loss" not in reg


def test_origin_is_recorded_on_the_spec_and_every_row(reg: Registry) -> None:
    with registering(reg, "plugins/mine.py"):
        spec = register_activation("origin_softmax", forward=softmax, vjp=seed004_answer)
        register_loss("origin_mse", forward=mse, gradient=mse_gradient)
    assert spec.origin == "plugins/mine.py"
    assert reg.get("origin_mse").origin == "plugins/mine.py"
    rows = run(["origin_softmax+origin_mse", "softmax"], OPTIONS, registry=reg).results
    assert {r.origin for r in rows if r.check == "origin_softmax+origin_mse"} == {"plugins/mine.py"}
    assert {r.origin for r in rows if r.check == "softmax"} == {"builtin"}


# --- 7. assert_gradients ---------------------------------------------------------------------

def test_assert_gradients_passes_for_a_correct_vjp() -> None:
    result = assert_gradients(softmax, vjp=seed004_answer, shape=(3, 4), trials=2)
    assert [r.verdict for r in result.results] == [Verdict.PASS]
    assert result.results[0].check == "softmax"


def test_assert_gradients_raises_with_the_diagnosis() -> None:
    with pytest.raises(AssertionError, match="only the Jacobian's diagonal") as info:
        assert_gradients(softmax, derivative=seed004_question, shape=(3, 4), trials=2)
    assert "FAIL softmax - jacobian (derivative)" in str(info.value)


def test_assert_gradients_raises_for_a_wrong_vjp() -> None:
    with pytest.raises(AssertionError, match=r"gradient check failed:\n.*FAIL softmax - jacobian \(vjp\)"):
        assert_gradients(softmax, vjp=lambda x, g: softmax(x) * g, shape=(3, 4), trials=2)


def test_assert_gradients_for_a_loss() -> None:
    result = assert_gradients(mse, gradient=mse_gradient, loss=True, shape=(3, 4))
    assert [(r.component, r.verdict) for r in result.results] == [("gradient", Verdict.PASS)]
    with pytest.raises(AssertionError, match="constant factor 12"):
        assert_gradients(mse, gradient=mse_gradient_no_mean, loss=True, shape=(3, 4))


def test_assert_gradients_with_a_spec_string() -> None:
    result = assert_gradients("softmax+mse", shape=(3, 4), trials=2)
    assert {r.component for r in result.results} == {"jacobian", "gradient", "chain"}
    assert all(r.verdict is Verdict.PASS for r in result.results)
    with pytest.raises(AssertionError, match="only the Jacobian's diagonal"):
        assert_gradients("softmax@diagonal+mse", shape=(3, 4), trials=2)


def test_assert_gradients_with_a_layer_and_an_explicit_input() -> None:
    layer = SoftmaxLayer()
    result = assert_gradients(layer.forward, backward=layer.backward, input=[[2.0, 4.0, 2.0, 1.0]])
    assert result.results[0].shape == (1, 4) and result.results[0].verdict is Verdict.PASS


def test_assert_gradients_rejects_a_misspelt_convention() -> None:
    with pytest.raises(PluginError, match="Did you mean 'jacobian'"):
        assert_gradients(softmax, jacobain=softmax_jacobian)


# --- layers handed over in other natural shapes ------------------------------------------

def test_class_decorator_finds_an_inherited_call(reg: Registry) -> None:
    """Regression: PluginError "no 'forward' or '__call__' method to check" (only vars(cls) was searched)."""

    class Base:
        def __call__(self, x: np.ndarray) -> np.ndarray:
            return softmax(x)

        def vjp(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
            return seed004_answer(x, g)

    with registering(reg, ORIGIN):
        @register_activation("inherited_call")
        class Derived(Base):
            pass

    assert Derived is not None
    assert_pass(run(["inherited_call"], OPTIONS, registry=reg).results[0])


class CallableLayer:
    """A layer used as ``layer(x)``: forward is ``__call__``."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return softmax(x)

    def backward(self, g: np.ndarray) -> np.ndarray:
        return seed004_answer(self.x, g)


def test_backward_with_the_layer_itself_as_forward(reg: Registry) -> None:
    """Regression: accepted, then every check was an ERROR "'CallableLayer' object has no attribute 'forward'"."""
    layer = CallableLayer()
    try:
        with registering(reg, ORIGIN):
            register_activation("callable_layer", forward=layer, backward=layer.backward)
    except PluginError as exc:  # refusing it at registration, clearly, would do too
        assert "forward" in exc.message and "instance" in exc.message
        return
    assert_pass(run(["callable_layer"], OPTIONS, registry=reg).results[0])


def test_backward_with_a_plain_function_forward_is_refused(reg: Registry) -> None:
    """Regression: accepted, then every check was an ERROR "... has no attribute '<lambda>'"."""
    layer = SoftmaxLayer()
    with pytest.raises(PluginError, match="forward"), registering(reg, ORIGIN):
        register_activation("lambda_forward", forward=lambda x: layer.forward(x), backward=layer.backward)


def test_output_attr_needs_a_method(reg: Registry) -> None:
    """Regression: accepted, then every check was an ERROR "'NoneType' object has no attribute 'out'"."""
    with pytest.raises(PluginError, match="output_attr"), registering(reg, ORIGIN):
        register_activation("plain_output_attr", forward=softmax, vjp=seed004_answer, output_attr="out")
