"""A pytest-facing API: assert that hand-written derivatives are right.

>>> from gradcheck_cli import assert_gradients
>>> assert_gradients(softmax, vjp=softmax_vjp)                   # doctest: +SKIP
>>> assert_gradients(mse, gradient=mse_grad, loss=True)          # doctest: +SKIP
>>> assert_gradients("softmax+cross_entropy", shape=(8, 5))      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from gradcheck_cli.registry import Registry, register_activation, register_loss, registering
from gradcheck_cli.results import RunResult
from gradcheck_cli.runner import CheckOptions, run


def assert_gradients(function: Callable[..., Any] | str, *, loss: bool = False,
                     shape: tuple[int, int] = (4, 10), seed: int = 0, trials: int = 3,
                     input: Any = None, target: Any = None, method: str = "central",
                     rtol: float | None = None, atol: float | None = None, domain: str = "real",
                     target_kind: str = "real", name: str | None = None,
                     **conventions: Callable[..., Any]) -> RunResult:
    """Check ``function``'s derivatives; raise ``AssertionError`` saying what is wrong.

    Parameters
    ----------
    function : callable or str
        The forward function (an activation ``f(x)``, or a loss ``L(pred, target)`` with
        ``loss=True``), or a registry spec such as ``"softmax+mse"``.
    **conventions
        The derivatives to check: ``derivative``, ``derivative_of_output``, ``jacobian``,
        ``vjp``, ``jvp``, ``backward`` for activations, ``gradient`` for losses.

    Returns
    -------
    RunResult
        When every component passes (or sits at a kink).
    """
    from gradcheck_cli.report.text import summary

    options = CheckOptions(
        seed=seed, trials=trials, shape=shape, method=method, rtol=rtol, atol=atol,
        input=None if input is None else np.atleast_2d(np.asarray(input, dtype=np.float64)),
        target=None if target is None else np.atleast_2d(np.asarray(target, dtype=np.float64)),
    )
    if isinstance(function, str):
        result = run([function], options)
    else:
        registry = Registry()  # only this function: no clash with built-in names
        label = str(name or getattr(function, "__name__", "function"))
        if label == "<lambda>":
            label = "function"
        given: dict[str, Any] = dict(conventions)
        with registering(registry, f"assert_gradients({label})"):
            if loss:
                register_loss(label, function, target=target_kind, domain=domain, **given)
            else:
                register_activation(label, function, domain=domain, **given)
        result = run([label], options, registry=registry)
        # Rows name a function that only exists inside this call: no CLI command reproduces it.
        result = RunResult(tuple(replace(r, reproduce="") for r in result.results))
    if not result.passed:
        raise AssertionError("gradient check failed:\n" + summary(result))
    return result
