"""Deliberately wrong derivatives, one classic mistake each.

They show what a flag looks like and are the mutants the test suite requires to fail
with the right diagnosis. Each carries ``mistake`` (what is wrong) and ``fix``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from gradcheck_cli.registry import mark_module_threadsafe, register_activation, register_loss
from gradcheck_cli.registry.activations import (
    log_softmax,
    log_softmax_jacobian,
    softmax,
)
from gradcheck_cli.registry.losses import mse

Array = NDArray[np.float64]


def softmax_seed004_delta(x: Array) -> Array:
    # The question's code, with the sum taken per row: 1 / (2 + e/others + others/e).
    # Algebraically this is p(1 - p), the Jacobian's diagonal, used elementwise.
    exps = np.exp(x - np.max(x, axis=-1, keepdims=True))
    others = np.sum(exps, axis=-1, keepdims=True) - exps
    return 1.0 / (2.0 + exps / others + others / exps)


def softmax_derivative_written_for_output(a: Array) -> Array:
    # diag(a) - a a^T is the softmax Jacobian *in terms of the output a = softmax(z)*.
    return a[..., :, None] * (np.eye(a.shape[-1]) - a[..., None, :])


register_activation(
    "softmax@diagonal", forward=softmax, derivative=softmax_seed004_delta,
    formula="f'(x) = 1 / (2 + e/others + others/e)  (= p(1 - p), elementwise)",
    mistake="uses only the Jacobian's diagonal p_i(1 - p_i) as an elementwise derivative; "
            "the off-diagonal entries -p_i p_j are missing",
    fix="VJP: y * (g - sum(y * g, axis=-1)), i.e. J = diag(y) - y y^T",
)
register_activation(
    "softmax@wrong_input", forward=softmax, jacobian=softmax_derivative_written_for_output,
    formula="J(x) = diag(x) - x x^T  (the formula for J(a), fed z)",
    mistake="the Jacobian diag(a) - a a^T is written in terms of the output a = softmax(z) "
            "but evaluated at the input z",
    fix="evaluate it at a = softmax(z): J = diag(a) - a a^T",
)
register_activation(
    "tanh@sign_flip", forward=np.tanh, derivative_of_output=lambda y: y * y - 1.0,
    formula="dy/dx = y^2 - 1", mistake="sign flipped", fix="dy/dx = 1 - y^2",
)
register_activation(
    "log_softmax@transposed", forward=log_softmax,
    jacobian=lambda x: np.swapaxes(log_softmax_jacobian(x), -1, -2),
    formula="J[i, j] = delta_ij - S_i", mistake="Jacobian transposed (J[j, i] returned as J[i, j])",
    fix="J[i, j] = d y_i / d x_j = delta_ij - S_j",
)
register_loss(
    "mse@no_mean", forward=mse, gradient=lambda p, t: 2.0 * (p - t), target="real",
    formula="dL/dp = 2 (p - t)", mistake="missing the 1/N of the mean",
    fix="dL/dp = 2 (p - t) / N",
)
register_loss(
    "mse@factor2", forward=mse, gradient=lambda p, t: (p - t) / (p.shape[-1] * p.shape[-2]),
    target="real", formula="dL/dp = (p - t) / N",
    mistake="drops the factor 2 of d(r^2)/dr (the gradient of the 1/2-scaled MSE)",
    fix="dL/dp = 2 (p - t) / N",
)
register_activation(
    "softmax@batch_sum", forward=softmax,
    vjp=lambda x, g: softmax(x) * (g - np.sum(softmax(x) * g)),
    formula="VJP: y * (g - sum over the whole batch of y * g)",
    mistake="sums over the whole batch instead of each row, so rows leak into each other",
    fix="y * (g - sum(y * g, axis=-1, keepdims=True))",
)

# Everything in this module is pure numpy: its functions may run on several threads at once.
mark_module_threadsafe(globals())
