"""Turn each derivative convention into a dense analytic Jacobian over the flat batch.

Whatever form a derivative is handed in (elementwise ``derivative``, ``jacobian`` blocks,
``vjp`` or ``jvp`` products, a loss ``gradient``), it becomes the matrix
``A[m, n] = d out_flat[m] / d in_flat[n]`` over the whole ``(B, K)`` batch, so the
comparison sees every entry, including ones between different rows of the batch.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gradcheck_cli import parallel
from gradcheck_cli.floating import same_values
from gradcheck_cli.harness import user_code
from gradcheck_cli.registry import FunctionSpec, is_threadsafe, table

Array = NDArray[np.float64]

ELEMENTWISE = table.ELEMENTWISE
# The dtype user code is called in (--dtype); set for the duration of a check by `in_dtype`.
_DTYPE: list[Any] = [np.float64]
# numpy warnings raised inside analytic derivatives since the caller last cleared it.
FP_WARNINGS: list[str] = []


@contextlib.contextmanager
def in_dtype(dtype: str) -> Iterator[None]:
    """Call analytic derivatives with float inputs cast to ``dtype`` inside the block."""
    _DTYPE.insert(0, np.dtype(dtype))
    try:
        yield
    finally:
        _DTYPE.pop(0)


class ConventionError(Exception):
    """The analytic derivative raised or returned the wrong shape; message is user-facing."""


def _call(name: str, fn: Callable[..., Any], *args: Array, probe: bool = False, fresh: bool = False,
          quiet: bool = False, repeat: bool = True, large: bool = False) -> Array:
    """Call user code on copies of ``args`` (in the checked dtype); with ``probe``, also
    require that it leaves its inputs alone and (unless not ``repeat``: the caller checks
    that itself) gives the same result twice. ``fresh`` arguments are temporaries nobody
    reads again: they are handed over without a copy. ``quiet`` ignores floating-point
    warnings instead of recording them (the warnings machinery is process-wide, so calls on
    worker threads must not touch it). A ``large`` result of threadsafe code has its repeat
    call run on the pool, beside the first."""
    args = tuple(a.astype(_DTYPE[0], copy=False) if a.dtype.kind == "f" else a for a in args)
    copies = list(args) if fresh and not probe else [a.copy() for a in args]
    second = parallel.background(functools.partial(_quietly, fn, *(a.copy() for a in args)),
                                 large and is_threadsafe(fn)) if probe and repeat else None
    with user_code(name, ConventionError, None if quiet else FP_WARNINGS, keep=(ConventionError,)):
        out = fn(*copies)
        if probe:
            _unchanged(name, args, copies)
        again = second() if second is not None else out
    arr = np.asarray(out)
    if arr.dtype.kind not in "fiub":
        raise ConventionError(f"{name} returned {type(out).__name__} of dtype {arr.dtype}, expected a float array")
    if probe and repeat and not same_values(arr, again):
        raise _not_deterministic(name)
    return arr.astype(np.float64, copy=False)


def _quietly(fn: Callable[..., Any], *args: Array) -> Array:
    """``fn(*args)`` as an array, numpy's warnings ignored (the first call records them)."""
    with np.errstate(all="ignore"):
        return np.asarray(fn(*args))


def _not_deterministic(name: str) -> ConventionError:
    return ConventionError(
        f"{name} is not deterministic: two calls with the same input gave different results "
        f"(it draws random numbers or keeps state between calls); a derivative must be a "
        f"function of its arguments")


def _unchanged(name: str, originals: tuple[Array, ...], copies: list[Array]) -> None:
    for position, (orig, seen) in enumerate(zip(originals, copies, strict=True)):
        if not same_values(orig, seen):
            idx = tuple(int(i) for i in np.argwhere(~np.isclose(orig, seen, equal_nan=True))[0])
            raise ConventionError(
                f"{name} changes its input in place: argument {position} at {list(idx)} was "
                f"{orig[idx]:.6g} before the call and {seen[idx]:.6g} after; callers' arrays would "
                f"be corrupted. Work on a copy (x = x.copy()) or use out-of-place operations")


