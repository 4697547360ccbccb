"""A pytest-facing API: assert that hand-written derivatives are right.

>>> from gradcheck_cli import assert_gradients
>>> assert_gradients(softmax, vjp=softmax_vjp)                   # doctest: +SKIP
>>> assert_gradients(mse, gradient=mse_grad, loss=True)          # doctest: +SKIP
>>> assert_gradients("softmax+cross_entropy", shape=(8, 5))      # doctest: +SKIP

Several arrays, as in ``torch.autograd.gradcheck(fn, inputs)``: the derivative with
respect to each is checked at the values given.

>>> assert_gradients(affine, inputs=(x, w, b), vjp=affine_vjp)   # doctest: +SKIP
>>> assert_gradients(affine_forward, inputs=(x, w, b), backward=affine_backward)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from gradcheck_cli.registry import Registry, register_activation, register_layer, register_loss, registering
from gradcheck_cli.results import RunResult
from gradcheck_cli.runner import CheckOptions, run


def assert_gradients(function: Callable[..., Any] | str, *, loss: bool = False,
                     shape: tuple[int, ...] = (4, 10), seed: int = 0, trials: int = 3,
                     input: Any = None, target: Any = None, method: str = "central",
                     rtol: float | None = None, atol: float | None = None, domain: str = "real",
                     target_kind: str = "real", name: str | None = None,
                     inputs: Sequence[Any] | Mapping[str, Any] | None = None,
                     kwargs: Mapping[str, Any] | None = None, outputs: Sequence[str] = ("out",),
                     dtype: str = "float64", **conventions: Callable[..., Any]) -> RunResult:
    """Check ``function``'s derivatives; raise ``AssertionError`` saying what is wrong.

    Parameters
    ----------
    function : callable or str
        The forward function (an activation ``f(x)``, or a loss ``L(pred, target)`` with
        ``loss=True``), or a registry spec such as ``"softmax+mse"``.
    inputs : tuple or dict of arrays, optional
        PyTorch's ``inputs``: the arrays ``function`` takes, positionally (named after its
        parameters) or by name. The derivative with respect to each is its own row,
        checked at these values. The derivative is then ``vjp(*inputs, *douts) -> (dx, dw,
        ...)`` or, cache style, ``function(*inputs) -> (out, cache)`` with
        ``backward(dout, cache) -> (dx, dw, ...)``; ``kwargs`` are constants passed by
        keyword, ``outputs`` names several outputs.
    **conventions
        The derivatives to check: ``derivative``, ``derivative_of_output``, ``jacobian``,
        ``vjp``, ``jvp``, ``backward`` for activations, ``gradient`` for losses.

    Returns
    -------
    RunResult
        When every component passes (or sits at a kink).
    """
    if inputs is not None and not isinstance(function, str):
        return _assert_arguments(function, inputs, conventions, name, kwargs, outputs, seed, method, rtol, atol,
                                 dtype)
    options = CheckOptions(
        seed=seed, trials=trials, shape=shape, method=method, rtol=rtol, atol=atol, dtype=dtype,
        input=None if input is None else np.atleast_2d(np.asarray(input, dtype=np.float64)),
        target=None if target is None else np.atleast_2d(np.asarray(target, dtype=np.float64)),
    )
    if isinstance(function, str):
        return _asserted(run([function], options))
    registry = Registry()  # only this function: no clash with built-in names
    label = _label(function, name)
    given: dict[str, Any] = dict(conventions)
    with registering(registry, f"assert_gradients({label})"):
        if loss:
            register_loss(label, function, target=target_kind, domain=domain, **given)
        else:
            register_activation(label, function, domain=domain, **given)
    return _asserted(run([label], options, registry=registry), own=True)


def _label(function: Callable[..., Any], name: str | None) -> str:
    """The name rows give a function checked by :func:`assert_gradients`."""
    label = str(name or getattr(function, "__name__", "function"))
    return "function" if label == "<lambda>" else label


def _asserted(result: RunResult, own: bool = False) -> RunResult:
    """``result`` when it passed, else AssertionError with the rows that did not. Rows of a
    function registered by this call (``own``) drop their reproduce line: no CLI command knows it."""
    from gradcheck_cli.report.text import summary

    if own:
        result = RunResult(tuple(replace(r, reproduce="") for r in result.results))
    if not result.passed:
        raise AssertionError("gradient check failed:\n" + summary(result))
    return result


def _argument_names(function: Callable[..., Any], count: int) -> list[str]:
    """The names of ``function``'s first ``count`` positional parameters (x0, x1, ... if unknown)."""
    try:
        params = [p.name for p in inspect.signature(function).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return params[:count] if len(params) >= count else [f"x{i}" for i in range(count)]


def _assert_arguments(function: Callable[..., Any], inputs: Sequence[Any] | Mapping[str, Any],
                      conventions: dict[str, Callable[..., Any]], name: str | None,
                      kwargs: Mapping[str, Any] | None, outputs: Sequence[str], seed: int, method: str,
                      rtol: float | None, atol: float | None, dtype: str) -> RunResult:
    """:func:`assert_gradients` with ``inputs=``: a layer checked at the given arrays."""
    from gradcheck_cli.errors import UsageError

    if isinstance(inputs, Mapping):
        names, arrays = [str(k) for k in inputs], list(inputs.values())
    else:
        arrays = list(inputs)
        names = _argument_names(function, len(arrays))
    values = [np.array(a, dtype=np.float64) for a in arrays]
    unknown = sorted(set(conventions) - {"vjp", "backward"})
    if unknown or len(conventions) != 1:
        raise UsageError(f"assert_gradients(..., inputs=...) checks a function of several arrays: pass its "
                         f"derivative as vjp= (vjp(*inputs, *douts) -> one gradient per input) or backward= "
                         f"(cache style: function returns (out, cache), backward(dout, cache)); got "
                         f"{', '.join(sorted(conventions)) or 'none'}.")
    registry = Registry()
    label = _label(function, name)
    with registering(registry, f"assert_gradients({label})"):
        register_layer(label, function, args={n: v.shape for n, v in zip(names, values, strict=True)},
                       kwargs=kwargs, outputs=tuple(outputs), vjp=conventions.get("vjp"),
                       backward=conventions.get("backward"))
    options = CheckOptions(seed=seed, trials=1, method=method, rtol=rtol, atol=atol, dtype=dtype,
                           arg_values=tuple(zip(names, values, strict=True)))
    return _asserted(run([label], options, registry=registry), own=True)
