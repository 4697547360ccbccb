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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

# The error bounds are estimates, not guarantees: accept up to this multiple of them.
SAFETY = 4.0
DEFAULT_RTOL = 0.0
DEFAULT_ATOL = 0.0
ANALYTIC_ULPS = 8.0


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
    bad_mask: NDArray[np.bool_] | None = field(default=None, repr=False, compare=False)
    """Which entries fail (for recomputing just their columns)."""


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
    with np.errstate(all="ignore"):  # subnormal tolerances and inf differences are expected
        return _compare(analytic, numeric, error, tolerance, keep)


def _compare(analytic: Array, numeric: Array, error: Array, tolerance: Tolerance | None,
             keep: int) -> Comparison:
    tol = (tolerance or Tolerance()).entries(numeric, error, analytic)
    diff = np.subtract(analytic, numeric)
    np.abs(diff, out=diff)
    diff[np.isnan(diff)] = np.inf
    bad_mask = diff > tol
    n_bad = int(bad_mask.sum())
    # Only the top few entries are reported: a partial sort keeps this O(size). Among failing
    # entries when there are any (a selection over a few indices, not over many ties).
    candidates = np.flatnonzero(bad_mask) if n_bad else np.arange(diff.size)
    flat = diff.ravel()[candidates]
    k = min(max(keep, 1), flat.size)
    top = np.argpartition(flat, flat.size - k)[flat.size - k:]
    order = candidates[top[np.argsort(flat[top])[::-1]]]

    def entry(index: int) -> Entry:
        i, j = np.unravel_index(index, analytic.shape)
        return Entry((int(i), int(j)), float(analytic[i, j]), float(numeric[i, j]),
                     float(diff[i, j]), float(tol[i, j]), float(error[i, j]))

    ratio = np.divide(diff, tol, out=np.where(diff > 0, np.inf, 0.0), where=tol > 0)
    rel = relative_errors(analytic, numeric, error, diff)
    return Comparison(
        passed=n_bad == 0,
        max_abs_err=float(diff.max(initial=0.0)),
        max_rel_err=float(rel.max(initial=0.0)),
        worst=entry(int(order[0])),
        n_bad=n_bad,
        n_total=int(diff.size),
        bad=tuple(entry(int(f)) for f in order[:min(k, n_bad)]),
        max_ratio=float(ratio.max(initial=0.0)),
        bad_mask=bad_mask if n_bad else None,
    )