def _expect_shape(name: str, arr: Array, shape: tuple[int, ...], meaning: str) -> Array:
    if arr.shape == shape:
        return arr
    if arr.size == int(np.prod(shape)) and arr.ndim <= 1 and len(shape) == 2 and shape[0] == 1:
        return arr.reshape(shape)
    raise ConventionError(
        f"{name} returned shape {arr.shape}, expected {shape} ({meaning})"
    )


def call_checked(name: str, fn: Callable[..., Any], args: tuple[Array, ...], shape: tuple[int, ...],
                 meaning: str, quiet: bool = False) -> Array:
    """Call user code ``fn(*args)`` and require an array of ``shape`` (``quiet``: see ``_call``)."""
    return _expect_shape(name, _call(name, fn, *args, quiet=quiet), shape, meaning)


def _block_diagonal(blocks: Array) -> Array:
    b, m, n = blocks.shape
    out = np.zeros((b * m, b * n))
    for i in range(b):
        out[i * m:(i + 1) * m, i * n:(i + 1) * n] = blocks[i]
    return out


def analytic_jacobian(spec: FunctionSpec, convention: str, x: Array, y: Array | None = None,
                      fed: Array | None = None) -> Array:
    """The analytic Jacobian of activation ``spec`` at ``x`` from ``convention``.

    ``y`` is ``forward(x)`` when already known. ``fed`` replaces the argument handed to the
    derivative (diagnosis uses it to ask "would this be right if fed f(x)?").
    """
    fn = spec.derivatives[convention]
    if y is None:
        y = _call("forward", spec.forward, x)
    arg = x if fed is None else fed
    m = y.size
    if convention == "derivative":
        d = _expect_shape("derivative(x)", _call("derivative(x)", fn, arg, probe=True), x.shape, "like x")
        return np.diag(d.ravel()) if m == x.size else _shape_mismatch(y, x)
    if convention == "derivative_of_output":
        arg = y if fed is None else fed
        d = _expect_shape("derivative_of_output(y)", _call("derivative_of_output(y)", fn, arg, probe=True),
                          y.shape, "like y = forward(x)")
        return np.diag(d.ravel()) if m == x.size else _shape_mismatch(y, x)
    if convention == "jacobian":
        return _block_diagonal(_jacobian_blocks(fn, arg, x, y))
    if convention in ("vjp", "backward"):
        name = "vjp(x, g)" if convention == "vjp" else "forward(x) then backward(g)"
        rows = np.empty((m, x.size))
        for i in range(m):
            g = np.zeros(m)
            g[i] = 1.0
            out = _call(name, fn, arg, g.reshape(y.shape), probe=i == 0)
            rows[i] = _expect_shape(name, out, x.shape, "J^T g, like x").ravel()
        return rows
    if convention == "jvp":
        cols = np.empty((m, x.size))
        for j in range(x.size):
            v = np.zeros(x.size)
            v[j] = 1.0
            out = _call("jvp(x, v)", fn, arg, v.reshape(x.shape), probe=j == 0)
            cols[:, j] = _expect_shape("jvp(x, v)", out, y.shape, "J v, like y").ravel()
        return cols
    raise ConventionError(f"convention '{convention}' is not supported for this check yet")


def _jacobian_blocks(fn: Callable[..., Any], arg: Array, x: Array, y: Array) -> Array:
    """A ``jacobian`` convention's blocks (B, K_out, K), probed; (K_out, K) is accepted for one row."""
    b, k = x.shape
    k_out = y.shape[-1]
    jac = _call("jacobian(x)", fn, arg, probe=True, large=x.size * k_out >= parallel.BESIDE_SIZE)
    if jac.shape == (k_out, k) and b == 1:
        jac = jac[None]
    return _expect_shape("jacobian(x)", jac, (b, k_out, k), "J[b, i, j] = dy[b, i] / dx[b, j]")


def _shape_mismatch(y: Array, x: Array) -> Array:
    raise ConventionError(
        f"an elementwise derivative needs forward(x) shaped like x, but forward returned "
        f"{y.shape} for x of shape {x.shape}; use jacobian or vjp instead"
    )


