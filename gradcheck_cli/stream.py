"""Every-entry checks of Jacobians too large to hold: compared column chunk by column chunk.

Above STREAM_LIMIT entries (a softmax at n = 10,000 has 1e8), the numerical Jacobian is
estimated for a chunk of input columns at a time (the full stencil, with its error
bounds), the analytic entries of the same columns are built next to it (a JVP gives
columns directly; a VJP gives rows, so all rows are recomputed per chunk, restricted to
the chunk's columns; an elementwise derivative is its diagonal), the chunk is compared,
and only running maxima and the worst entries are kept. Peak memory stays at a few
chunk-sized arrays (~250 MB at n = 10,000) instead of several dense copies.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gradcheck_cli import conventions, numdiff, parallel
from gradcheck_cli.compare import Comparison, Entry, Tolerance, compare, recompare
from gradcheck_cli.numdiff import Evaluator
from gradcheck_cli.registry import FunctionSpec, is_threadsafe, table
from gradcheck_cli.structure import ELEMENTWISE, GENERAL, ROWWISE, Pattern

Array = NDArray[np.float64]

STREAM_LIMIT = 40_000_000  # Jacobian entries (B*K_out x K blocks, or dense M x N)
CHUNK_BYTES = 32_000_000  # one (M x columns) float64 array per chunk
STREAMABLE = table.STREAMABLE


@dataclass
class Streamed:
    """Aggregated comparison of a streamed Jacobian, in blocks (row-wise) or dense indices."""

    comparison: Comparison
    structure: str


def needed(b: int, k: int, k_out: int, convention: str) -> bool:
    """Is this check too large to compare in one piece, and can it be streamed?"""
    return convention in STREAMABLE and b * k_out * k > STREAM_LIMIT


def compare_streamed(spec: FunctionSpec, convention: str, x: Array, evaluator: Evaluator, scale: Array,
                     method: str, tolerance: Tolerance, structure: str) -> Streamed:
    """Compare analytic and numeric Jacobians of ``spec`` at ``x`` chunk by chunk."""
    b, k = x.shape
    y = evaluator.y0
    m = int(y.size)
    kind = GENERAL if structure == ELEMENTWISE else structure
    n_groups = k if kind == ROWWISE else b * k
    pattern = Pattern(kind, (b, k), m)
    stencil = numdiff.METHODS["central" if method == "complex" else method]
    assert isinstance(stencil, numdiff._Stencil)
    width = max(1, CHUNK_BYTES // (8 * m))
    analytic_columns = _analytic_columns(spec, convention, x, y, kind)
    total: Comparison | None = None
    for start in range(0, n_groups, width):
        groups = np.arange(start, min(n_groups, start + width))
        analytic = analytic_columns(groups)  # (M, len(groups)), column g = group g's entries
        # The two-pass check of the in-memory path: f(x +- h) with the rounding bound first,
        # the full stencil (truncation bound too) only for the columns that fail it.
        quick = isinstance(stencil, numdiff.Central)
        value, error, _ = stencil.groups(evaluator, x, scale, pattern, quick=quick, subset=groups)
        part = compare(analytic, value, error, tolerance)
        if quick and not part.passed:
            failing = part.failing_columns()
            v, e, _ = stencil.groups(evaluator, x, scale, pattern, subset=groups[failing])
            value[:, failing], error[:, failing] = v, e
            part = recompare(part, analytic, value, error, failing, tolerance)
        part = _shift(part, start)
        total = part if total is None else _merge(total, part)
    assert total is not None
    return Streamed(total, kind)


def projection_agrees(spec: FunctionSpec, convention: str, x: Array, evaluator: Evaluator, scale: Array,
                      tolerance: Tolerance) -> tuple[bool, str]:
    """One random u^T J d from the analytic derivative against the numerical one.

    Streaming compares the entries the structure says exist; a derivative that also
    couples batch rows (entries the structure says are zero) shows up here instead.
    """
    u, d, values, errors = numdiff.projections(evaluator, x, scale, 1, 7)
    analytic = conventions.analytic_projections(spec, convention, x, evaluator.y0, u, d)
    part = compare(analytic[None, :], values[None, :], errors[None, :], tolerance)
    if part.passed:
        return True, ""
    return False, (f"a random projection u^T J d is {analytic[0]:.6g} from the analytic derivative but "
                   f"{values[0]:.6g} numerically, although every entry of the row-wise blocks matches: "
                   f"the derivative couples rows of the batch (check a smaller --shape to see where)")


def _analytic_columns(spec: FunctionSpec, convention: str, x: Array, y: Array,
                      kind: str) -> Callable[[NDArray[np.intp]], Array]:
    """For a set of groups, the analytic entries they own, as an (M, groups) matrix.

    A group is column j of every row (row-wise: entries dy[b, :]/dx[b, j]) or one input
    coordinate (general: a column of the dense Jacobian).
    """
    b, k = x.shape
    m = y.size
    k_out = m // b
    fn = spec.derivatives[convention]
    if convention in ("derivative", "derivative_of_output"):
        arg = x if convention == "derivative" else y
        diag = conventions.call_checked(convention, fn, (arg,), x.shape, "like x")

        def elementwise(groups: NDArray[np.intp]) -> Array:
            out = np.zeros((m, groups.size))
            if kind == ROWWISE:
                for c, j in enumerate(groups):
                    out[np.arange(b) * k_out + j, c] = diag[:, j]
            else:
                out[groups, np.arange(groups.size)] = diag.ravel()[groups]
            return out

        return elementwise

    if convention == "jvp":
        def jvp_columns(groups: NDArray[np.intp]) -> Array:
            out = np.empty((m, groups.size))
            for c, g in enumerate(groups):
                v = np.zeros(x.shape)
                if kind == ROWWISE:
                    v[:, g] = 1.0
                else:
                    v.ravel()[g] = 1.0
                out[:, c] = conventions.call_checked("jvp(x, v)", fn, (x, v), y.shape, "J v, like y").ravel()
            return out

        return jvp_columns

    return _vjp_columns(spec, convention, x, y, kind)


def _vjp_columns(spec: FunctionSpec, convention: str, x: Array, y: Array,
                 kind: str) -> Callable[[NDArray[np.intp]], Array]:
    """VJP entries of a set of groups: VJP gives rows, so every row again, cut to the groups."""
    b, k = x.shape
    m = y.size
    k_out = m // b
    fn = spec.derivatives[convention]
    name = "vjp(x, g)" if convention == "vjp" else "forward(x) then backward(g)"

    def basis(rows: range) -> Array:
        stack = np.zeros((len(rows), b, k_out))
        stack[np.arange(len(rows)), :, np.array(rows)] = 1.0
        return stack

    singles = [conventions.call_checked(name, fn, (x, basis(range(i, i + 1))[0]), x.shape, "J^T g, like x")
               for i in range(min(2, k_out))] if kind == ROWWISE else []
    stacked = conventions.stack_argument(name, fn, x, basis(range(len(singles))), singles) if singles else None
    threaded = stacked is not None and is_threadsafe(fn)

    def vjp_columns(groups: NDArray[np.intp]) -> Array:
        # VJP gives rows: every row again (stacked when the VJP broadcasts), restricted to these columns.
        out = np.empty((m, groups.size))
        if kind == ROWWISE:
            # A stack of vectors (and its result, and the code's temporaries) is rows x B x K:
            # at most about one chunk's bytes, or a softmax at K = 1e6 stacks 256 copies (2 GB each).
            step = max(1, min(conventions.STACK_CHUNK, CHUNK_BYTES // (8 * b * max(k, k_out)))) \
                if stacked is not None else 1

            def rows_of(i0: int) -> None:
                rows = range(i0, min(k_out, i0 + step))
                if stacked is not None:
                    outs = conventions.call_checked(name, fn, (stacked(len(rows)), basis(rows)), (len(rows), b, k),
                                                    "J^T g, like x", quiet=threaded)
                else:
                    outs = conventions.call_checked(name, fn, (x, basis(rows)[0]), x.shape, "J^T g, like x")[None]
                # out's rows are b * k_out + i: rows i of every batch row, these groups' columns
                out.reshape(b, k_out, -1)[:, rows.start:rows.stop, :] = outs[:, :, groups].transpose(1, 0, 2)

            parallel.run_all([functools.partial(rows_of, i0) for i0 in range(0, k_out, step)], threaded)
        else:
            for i in range(m):
                unit = np.zeros(m)
                unit[i] = 1.0
                row = conventions.call_checked(name, fn, (x, unit.reshape(y.shape)), x.shape, "J^T g, like x")
                out[i, :] = row.ravel()[groups]
        return out

    return vjp_columns


def _shift(part: Comparison, start: int) -> Comparison:
    """Re-index a chunk's entries to the whole matrix's columns."""

    def move(e: Entry) -> Entry:
        return Entry((e.index[0], e.index[1] + start), e.analytic, e.numeric, e.abs_err, e.tolerance, e.error)

    return Comparison(part.passed, part.max_abs_err, part.max_rel_err, move(part.worst), part.n_bad,
                      part.n_total, tuple(move(e) for e in part.bad), part.max_ratio)


def _merge(a: Comparison, b: Comparison, keep: int = 5) -> Comparison:
    bad = tuple(sorted(a.bad + b.bad, key=lambda e: e.abs_err, reverse=True)[:keep])
    if a.n_bad or b.n_bad:
        worst = bad[0]
    else:
        worst = a.worst if a.worst.abs_err >= b.worst.abs_err else b.worst
    return Comparison(a.passed and b.passed, max(a.max_abs_err, b.max_abs_err), max(a.max_rel_err, b.max_rel_err),
                      worst, a.n_bad + b.n_bad, a.n_total + b.n_total, bad, max(a.max_ratio, b.max_ratio))
