"""Layer code as real libraries write it, right and wrong, for the layer tests.

Written the way its models are (a CS231n assignment solution, "Neural Networks from
Scratch", Keras-like classes) and never adapted to gradcheck: the tests register it as it
stands, from Python and from YAML (this file is copied next to the config). It imports
numpy only. Each deliberately wrong function says in its docstring what is wrong.
"""

# ruff: noqa: N801, N803, N806 - the libraries' own names (Layer_Dense, Wx, dWx)

from __future__ import annotations

import numpy as np

# --- CS231n, functional, cache style -------------------------------------------------------


def affine_forward(x, w, b):
    out = x.reshape(x.shape[0], -1).dot(w) + b
    cache = (x, w, b)
    return out, cache


def affine_backward(dout, cache):
    x, w, b = cache
    dx = dout.dot(w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T.dot(dout)
    db = np.sum(dout, axis=0)
    return dx, dw, db


def affine_backward_transposed(dout, cache):
    """dw = dout.T @ x: the right shape only because w is square."""
    x, w, b = cache
    dx = dout.dot(w.T).reshape(x.shape)
    dw = dout.T.dot(x.reshape(x.shape[0], -1))
    db = np.sum(dout, axis=0)
    return dx, dw, db


def affine_backward_zero_db(dout, cache):
    """db is never computed."""
    x, w, b = cache
    dx = dout.dot(w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T.dot(dout)
    db = np.zeros_like(b)
    return dx, dw, db


def affine_backward_dict(dout, cache):
    dx, dw, db = affine_backward(dout, cache)
    return {"x": dx, "w": dw, "b": db}


def affine_relu_readout_forward(x, w, b):
    """A dense layer read out as the mean over its units: one number per sample."""
    out = (x.dot(w) + b).mean(axis=1)
    return out, (x, w, b)


def affine_relu_readout_backward(dout, cache):
    x, w, b = cache
    k = w.shape[1]
    dz = np.repeat(dout[:, None], k, axis=1) / k
    return dz.dot(w.T), x.T.dot(dz), dz.sum(axis=0)


def affine_relu_readout_backward_no_mean(dout, cache):
    """db forgets the mean's 1/K: db = sum(dout) for every unit."""
    dx, dw, db = affine_relu_readout_backward(dout, cache)
    return dx, dw, np.full_like(db, dout.sum())


def scale_shift_forward(x, gamma, beta):
    out = x * gamma + beta
    return out, (x, gamma)


def scale_shift_backward(dout, cache):
    x, gamma = cache
    return dout * gamma, np.sum(dout * x, axis=0), np.sum(dout, axis=0)


def scale_shift_backward_swapped(dout, cache):
    """dgamma and dbeta returned in each other's place."""
    dx, dgamma, dbeta = scale_shift_backward(dout, cache)
    return dx, dbeta, dgamma


def relu_forward(x):
    return np.maximum(0, x), x


def relu_backward(dout, cache):
    x = cache
    return dout * (x > 0)


def conv_forward_naive(x, w, b, conv_param):
    stride, pad = conv_param["stride"], conv_param["pad"]
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = 1 + (H + 2 * pad - HH) // stride
    W_out = 1 + (W + 2 * pad - WW) // stride
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="constant")
    out = np.zeros((N, F, H_out, W_out))
    for i in range(H_out):
        for j in range(W_out):
            window = x_pad[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
            out[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b
    cache = (x, w, b, conv_param)
    return out, cache


def _conv_backward(dout, cache, crop_pad_zero):
    x, w, b, conv_param = cache
    stride, pad = conv_param["stride"], conv_param["pad"]
    F, _, HH, WW = w.shape
    _, _, H_out, W_out = dout.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="constant")
    dx_pad = np.zeros_like(x_pad)
    dw = np.zeros_like(w)
    db = dout.sum(axis=(0, 2, 3))
    for i in range(H_out):
        for j in range(W_out):
            hs, ws = i * stride, j * stride
            window = x_pad[:, :, hs:hs + HH, ws:ws + WW]
            dw += np.tensordot(dout[:, :, i, j], window, axes=([0], [0]))
            dx_pad[:, :, hs:hs + HH, ws:ws + WW] += np.tensordot(dout[:, :, i, j], w, axes=([1], [0]))
    if crop_pad_zero:
        dx = dx_pad[:, :, pad:-pad, pad:-pad]  # for pad == 0 this is an empty slice
    else:
        dx = dx_pad[:, :, pad:pad + x.shape[2], pad:pad + x.shape[3]]
    return dx, dw, db


def conv_backward_naive(dout, cache):
    return _conv_backward(dout, cache, crop_pad_zero=False)


def conv_backward_naive_pad_slice(dout, cache):
    """dx = dx_pad[:, :, pad:-pad, pad:-pad]: of shape (N, C, 0, 0) when pad is 0."""
    return _conv_backward(dout, cache, crop_pad_zero=True)


def max_pool_forward_naive(x, pool_param):
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    N, C, H, W = x.shape
    H_out, W_out = 1 + (H - ph) // stride, 1 + (W - pw) // stride
    out = np.zeros((N, C, H_out, W_out))
    for i in range(H_out):
        for j in range(W_out):
            out[:, :, i, j] = x[:, :, i * stride:i * stride + ph, j * stride:j * stride + pw].max(axis=(2, 3))
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    dx = np.zeros_like(x)
    _, _, H_out, W_out = dout.shape
    for i in range(H_out):
        for j in range(W_out):
            window = x[:, :, i * stride:i * stride + ph, j * stride:j * stride + pw]
            mask = window == window.max(axis=(2, 3), keepdims=True)
            upstream = dout[:, :, i, j][:, :, None, None]
            dx[:, :, i * stride:i * stride + ph, j * stride:j * stride + pw] += mask * upstream
    return dx


def batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    D = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.ones(D, dtype=x.dtype))
    if mode == "train":
        mu = x.mean(axis=0)
        var = x.var(axis=0)
        std = np.sqrt(var + eps)
        x_hat = (x - mu) / std
        out = gamma * x_hat + beta
        cache = (x_hat, gamma, std)
        running_mean = momentum * running_mean + (1 - momentum) * mu
        running_var = momentum * running_var + (1 - momentum) * var
    else:
        x_hat = (x - running_mean) / np.sqrt(running_var + eps)
        out = gamma * x_hat + beta
        cache = (x_hat, gamma, np.sqrt(running_var + eps))
    # The solution writes its running averages back into the caller's dict.
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out, cache


def batchnorm_backward(dout, cache):
    x_hat, gamma, std = cache
    N = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)
    dx_hat = dout * gamma
    dx = (N * dx_hat - dx_hat.sum(axis=0) - x_hat * np.sum(dx_hat * x_hat, axis=0)) / (N * std)
    return dx, dgamma, dbeta


