"""A plugin: registers a derivative written as a VJP (seed 004's answer)."""

import numpy as np

from gradcheck_cli import register_activation


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_vjp(x, g):
    y = softmax(x)
    dx = y * g
    return dx - y * dx.sum(axis=-1, keepdims=True)


register_activation("my_softmax", forward=softmax, vjp=softmax_vjp,
                    formula="dx = y*g - y * sum(y*g)")
