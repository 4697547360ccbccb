"""Built-in losses ``forward(pred, target) -> scalar`` with ``gradient(pred, target)``.

Predictions are batched ``(B, K)``. Each loss reduces over the last two axes, so a stack
of predictions ``(n, B, K)`` gives ``n`` losses: the finite-difference engine uses that to
evaluate every perturbation in one call. Conventions follow PyTorch's defaults:
elementwise losses average over all B*K entries, distribution losses sum over classes and
average over the batch.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from gradcheck_cli.registry import mark_module_threadsafe, register_fused, register_loss
from gradcheck_cli.registry.activations import sigmoid, softmax

Array = NDArray[np.float64]
AXES = (-2, -1)
HUBER_DELTA = 1.0


def _count(pred: Array) -> int:
    return int(pred.shape[-1] * pred.shape[-2])


def _batch(pred: Array) -> int:
    return int(pred.shape[-2])


def mse(pred: Array, target: Array) -> Array:
    return np.mean((pred - target) ** 2, axis=AXES)


def mse_gradient(pred: Array, target: Array) -> Array:
    return 2.0 * (pred - target) / _count(pred)


def _huber(r: Array) -> Array:
    a = np.abs(r)
    return np.where(a <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (a - 0.5 * HUBER_DELTA))


def _log_cosh(r: Array) -> Array:
    # log(cosh r) = |r| + log1p(e^{-2|r|}) - log 2, finite for any r.
    a = np.abs(r)
    return a + np.log1p(np.exp(-2.0 * a)) - np.log(2.0)


def cross_entropy(pred: Array, target: Array) -> Array:
    return -np.sum(target * np.log(pred), axis=AXES) / _batch(pred)


def cross_entropy_gradient(pred: Array, target: Array) -> Array:
    return -target / pred / _batch(pred)


def binary_cross_entropy(pred: Array, target: Array) -> Array:
    return -np.mean(target * np.log(pred) + (1.0 - target) * np.log1p(-pred), axis=AXES)


def binary_cross_entropy_gradient(pred: Array, target: Array) -> Array:
    return (pred - target) / (pred * (1.0 - pred)) / _count(pred)


def kl_div(pred: Array, target: Array) -> Array:
    # KL(target || pred); target log target is taken as 0 where target is 0.
    safe = np.where(target > 0, target, 1.0)
    return np.sum(target * (np.log(safe) - np.log(pred)), axis=AXES) / _batch(pred)


register_loss("mse", forward=mse, gradient=mse_gradient, target="real",
              formula="L = mean((p - t)^2); dL/dp = 2 (p - t) / N")
register_loss("mae", forward=lambda p, t: np.mean(np.abs(p - t), axis=AXES),
              gradient=lambda p, t: np.sign(p - t) / _count(p), target="real", kinks=(0.0,),
              formula="L = mean(|p - t|); dL/dp = sign(p - t) / N")
register_loss("huber", forward=lambda p, t: np.mean(_huber(p - t), axis=AXES),
              gradient=lambda p, t: np.clip(p - t, -HUBER_DELTA, HUBER_DELTA) / _count(p),
              target="real", kinks=(-HUBER_DELTA, HUBER_DELTA),
              formula=f"delta = {HUBER_DELTA}; dL/dp = clip(p - t, -delta, delta) / N")
register_loss("log_cosh", forward=lambda p, t: np.mean(_log_cosh(p - t), axis=AXES),
              gradient=lambda p, t: np.tanh(p - t) / _count(p), target="real",
              formula="L = mean(log cosh(p - t)); dL/dp = tanh(p - t) / N")
register_loss("cross_entropy", forward=cross_entropy, gradient=cross_entropy_gradient,
              target="onehot", domain="unit",
              formula="L = -sum(t log p) / B; dL/dp = -t / (p B)")
register_loss("nll", forward=lambda p, t: -np.sum(t * p, axis=AXES) / _batch(p),
              gradient=lambda p, t: -t / _batch(p), target="onehot",
              formula="p = log-probabilities; L = -sum(t p) / B; dL/dp = -t / B")
register_loss("binary_cross_entropy", forward=binary_cross_entropy,
              gradient=binary_cross_entropy_gradient, target="binary", domain="unit",
              formula="L = -mean(t log p + (1-t) log(1-p)); dL/dp = (p - t) / (p (1-p) N)")
register_loss("kl_div", forward=kl_div, gradient=cross_entropy_gradient,
              target="probabilities", domain="unit",
              formula="L = sum(t (log t - log p)) / B; dL/dp = -t / (p B)")

register_fused("softmax", "cross_entropy",
               gradient=lambda z, t: (softmax(z) * np.sum(t, axis=-1, keepdims=True) - t) / _batch(z),
               formula="dL/dz = (p - t) / B  (t rows summing to 1)")
register_fused("log_softmax", "nll",
               gradient=lambda z, t: (softmax(z) * np.sum(t, axis=-1, keepdims=True) - t) / _batch(z),
               formula="dL/dz = (softmax(z) - t) / B")
register_fused("sigmoid", "binary_cross_entropy",
               gradient=lambda z, t: (sigmoid(z) - t) / _count(z),
               formula="dL/dz = (sigmoid(z) - t) / N")

# Everything in this module is pure numpy: its functions may run on several threads at once.
mark_module_threadsafe(globals())
