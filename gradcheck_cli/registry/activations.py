"""Built-in activations with their analytic derivatives.

This module is loaded as a plugin (see :mod:`gradcheck_cli.plugins`), so the built-ins go
through the same registration path as user code. Each activation is written to be
numerically stable over the whole float64 range (no overflow in exp for logits of
+-1000) and acts on the last axis of any leading batch shape.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from gradcheck_cli.registry import mark_module_threadsafe, register_activation

Array = NDArray[np.float64]

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
LEAKY_SLOPE = 0.01
GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715

_erfc = np.frompyfunc(math.erfc, 1, 1)


def _normal_cdf(x: Array) -> Array:
    # numpy has no erf. Phi(x) = erfc(-x / sqrt 2) / 2 keeps full relative precision in
    # the left tail, where 1 + erf(x / sqrt 2) would cancel to a few digits.
    return 0.5 * np.asarray(_erfc(-x / math.sqrt(2.0)), dtype=np.float64)


def sigmoid(x: Array) -> Array:
    # exp(-|x|) never overflows; both branches are exact to rounding.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax(x: Array) -> Array:
    # In place after the first subtraction: one temporary, a third faster on large stacks.
    e = np.subtract(x, np.max(x, axis=-1, keepdims=True), dtype=np.result_type(x, np.float32))
    np.exp(e, out=e)
    e /= np.sum(e, axis=-1, keepdims=True)
    return e


def log_softmax(x: Array) -> Array:
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def softmax_jacobian(x: Array) -> Array:
    # s_i (delta_ij - s_j): the outer product -s_i s_j, then s_i added on the diagonal
    # (one pass over the K x K entries instead of three through an identity matrix).
    s = softmax(x)
    jac = s[..., :, None] * -s[..., None, :]
    diagonal = np.arange(s.shape[-1])
    jac[..., diagonal, diagonal] += s
    return jac


def softmax_vjp(x: Array, g: Array) -> Array:
    y = softmax(x)
    return y * (g - np.sum(y * g, axis=-1, keepdims=True))


def log_softmax_jacobian(x: Array) -> Array:
    s = softmax(x)
    return np.eye(s.shape[-1]) - s[..., None, :]


def log_softmax_vjp(x: Array, g: Array) -> Array:
    return g - softmax(x) * np.sum(g, axis=-1, keepdims=True)


def _elu(x: Array, alpha: float) -> Array:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def gelu(x: Array) -> Array:
    return x * _normal_cdf(x)


def gelu_derivative(x: Array) -> Array:
    cdf = _normal_cdf(x)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return cdf + x * pdf


def gelu_tanh(x: Array) -> Array:
    # (1 + tanh u) / 2 = sigmoid(2u), without the cancellation of 1 + tanh u for u << 0.
    return x * sigmoid(2.0 * GELU_C * (x + GELU_A * x**3))


def gelu_tanh_derivative(x: Array) -> Array:
    s = sigmoid(2.0 * GELU_C * (x + GELU_A * x**3))
    # 1 - tanh^2 u = 4 s (1 - s) with s = sigmoid(2u).
    return s + x * 2.0 * s * (1.0 - s) * GELU_C * (1.0 + 3.0 * GELU_A * x * x)


def softplus(x: Array) -> Array:
    return np.logaddexp(0.0, x)


def silu(x: Array) -> Array:
    return x * sigmoid(x)


def silu_derivative(x: Array) -> Array:
    s = sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def mish(x: Array) -> Array:
    return x * np.tanh(softplus(x))


def mish_derivative(x: Array) -> Array:
    t = np.tanh(softplus(x))
    return t + x * (1.0 - t * t) * sigmoid(x)


def _ones(x: Array) -> Array:
    return np.ones_like(x)


def _step(x: Array, low: float, high: float, inside: float, outside: float = 0.0) -> Array:
    return np.where((x > low) & (x < high), inside, outside)


register_activation("identity", forward=lambda x: 1.0 * x, derivative=_ones, formula="f'(x) = 1",
                    derivative2=np.zeros_like)
register_activation("sigmoid", forward=sigmoid, derivative_of_output=lambda y: y * (1.0 - y),
                    formula="y = 1/(1+e^-x); dy/dx = y(1 - y)",
                    derivative2=lambda x: sigmoid(x) * (1 - sigmoid(x)) * (1 - 2 * sigmoid(x)))
register_activation("tanh", forward=np.tanh, derivative_of_output=lambda y: 1.0 - y * y,
                    formula="y = tanh(x); dy/dx = 1 - y^2",
                    derivative2=lambda x: -2.0 * np.tanh(x) * (1.0 - np.tanh(x) ** 2))
register_activation("relu", forward=lambda x: np.maximum(x, 0.0),
                    derivative=lambda x: _step(x, 0.0, np.inf, 1.0),
                    formula="f'(x) = 1 if x > 0 else 0", kinks=(0.0,))
register_activation("leaky_relu", forward=lambda x: np.where(x > 0, x, LEAKY_SLOPE * x),
                    derivative=lambda x: np.where(x > 0, 1.0, LEAKY_SLOPE),
                    formula=f"f'(x) = 1 if x > 0 else {LEAKY_SLOPE}", kinks=(0.0,))
register_activation("elu", forward=lambda x: _elu(x, 1.0),
                    derivative=lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0))),
                    formula="f(x) = x if x > 0 else e^x - 1; f'(x) = 1 if x > 0 else e^x",
                    kinks=(0.0,))  # f'' jumps at 0: keep random stencils off it
register_activation("selu", forward=lambda x: SELU_SCALE * _elu(x, SELU_ALPHA),
                    derivative=lambda x: SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0.0))),
                    formula="f'(x) = lambda if x > 0 else lambda*alpha*e^x", kinks=(0.0,))
register_activation("gelu", forward=gelu, derivative=gelu_derivative,
                    formula="f(x) = x Phi(x); f'(x) = Phi(x) + x phi(x); f''(x) = phi(x)(2 - x^2)",
                    derivative2=lambda x: np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi) * (2.0 - x * x))
register_activation("gelu_tanh", forward=gelu_tanh, derivative=gelu_tanh_derivative,
                    formula="t = tanh(c(x + a x^3)); f'(x) = (1+t)/2 + x(1-t^2) c (1 + 3a x^2)/2")
register_activation("softplus", forward=softplus, derivative=sigmoid,
                    formula="f(x) = log(1 + e^x); f'(x) = sigmoid(x)",
                    derivative2=lambda x: sigmoid(x) * (1.0 - sigmoid(x)))
register_activation("silu", forward=silu, derivative=silu_derivative,
                    formula="f(x) = x s(x); f'(x) = s(x)(1 + x(1 - s(x)))",
                    derivative2=lambda x: sigmoid(x) * (1.0 - sigmoid(x)) * (2.0 + x * (1.0 - 2.0 * sigmoid(x))))
register_activation("mish", forward=mish, derivative=mish_derivative,
                    formula="t = tanh(softplus(x)); f'(x) = t + x(1 - t^2) sigmoid(x)")
register_activation("softsign", forward=lambda x: x / (1.0 + np.abs(x)),
                    derivative=lambda x: 1.0 / (1.0 + np.abs(x)) ** 2,
                    formula="f(x) = x/(1+|x|); f'(x) = 1/(1+|x|)^2", kinks=(0.0,))
register_activation("hard_tanh", forward=lambda x: np.clip(x, -1.0, 1.0),
                    derivative=lambda x: _step(x, -1.0, 1.0, 1.0),
                    formula="f'(x) = 1 if -1 < x < 1 else 0", kinks=(-1.0, 1.0))
register_activation("hard_sigmoid", forward=lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
                    derivative=lambda x: _step(x, -3.0, 3.0, 1.0 / 6.0),
                    formula="f(x) = clip(x/6 + 1/2, 0, 1); f'(x) = 1/6 if -3 < x < 3 else 0",
                    kinks=(-3.0, 3.0))
register_activation("softmax", forward=softmax, jacobian=softmax_jacobian, vjp=softmax_vjp,
                    formula="dS_i/dx_j = S_i (delta_ij - S_j); VJP: y * (g - sum(y * g))")
register_activation("log_softmax", forward=log_softmax, jacobian=log_softmax_jacobian,
                    vjp=log_softmax_vjp,
                    formula="d log S_i/dx_j = delta_ij - S_j; VJP: g - S * sum(g)")

# Everything in this module is pure numpy: its functions may run on several threads at once.
mark_module_threadsafe(globals())
