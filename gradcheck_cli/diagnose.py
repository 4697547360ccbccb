"""Say what kind of wrong a failing derivative is, from the pattern of its errors.

Each test builds a corrected candidate from the analytic matrix (transposed, negated,
rescaled, re-evaluated at f(x), ...) and asks whether *that* matches the numerical
Jacobian under the same tolerance. A candidate that matches names the mistake; none
matching falls back to listing the worst entries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gradcheck_cli.compare import Comparison, Entry, Tolerance, compare

Array = NDArray[np.float64]

FEW_ENTRIES = 3


@dataclass(frozen=True)
class Layout:
    """How flat matrix indices map back to batch positions."""

    batch: int
    k_out: int
    k_in: int
    scalar: bool = False
    second: bool = False
    form: str = "dense"
    projection: bool = False
    """How matrix indices map to entries: dense (M, N), blocks (B*K_out, K) or diagonal (B, K)."""

    def entry(self, index: tuple[int, int]) -> tuple[int, int, int, int]:
        """(b_out, i, b_in, j) of the Jacobian entry at a matrix index of this form."""
        m, n = index
        if self.form == "blocks":
            b, i = divmod(m, self.k_out)
            return b, i, b, n
        if self.form == "diagonal":
            return m, n, m, n
        bo, i = divmod(m, self.k_out)
        bi, j = divmod(n, self.k_in)
        return bo, i, bi, j

    def name(self, index: tuple[int, int]) -> str:
        if self.projection:
            return f"projection {index[1]} (u^T J d)"
        if not (self.scalar or self.second):
            bo, i, bi, j = self.entry(index)
            return f"dy[{bo},{i}]/dx[{bi},{j}]"
        m, n = index
        bi, j = divmod(n, self.k_in)
        return f"d2y/dx2[{bi},{j}]" if self.second else f"dL/dx[{bi},{j}]"

    def worst_index(self, index: tuple[int, int]) -> tuple[int, ...]:
        if self.projection:
            return (index[1],)
        if self.scalar:
            return divmod(index[1], self.k_in)
        return self.entry(index)


def describe(entry: Entry, layout: Layout) -> str:
    """``dy[0,1]/dx[0,2]: analytic 0.1 vs numeric 0.2``."""
    return f"{layout.name(entry.index)}: analytic {entry.analytic:.6g} vs numeric {entry.numeric:.6g}"


def _factor_name(c: float, layout: Layout) -> str | None:
    """Name a constant factor when it is one of the usual suspects."""
    candidates: list[tuple[float, str]] = [(2.0, "2"), (0.5, "1/2")]
    sizes = ((layout.batch * layout.k_in, "N", "the element count B*K"),
             (layout.batch, "B", "the batch size"), (layout.k_in, "K", "the feature count"))
    for size, symbol, meaning in sizes:
        if size > 1:
            candidates.append((float(size), f"{size} = {symbol}, {meaning}: missing the 1/{symbol} of a mean"))
            candidates.append((1.0 / size, f"1/{size} = 1/{symbol}, {meaning}: divides by {symbol} once too often"))
    for value, label in candidates:
        if abs(c / value - 1.0) < 1e-6:
            return label
    return None


@dataclass(frozen=True)
class Evidence:
    """What diagnosis looks at."""

    analytic: Array
    numeric: Array
    error: Array
    tolerance: Tolerance
    layout: Layout
    convention: str
    comparison: Comparison
    refeed: Callable[[], Array | None] | None = None
    refeed_text: str = ""
    x: Array | None = None
    fp_warnings: tuple[str, ...] = ()

    def matches(self, candidate: Array) -> bool:
        return compare(candidate, self.numeric, self.error, self.tolerance).passed

    def significant(self, values: Array) -> NDArray[np.bool_]:
        return np.abs(values) > self.tolerance.entries(self.numeric, self.error)


def diagnose(ev: Evidence) -> str:
    """One line naming the mistake, or the worst entries when no pattern fits."""
    if ev.layout.projection:
        worst = ev.comparison.worst
        return (f"random projection {worst.index[1]}: u^T J d is {worst.analytic:.6g} from the analytic "
                f"derivative but {worst.numeric:.6g} numerically; --fast checks projections, not entries: "
                f"run without --fast (at a smaller --shape) to see which entries are wrong")
    with np.errstate(all="ignore"):  # candidates divide by fitted factors; inf/nan just fail to match
        return _diagnose(ev)


def _diagnose(ev: Evidence) -> str:
    a, num, lay = ev.analytic, ev.numeric, ev.layout
    worst = describe(ev.comparison.worst, lay)
    nonfinite = ~np.isfinite(a)
    if nonfinite.any():
        m, n = (int(v) for v in np.argwhere(nonfinite)[0])
        where = ""
        if ev.x is not None:
            b, j = divmod(n, lay.k_in)
            where = f" where x[{b},{j}] = {ev.x.ravel()[n]:.6g}"
        why = (f"numpy reported {', '.join(repr(w) for w in ev.fp_warnings)} while computing it"
               if ev.fp_warnings else "it overflows or divides by zero there")
        return (f"the analytic derivative is {a[m, n]} at {lay.name((m, n))}{where} "
                f"(numeric {num[m, n]:.6g}): {why}; rewrite it in a form that stays finite "
                f"there (e.g. exp(-|x|) instead of exp(-x))")
    for check in (_elementwise, _batch_leak, _refeed, _transposed, _sign, _scale, _part_scaled, _few):
        found = check(ev)
        if found:
            return found
    others = "; ".join(describe(e, lay) for e in ev.comparison.bad[1:3])
    more = f"; also {others}" if others else ""
    return f"{ev.comparison.n_bad} of {ev.comparison.n_total} entries wrong; worst {worst}{more}"


def _elementwise(ev: Evidence) -> str | None:
    if ev.convention not in ("derivative", "derivative_of_output") or ev.layout.scalar:
        return None
    off = ev.numeric.copy()
    np.fill_diagonal(off, 0.0)
    mask = ev.significant(off)
    if not mask.any():
        return None
    m, n = (int(v) for v in np.unravel_index(np.argmax(np.abs(off)), off.shape))
    example = f"{ev.layout.name((m, n))} = {ev.numeric[m, n]:.4g}"
    diag_ok = ev.matches(np.diag(np.diag(ev.analytic)) + off)
    if diag_ok:
        return (f"only the Jacobian's diagonal: the elementwise {ev.convention} matches "
                f"dy_i/dx_i, but this function is not elementwise, output i depends on input "
                f"j != i ({example}, missing); give a jacobian or a vjp instead")
    return (f"an elementwise {ev.convention} was given, but this function is not elementwise: "
            f"output i depends on input j != i ({example}), and even the diagonal is wrong "
            f"(worst {describe(ev.comparison.worst, ev.layout)}); give a jacobian or a vjp")


def _batch_leak(ev: Evidence) -> str | None:
    lay = ev.layout
    if lay.batch < 2 or lay.scalar:
        return None
    rows_out = np.arange(ev.numeric.shape[0]) // lay.k_out
    rows_in = np.arange(ev.numeric.shape[1]) // lay.k_in
    cross = rows_out[:, None] != rows_in[None, :]
    num_cross = cross & ev.significant(ev.numeric)
    ana_cross = cross & ev.significant(ev.analytic)
    if ana_cross.any() and not num_cross.any():
        m, n = (int(v) for v in np.argwhere(ana_cross)[0])
        return (f"rows of the batch leak into each other: the analytic derivative has "
                f"{lay.name((m, n))} = {ev.analytic[m, n]:.4g} between different rows, where "
                f"the function has none; a sum over the whole batch instead of each row "
                f"(axis=-1)?")
    if num_cross.any() and not ana_cross.any():
        m, n = (int(v) for v in np.argwhere(num_cross)[0])
        return (f"the function mixes rows of the batch ({lay.name((m, n))} = "
                f"{ev.numeric[m, n]:.4g}: output row depends on another input row), but the "
                f"derivative treats rows independently; the forward probably reduces over the "
                f"whole array or axis 0 where it should use axis=-1")
    return None


def _refeed(ev: Evidence) -> str | None:
    if ev.refeed is None:
        return None
    candidate = ev.refeed()
    if candidate is None or not ev.matches(candidate):
        return None
    return ev.refeed_text


def _transposed(ev: Evidence) -> str | None:
    a = ev.analytic
    if a.shape[0] != a.shape[1] or ev.layout.scalar or not ev.matches(a.T):
        return None
    return "the Jacobian is transposed: it returns J[j, i] = dy_j/dx_i where J[i, j] = dy_i/dx_j is expected"


def _sign(ev: Evidence) -> str | None:
    if not ev.matches(-ev.analytic):
        return None
    return "sign flipped: the analytic derivative is exactly -1 times the numerical one"


def _factor(ev: Evidence, part: NDArray[np.bool_]) -> float | None:
    """The factor analytic / numeric over ``part``, from its best-resolved entry.

    The entry whose value is largest relative to its tolerance pins the factor most
    tightly; a least-squares fit or a median would let loosely known entries set a factor
    that then misses the tightly known ones.
    """
    tol = ev.tolerance.entries(ev.numeric, ev.error)
    with np.errstate(all="ignore"):
        resolution = np.where(part & np.isfinite(ev.analytic), np.abs(ev.numeric) / np.maximum(tol, 1e-300), 0.0)
    best = np.unravel_index(int(np.argmax(resolution)), resolution.shape)
    if resolution[best] <= 10.0:
        return None
    c = float(ev.analytic[best] / ev.numeric[best])
    return c if np.isfinite(c) and c != 0 else None


def _scale(ev: Evidence) -> str | None:
    a = ev.analytic
    c = _factor(ev, np.ones(a.shape, dtype=bool))
    if c is None or abs(c - 1.0) < 1e-9 or not ev.matches(a / c):
        return None
    name = _factor_name(c, ev.layout)
    if name:
        return f"off by a constant factor {name} (analytic = {_factor_text(c)} x numeric)"
    return f"off by a constant factor: analytic = {_factor_text(c)} x numeric everywhere"


def _factor_text(c: float) -> str:
    """Enough digits that a factor near 1 does not print as 1 (1.000001, not 1)."""
    digits = 6 if abs(c - 1.0) > 1e-4 else 12
    return f"{c:.{digits}g}"


def _part_scaled(ev: Evidence) -> str | None:
    """The diagonal right and the off-diagonal entries all off by one factor (or vice versa)."""
    lay = ev.layout
    if lay.scalar or lay.k_out != lay.k_in:
        return None
    rows = np.arange(ev.numeric.shape[0])
    cols = np.arange(ev.numeric.shape[1])
    same_row = (rows[:, None] // lay.k_out) == (cols[None, :] // lay.k_in)
    diagonal = same_row & ((rows[:, None] % lay.k_out) == (cols[None, :] % lay.k_in))
    for part, name, rest in ((same_row & ~diagonal, "off-diagonal", "diagonal"),
                             (diagonal, "diagonal", "off-diagonal")):
        c = _factor(ev, part)
        if c is None or abs(c - 1.0) < 1e-12:
            continue
        candidate = ev.analytic.copy()
        candidate[part] = ev.analytic[part] / c
        if not ev.matches(candidate):
            continue
        direction = "too large" if c > 1 else "too small"
        return (f"the {name} entries are all {abs(c - 1):.2g} {direction} (relative: analytic = {c:.9g} x "
                f"numeric) while the {rest} entries are right; a constant or term in the {name} "
                f"formula is slightly off")
    return None


def _few(ev: Evidence) -> str | None:
    comp = ev.comparison
    if comp.n_bad > FEW_ENTRIES or comp.n_bad == comp.n_total:
        return None
    listed = "; ".join(describe(e, ev.layout) for e in comp.bad)
    return f"wrong at only {comp.n_bad} of {comp.n_total} entries: {listed}"


# --- per-argument Jacobians of multi-argument entries (layers) ------------------------------


def _index_text(index: tuple[int, ...]) -> str:
    return f"[{','.join(map(str, index))}]" if index else ""


def entry_name(output: str, out_index: tuple[int, ...], wrt: str, in_index: tuple[int, ...]) -> str:
    """``dout[1,2]/dw[0,3]``: one entry of the Jacobian of ``output`` with respect to ``wrt``."""
    return f"d{output}{_index_text(out_index)}/d{wrt}{_index_text(in_index)}"


@dataclass(frozen=True)
class ArgumentEvidence:
    """What the diagnosis of one argument's Jacobian looks at: analytic and numerical (M, N),
    the argument's name and shape, an entry labeller, and the numerical Jacobians of the other
    arguments of the same shape (for gradients swapped between arguments)."""

    analytic: Array
    numeric: Array
    error: Array
    tolerance: Tolerance
    comparison: Comparison
    wrt: str
    shape: tuple[int, ...]
    label: Callable[[tuple[int, int]], str]
    others: dict[str, Array]
    outputs: tuple[str, ...]
    out_shapes: tuple[tuple[int, ...], ...] = ()

    def matches(self, candidate: Array, numeric: Array | None = None) -> bool:
        ref = self.numeric if numeric is None else numeric
        return compare(candidate, ref, self.error, self.tolerance).passed

    def significant(self, values: Array) -> NDArray[np.bool_]:
        return np.abs(values) > self.tolerance.entries(self.numeric, self.error)

    def entry(self, e: Entry) -> str:
        return f"{self.label(e.index)}: analytic {e.analytic:.6g} vs numeric {e.numeric:.6g}"


def diagnose_argument(ev: ArgumentEvidence) -> str:
    """One line naming what is wrong with the gradient of one argument, or its worst entries."""
    with np.errstate(all="ignore"):
        for check in (_arg_nonfinite, _arg_zero, _arg_sign, _arg_swapped, _arg_transposed, _arg_scale,
                      _arg_identity, _arg_dropped_path, _arg_extra_path):
            found = check(ev)
            if found:
                return found
    comp = ev.comparison
    listed = "; ".join(ev.entry(e) for e in comp.bad[:3])
    return f"d{ev.wrt}: {comp.n_bad} of {comp.n_total} entries wrong; worst {listed}"


def _arg_nonfinite(ev: ArgumentEvidence) -> str | None:
    bad = ~np.isfinite(ev.analytic)
    if not bad.any():
        return None
    m, n = (int(v) for v in np.argwhere(bad)[0])
    return (f"d{ev.wrt} is {ev.analytic[m, n]} at {ev.label((m, n))} (numeric {ev.numeric[m, n]:.6g}); rewrite the "
            f"backward in a form that stays finite there")


def _arg_zero(ev: ArgumentEvidence) -> str | None:
    if ev.significant(ev.analytic).any():
        return None
    return (f"d{ev.wrt} is zero everywhere, but the output depends on {ev.wrt} (worst {ev.entry(ev.comparison.worst)})"
            f": its gradient is never computed, or is overwritten before it is returned")


def _arg_sign(ev: ArgumentEvidence) -> str | None:
    if not ev.matches(-ev.analytic):
        return None
    return f"d{ev.wrt} has its sign flipped: the analytic gradient is exactly -1 times the numerical one"


def _arg_swapped(ev: ArgumentEvidence) -> str | None:
    for other, numeric in ev.others.items():
        if ev.matches(ev.analytic, numeric):
            return (f"d{ev.wrt} holds the gradient of {other}: the gradients of {ev.wrt} and {other} are swapped "
                    f"(returned in the wrong order, or assigned to each other's names)")
    return None


def _arg_transposed(ev: ArgumentEvidence) -> str | None:
    if len(ev.shape) != 2 or ev.shape[0] != ev.shape[1]:
        return None
    m = ev.analytic.shape[0]
    flipped = ev.analytic.reshape(m, *ev.shape).transpose(0, 2, 1).reshape(m, -1)
    if not ev.matches(flipped):
        return None
    return (f"d{ev.wrt} is transposed: it holds d{ev.wrt}[j,i] where d{ev.wrt}[i,j] belongs (e.g. dout.T @ x "
            f"instead of x.T @ dout); it only has the right shape because {ev.wrt} is square")


def _arg_scale(ev: ArgumentEvidence) -> str | None:
    tol = ev.tolerance.entries(ev.numeric, ev.error)
    resolution = np.where(np.isfinite(ev.analytic), np.abs(ev.numeric) / np.maximum(tol, 1e-300), 0.0)
    best = np.unravel_index(int(np.argmax(resolution)), resolution.shape)
    if resolution[best] <= 10.0:
        return None
    c = float(ev.analytic[best] / ev.numeric[best])
    if not np.isfinite(c) or c == 0 or abs(c - 1.0) < 1e-9 or not ev.matches(ev.analytic / c):
        return None
    # The usual suspects: a mean's 1/N over an axis or over every entry, of the argument or of an output
    # (db of a dense layer sums over the batch of its output), the first fitting one named by what it counts.
    out = ev.out_shapes[0] if len(ev.out_shapes) == 1 else ()
    counted: list[tuple[int, str]] = [(d, f"the size of axis {k} of {ev.wrt}") for k, d in enumerate(ev.shape)][:1]
    counted += [(d, f"the size of axis {k} of the output") for k, d in enumerate(out)]
    counted += [(d, f"the size of axis {k} of {ev.wrt}") for k, d in enumerate(ev.shape)][1:]
    counted += [(int(np.prod(out, dtype=np.int64)), "the output's entry count"),
                (int(np.prod(ev.shape, dtype=np.int64)), f"{ev.wrt}'s entry count")]
    names = [(2.0, "2"), (0.5, "1/2")]
    for size, meaning in counted:
        if size > 1:
            names += [(float(size), f"{size}: a mean's 1/N is missing (N = {size}, {meaning})"),
                      (1.0 / size, f"1/{size}: divides by N = {size} ({meaning}) once too often")]
    for value, text in names:
        if abs(c / value - 1.0) < 1e-6:
            return f"d{ev.wrt} is off by a constant factor {text} (analytic = {_factor_text(c)} x numeric)"
    return f"d{ev.wrt} is off by a constant factor: analytic = {_factor_text(c)} x numeric everywhere"


def _samples(ev: ArgumentEvidence, rows: NDArray[np.intp], cols: NDArray[np.intp]) -> NDArray[np.bool_] | None:
    """For Jacobian entries (rows, cols): whether each couples two different samples of the batch,
    when the output and the argument share a leading batch axis (else None)."""
    if len(ev.out_shapes) != 1 or not ev.out_shapes[0] or not ev.shape:
        return None
    b = ev.shape[0]
    if b < 2 or ev.out_shapes[0][0] != b:
        return None
    per_out, per_in = ev.numeric.shape[0] // b, ev.numeric.shape[1] // b
    cross: NDArray[np.bool_] = (rows // per_out) != (cols // per_in)
    return cross


def _arg_identity(ev: ArgumentEvidence) -> str | None:
    """Off by a constant on the diagonal alone, where the output and the argument have one shape:
    the identity path of a skip connection (out = f(x) + x) missing, or counted twice."""
    if len(ev.out_shapes) != 1 or ev.out_shapes[0] != ev.shape or ev.analytic.shape[0] != ev.analytic.shape[1]:
        return None
    mask = ev.comparison.bad_mask
    if mask is None or np.any(mask & ~np.eye(mask.shape[0], dtype=bool)):
        return None
    rows = np.flatnonzero(np.diag(mask))
    c = float(np.median(np.diag(ev.analytic)[rows] - np.diag(ev.numeric)[rows]))
    candidate = ev.analytic.copy()
    candidate[np.diag_indices_from(candidate)] -= c
    if not np.isfinite(c) or c == 0 or not ev.matches(candidate):
        return None
    what = ("the identity path (a skip connection's + x) is missing from it" if abs(c + 1) < 1e-6 else
            "the identity path is counted twice" if abs(c - 1) < 1e-6 else f"a term {-c:+.6g} x identity is missing")
    e = ev.comparison.worst
    return (f"d{ev.wrt} is off by {c:+.6g} on the diagonal only (d{ev.outputs[0]}[i]/d{ev.wrt}[i], e.g. "
            f"{ev.label(e.index)}: analytic {e.analytic:.6g} vs numeric {e.numeric:.6g}): {what}")


def _arg_dropped_path(ev: ArgumentEvidence) -> str | None:
    """The analytic Jacobian is zero where the numerical one is not, and nowhere the other way
    round: a dependence the backward leaves out (a path through a batch statistic)."""
    missing = ev.significant(ev.numeric) & ~ev.significant(ev.analytic)
    extra = ev.significant(ev.analytic) & ~ev.significant(ev.numeric)
    if not missing.any() or extra.any():
        return None
    m, n = (int(v) for v in np.argwhere(missing)[0])
    text = (f"d{ev.wrt} misses part of the dependence: the analytic Jacobian is zero at {int(missing.sum())} entries "
            f"where the numerical one is not (e.g. {ev.label((m, n))} = {ev.numeric[m, n]:.4g})")
    cross = _samples(ev, *np.nonzero(missing))
    if cross is not None and np.all(cross):
        return (f"{text}; each of them couples two different samples of the batch: a path through a batch "
                f"statistic (a mean or variance over the batch) is dropped from the backward")
    return f"{text}: a path from {ev.wrt} to the output is dropped from the backward"


def _arg_extra_path(ev: ArgumentEvidence) -> str | None:
    """The analytic Jacobian is non-zero where the output does not depend on the argument at all:
    the backward sends gradient where the forward has no path (every window position of a max
    pool, statistics over the batch in a per-sample norm)."""
    extra = ev.significant(ev.analytic) & ~ev.significant(ev.numeric)
    if not extra.any():
        return None
    m, n = (int(v) for v in np.argwhere(extra)[0])
    text = (f"d{ev.wrt} has {int(extra.sum())} entries where the output does not depend on {ev.wrt} at all (e.g. "
            f"{ev.label((m, n))}: analytic {ev.analytic[m, n]:.4g}, numeric {ev.numeric[m, n]:.2g})")
    cross = _samples(ev, *np.nonzero(extra))
    if cross is not None and np.all(cross):
        return (f"{text}; each of them couples two different samples of the batch, which the forward keeps apart: "
                f"the backward reduces over the batch axis (axis=0, a batch mean or variance) where the forward "
                f"works on each sample")
    return f"{text}: the backward sends gradient along a path the forward does not have"
