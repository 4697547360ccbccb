"""Compare an analytic Jacobian with a numerical estimate, entry by entry.

Each entry passes when

    |analytic - numeric| <= SAFETY * error + ULPS * eps * |analytic| + atol + rtol |numeric|

where ``error`` is the finite-difference method's own error bound for that entry
(:mod:`gradcheck_cli.numdiff`: truncation plus the forward's measured rounding noise) and
``ULPS * eps * |analytic|`` allows for the analytic derivative's own rounding in the
dtype it runs in. The bound scales with what differencing can resolve at that entry,
not with one magic ``rtol``: the criterion neither blows up near zero nor lets a
systematic error through where the reference is precise. ``rtol`` and ``atol`` default
to 0 and are there for users who want a looser gate.

The comparison is one pass over blocks of rows small enough to stay in cache: on a
million-entry Jacobian it costs about as much as computing ``|analytic - numeric|`` once,
and it keeps per-column maxima so that columns recomputed later (the two-pass check in
:mod:`gradcheck_cli.runner`) are re-compared alone with :func:`recompare`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from gradcheck_cli import parallel

Array = NDArray[np.float64]
Index = NDArray[np.intp]

# The error bounds are estimates, not guarantees: accept up to this multiple of them.
SAFETY = 4.0
DEFAULT_RTOL = 0.0
DEFAULT_ATOL = 0.0
ANALYTIC_ULPS = 8.0
# Entries per block of the comparison pass: a few arrays of this size fit in L2 cache.
BLOCK_ENTRIES = 1 << 15
# Above this many entries per thread, the comparison is split over threads.
PARALLEL_ENTRIES = 1 << 17


@dataclass(frozen=True)
class Tolerance:
    """Tolerance settings; ``rtol``/``atol`` None means the defaults (0)."""

    rtol: float | None = None
    atol: float | None = None
    safety: float = SAFETY
    eps: float = float(np.finfo(np.float64).eps)

    def entries(self, numeric: Array, error: Array, analytic: Array | None = None) -> Array:
        rtol = DEFAULT_RTOL if self.rtol is None else self.rtol
        atol = DEFAULT_ATOL if self.atol is None else self.atol
        tol = self.safety * error
        if rtol:
            tol += rtol * np.abs(numeric)
        if atol:
            tol += atol
        if analytic is not None:
            allowance = np.abs(analytic)
            allowance[~np.isfinite(allowance)] = 0.0
            allowance *= ANALYTIC_ULPS * self.eps
            tol += allowance
        return tol


@dataclass(frozen=True)
class Entry:
    """One entry of a comparison, by flat (output, input) index."""

    index: tuple[int, int]
    analytic: float
    numeric: float
    abs_err: float
    tolerance: float
    error: float
    """The numerical reference's own error bound here: its noise."""


@dataclass(frozen=True)
class _Columns:
    """Per-column maxima of one comparison, and where its failing entries are."""

    abs_err: Array
    ratio: Array
    rel_err: Array
    bad: Index
    """Flat indices (row * n_columns + column) of the failing entries."""
    bad_abs_err: Array


@dataclass(frozen=True)
class Comparison:
    """Result of comparing analytic with numeric: the figures and the worst entries."""

    passed: bool
    max_abs_err: float
    max_rel_err: float
    worst: Entry
    n_bad: int
    n_total: int
    bad: tuple[Entry, ...]
    max_ratio: float
    """Largest ``abs_err / tolerance`` over all entries: above 1 fails."""
    shape: tuple[int, int] = field(default=(0, 0), repr=False, compare=False)
    columns: _Columns | None = field(default=None, repr=False, compare=False)

    @property
    def bad_mask(self) -> NDArray[np.bool_] | None:
        """Which entries fail, as a boolean array of the compared shape (None when all pass)."""
        if self.columns is None or not self.n_bad:
            return None
        mask = np.zeros(self.shape, dtype=bool)
        mask.ravel()[self.columns.bad] = True
        return mask

    def failing_columns(self) -> Index:
        """The columns that hold at least one failing entry, ascending."""
        if self.columns is None:
            return np.zeros(0, dtype=np.intp)
        return np.unique(self.columns.bad % max(self.shape[1], 1))