def analytic_gradient(spec: FunctionSpec, pred: Array, target: Array) -> Array:
    """The analytic gradient of loss ``spec`` at ``(pred, target)``, as a (1, N) row."""
    fn = spec.derivatives["gradient"]
    g = _expect_shape("gradient(pred, target)", _call("gradient(pred, target)", fn, pred, target, probe=True),
                      pred.shape, "dL/dpred, like pred")
    return g.reshape(1, -1)


def analytic_vjp(spec: FunctionSpec, convention: str, x: Array, g: Array,
                 y: Array | None = None) -> Array:
    """``J^T g`` the way a backward pass would compute it with ``convention``.

    ``vjp`` is called directly and elementwise derivatives multiply ``g`` in, as user code
    does, so a derivative that is only right for basis vectors still shows up.
    """
    if y is None:
        y = _call("forward", spec.forward, x)
    fn = spec.derivatives[convention]
    if convention in ("vjp", "backward"):
        return _expect_shape(convention, _call(convention, fn, x, g), x.shape, "J^T g, like x")
    if convention in ELEMENTWISE:
        arg = x if convention == "derivative" else y
        d = _expect_shape(f"{convention}", _call(convention, fn, arg), x.shape, "like x")
        return d * g
    if convention == "jacobian" and y.ndim == 2 and y.shape[0] == x.shape[0]:
        # Per-row blocks, multiplied row by row: the block-diagonal matrix of a (64, 300)
        # batch would take 2.9 GB.
        _, blocks = analytic_form(spec, convention, x, y, "rowwise")
        b = x.shape[0]
        out: Array = np.einsum("bij,bi->bj", blocks.reshape(b, -1, x.shape[1]), g.reshape(b, -1))
        return out
    jac = analytic_jacobian(spec, convention, x, y)
    return (jac.T @ g.ravel()).reshape(x.shape)


def analytic_second(spec: FunctionSpec, x: Array) -> Array:
    """The elementwise second derivative ``derivative2(x)`` as a (1, N) row."""
    fn = spec.second["derivative2"]
    d2 = _expect_shape("derivative2(x)", _call("derivative2(x)", fn, x, probe=True), x.shape, "f''(x), like x")
    return d2.reshape(1, -1)


def analytic_form(spec: FunctionSpec, convention: str, x: Array, y: Array, structure: str,
                  fed: Array | None = None) -> tuple[str, Array]:
    """The analytic Jacobian in the cheapest form: ``diagonal``, ``blocks`` or ``dense``.

    Elementwise conventions give the diagonal; ``jacobian`` gives blocks. A ``vjp``,
    ``backward`` or ``jvp`` on a row-wise function is read with one basis vector per
    column, placed in every batch row at once (K calls instead of B*K), and accepted
    only if a random upstream vector agrees with it; otherwise (a derivative that mixes
    rows of the batch) the full dense matrix is built so that the leak can be shown.
    """
    b, k = x.shape
    if convention in ELEMENTWISE and y.shape == x.shape:
        arg = (x if convention == "derivative" else y) if fed is None else fed
        name = f"{convention}({'x' if convention == 'derivative' else 'y'})"
        d = _expect_shape(name, _call(name, spec.derivatives[convention], arg, probe=True), x.shape, "like x")
        return "diagonal", d
    if convention == "jacobian" and y.ndim == 2 and y.shape[0] == b:
        jac = _jacobian_blocks(spec.derivatives["jacobian"], x if fed is None else fed, x, y)
        return "blocks", jac.reshape(b * y.shape[1], k)
    if convention in ("vjp", "backward", "jvp") and structure != "general" and y.ndim == 2 and y.shape[0] == b:
        blocks = _rowwise_products(spec, convention, x, y, fed)
        if blocks is not None:
            return "blocks", blocks
    return "dense", analytic_jacobian(spec, convention, x, y, fed)


STACK_CHUNK = 256


