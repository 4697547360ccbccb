"""Built-in layers in CS231n's cache style, each with deliberately wrong variants.

Every layer is a pair ``NAME_forward(*args, **kwargs) -> (out, cache)`` and
``NAME_backward(dout, cache) -> (dx, dw, ...)`` (one gradient per argument, in argument
order), written in pure numpy and vectorised, so the finite-difference engine can call the
forward a few hundred times per check in milliseconds. Forwards are pure functions of their
inputs: the parameter dictionaries (``conv_param``, ``bn_param``...) are copied, never
written to, and the only outside state read is numpy's *global* random state (dropout),
which gradcheck replays before every call (``stochastic=True``).

The wrong variants (``NAME@VARIANT``) share the correct forward and change the backward by
one classic mistake each, of different kinds: a transposed gradient of the wrong shape, a
pad border left on, a kernel not rotated, a gradient routed to every window position, a
dropped path, a missing 1/N, a sign flip, statistics over the wrong axis, a forgotten
rescale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from gradcheck_cli.registry import mark_module_threadsafe, register_layer

Array = NDArray[np.float64]
Cache = tuple[Any, ...]


def _shapes(**arrays: Array) -> str:
    return ", ".join(f"{name} {tuple(a.shape)}" for name, a in arrays.items())


def _require(ok: bool, layer: str, expected: str, fits: dict[str, tuple[int, ...]], **arrays: Array) -> None:
    """A readable error for arguments whose shapes do not fit together (gradcheck shows it as the forward's error).

    ``fits`` proposes shapes that do fit, written as gradcheck's ``--shape NAME=...`` options.
    """
    if not ok:
        options = " ".join(f"--shape {name}={','.join(map(str, shape))}" for name, shape in fits.items())
        raise ValueError(f"{layer} expects {expected}; got {_shapes(**arrays)}. Give shapes that fit, "
                         f"e.g. {options}")


def _variance(centred: Array, axis: int, keepdims: bool = False) -> Array:
    # mean(c * c), not np.var: np.var takes |c|^2, which breaks a complex-step derivative.
    return np.mean(centred * centred, axis=axis, keepdims=keepdims)


# ---------------------------------------------------------------------------------------
# dense (affine): out = x w + b, x of shape (N, d1, ..., dk) read as (N, D)


def affine_forward(x: Array, w: Array, b: Array) -> tuple[Array, Cache]:
    """``out = x.reshape(N, D) @ w + b``; ``w`` is ``(D, M)``, ``b`` is ``(M,)``."""
    d, m = int(np.prod(x.shape[1:])), w.shape[-1]
    _require(x.ndim >= 1 and w.ndim == 2 and b.shape == w.shape[1:] and d == w.shape[0], "dense",
             "x (N, d1, ...) with d1*...*dk = D, w (D, M) and b (M,)", {"w": (d, m), "b": (m,)}, x=x, w=w, b=b)
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w)


def affine_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """``dx = dout w^T`` (in x's shape), ``dw = x^T dout``, ``db = sum_n dout``."""
    x, w = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    return dx, dw, dout.sum(axis=0)


def affine_backward_transposed_dw(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """dw = dout^T x: the transpose of the right gradient, shape (M, D) for w's (D, M)."""
    dx, _, db = affine_backward(dout, cache)
    x, _ = cache
    return dx, dout.T @ x.reshape(x.shape[0], -1), db


# ---------------------------------------------------------------------------------------
# conv2d: x (N, C, H, W), w (F, C, HH, WW), b (F,), conv_param {stride, pad}


def _conv_geometry(conv_param: Mapping[str, Any]) -> tuple[int, int]:
    return int(conv_param.get("stride", 1)), int(conv_param.get("pad", 0))


def _windows(xp: Array, height: int, width: int, stride: int) -> Array:
    """Every (height, width) window of xp at the given stride: (N, C, Ho, Wo, height, width), a view."""
    return sliding_window_view(xp, (height, width), axis=(2, 3))[:, :, ::stride, ::stride]


def _conv_fits(x: Array, w: Array, pad: int) -> dict[str, tuple[int, ...]]:
    """Shapes that fit: a 4-D x for w's channels, or filters for x's channels that fit its padded size."""
    if w.ndim != 4:
        return {"w": (4, x.shape[1] if x.ndim == 4 else 3, 3, 3)}
    if x.ndim != 4:
        return {"x": (2, w.shape[1], 6, 6)}
    kernel = (min(w.shape[2], x.shape[2] + 2 * pad), min(w.shape[3], x.shape[3] + 2 * pad))
    return {"w": (w.shape[0], x.shape[1], *kernel), "b": w.shape[:1]}


def conv_forward(x: Array, w: Array, b: Array, conv_param: Mapping[str, Any]) -> tuple[Array, Cache]:
    """Cross-correlation of the zero-padded x with each filter, plus its bias.

    ``Ho = 1 + (H + 2 pad - HH) // stride`` (trailing rows a stride does not reach are
    ignored, and so get a zero gradient).
    """
    stride, pad = _conv_geometry(conv_param)
    _require(x.ndim == 4 and w.ndim == 4 and x.shape[1] == w.shape[1] and b.shape == w.shape[:1]
             and x.shape[2] + 2 * pad >= w.shape[2] and x.shape[3] + 2 * pad >= w.shape[3], "conv2d",
             f"x (N, C, H, W), w (F, C, HH, WW) with HH, WW <= H, W + 2 pad (pad {pad}) and b (F,)",
             _conv_fits(x, w, pad), x=x, w=w, b=b)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = _windows(xp, w.shape[2], w.shape[3], stride)
    # tensordot over (C, HH, WW) is the im2col matrix product without copying the windows.
    out = np.tensordot(cols, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2) + b[:, None, None]
    return out, (x, w, stride, pad)


def _conv_dx_padded(dout: Array, cache: Cache, w: Array) -> Array:
    """col2im: each output position sends dout * kernel back onto its window of the padded x."""
    x, _, stride, pad = cache
    n, c, h, wd = x.shape
    _, _, kh, kw = w.shape
    ho, wo = dout.shape[2], dout.shape[3]
    dcols = np.tensordot(dout, w, axes=([1], [0]))  # (N, Ho, Wo, C, HH, WW)
    dxp = np.zeros((n, c, h + 2 * pad, wd + 2 * pad))
    for i in range(kh):
        for j in range(kw):
            # Windows overlap when stride < kernel: += accumulates, one strided slice per tap.
            dxp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += dcols[..., i, j].transpose(0, 3, 1, 2)
    return dxp


def _crop(dxp: Array, pad: int) -> Array:
    return dxp[:, :, pad:dxp.shape[2] - pad, pad:dxp.shape[3] - pad]


def _conv_dw_db(dout: Array, cache: Cache) -> tuple[Array, Array]:
    x, w, stride, pad = cache
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = _windows(xp, w.shape[2], w.shape[3], stride)
    dw = np.tensordot(dout, cols, axes=([0, 2, 3], [0, 2, 3]))  # (F, C, HH, WW)
    return dw, dout.sum(axis=(0, 2, 3))


def conv_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """``dx`` by col2im cropped to x's shape, ``dw`` = sum of dout times windows, ``db`` = sum of dout."""
    _, w, _, pad = cache
    dw, db = _conv_dw_db(dout, cache)
    return _crop(_conv_dx_padded(dout, cache, w), pad), dw, db


def conv_backward_no_crop(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """dx of the *padded* input: the pad border is never cropped off."""
    _, w, _, _ = cache
    dw, db = _conv_dw_db(dout, cache)
    return _conv_dx_padded(dout, cache, w), dw, db


def conv_backward_unrotated_kernel(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """dx as a full convolution of dout with the kernel *not* rotated by 180 degrees."""
    _, w, _, pad = cache
    dw, db = _conv_dw_db(dout, cache)
    return _crop(_conv_dx_padded(dout, cache, w[:, :, ::-1, ::-1]), pad), dw, db


# ---------------------------------------------------------------------------------------
# maxpool2d: x (N, C, H, W), pool_param {pool_height, pool_width, stride}


def _pool_geometry(pool_param: Mapping[str, Any]) -> tuple[int, int, int]:
    return (int(pool_param.get("pool_height", 2)), int(pool_param.get("pool_width", 2)),
            int(pool_param.get("stride", 2)))


def max_pool_forward(x: Array, pool_param: Mapping[str, Any]) -> tuple[Array, Cache]:
    """The maximum of each (pool_height, pool_width) window, windows ``stride`` apart."""
    ph, pw, stride = _pool_geometry(pool_param)
    _require(x.ndim == 4 and x.shape[2] >= ph and x.shape[3] >= pw, "maxpool2d",
             f"x (N, C, H, W) with H >= pool_height {ph} and W >= pool_width {pw}", {"x": (2, 3, 2 * ph, 2 * pw)},
             x=x)
    windows = _windows(x, ph, pw, stride)
    flat = windows.reshape(*windows.shape[:4], ph * pw)
    arg = np.argmax(flat, axis=-1)  # first maximum of each window, the one backward routes to
    out = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    return out, (x.shape, arg, ph, pw, stride)


def max_pool_backward(dout: Array, cache: Cache) -> Array:
    """Each window's dout goes to the position of its maximum, nowhere else."""
    shape, arg, _, pw, stride = cache
    n, c, ho, wo = arg.shape
    rows = np.arange(ho)[:, None] * stride + arg // pw
    cols = np.arange(wo)[None, :] * stride + arg % pw
    dx = np.zeros(shape)
    # add.at, not fancy +=: overlapping windows (stride < pool) may share a maximum.
    np.add.at(dx, (np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols), dout)
    return dx


def max_pool_backward_every_position(dout: Array, cache: Cache) -> Array:
    """Every position of a window receives the window's dout, not only its maximum."""
    shape, arg, ph, pw, stride = cache
    ho, wo = arg.shape[2], arg.shape[3]
    dx = np.zeros(shape)
    for i in range(ph):
        for j in range(pw):
            dx[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += dout
    return dx


# ---------------------------------------------------------------------------------------
# batchnorm: x (N, D) normalised per feature over the batch; gamma, beta (D,)


def batchnorm_forward(x: Array, gamma: Array, beta: Array, bn_param: Mapping[str, Any]) -> tuple[Array, Cache]:
    """``out = gamma * (x - mean_n x) / sqrt(var_n x + eps) + beta`` in mode train.

    Mode test normalises with ``bn_param['running_mean']`` and ``['running_var']`` (zeros
    and ones when absent). The caller's ``bn_param`` is read, never updated: the running
    averages CS231n writes back would make the forward depend on how often it was called.
    """
    param = dict(bn_param)
    _require(x.ndim == 2 and gamma.shape == beta.shape == x.shape[1:], "batchnorm",
             "x (N, D), gamma (D,) and beta (D,)",
             {"gamma": x.shape[-1:], "beta": x.shape[-1:]} if x.ndim == 2 else {"x": (6,) + gamma.shape},
             x=x, gamma=gamma, beta=beta)
    eps = float(param.get("eps", 1e-5))
    if param.get("mode", "train") == "train":
        mean = x.mean(axis=0)
        var = _variance(x - mean, axis=0)
    else:
        mean = np.asarray(param.get("running_mean", np.zeros(x.shape[1])), dtype=np.float64)
        var = np.asarray(param.get("running_var", np.ones(x.shape[1])), dtype=np.float64)
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * inv_std
    train = param.get("mode", "train") == "train"
    return gamma * xhat + beta, (x, xhat, gamma, mean, inv_std, train)


def batchnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """``dx = inv_std / N * (N dxhat - sum dxhat - xhat sum(dxhat xhat))`` with ``dxhat = gamma dout``."""
    _, xhat, gamma, _, inv_std, train = cache
    dxhat = dout * gamma
    if train:
        n = dout.shape[0]
        dx = inv_std / n * (n * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))
    else:
        dx = dxhat * inv_std  # fixed statistics: x enters only through x - mean
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def batchnorm_backward_no_mean_path(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """dx = gamma dout / std: the batch mean and variance treated as constants."""
    _, dgamma, dbeta = batchnorm_backward(dout, cache)
    _, _, gamma, _, inv_std, _ = cache
    return dout * gamma * inv_std, dgamma, dbeta


def batchnorm_backward_missing_1_over_n(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """dx = inv_std (N dxhat - sum dxhat - xhat sum(dxhat xhat)): the leading 1/N forgotten."""
    dx, dgamma, dbeta = batchnorm_backward(dout, cache)
    return dx * dout.shape[0], dgamma, dbeta


def batchnorm_backward_dvar_sign(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """The staged backward (CS231n's computational graph) with d(var+eps)^(-1/2)/dvar = +1/2 (var+eps)^(-3/2)."""
    x, xhat, gamma, mean, inv_std, _ = cache
    n = dout.shape[0]
    dxhat = dout * gamma
    centred = x - mean
    dvar = np.sum(dxhat * centred, axis=0) * 0.5 * inv_std ** 3  # the right factor is -0.5
    dmean = -np.sum(dxhat, axis=0) * inv_std + dvar * np.mean(-2.0 * centred, axis=0)
    dx = dxhat * inv_std + dvar * 2.0 * centred / n + dmean / n
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


# ---------------------------------------------------------------------------------------
# layernorm: x (..., D) normalised per sample over its last axis; gamma, beta (D,)


def layernorm_forward(x: Array, gamma: Array, beta: Array, ln_param: Mapping[str, Any]) -> tuple[Array, Cache]:
    """``out = gamma * (x - mean_d x) / sqrt(var_d x + eps) + beta``, statistics over the last axis."""
    _require(x.ndim >= 1 and gamma.shape == beta.shape == x.shape[-1:], "layernorm",
             "x (..., D), gamma (D,) and beta (D,)", {"gamma": x.shape[-1:], "beta": x.shape[-1:]},
             x=x, gamma=gamma, beta=beta)
    eps = float(dict(ln_param).get("eps", 1e-5))
    mean = x.mean(axis=-1, keepdims=True)
    inv_std = 1.0 / np.sqrt(_variance(x - mean, axis=-1, keepdims=True) + eps)
    xhat = (x - mean) * inv_std
    return gamma * xhat + beta, (xhat, gamma, inv_std)


def _layernorm_params(dout: Array, xhat: Array) -> tuple[Array, Array]:
    lead = tuple(range(dout.ndim - 1))
    return (dout * xhat).sum(axis=lead), dout.sum(axis=lead)


def layernorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Batchnorm's dx with the sums over the last axis: ``inv_std / D * (D dxhat - sum_d dxhat - xhat sum_d(...))``."""
    xhat, gamma, inv_std = cache
    d = dout.shape[-1]
    dxhat = dout * gamma
    dx = inv_std / d * (d * dxhat - dxhat.sum(axis=-1, keepdims=True)
                        - xhat * (dxhat * xhat).sum(axis=-1, keepdims=True))
    return (dx, *_layernorm_params(dout, xhat))


def layernorm_backward_batch_axis(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Batchnorm's backward pasted unchanged: sums over the batch axis and 1/N where the features' belong."""
    xhat, gamma, inv_std = cache
    flat = dout.reshape(-1, dout.shape[-1])
    dxhat = (flat * gamma).reshape(dout.shape)
    xh = xhat.reshape(flat.shape)
    dxh = dxhat.reshape(flat.shape)
    n = flat.shape[0]
    dx = inv_std.reshape(-1, 1) / n * (n * dxh - dxh.sum(axis=0) - xh * (dxh * xh).sum(axis=0))
    return (dx.reshape(dout.shape), *_layernorm_params(dout, xhat))


# ---------------------------------------------------------------------------------------
# dropout (inverted): p is the probability of KEEPING a unit, as in CS231n


def dropout_forward(x: Array, dropout_param: Mapping[str, Any]) -> tuple[Array, Cache]:
    """Train: ``out = x * mask``, ``mask = (rand < p) / p`` from numpy's global random state; test: ``out = x``."""
    param = dict(dropout_param)
    p = float(param.get("p", 0.5))
    if param.get("mode", "train") == "train":
        mask = (np.random.rand(*x.shape) < p) / p
    else:
        mask = np.ones_like(x)
    return x * mask, (mask, p)


def dropout_backward(dout: Array, cache: Cache) -> Array:
    """``dx = dout * mask``: the kept units, scaled by 1/p like the forward."""
    mask, _ = cache
    return dout * mask


def dropout_backward_no_rescale(dout: Array, cache: Cache) -> Array:
    """dx = dout on the kept units: the forward's 1/p scale is forgotten."""
    mask, _ = cache
    return dout * (mask != 0)


# ---------------------------------------------------------------------------------------
# Registration

DENSE_ARGS = {"x": (4, 5), "w": (5, 3), "b": (3,)}  # w not square, so a transposed dw has the wrong shape
CONV_ARGS = {"x": (2, 3, 6, 6), "w": (4, 3, 3, 3), "b": (4,)}
CONV_KWARGS = {"conv_param": {"stride": 2, "pad": 1}}
POOL_KWARGS = {"pool_param": {"pool_height": 2, "pool_width": 2, "stride": 2}}
BN_ARGS = {"x": (6, 4), "gamma": (4,), "beta": (4,)}
BN_KWARGS = {"bn_param": {"mode": "train", "eps": 1e-5}}
LN_ARGS = {"x": (4, 6), "gamma": (6,), "beta": (6,)}
LN_KWARGS = {"ln_param": {"eps": 1e-5}}
DROPOUT_KWARGS = {"dropout_param": {"p": 0.5, "mode": "train"}}

DENSE_FIX = "dw = x^T dout (x read as (N, D)): the shape of w, (D, M)"
CONV_FIX = ("scatter dout * w back onto each window of the padded x (col2im), then crop: "
            "dx = dx_pad[:, :, pad:H+pad, pad:W+pad]")
BN_FIX = "dx = inv_std / N * (N dxhat - sum_n dxhat - xhat * sum_n(dxhat xhat)), dxhat = gamma dout"

register_layer("dense", affine_forward, backward=affine_backward, args=DENSE_ARGS,
               formula="out = x w + b; dx = dout w^T, dw = x^T dout, db = sum_n dout")
register_layer("dense@transposed_dw", affine_forward, backward=affine_backward_transposed_dw, args=DENSE_ARGS,
               formula="dw = dout^T x",
               mistake="dw = dout^T x is the transpose of the gradient: shape (M, D) for w's (D, M) "
                       "(with a square w the shape fits and the values are transposed)",
               fix=DENSE_FIX)

register_layer("conv2d", conv_forward, backward=conv_backward, args=CONV_ARGS, kwargs=CONV_KWARGS,
               formula="out[n,f,h,w] = sum_c,i,j w[f,c,i,j] xpad[n,c,s h+i,s w+j] + b[f]; "
                       "dw = sum dout * windows; db = sum_n,h,w dout; dx = col2im(dout w) cropped by pad")
register_layer("conv2d@no_crop", conv_forward, backward=conv_backward_no_crop, args=CONV_ARGS, kwargs=CONV_KWARGS,
               formula="dx = col2im(dout w) on the padded input",
               mistake="dx is returned for the zero-padded input, (H + 2 pad, W + 2 pad): the pad border, "
                       "which is not an input, is never cropped off",
               fix=CONV_FIX)
register_layer("conv2d@unrotated_kernel", conv_forward, backward=conv_backward_unrotated_kernel, args=CONV_ARGS,
               kwargs=CONV_KWARGS, formula="dx = full_conv(dout, w)",
               mistake="dx convolves dout with the kernel as it is; the forward is a cross-correlation, so its "
                       "transpose as a convolution needs the kernel rotated by 180 degrees",
               fix="dx = full_conv(dout, w[:, :, ::-1, ::-1]), or " + CONV_FIX)

register_layer("maxpool2d", max_pool_forward, backward=max_pool_backward, args={"x": (2, 3, 6, 6)},
               kwargs=POOL_KWARGS,
               formula="out = max of each window; dx = dout at each window's maximum, 0 elsewhere")
register_layer("maxpool2d@every_position", max_pool_forward, backward=max_pool_backward_every_position,
               args={"x": (2, 3, 6, 6)}, kwargs=POOL_KWARGS, formula="dx[window] += dout",
               mistake="each window's dout goes to every position of the window (average pooling's routing, "
                       "without even its 1/k) instead of only to the maximum",
               fix="dx[argmax of the window] += dout; 0 at every other position of the window")

register_layer("batchnorm", batchnorm_forward, backward=batchnorm_backward, args=BN_ARGS, kwargs=BN_KWARGS,
               formula="xhat = (x - mean_n x) / sqrt(var_n x + eps), out = gamma xhat + beta; " + BN_FIX
                       + "; dgamma = sum_n dout xhat, dbeta = sum_n dout")
register_layer("batchnorm@no_mean_path", batchnorm_forward, backward=batchnorm_backward_no_mean_path,
               args=BN_ARGS, kwargs=BN_KWARGS, formula="dx = gamma dout / sqrt(var + eps)",
               mistake="the batch mean and variance depend on x too: dx keeps only the direct path and drops "
                       "the two through the mean and the variance",
               fix=BN_FIX)
register_layer("batchnorm@missing_1_over_n", batchnorm_forward, backward=batchnorm_backward_missing_1_over_n,
               args=BN_ARGS, kwargs=BN_KWARGS,
               formula="dx = inv_std * (N dxhat - sum_n dxhat - xhat * sum_n(dxhat xhat))",
               mistake="the 1/N in front of dx is missing: every entry of dx is N times too large",
               fix=BN_FIX)
register_layer("batchnorm@dvar_sign", batchnorm_forward, backward=batchnorm_backward_dvar_sign,
               args=BN_ARGS, kwargs=BN_KWARGS,
               formula="dvar = +1/2 sum_n(dxhat (x - mean)) (var + eps)^(-3/2)",
               mistake="d/dvar (var + eps)^(-1/2) is written +1/2 (var + eps)^(-3/2): the variance path's "
                       "sign is flipped",
               fix="dvar = -1/2 sum_n(dxhat (x - mean)) (var + eps)^(-3/2)")

register_layer("layernorm", layernorm_forward, backward=layernorm_backward, args=LN_ARGS, kwargs=LN_KWARGS,
               formula="xhat = (x - mean_d x) / sqrt(var_d x + eps) over the last axis, out = gamma xhat + beta; "
                       "dx = inv_std / D * (D dxhat - sum_d dxhat - xhat * sum_d(dxhat xhat)); "
                       "dgamma = sum_n dout xhat")
register_layer("layernorm@batch_axis", layernorm_forward, backward=layernorm_backward_batch_axis,
               args=LN_ARGS, kwargs=LN_KWARGS,
               formula="dx = inv_std / N * (N dxhat - sum_n dxhat - xhat * sum_n(dxhat xhat))",
               mistake="batchnorm's backward pasted unchanged: its sums and its 1/N run over the batch axis, "
                       "while the forward's statistics are over the features (the last axis)",
               fix="sum over axis=-1 with keepdims and divide by D, the axis the forward normalised")

register_layer("dropout", dropout_forward, backward=dropout_backward, args={"x": (4, 10)}, kwargs=DROPOUT_KWARGS,
               stochastic=True,
               formula="mask = (rand < p) / p, p = keep probability; out = x mask; dx = dout mask")
register_layer("dropout@no_rescale", dropout_forward, backward=dropout_backward_no_rescale, args={"x": (4, 10)},
               kwargs=DROPOUT_KWARGS, stochastic=True, formula="dx = dout (rand < p)",
               mistake="the forward scales the kept units by 1/p, the backward forgets it: dx is p times too small",
               fix="dx = dout * mask, the forward's mask with its 1/p")

# Everything in this module is pure numpy: its functions may run on several threads at once.
mark_module_threadsafe(globals())