def relative_errors(analytic: Array, numeric: Array, error: Array, diff: Array | None = None) -> Array:
    """``|a - n| / max(|a|, |n|, error)``: relative where the entry is resolvable (0/0 is 0)."""
    denom = np.maximum(np.abs(analytic), np.abs(numeric))
    np.maximum(denom, error, out=denom)
    if diff is None:
        diff = np.abs(analytic - numeric)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.divide(diff, denom, out=np.zeros_like(diff), where=denom > 0)
    rel[~np.isfinite(diff)] = np.inf
    return rel


def compare(analytic: Array, numeric: Array, error: Array, tolerance: Tolerance | None = None,
            keep: int = 5) -> Comparison:
    """Compare entrywise; a non-finite analytic entry always fails.

    The reported ``worst`` entry is the failing entry with the largest absolute error, or,
    when nothing fails, the entry with the largest absolute error overall; ``tolerance``
    in reports is the tolerance at that entry, so the two figures can be read together.
    """
    tolerance = tolerance or Tolerance()
    with np.errstate(all="ignore"):  # subnormal tolerances and inf differences are expected
        columns = _scan(analytic, numeric, error, tolerance)
        return _summarise(analytic, numeric, error, tolerance, columns, keep)


def recompare(previous: Comparison, analytic: Array, numeric: Array, error: Array, columns: Index,
              tolerance: Tolerance | None = None, keep: int = 5) -> Comparison:
    """``previous`` with only ``columns`` compared again (their numeric estimate changed).

    The arrays are the whole matrices; the other columns keep their figures from
    ``previous``, so a check whose quick pass failed a few columns re-reads only those.
    """
    if previous.columns is None or previous.shape != analytic.shape:
        return compare(analytic, numeric, error, tolerance, keep)
    tolerance = tolerance or Tolerance()
    n = analytic.shape[1]
    old = previous.columns
    with np.errstate(all="ignore"):
        part = _scan(analytic[:, columns], numeric[:, columns], error[:, columns], tolerance)
        rows, local = np.divmod(part.bad, max(columns.size, 1))
        kept = ~np.isin(old.bad % n, columns)
        merged = _Columns(old.abs_err.copy(), old.ratio.copy(), old.rel_err.copy(),
                          np.concatenate([old.bad[kept], rows * n + columns[local]]),
                          np.concatenate([old.bad_abs_err[kept], part.bad_abs_err]))
        merged.abs_err[columns] = part.abs_err
        merged.ratio[columns] = part.ratio
        merged.rel_err[columns] = part.rel_err
        return _summarise(analytic, numeric, error, tolerance, merged, keep)


def _scan(analytic: Array, numeric: Array, error: Array, tolerance: Tolerance) -> _Columns:
    """Per-column maxima and the failing entries, the rows split over threads when large."""
    m, n = analytic.shape
    parts = min(parallel.threads(), m, analytic.size // PARALLEL_ENTRIES)
    if parts <= 1:
        return _scan_rows(analytic, numeric, error, tolerance, 0)
    bounds = np.linspace(0, m, parts + 1).astype(int)
    scans = parallel.run_all([
        functools.partial(_scan_rows, analytic[lo:hi], numeric[lo:hi], error[lo:hi], tolerance, int(lo) * n)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)])
    return _Columns(np.max([p.abs_err for p in scans], axis=0), np.fmax.reduce([p.ratio for p in scans], axis=0),
                    np.fmax.reduce([p.rel_err for p in scans], axis=0), np.concatenate([p.bad for p in scans]),
                    np.concatenate([p.bad_abs_err for p in scans]))