def stack_argument(name: str, fn: Callable[..., Any], arg: Array, bases: Array,
                   singles: list[Array]) -> Callable[[int], Array] | None:
    """How ``fn`` takes a stack of vectors, judged on ``bases`` against the single calls.

    Returns a function giving the x argument for a stack of ``count`` vectors: x with a
    leading axis of 1 when the code broadcasts one x against many vectors (softmax computed
    once, not once per vector), else one copy of x per vector; None when neither gives the
    single calls' numbers.
    """
    if _broadcasts(name, fn, arg[None].copy(), bases, singles):
        return lambda count: arg[None].copy()
    if _broadcasts(name, fn, np.stack([arg] * len(singles)), bases, singles):
        return lambda count: np.broadcast_to(arg, (count, *arg.shape)).copy()
    return None


def _broadcasts(name: str, fn: Callable[..., Any], arg: Array, bases: Array, singles: list[Array]) -> bool:
    """Does ``fn`` accept a leading stack axis and give the same numbers as one call per item?"""
    if len(singles) < 2:
        return False
    try:
        stacked = _call(name, fn, arg, bases, fresh=True)
    except ConventionError:
        return False
    expected = np.stack(singles)
    if stacked.shape != expected.shape:
        return False
    size = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
    return bool(np.all(np.abs(stacked - expected) <= 1e-12 * size))


def _rowwise_products(spec: FunctionSpec, convention: str, x: Array, y: Array,
                      fed: Array | None) -> Array | None:
    b, k = x.shape
    k_out = y.shape[1]
    fn = spec.derivatives[convention]
    arg = x if fed is None else fed
    blocks = np.empty((b, k_out, k))
    name = {"jvp": "jvp(x, v)", "vjp": "vjp(x, g)"}.get(convention, "forward(x) then backward(g)")
    count = k if convention == "jvp" else k_out
    width = k if convention == "jvp" else k_out
    out_shape, meaning = (y.shape, "J v, like y") if convention == "jvp" else (x.shape, "J^T g, like x")

    def basis(columns: range) -> Array:
        stack = np.zeros((len(columns), b, width))
        stack[np.arange(len(columns)), :, np.array(columns)] = 1.0
        return stack

    def store(i: int, out: Array) -> None:
        if convention == "jvp":
            blocks[:, :, i] = out
        else:
            blocks[:, i, :] = out

    first = [_expect_shape(name, _call(name, fn, arg, basis(range(i, i + 1))[0], probe=i == 0), out_shape, meaning)
             for i in range(min(2, count))]
    for i, out in enumerate(first):
        store(i, out)
    stacked = stack_argument(name, fn, arg, basis(range(min(2, count))), first)

    def stacked_products(columns: range, quiet: bool) -> None:
        assert stacked is not None
        outs = _expect_shape(name, _call(name, fn, stacked(len(columns)), basis(columns), fresh=True, quiet=quiet),
                             (len(columns), *out_shape), f"a stack of {len(columns)} products, as it gave for 2")
        if convention == "jvp":
            blocks[:, :, columns.start:columns.stop] = outs.transpose(1, 2, 0)
        else:
            blocks[:, columns.start:columns.stop, :] = outs.transpose(1, 0, 2)

    rest = [range(s, min(count, s + STACK_CHUNK)) for s in range(len(first), count, STACK_CHUNK)]
    if stacked is not None:
        threaded = is_threadsafe(fn) and len(rest) > 1
        parallel.run_all([functools.partial(stacked_products, c, threaded) for c in rest], threaded)
        # A finite sum means every entry is finite (one pass, no temporary); else look closer.
        if threaded and not np.isfinite(np.sum(blocks)) and not np.all(np.isfinite(blocks)):
            for columns in rest:  # again, one by one, to record numpy's warnings for the report
                stacked_products(columns, False)
    else:
        for i in range(len(first), count):
            store(i, _expect_shape(name, _call(name, fn, arg, basis(range(i, i + 1))[0]), out_shape, meaning))
    if b == 1:  # one row: the blocks are the dense Jacobian, built from the same basis vectors
        return blocks.reshape(k_out, k)
    # One random vector must agree with the blocks, or rows of the batch interact.
    probe = np.random.default_rng(5).normal(size=(b, k if convention == "jvp" else k_out))
    got = _call(name, fn, arg, probe)
    expected = (np.einsum("bij,bj->bi", blocks, probe) if convention == "jvp"
                else np.einsum("bij,bi->bj", blocks, probe))
    scale = np.einsum("bij,bj->bi", np.abs(blocks), np.abs(probe)) if convention == "jvp" else \
        np.einsum("bij,bi->bj", np.abs(blocks), np.abs(probe))
    if got.shape != expected.shape or not np.all(np.abs(got - expected) <= 1e-10 * (scale + np.abs(expected)) + 1e-300):
        return None
    return blocks.reshape(b * k_out, k)


