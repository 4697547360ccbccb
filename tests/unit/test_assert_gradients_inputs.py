"""assert_gradients(fn, inputs=(...)) in PyTorch's shape: one row per input, at the given values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gradcheck_cli import CheckOptions, assert_gradients
from gradcheck_cli.errors import UsageError

RNG = np.random.default_rng(3)
X, W, B = RNG.normal(size=(4, 5)), RNG.normal(size=(5, 3)), RNG.normal(size=3)


def affine(x: Any, w: Any, b: Any) -> Any:
    return x @ w + b


def affine_vjp(x: Any, w: Any, b: Any, g: Any) -> tuple[Any, Any, Any]:
    return g @ w.T, x.T @ g, g.sum(axis=0)


def affine_forward(x: Any, w: Any, b: Any) -> tuple[Any, Any]:
    return x @ w + b, (x, w)


def affine_backward(dout: Any, cache: Any) -> dict[str, Any]:
    x, w = cache
    return {"x": dout @ w.T, "w": x.T @ dout, "b": dout.sum(axis=0)}


def test_each_input_is_a_row_named_after_the_parameter_and_checked_at_the_given_values() -> None:
    result = assert_gradients(affine, inputs=(X, W, B), vjp=affine_vjp)
    assert [(r.wrt, r.shape, r.trials, r.verdict.value) for r in result.results] == [
        ("x", (4, 5), 1, "PASS"), ("w", (5, 3), 1, "PASS"), ("b", (3,), 1, "PASS")]


def test_cache_style_and_inputs_by_name() -> None:
    result = assert_gradients(affine_forward, inputs={"x": X, "w": W, "b": B}, backward=affine_backward)
    assert result.passed and {r.wrt for r in result.results} == {"x", "w", "b"}


def test_a_wrong_input_gradient_names_the_input_and_the_mistake() -> None:
    def vjp(x: Any, w: Any, b: Any, g: Any) -> tuple[Any, Any, Any]:
        return g @ w.T, x.T @ g, g.mean(axis=0)

    with pytest.raises(AssertionError, match=r"(?s)FAIL affine - jacobian wrt b .*1/4: divides by N = 4.*"
                                             r"worst entry dout\[\d,\d\]/db\[\d\]"):
        assert_gradients(affine, inputs=(X, W, B), vjp=vjp)


def test_the_values_given_are_the_point_checked() -> None:
    # relu's derivative is wrong only for negative inputs: all-positive values pass, negative ones fail.
    def relu(x: Any) -> Any:
        return np.maximum(x, 0.0)

    def sloppy_vjp(x: Any, g: Any) -> Any:
        return g  # forgets the x < 0 half

    assert_gradients(relu, inputs=(np.abs(X) + 0.5,), vjp=sloppy_vjp)
    with pytest.raises(AssertionError, match=r"FAIL relu - jacobian wrt x"):
        assert_gradients(relu, inputs=(-np.abs(X) - 0.5,), vjp=sloppy_vjp)


def test_inputs_need_a_multi_argument_derivative() -> None:
    with pytest.raises(UsageError, match=r"pass its derivative as vjp= .* or backward= .*; got jacobian"):
        assert_gradients(affine, inputs=(X, W, B), jacobian=affine_vjp)


def test_run_takes_argument_values_too() -> None:
    from gradcheck_cli import run
    from gradcheck_cli.registry import Registry, register_layer, registering

    registry = Registry()
    with registering(registry, "test"):
        register_layer("affine", affine, vjp=affine_vjp, args={"x": (2, 5), "w": (5, 3), "b": (3,)})
    fixed = run(["affine"], CheckOptions(arg_values=(("x", X), ("w", W), ("b", B))), registry=registry)
    assert [r.shape for r in fixed.results] == [(4, 5), (5, 3), (3,)] and all(r.trials == 1 for r in fixed.results)
    partly = run(["affine"], CheckOptions(arg_values=(("w", W),), trials=2), registry=registry)
    assert [r.shape for r in partly.results] == [(2, 5), (5, 3), (3,)] and all(r.trials == 2 for r in partly.results)