def batchnorm_backward_no_batch_terms(dout, cache):
    """dx = dout * gamma / std: as if the mean and variance did not depend on x."""
    x_hat, gamma, std = cache
    dx = dout * gamma / std
    return dx, np.sum(dout * x_hat, axis=0), dout.sum(axis=0)


def dropout_forward(x, dropout_param):
    p, mode = dropout_param["p"], dropout_param["mode"]
    mask = None
    if mode == "train":
        mask = (np.random.rand(*x.shape) < p) / p
        out = x * mask
    else:
        out = x
    return out, (dropout_param, mask)


def dropout_backward(dout, cache):
    dropout_param, mask = cache
    return dout * mask if dropout_param["mode"] == "train" else dout


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    H = prev_h.shape[1]
    a = x.dot(Wx) + prev_h.dot(Wh) + b
    i, f, o, g = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])
    next_c = f * prev_c + i * g
    next_h = o * np.tanh(next_c)
    cache = (x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c)
    return next_h, next_c, cache


def _lstm_step_backward(dnext_h, dnext_c, cache, in_place):
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c = cache
    t = np.tanh(next_c)
    if in_place:
        dnext_c += dnext_h * o * (1 - t ** 2)  # adds into the caller's array
        dc = dnext_c
    else:
        dc = dnext_c + dnext_h * o * (1 - t ** 2)
    di, df, do, dg = dc * g, dc * prev_c, dnext_h * t, dc * i
    da = np.hstack([di * i * (1 - i), df * f * (1 - f), do * o * (1 - o), dg * (1 - g ** 2)])
    dx, dprev_h = da.dot(Wx.T), da.dot(Wh.T)
    dprev_c = dc * f
    dWx, dWh, db = x.T.dot(da), prev_h.T.dot(da), da.sum(axis=0)
    return dx, dprev_h, dprev_c, dWx, dWh, db


def lstm_step_backward(dnext_h, dnext_c, cache):
    return _lstm_step_backward(dnext_h, dnext_c, cache, in_place=False)


def lstm_step_backward_in_place(dnext_h, dnext_c, cache):
    """dnext_c += ...: right numbers, but the caller's dnext_c is changed."""
    return _lstm_step_backward(dnext_h, dnext_c, cache, in_place=True)


def temporal_affine_forward(x, w, b):
    N, T, D = x.shape
    out = x.reshape(N * T, D).dot(w).reshape(N, T, -1) + b
    return out, (x, w, b)


def temporal_affine_backward(dout, cache):
    x, w, b = cache
    N, T, D = x.shape
    M = b.shape[0]
    dx = dout.reshape(N * T, M).dot(w.T).reshape(N, T, D)
    dw = x.reshape(N * T, D).T.dot(dout.reshape(N * T, M))
    db = dout.sum(axis=(0, 1))
    return dx, dw, db