def analytic_projections(spec: FunctionSpec, convention: str, x: Array, y: Array, u: Array,
                         d: Array) -> Array:
    """u_k^T J d_k for each projection k, from the analytic derivative, without forming J.

    The first product is probed (in-place changes, determinism). A ``vjp`` or ``jvp`` then
    gets all vectors in one call when it broadcasts one x against a stack of them (the
    stack's first product must equal the probed one bit for bit); otherwise the products
    run one by one, on threads when the derivative is marked threadsafe.
    """
    fn = spec.derivatives[convention]
    if convention in ("vjp", "backward", "jvp"):
        name, out_shape, meaning = ((convention, x.shape, "J^T g, like x") if convention != "jvp"
                                    else ("jvp(x, v)", y.shape, "J v, like y"))
        vectors = u.reshape(len(u), *y.shape) if convention != "jvp" else d.reshape(len(d), *x.shape)
        other = d.reshape(len(d), -1) if convention != "jvp" else u.reshape(len(u), -1)

        def product(k: int, probe: bool = False, quiet: bool = False, repeat: bool = True) -> Array:
            return _expect_shape(name, _call(name, fn, x, vectors[k], probe=probe, quiet=quiet, repeat=repeat),
                                 out_shape, meaning)

        # A stack that reproduces the first product bit for bit also shows it repeats; for
        # threadsafe code the stack is computed beside the probed first product.
        stackable = convention != "backward" and len(u) > 1
        stack = parallel.background(functools.partial(_stacked, name, fn, x, vectors), is_threadsafe(fn)) \
            if stackable else None
        first = product(0, probe=True, repeat=not stackable)
        outs = _accept_stack(stack(), first, len(u)) if stack is not None else None
        if outs is None and stackable and not same_values(product(0), first):
            raise _not_deterministic(name)
        if outs is None:
            threaded = is_threadsafe(fn) and len(u) > 2
            rest = parallel.run_all([functools.partial(product, k, False, threaded) for k in range(1, len(u))],
                                    threaded)
            if threaded and not all(np.all(np.isfinite(r)) for r in rest):
                rest = [product(k) for k in range(1, len(u))]  # again, to record numpy's warnings
            outs = np.stack([first, *rest])
        values: Array = np.einsum("ij,ij->i", outs.reshape(len(u), -1), other)
        return values
    out = np.empty(len(u))
    for k in range(len(u)):
        uk, dk = u[k].reshape(y.shape), d[k].reshape(x.shape)
        if convention in ELEMENTWISE:
            arg = x if convention == "derivative" else y
            deriv = _expect_shape(convention, _call(convention, fn, arg, probe=k == 0), x.shape, "like x")
            out[k] = float(np.sum(uk * deriv * dk))
        else:
            out[k] = float(uk.ravel() @ (analytic_jacobian(spec, convention, x, y) @ dk.ravel()))
    return out


def _stacked(name: str, fn: Callable[..., Any], x: Array, vectors: Array) -> Array | None:
    """``fn(x, vectors[k])`` for every k from one call on the stack with x shared (quietly:
    it may run on a worker thread), or None when ``fn`` does not take it."""
    try:
        return _call(name, fn, x[None], vectors, fresh=True, quiet=True)
    except ConventionError:
        return None


def _accept_stack(outs: Array | None, first: Array, count: int) -> Array | None:
    """The stacked products, if their first one equals the probed single call bit for bit."""
    if outs is None or outs.shape != (count, *first.shape) or not same_values(outs[0], first):
        return None
    return outs
