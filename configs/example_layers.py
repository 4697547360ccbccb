"""A small numpy layer library, written the way many are, used by configs/example.yaml.

Nothing here imports gradcheck: the config maps these classes and functions in YAML.
"""

import numpy as np


class Sigmoid:
    def forward(self, z):
        return 1.0 / (1.0 + np.exp(-z))

    def grad(self, z):
        s = self.forward(z)
        return s * (1.0 - s)


class Softmax:
    """Stateful layer: remembers every input and answers backward for the last one."""

    def __init__(self, axis=-1):
        self.axis = axis
        self.seen = []

    def forward(self, z):
        self.seen.append(z)
        e = np.exp(z - z.max(axis=self.axis, keepdims=True))
        self.out = e / e.sum(axis=self.axis, keepdims=True)
        return self.out

    def backward(self, grad_out):
        y = self.out
        self.dx = y * (grad_out - (y * grad_out).sum(axis=self.axis, keepdims=True))


class NaiveSoftmax:
    """The usual mistake: an elementwise 'gradient' for softmax."""

    def forward(self, z):
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def grad(self, z):
        s = self.forward(z)
        return s * (1.0 - s)


def mse(pred, target):
    return np.mean((pred - target) ** 2, axis=(-2, -1))


def mse_grad(pred, target):
    return 2.0 * (pred - target) / pred.size