def softmax_loss(x, y):
    shifted = x - np.max(x, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    probs = np.exp(log_probs)
    N = x.shape[0]
    loss = -np.sum(log_probs[np.arange(N), y]) / N
    dx = probs.copy()
    dx[np.arange(N), y] -= 1
    dx /= N
    return loss, dx


def temporal_softmax_loss(x, y):
    """Labels y of shape (N, T) for scores x of shape (N, T, V); averaged over N."""
    N, T, V = x.shape
    x_flat, y_flat = x.reshape(N * T, V), y.reshape(N * T)
    probs = np.exp(x_flat - np.max(x_flat, axis=1, keepdims=True))
    probs /= np.sum(probs, axis=1, keepdims=True)
    loss = -np.sum(np.log(probs[np.arange(N * T), y_flat])) / N
    dx_flat = probs.copy()
    dx_flat[np.arange(N * T), y_flat] -= 1
    dx_flat /= N
    return loss, dx_flat.reshape(N, T, V)


# --- multi-argument VJP -------------------------------------------------------------------


def dense(x, w, b):
    return x @ w + b


def dense_vjp(x, w, b, g):
    return g @ w.T, x.T @ g, g.sum(axis=0)


def dense_vjp_dict(x, w, b, g):
    return {"b": g.sum(axis=0), "w": x.T @ g, "x": g @ w.T}


def dense_vjp_flipped_dx(x, w, b, g):
    """dx with its sign flipped; dw and db right."""
    return -(g @ w.T), x.T @ g, g.sum(axis=0)


def bilinear(x, y, w):
    """Two outputs: (x @ w) * y and x @ w."""
    z = x @ w
    return z * y, z


def bilinear_vjp(x, y, w, g_prod, g_lin):
    z = x @ w
    dz = g_prod * y + g_lin
    return dz @ w.T, g_prod * z, x.T @ dz


# --- Neural Networks from Scratch, stateful classes ----------------------------------------


class Layer_Dense:
    def __init__(self, n_inputs, n_neurons):
        self.weights = 0.01 * np.random.randn(n_inputs, n_neurons)
        self.biases = np.zeros((1, n_neurons))

    def forward(self, inputs):
        self.inputs = inputs
        self.output = np.dot(inputs, self.weights) + self.biases

    def backward(self, dvalues):
        self.dweights = np.dot(self.inputs.T, dvalues)
        self.dbiases = np.sum(dvalues, axis=0, keepdims=True)
        self.dinputs = np.dot(dvalues, self.weights.T)


class Layer_Dense_Mean_Bias(Layer_Dense):
    """dbiases is the mean of dvalues, not their sum."""

    def backward(self, dvalues):
        super().backward(dvalues)
        self.dbiases = np.mean(dvalues, axis=0, keepdims=True)


class Layer_Dropout:
    def __init__(self, rate):
        self.rate = 1 - rate

    def forward(self, inputs):
        self.inputs = inputs
        self.binary_mask = np.random.binomial(1, self.rate, size=inputs.shape) / self.rate
        self.output = inputs * self.binary_mask

    def backward(self, dvalues):
        self.dinputs = dvalues * self.binary_mask


class Loss_CategoricalCrossentropy:
    def forward(self, y_pred, y_true):
        samples = len(y_pred)
        y_pred_clipped = np.clip(y_pred, 1e-7, 1 - 1e-7)
        if len(y_true.shape) == 1:
            correct_confidences = y_pred_clipped[range(samples), y_true]
        else:
            correct_confidences = np.sum(y_pred_clipped * y_true, axis=1)
        return -np.log(correct_confidences)

    def backward(self, dvalues, y_true):
        samples = len(dvalues)
        labels = len(dvalues[0])
        if len(y_true.shape) == 1:
            y_true = np.eye(labels)[y_true]
        self.dinputs = -y_true / dvalues
        self.dinputs = self.dinputs / samples


class Loss_MeanAbsoluteError:
    def forward(self, y_pred, y_true):
        return np.mean(np.abs(y_true - y_pred), axis=-1)

    def backward(self, dvalues, y_true):
        samples = len(dvalues)
        outputs = len(dvalues[0])
        self.dinputs = np.sign(dvalues - y_true) / outputs
        self.dinputs = self.dinputs / samples


class Loss_MeanAbsoluteError_Flipped(Loss_MeanAbsoluteError):
    """np.sign(y_true - dvalues): the sign of the gradient flipped."""

    def backward(self, dvalues, y_true):
        samples = len(dvalues)
        outputs = len(dvalues[0])
        self.dinputs = np.sign(y_true - dvalues) / outputs
        self.dinputs = self.dinputs / samples


# --- Keras-like: parameters and gradients in dictionaries -----------------------------------


class DictDense:
    def __init__(self, n_in, n_out, seed=0):
        rng = np.random.default_rng(seed)
        self.params = {"W": rng.standard_normal((n_in, n_out)), "b": np.zeros(n_out)}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        self.grads["W"] = self.x.T @ dout
        self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["W"].T