def _scan_rows(analytic: Array, numeric: Array, error: Array, tolerance: Tolerance, offset: int) -> _Columns:
    """One pass over blocks of rows: per-column maxima and the failing entries.

    The same tolerance as :meth:`Tolerance.entries`, fused so each block's temporaries
    stay in cache. Flat indices of failing entries are shifted by ``offset``.
    """
    m, n = analytic.shape
    rtol = DEFAULT_RTOL if tolerance.rtol is None else tolerance.rtol
    atol = DEFAULT_ATOL if tolerance.atol is None else tolerance.atol
    ulps = ANALYTIC_ULPS * tolerance.eps
    abs_err, ratio, rel_err = np.zeros(n), np.zeros(n), np.zeros(n)
    bad: list[Index] = []
    bad_abs_err: list[Array] = []
    step = max(1, BLOCK_ENTRIES // max(n, 1))
    for start in range(0, m, step):
        a, num, err = analytic[start:start + step], numeric[start:start + step], error[start:start + step]
        diff = np.subtract(a, num)
        np.abs(diff, out=diff)
        column_abs = diff.max(axis=0)  # max propagates nan: finite maxima mean a finite block
        finite = bool(np.isfinite(column_abs).all())
        size = np.abs(a)
        tol = size * ulps
        if not finite:  # nan or inf anywhere (analytic or numeric): that entry is infinitely wrong
            broken = ~np.isfinite(diff)
            diff[broken] = np.inf
            tol[broken] = 0.0
            column_abs = diff.max(axis=0)
        tol += tolerance.safety * err
        if rtol:
            tol += rtol * np.abs(num)
        if atol:
            tol += atol
        np.maximum(abs_err, column_abs, out=abs_err)
        # abs_err / tolerance: 0/0 (nan) counts as 0 and x/0 as inf, so fmax skips the nans.
        quotient = np.divide(diff, tol)
        column_ratio = np.fmax.reduce(quotient, axis=0)
        np.fmax(ratio, column_ratio, out=ratio)
        # diff > tol implies diff / tol >= 1 after rounding, so a block whose quotients all
        # stay below 1 has no failing entry and needs no mask.
        if (column_ratio >= 1.0).any():
            where = np.flatnonzero(diff > tol)
            if where.size:
                bad.append(where + (offset + start * n))
                bad_abs_err.append(diff.ravel()[where])
        np.maximum(size, np.abs(num, out=quotient), out=size)
        np.maximum(size, err, out=size)
        rel = np.divide(diff, size, out=size)
        if not finite:
            rel[broken] = np.inf
        np.fmax(rel_err, np.fmax.reduce(rel, axis=0), out=rel_err)
    empty = np.zeros(0, dtype=np.intp)
    return _Columns(abs_err, ratio, rel_err,
                    np.concatenate(bad) if bad else empty,
                    np.concatenate(bad_abs_err) if bad_abs_err else np.zeros(0))


def _summarise(analytic: Array, numeric: Array, error: Array, tolerance: Tolerance, columns: _Columns,
               keep: int) -> Comparison:
    n = analytic.shape[1]
    n_bad = int(columns.bad.size)
    if n_bad:
        # Only the top few entries are reported: a partial sort over the failing entries.
        k = min(max(keep, 1), n_bad)
        top = np.argpartition(columns.bad_abs_err, n_bad - k)[n_bad - k:]
        order = columns.bad[top[np.argsort(columns.bad_abs_err[top], kind="stable")[::-1]]]
    else:
        column = int(np.argmax(columns.abs_err))
        diff = np.abs(analytic[:, column] - numeric[:, column])
        diff[np.isnan(diff)] = np.inf
        order = np.array([int(np.argmax(diff)) * n + column])

    def entry(index: int) -> Entry:
        i, j = divmod(int(index), n)
        a, num, err = analytic[i:i + 1, j], numeric[i:i + 1, j], error[i:i + 1, j]
        diff = abs(float(a[0]) - float(num[0]))
        return Entry((i, j), float(a[0]), float(num[0]), diff if diff == diff else float("inf"),
                     float(tolerance.entries(num, err, a)[0]), float(err[0]))

    bad = tuple(entry(int(f)) for f in order[:n_bad])
    return Comparison(
        passed=n_bad == 0,
        max_abs_err=float(columns.abs_err.max(initial=0.0)),
        max_rel_err=float(columns.rel_err.max(initial=0.0)),
        worst=bad[0] if bad else entry(int(order[0])),
        n_bad=n_bad,
        n_total=int(analytic.size),
        bad=bad,
        max_ratio=float(columns.ratio.max(initial=0.0)),
        shape=(int(analytic.shape[0]), int(n)),
        columns=columns,
    )



