"""Finite-difference Jacobians with an estimate of their own error.

A method is a small printable value (``central``, ``richardson``, ``complex``).
:func:`estimate` returns the numerical Jacobian of ``f`` at ``x`` as an ``(M, N)`` matrix
over the flattened output and input, together with a per-entry error bound:

* truncation, from the difference between the estimate at step h and at step 2h
  (for a method of order p, ``|D(h) - D(2h)| / (2^p - 1)`` estimates D(h)'s error);
* rounding, ``u * max|f| / h`` with u a few units in the last place: a difference
  quotient loses ``log10(|f| / (h |f'|))`` digits.

With h ~ eps^(1/3) the two balance for central differences, which is why their error
floor is about eps^(2/3) ~ 4e-11 relative; Richardson extrapolation uses h ~ eps^(1/5)
and reaches about eps^(4/5) ~ 3e-13; the complex step has no subtraction and reaches eps.

All perturbations of a chunk of coordinates are stacked along a new leading axis and
evaluated in one call when ``f`` supports that (checked numerically, never assumed);
otherwise the chunk is evaluated one perturbation at a time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from gradcheck_cli import floating, parallel
from gradcheck_cli.harness import user_code
from gradcheck_cli.registry import is_threadsafe
from gradcheck_cli.structure import ELEMENTWISE, GENERAL, ROWWISE, Pattern, detect

Array = NDArray[np.float64]
EPS = float(np.finfo(np.float64).eps)
# Elements per evaluated chunk (inputs plus outputs): ~4 MB, measured fastest on softmax n=1000.
CHUNK_ELEMENTS = 1 << 19
ROUNDING_ULPS = 4.0
TINY = float(np.finfo(np.float64).smallest_subnormal)
MIN_STEP_ULPS = 64.0
# Columns whose truncation estimate exceeds this fraction of their largest entry get a
# smaller step (at most REFINEMENTS times, h / 8 each).
NONASYMPTOTIC = 1e-2
REFINEMENTS = 3

# Rounding noise is measured along a few random directions with a tiny relative step.
NOISE_DIRECTIONS = 3
NOISE_POINTS = 8
# A difference quotient's noise bound, in measured standard deviations of f over h.
NOISE_SIGMAS = 3.0


def _noise_design(points: int) -> tuple[Array, Array]:
    """Fixed random offsets in [-1, 1] and the projector onto residuals of a cubic fit."""
    t = np.sort(np.random.default_rng(2024).uniform(-1.0, 1.0, points))
    vander = np.vander(t, 4)
    return t, np.eye(points) - vander @ np.linalg.pinv(vander)


_NOISE_DESIGNS = {NOISE_POINTS: _noise_design(NOISE_POINTS)}


class EvaluationError(Exception):
    """The checked function raised, or returned something unusable, during differencing."""


@dataclass(frozen=True)
class Estimate:
    """Numerical Jacobian ``value`` (M, N), its error bound ``error``, and the ``step`` (N,)."""

    value: Array
    error: Array
    step: Array
    method: str
    note: str = ""


class Evaluator:
    """Evaluate ``f`` on a stack of inputs, in one call when ``f`` broadcasts correctly.

    The probe compares ``f(stack([x, x1, x2]))`` with the three separate calls: a function
    that reduces over an axis it should not (``exps.sum()``, ``axis=0``, ``x.shape[0]``)
    gives different numbers and is then evaluated point by point.
    """

    def __init__(self, f: Callable[[Any], Any], x: Array, scale: Array, dtype: str = "float64",
                 light: bool = False) -> None:
        # light (--fast): no stacking probe and no separate noise measurement (the
        # projections measure noise from their own stencil): two evaluations in all.
        self.dtype = np.dtype(dtype)
        self.eps = float(np.finfo(self.dtype).eps)
        self.tiny = float(np.finfo(self.dtype).smallest_subnormal)
        self.user_f = f
        self.x = x
        self.warnings: list[str] = []
        self.y0 = self.call(x, probe=True)
        self.out_shape = self.y0.shape
        self.stacks = False if light else self._probe(scale)
        # Chunks of a stacked evaluation (or, in light mode, the points of a stack) may run
        # on threads only for code marked threadsafe.
        self.threaded = (self.stacks or light) and is_threadsafe(f)
        self.scale = scale
        self._noise_by_span: dict[float, Array] = {}
        self.noise = np.zeros(self.y0.size) if light else self.noise_at(1.0)

    def f(self, x: Any) -> Any:
        """The checked function, called with inputs in the dtype the code runs in."""
        kind = np.asarray(x).dtype.kind
        if self.dtype != np.float64 and kind in "fc":
            x = np.asarray(x).astype(self.dtype if kind == "f" else np.complex64)
        return self.user_f(x)

    def call(self, x: Array, probe: bool = False) -> Array:
        """``f(x)`` on a copy; with ``probe``, also check it leaves x alone and repeats."""
        seen = x.copy()
        # The repeat call of a large threadsafe probe runs beside the first, on the pool.
        repeat = parallel.background(functools.partial(self._quiet_call, x.copy()),
                                     probe and is_threadsafe(self.user_f) and x.size >= parallel.BESIDE_SIZE) if probe \
            else None
        with user_code("", EvaluationError, self.warnings, keep=(EvaluationError,)):
            y = np.asarray(self.f(seen))
            again = repeat() if repeat is not None else y
        if y.dtype.kind not in "fiuc":
            raise EvaluationError(f"returned an array of dtype {y.dtype}, expected numbers")
        if probe:
            _precise_enough(y.dtype, self.dtype)
        if probe and not floating.same_values(seen.astype(self.dtype, copy=False), x.astype(self.dtype, copy=False)):
            idx = tuple(int(i) for i in np.argwhere(~np.isclose(seen, x, equal_nan=True))[0])
            raise EvaluationError(
                f"changes its input in place: x{list(idx)} was {x[idx]:.6g} before the call and "
                f"{seen[idx]:.6g} after; callers' arrays would be corrupted. Work on a copy "
                f"(x = x.copy()) or use out-of-place operations")
        y = _as_numbers(y)  # the repeat call's result is cast the same way: compare like with like
        if probe and not (again.shape == y.shape and floating.same_values(again, y)):
            raise EvaluationError(
                "is not deterministic: two calls with the same x gave different results (it "
                "draws random numbers or keeps state between calls, e.g. dropout or a running "
                "average); fix the randomness (a seed, eval mode) to check its derivative")
        return y

    def _quiet_call(self, x: Array) -> Array:
        """``f(x)`` for a fresh x, as from a worker thread: numpy's warnings are ignored
        (the warnings machinery is process-wide), nothing is copied."""
        with user_code("", EvaluationError):
            y = np.asarray(self.f(x))
        if y.dtype.kind not in "fiuc":
            raise EvaluationError(f"returned an array of dtype {y.dtype}, expected numbers")
        return _as_numbers(y)

    def _write(self, out: Array, i: int, point: Callable[[], Array]) -> None:
        """``out[i] = f(point())``, quietly (from a worker thread), checking the shape."""
        y = self._quiet_call(point())
        if y.shape != self.out_shape:
            raise EvaluationError(f"returned shape {y.shape} for an input of shape {self.x.shape}, but "
                                  f"{self.out_shape} at the same shape before")
        out[i] = y.ravel()

    def along(self, x: Array, step: Array, offsets: Array) -> Array:
        """f at ``x + t * step`` for each t in ``offsets``, flattened to ``(len(offsets), M)``.

        On threads (threadsafe code), each point is built by the thread that evaluates it.
        """
        if not self.threaded:
            return self([x + t * step for t in offsets])
        out = np.empty((len(offsets), int(self.y0.size)))
        parallel.run_all([functools.partial(self._write, out, i, functools.partial(_moved, x, float(t), step))
                          for i, t in enumerate(offsets)])
        return out

    def _probe(self, scale: Array) -> bool:
        rng = np.random.default_rng(12345)
        n = 4 if self.x.shape[0] == 3 else 3
        alts = [self.representable(self.x + 1e-3 * scale * rng.uniform(-1, 1, self.x.shape))
                for _ in range(n - 1)]
        stack = np.stack([self.x, *alts])
        try:
            with np.errstate(all="ignore"):
                ys = np.asarray(self.f(stack.copy()), dtype=np.float64)
        except Exception:
            return False
        if ys.shape != (n, *self.out_shape):
            return False
        singles = np.stack([self.y0, *(self.call(a) for a in alts)])
        size = max(float(np.max(np.abs(singles), initial=0.0)), 1e-300)
        return bool(np.all(np.abs(ys - singles) <= 1e-12 * size))

    def noise_at(self, span: float) -> Array:
        """The rounding noise as a stencil with steps ``span`` x eps^(1/3) x scale sees it."""
        if span not in self._noise_by_span:
            self._noise_by_span[span] = self._noise(self.scale * span)
        return self._noise_by_span[span]

    def _noise(self, scale: Array) -> Array:
        """Per-output rounding noise (standard deviation) of ``f`` near ``x``, shape (M,).

        ``f`` is evaluated at NOISE_POINTS random offsets t in [-d, d] along a few random
        directions, d = eps^(1/3) * scale (the central step), and a cubic in t is fitted by
        least squares. The cubic leaves a truncation residual of order d^4 f^(4), a
        thousandth of the stencil's own truncation error, so the residual is rounding
        noise as the stencil sees it: over a span this wide, a forward that rounds like a
        staircase (``1 + tanh(u)`` for u << 0 is a few ulps of 1) shows its steps, which a
        narrower span would miss. The offsets are random, not a lattice, because rounding
        errors sampled at equal spacing can line up and hide the noise. Code with
        cancellation (1 + erf(x) near x = -6, 1 + tanh(u) for u << 0) is far noisier than
        eps * |f|; measuring it keeps such correct code from being flagged.
        """
        points, directions = NOISE_POINTS, NOISE_DIRECTIONS
        t, residual_maker = _NOISE_DESIGNS[points]
        # Random signs *and* magnitudes: with +-1 alone, symmetric inputs (the +-12 edge probe
        # through tanh, which is odd) move in mirror image and their rounding errors cancel
        # exactly in a sum (nll over them), so the noise would read 0 while a single moved
        # coordinate (the stencil) shows the full rounding of the intermediates.
        rng = np.random.default_rng(2024)
        signs = rng.integers(0, 2, (directions, *self.x.shape)) * 2.0 - 1.0
        signs *= rng.uniform(0.5, 1.5, signs.shape)
        steps = self.eps ** (1.0 / 3.0) * scale * signs  # (directions, B, K)
        # All directions in one call for small inputs; one direction per call for large ones,
        # so a million-input forward is never handed 24 copies of its input at once.
        per_call = directions if (points * directions) * (self.x.size + self.y0.size) <= CHUNK_ELEMENTS else 1
        total = np.zeros(self.y0.size)
        for first in range(0, directions, per_call):
            part = self.x[None, None] + t[None, :, None, None] * steps[first:first + per_call, None]
            ys = self(part.reshape(-1, *self.x.shape)).reshape(len(part), points, -1)
            residuals = np.matmul(residual_maker[None], ys)  # (directions, points, M)
            np.square(residuals, out=residuals)
            total += np.sum(residuals.reshape(-1, residuals.shape[-1]), axis=0)
        sigma = np.sqrt(total / (directions * (points - 4)))
        return np.where(np.isfinite(sigma), sigma, 0.0)

    def representable(self, x: Array) -> Array:
        """``x`` rounded to the values the checked dtype can hold (float64 storage)."""
        return x if self.dtype == np.float64 else x.astype(self.dtype).astype(np.float64)

    def exact_steps(self, x: Array, h: Array) -> Array:
        """Round ``h`` so that ``x + h`` is exact in the checked dtype, removing step error."""
        xd, hd = x.astype(self.dtype, copy=False), h.astype(self.dtype, copy=False)
        steps: Array = ((xd + hd) - xd).astype(np.float64)
        return steps

    @functools.cached_property
    def row_scale(self) -> Array:
        """Per output, the largest |f| in its batch row (M,): the scale of its intermediates."""
        y = np.abs(np.where(np.isfinite(self.y0), self.y0, 0.0))
        rows = y.reshape(y.shape[0], -1) if y.ndim >= 2 else y.reshape(1, -1)
        return np.repeat(rows.max(axis=1, initial=0.0), rows.shape[1])

    def __call__(self, stack: Array | list[Array]) -> Array:
        """Evaluate each ``stack[p]`` and return the outputs flattened to ``(n, M)``.

        A list of points is evaluated point by point (no stacked copy) unless f stacks.
        """
        if self.stacks and isinstance(stack, list):
            stack = np.stack(stack)
        if self.stacks:
            with user_code("", EvaluationError):
                ys = np.asarray(self.f(stack), dtype=np.float64)
        elif self.threaded and len(stack) > 1:
            out = np.empty((len(stack), int(self.y0.size)))
            parallel.run_all([functools.partial(self._write, out, i, functools.partial(np.asarray, p))
                              for i, p in enumerate(stack)])
            return out
        else:
            ys = np.stack([self.call(p) for p in stack])
        return ys.reshape(len(stack), -1)


def _as_numbers(y: NDArray[Any]) -> Array:
    """A forward's result as the arrays differencing works on: float64, or complex as it came.

    float128 (np.longdouble) is rounded to float64 here, for the first call and its repeat
    alike, so the determinism probe compares like with like.
    """
    return y.astype(np.float64, copy=False) if y.dtype.kind != "c" else y


# Outputs coarser than this (float16: eps ~ 1e-3) cannot be differenced meaningfully.
COARSEST_EPS = 1e-6


def _precise_enough(output: np.dtype[Any], checked: np.dtype[Any]) -> None:
    """Refuse a forward whose output dtype keeps too few digits for finite differences."""
    if output.kind not in "fc" or float(np.finfo(output).eps) <= COARSEST_EPS:
        return
    digits = int(np.finfo(output).precision)
    raise EvaluationError(
        f"returned {output} values for {checked} input: {output} keeps about {digits} significant "
        f"digits, and a difference quotient f(x+h) - f(x-h) over a step small enough for the "
        f"derivative is then mostly rounding, so finite differences cannot be trusted to check "
        f"any derivative (the analytic side is not at fault). Compute and return float32 or "
        f"float64 from forward (cast to {output} outside the function under check)")


def _moved(x: Array, t: float, step: Array) -> Array:
    moved: Array = x + t * step
    return moved


def _shifted_outputs(evaluate: Evaluator, x: Array, h: Array, offsets: tuple[float, ...],
                     pattern: Pattern | None = None) -> Callable[[Any], Array]:
    """Return a function giving f at ``x + o * delta_g`` for a set of groups g.

    Without a pattern every coordinate is its own group. The result has shape
    ``(len(offsets), len(groups), M)``.
    """
    flat = x.ravel()
    pattern = pattern or Pattern(GENERAL, (x.shape[0], x.size // max(x.shape[0], 1)), 0)

    def outputs(groups: slice | NDArray[np.intp]) -> Array:
        idx = np.arange(pattern.n_groups)[groups]
        stack = pattern.shifted(flat, h, idx, offsets)
        ys = evaluate(stack.reshape(-1, *x.shape))
        return ys.reshape(len(offsets), idx.size, -1)

    return outputs


@dataclass(frozen=True)
class _Stencil:
    """A difference method defined by its step exponent and its point offsets."""

    name: ClassVar[str]
    power: ClassVar[float]
    offsets: ClassVar[tuple[float, ...]]

    def __str__(self) -> str:
        return self.name

    def steps(self, x: Array, scale: Array, evaluate: Evaluator) -> Array:
        # h = eps^p * scale in the dtype the code runs in, never below a few dozen ulps of x:
        # near p = 1 - 1e-12 the domain-limited step would otherwise vanish when x + h rounds.
        spacing = np.spacing(np.abs(x).astype(evaluate.dtype)).astype(np.float64)
        return evaluate.exact_steps(x, np.maximum(scale * evaluate.eps**self.power, MIN_STEP_ULPS * spacing))

    def combine(self, ys: Array, h: Array, evaluate: Evaluator,
                noise: Array) -> tuple[Array, Array, Array]:
        """Value, truncation and rounding bounds for a chunk: ``ys`` (points, chunk, M), ``h`` (chunk, 1)."""
        raise NotImplementedError

    def estimate(self, evaluate: Evaluator, x: Array, scale: Array, quick: bool = False) -> Estimate:
        """The dense Jacobian (M, N): every coordinate its own group."""
        m = int(np.prod(evaluate.out_shape, dtype=int))
        value, error, h = self.groups(evaluate, x, scale, Pattern(GENERAL, (x.shape[0], x.size // x.shape[0]), m),
                                      quick)
        return Estimate(value, error, h, self.name)

    def groups(self, evaluate: Evaluator, x: Array, scale: Array, pattern: Pattern,
               quick: bool = False, subset: NDArray[np.intp] | None = None) -> tuple[Array, Array, Array]:
        """Difference quotients (M, groups), their error bounds, and the steps (N,).

        Column g holds group g's quotients, so for a general or row-wise pattern the
        result is already the Jacobian (or its blocks) in row-major order: each chunk of
        groups is transposed while it is in cache, never the whole matrix afterwards.

        ``quick`` (central differences only) evaluates f(x +- h) alone and bounds only the
        rounding error: a first pass whose tolerance is, if anything, too tight. Whatever
        fails it is recomputed in full, so a correct derivative costs two evaluations per
        column instead of four and a wrong one is judged exactly as before.
        """
        h = self.steps(x, scale, evaluate).ravel()
        ids = np.arange(pattern.n_groups) if subset is None else subset
        if quick and isinstance(self, Central):
            return self._quick(evaluate, x, h, pattern, ids)
        outputs = _shifted_outputs(evaluate, x, h, self.offsets, pattern)
        n, m = ids.size, pattern.m
        value = np.empty((m, n))
        error = np.empty((m, n))
        trunc_ratio = np.empty(n)
        chunk = max(1, CHUNK_ELEMENTS // (len(self.offsets) * (x.size + m)))

        def work(start: int, stop: int) -> None:
            local = slice(start, stop)
            ys = outputs(ids[local])
            with np.errstate(all="ignore"):  # overflow shows up as inf, reported downstream
                v, t, r = self.combine(ys, pattern.out_steps(h, ids[local]), evaluate, evaluate.noise)
                trunc_ratio[local] = _truncation_ratio(t, v, pattern, evaluate.tiny)
                value[:, local] = v.T
                t += r
                error[:, local] = t.T

        _chunked(n, chunk, work, evaluate.threaded)
        return self._refine(evaluate, x, h, value, error, trunc_ratio, chunk, pattern, ids)

    def _quick(self, evaluate: Evaluator, x: Array, h: Array, pattern: Pattern,
               ids: NDArray[np.intp]) -> tuple[Array, Array, Array]:
        outputs = _shifted_outputs(evaluate, x, h, (1.0, -1.0), pattern)
        n, m = ids.size, pattern.m
        value = np.empty((m, n))
        error = np.empty((m, n))
        chunk = max(1, CHUNK_ELEMENTS // (2 * (x.size + m)))

        # The rounding numerator per output: as in _rounding, but from |f(x)| instead of
        # max |f(x +- h)| (which it can exceed only by O(h^2 f''), hence the 1e-3 margin), and
        # without the flat-stencil allowance: never above the full bound, so passing here
        # implies passing there, and it is one division per entry instead of eight passes.
        rows = np.maximum(ROUNDING_ULPS * evaluate.eps * (1.0 - 1e-3) * np.abs(evaluate.y0.ravel()),
                          np.maximum(NOISE_SIGMAS * evaluate.noise, ROUNDING_ULPS * evaluate.tiny))
        rows[~np.isfinite(rows)] = 0.0  # no allowance: such entries fail here and get the full stencil

        def work(start: int, stop: int) -> None:
            groups = ids[start:stop]
            ys = outputs(groups)
            steps = pattern.out_steps(h, groups)
            with np.errstate(all="ignore"):
                v = np.subtract(ys[0], ys[1])
                v /= 2.0 * steps
                value[:, start:stop] = v.T
                np.divide(rows[:, None], steps.T, out=error[:, start:stop])

        _chunked(n, chunk, work, evaluate.threaded)
        return value, error, h

    def _refine(self, evaluate: Evaluator, x: Array, h: Array, value: Array, error: Array,
                trunc_ratio: Array, chunk: int, pattern: Pattern,
                ids: NDArray[np.intp]) -> tuple[Array, Array, Array]:
        """Shrink the step where it is too large for the function's curvature.

        h = eps^p max(1, |x|) assumes the function varies on the scale of |x|. Softmax is
        shift invariant: at logits of 1000 it varies on a scale of 1, and in float32 the
        step (~5) leaves the asymptotic regime, where |D(h) - D(2h)| no longer measures
        the error. Columns whose truncation estimate exceeds 1% of their largest entry are
        recomputed with h / 8 (up to three times), keeping whichever bound is smaller.

        A column keeps shrinking while its latest step is still not asymptotic, even when
        that step's bound was no better: out of the asymptotic regime, the noise measured
        over the step's span holds curvature too, so the bound at h / 8 can exceed the
        (equally untrustworthy) bound at h, while h / 64 is already exact.
        """
        h = h.copy()
        trial_h = h.copy()
        flat_x = x.ravel()
        floor = MIN_STEP_ULPS * np.spacing(np.abs(flat_x).astype(evaluate.dtype)).astype(np.float64)
        for level in range(1, REFINEMENTS + 1):
            can_shrink = pattern.all_members(trial_h / 8.0 > floor)[ids]
            bad = np.flatnonzero((trunc_ratio > NONASYMPTOTIC) & can_shrink)  # local positions
            if bad.size == 0:
                break
            # Over the original span the noise fit also sees the curvature: re-measure it at the new step.
            noise = evaluate.noise_at(8.0**-level)
            moved = pattern.members(ids[bad])
            trial_h[moved] = evaluate.exact_steps(flat_x[moved], trial_h[moved] / 8.0)
            outputs = _shifted_outputs(evaluate, x, trial_h, self.offsets, pattern)
            for start in range(0, bad.size, chunk):
                local = bad[start:start + chunk]
                groups = ids[local]
                with np.errstate(all="ignore"):
                    v, t, r = self.combine(outputs(groups), pattern.out_steps(trial_h, groups), evaluate, noise)
                    better = np.max(t + r, axis=1) < np.max(error[:, local], axis=0)
                    keep = local[better]
                    value[:, keep] = v[better].T
                    error[:, keep] = (t + r)[better].T
                    h[pattern.members(ids[keep])] = trial_h[pattern.members(ids[keep])]
                    trunc_ratio[local] = _truncation_ratio(t, v, pattern, evaluate.tiny)
            trunc_ratio[np.setdiff1d(np.arange(ids.size), bad)] = 0.0  # only shrinking columns go on
        return value, error, h


def _chunked(n: int, chunk: int, work: Callable[[int, int], None], threaded: bool) -> None:
    """``work(start, stop)`` over ``range(n)`` in chunks, on threads when ``threaded``.

    Each call writes its own rows of preallocated arrays, so chunks are independent.
    """
    parallel.run_all([functools.partial(work, start, min(n, start + chunk)) for start in range(0, n, chunk)],
                     threaded)


def _truncation_ratio(t: Array, v: Array, pattern: Pattern, tiny: float) -> Array:
    """Per group: truncation estimate relative to the largest entry, within each batch row.

    A group that moves a column of every row sees each row's block separately: one row's
    large entries must not hide another row's truncation error.
    """
    rows = pattern.shape[0] if pattern.kind != GENERAL and t.shape[1] % pattern.shape[0] == 0 else 1
    t_rows = t.reshape(t.shape[0], rows, -1)
    v_rows = np.abs(v).reshape(v.shape[0], rows, -1)
    ratio: Array = np.max(np.max(t_rows, axis=2) / np.maximum(np.max(v_rows, axis=2), tiny), axis=1)
    return ratio


def _rounding(ys: Array, h: Array, evaluate: Evaluator, noise: Array) -> Array:
    """Rounding bound of f(x+h) - f(x-h), times h.

    The largest of: a few ulps of |f| (never below the subnormal spacing, where relative
    precision ends); the measured noise of f; and, where f did not change at all across
    the stencil, a few ulps of f's intermediates, taken as the largest output in the
    batch row or the input's own scale (h / eps^p), whichever is larger. A flat stencil
    means the change was below what the intermediates can represent (log_softmax's
    log S_0 rounds to exactly 0 when another logit is 40 lower), not that the derivative
    is 0; such entries resolve derivatives down to about eps^(2/3), no further.
    """
    eps = evaluate.eps
    base: Array = np.abs(ys[0])
    np.maximum(base, np.abs(ys[1]), out=base)
    base *= ROUNDING_ULPS * eps
    np.maximum(base, np.maximum(NOISE_SIGMAS * noise, ROUNDING_ULPS * evaluate.tiny)[None, :], out=base)
    flat = ys[0] == ys[1]
    if len(ys) > 2:
        flat &= (ys[len(ys) - 2] == ys[len(ys) - 1]) & (ys[0] == ys[len(ys) - 1])
    if flat.any():
        input_scale = np.broadcast_to(h / eps ** (1.0 / 3.0), base.shape)
        intermediates = np.maximum(np.broadcast_to(evaluate.row_scale[None, :], base.shape)[flat], input_scale[flat])
        base[flat] = np.maximum(base[flat], ROUNDING_ULPS * eps * intermediates)
    return base


@dataclass(frozen=True)
class Central(_Stencil):
    """Second-order central differences (f(x+h) - f(x-h)) / 2h, h = eps^(1/3) max(1, |x|)."""

    name: ClassVar[str] = "central"
    power: ClassVar[float] = 1.0 / 3.0
    offsets: ClassVar[tuple[float, ...]] = (1.0, -1.0, 2.0, -2.0)

    def combine(self, ys: Array, h: Array, evaluate: Evaluator, noise: Array) -> tuple[Array, Array, Array]:
        d1 = (ys[0] - ys[1]) / (2.0 * h)
        d2 = (ys[2] - ys[3]) / (4.0 * h)
        # D(2h) - D(h) ~ 3 c h^2, so |D(h) - D(2h)| / 3 estimates D(h)'s truncation error;
        # rounding in (f+ - f-) / 2h has standard deviation sigma / (sqrt(2) h).
        return d1, np.abs(d1 - d2) / 3.0, _rounding(ys, h, evaluate, noise) / h


@dataclass(frozen=True)
class Richardson(_Stencil):
    """Central differences extrapolated once: R = (4 D(h) - D(2h)) / 3, fourth order."""

    name: ClassVar[str] = "richardson"
    power: ClassVar[float] = 1.0 / 5.0
    offsets: ClassVar[tuple[float, ...]] = (1.0, -1.0, 2.0, -2.0, 4.0, -4.0)

    def combine(self, ys: Array, h: Array, evaluate: Evaluator, noise: Array) -> tuple[Array, Array, Array]:
        d1 = (ys[0] - ys[1]) / (2.0 * h)
        d2 = (ys[2] - ys[3]) / (4.0 * h)
        d4 = (ys[4] - ys[5]) / (8.0 * h)
        r1 = (4.0 * d1 - d2) / 3.0
        r2 = (4.0 * d2 - d4) / 3.0
        # R(2h) - R(h) ~ 15 c h^4; R's rounding is at most (4/3 + 1/6) that of D(h).
        rounding = 1.5 * _rounding(ys, h, evaluate, noise) / h
        spread = np.abs(r1 - r2)
        # For a smooth f, R(h) - R(2h) is O(h^4), far below D(h) - D(2h) = O(h^2). Where it is
        # not (the stencil, reaching 4h, straddles a jump in f'' as x|x| has at 0), the h^4
        # model is wrong: fall back to the central-difference bound.
        rough = spread > 0.1 * np.abs(d1 - d2) + rounding
        return r1, np.where(rough, spread + np.abs(d1 - d2) / 3.0, spread / 15.0), rounding


@dataclass(frozen=True)
class ComplexStep:
    """Complex step Im f(x + i h) / h with h = 1e-20 max(1, |x|): no cancellation at all.

    Needs code that is complex-analytic (no abs, maximum, comparisons on x); where it is
    not, :func:`estimate` falls back to central differences and says why.
    """

    name: ClassVar[str] = "complex"

    def __str__(self) -> str:
        return self.name

    def estimate(self, evaluate: Evaluator, x: Array, scale: Array) -> Estimate:
        h = scale * 1e-20
        flat = x.ravel().astype(np.complex128)
        n = flat.size
        value = np.empty((int(np.prod(evaluate.out_shape, dtype=int)), n))
        for j in range(n):
            z = flat.copy()
            z[j] += 1j * h.ravel()[j]
            try:
                with np.errstate(all="ignore"):
                    y = np.asarray(evaluate.f(z.reshape(x.shape)))
            except Exception as exc:
                raise _NotComplex(f"it raised {type(exc).__name__}: {exc}") from exc
            if y.dtype.kind != "c":
                raise _NotComplex(f"it returned {y.dtype} for complex input, dropping the imaginary part")
            value[:, j] = y.imag.ravel() / h.ravel()[j]
        # The reference is exact to a few ulps, so the analytic side's own rounding decides:
        # formulas that cancel (1 - y^2 near saturation, 1 - S) are exact only to ulps of the
        # terms they cancel, as large as the output or the largest entry of the row or column.
        magnitude = np.abs(value)
        terms = np.maximum(np.maximum(np.max(magnitude, axis=1, keepdims=True),
                                      np.max(magnitude, axis=0, keepdims=True)),
                           np.abs(evaluate.y0.reshape(-1, 1)))
        error = 8.0 * evaluate.eps * np.abs(value) + ROUNDING_ULPS * evaluate.eps * terms
        return Estimate(value, error, np.asarray(h, dtype=np.float64).ravel(),
                        self.name)


class _NotComplex(Exception):
    pass


METHODS: dict[str, Central | Richardson | ComplexStep] = {
    "central": Central(),
    "richardson": Richardson(),
    "complex": ComplexStep(),
}


def estimate(f: Callable[[Array], Any], x: Array, scale: Array, method: str = "central",
             evaluator: Evaluator | None = None, dtype: str = "float64", quick: bool = False) -> Estimate:
    """Numerical Jacobian of ``f`` at ``x``, shape ``(f(x).size, x.size)``, with error bounds.

    Parameters
    ----------
    f : callable
        The forward function; called on ``x``-shaped arrays (or stacks of them).
    x : ndarray
        The point, float64.
    scale : ndarray
        Per-coordinate step scale, see :func:`gradcheck_cli.inputs.step_scale`.
    method : {'central', 'richardson', 'complex'}
    """
    evaluate = evaluator or Evaluator(f, x, scale, dtype)
    chosen = METHODS[method]
    if isinstance(chosen, ComplexStep):
        try:
            result = chosen.estimate(evaluate, x, scale)
        except _NotComplex as why:
            fallback = METHODS["central"].estimate(evaluate, x, scale)
            note = (f"complex step not possible: {why}; used central differences instead "
                    f"(complex step needs code without abs, maximum, where or comparisons on x)")
            return Estimate(fallback.value, fallback.error, fallback.step, "central", note)
        central = METHODS["central"].estimate(evaluate, x, scale)
        # Code can accept complex input and still not be complex-analytic (abs, where):
        # then Im f(x + ih)/h is wrong, so it must agree with central differences.
        if np.any(np.abs(result.value - central.value) > 10.0 * central.error + 1e-8 * np.abs(central.value)):
            note = ("complex step disagrees with central differences: the code is not "
                    "complex-analytic (abs, maximum, where or comparisons on x); used central "
                    "differences instead")
            return Estimate(central.value, central.error, central.step, "central", note)
        return result
    return chosen.estimate(evaluate, x, scale, quick)


def one_sided(evaluate: Evaluator, x: Array, h: Array) -> tuple[Array, Array]:
    """Backward and forward differences (M, N): they differ where f has a kink."""
    ys = _shifted_outputs(evaluate, x, h, (1.0, -1.0))(slice(None))
    y0 = evaluate.y0.reshape(1, -1)
    hh = h.ravel()[:, None]
    left = (y0 - ys[1]) / hh
    right = (ys[0] - y0) / hh
    return left.T, right.T


def second_diagonal(evaluate: Evaluator, x: Array, scale: Array, kind: str | None = None) -> Estimate:
    """Elementwise second derivatives d^2 y_j / d x_j^2 as a (1, N) row, with error bounds.

    S(h) = (f(x+h) - 2 f(x) + f(x-h)) / h^2 at h = eps^(1/4) max(1, |x|), where truncation
    (h^2 f''''/12) and rounding (~4 u |f| / h^2) balance near eps^(1/2) ~ 1e-8 relative;
    |S(h) - S(2h)| / 3 estimates the truncation error. ``kind`` is the structure already
    verified at this point, if any (else it is detected here).
    """
    h = evaluate.exact_steps(x, np.maximum(scale * evaluate.eps**0.25, MIN_STEP_ULPS * np.spacing(np.abs(x))))
    n = x.size
    if kind is None and evaluate.y0.shape == x.shape:
        kind = detect(evaluate, x, evaluate.y0, scale)
    if evaluate.y0.shape != x.shape or kind != ELEMENTWISE:
        raise EvaluationError("is not elementwise (an output depends on another input), but derivative2 "
                              "gives f''(x) elementwise; check it through a jacobian instead")
    # Elementwise: every coordinate moves at once, 4 evaluations in all.
    pattern = Pattern(ELEMENTWISE, (x.shape[0], x.shape[1]), n)
    diag = _shifted_outputs(evaluate, x, h, (1.0, -1.0, 2.0, -2.0), pattern)(slice(None))[:, 0, :]
    y0 = evaluate.y0.ravel()
    hh = h.ravel()
    with np.errstate(all="ignore"):
        s1 = (diag[0] - 2.0 * y0 + diag[1]) / hh**2
        s2 = (diag[2] - 2.0 * y0 + diag[3]) / (4.0 * hh**2)
        size = np.maximum(np.max(np.abs(diag), axis=0), np.abs(y0))
        rounding = np.maximum(ROUNDING_ULPS * evaluate.eps * size, 2.0 * NOISE_SIGMAS * evaluate.noise)
        error = np.abs(s1 - s2) / 3.0 + 4.0 * rounding / hh**2
    return Estimate(s1[None, :], error[None, :], hh, "central2")


@dataclass(frozen=True)
class StructuredEstimate:
    """A numerical Jacobian in the cheapest form its verified structure allows.

    ``form`` is ``diagonal`` (value (B, K): elementwise), ``blocks`` (value (B*K_out, K):
    row-wise, entry [b*K_out + i, j] = dy[b, i]/dx[b, j]) or ``dense`` (value (M, N)).
    """

    form: str
    value: Array
    error: Array
    step: Array
    method: str
    structure: str
    note: str = ""


def estimate_structured(evaluate: Evaluator, x: Array, scale: Array, method: str = "central",
                        quick: bool = False, kind: str | None = None) -> StructuredEstimate:
    """Numerical Jacobian using the function's structure, confirmed twice.

    :func:`gradcheck_cli.structure.detect` proposes a structure from bit-exact row and
    column perturbations; the structured estimate is then checked against one random
    directional derivative. A function whose rows (or entries) turn out to interact falls
    back to the general path, and the note says so.
    """
    note = ""
    if kind is None:
        kind = GENERAL if method == "complex" else detect(evaluate, x, evaluate.y0, scale)
        if kind == GENERAL and method != "complex" and x.shape[0] > 1:
            note = ("rows of the batch interact (moving one input row changes other output rows), so every "
                    "entry of the full (B*K) x (B*K) Jacobian was checked on the general path")
    if kind != GENERAL:
        stencil = METHODS[method]
        assert isinstance(stencil, _Stencil)
        m = int(evaluate.y0.size)
        value, error, h = stencil.groups(evaluate, x, scale, Pattern(kind, (x.shape[0], x.shape[1]), m), quick)
        if kind == ELEMENTWISE:
            form, value, error = "diagonal", value.reshape(x.shape), error.reshape(x.shape)
        else:
            # Column j of the row-wise quotients is dy[b, :]/dx[b, j] for every row b: the
            # blocks (B*K_out, K), row-major like the analytic blocks.
            form = "blocks"
        # One batch row perturbed one coordinate at a time is already the general path: there is
        # no structure to confirm.
        if (kind == ROWWISE and x.shape[0] == 1) or _directional_agrees(evaluate, x, h.reshape(x.shape), form,
                                                                         value, error):
            return StructuredEstimate(form, value, error, h, stencil.name, kind)
        note = (f"{kind} structure proposed by single-row/column probes failed the directional check "
                f"(outputs depend on other inputs in a way the probes missed); used the general path")
    est = estimate(evaluate.user_f, x, scale, method, evaluate, quick=quick)
    return StructuredEstimate("dense", est.value, est.error, est.step, est.method, GENERAL, est.note or note)


def apply_form(form: str, value: Array, d: Array) -> Array:
    """J d for a Jacobian in ``form`` and a direction d (B, K); result flattened (M,)."""
    b = d.shape[0]
    if form == "diagonal":
        out: Array = (value * d).ravel()
        return out
    if form == "blocks":
        blocks = value.reshape(b, -1, d.shape[1])
        out = np.einsum("bij,bj->bi", blocks, d).ravel()
        return out
    out = value @ d.ravel()
    return out


def _directional_agrees(evaluate: Evaluator, x: Array, h: Array, form: str, value: Array, error: Array) -> bool:
    """Does J_structured d match the central difference of f along a random d?"""
    signs = np.random.default_rng(11).choice([-1.0, 1.0], x.shape)
    d = evaluate.exact_steps(x, h * signs) if evaluate.dtype == np.float64 else h * signs
    ys = evaluate(np.stack([x + d, x - d, x + 2 * d, x - 2 * d]))
    with np.errstate(all="ignore"):
        d1 = (ys[0] - ys[1]) / 2.0
        d2 = (ys[2] - ys[3]) / 4.0
        size = np.max(np.abs(ys), axis=0)
        bound = (np.abs(d1 - d2) / 3.0 + np.maximum(ROUNDING_ULPS * evaluate.eps * size, NOISE_SIGMAS * evaluate.noise)
                 + apply_form(form, error, np.abs(d)))
        predicted = apply_form(form, value, d)
        ok = np.abs(predicted - d1) <= 8.0 * bound + 1e-9 * np.abs(d1)
    return bool(np.all(ok | ~np.isfinite(d1)))


# --fast: the stencil along d is f at x + t d for these t; 0 is f(x), already known. A cubic
# fit in t through the points leaves only rounding noise: over five points that is one
# degree of freedom per output, plenty once the projection sums thousands of outputs; with
# fewer outputs two more random offsets give three.
PROJECTION_OFFSETS = np.array([1.0, -1.0, 2.0, -2.0])
NOISE_OFFSETS = np.array([1.3725, -0.4618])
MANY_OUTPUTS = 4096
BLOCK_COLUMNS = 1 << 15


def _fit_residuals(offsets: Array) -> Array:
    """The projector onto residuals of a cubic fit at t = 0 and ``offsets``, applied to
    f(x + t d) - f(x), whose t = 0 entry is 0: that column drops out."""
    t = np.concatenate([[0.0], offsets])
    vander = np.vander(t, 4)
    return np.ascontiguousarray((np.eye(t.size) - vander @ np.linalg.pinv(vander))[:, 1:])


_FIT = {few: _fit_residuals(np.concatenate([PROJECTION_OFFSETS, NOISE_OFFSETS] if few else [PROJECTION_OFFSETS]))
        for few in (False, True)}


@functools.lru_cache(maxsize=2)
def _draws(seed: int, count: int, n: int, m: int) -> tuple[NDArray[np.bool_], Array]:
    """Seeded direction signs (N,) and projection vectors u (count, M), shared by the trials
    of a run (each trial has its own x): read-only."""
    rng = np.random.default_rng([seed, 424242])
    signs = rng.integers(0, 2, n, dtype=np.bool_)
    # Any continuous distribution makes u^T a = 0 a probability-0 event for a != 0; uniform
    # draws cost half of normal ones, which matters at a million outputs.
    u = rng.uniform(-1.0, 1.0, (count, m))
    signs.flags.writeable = False
    u.flags.writeable = False
    return signs, u


def _projected(ys: Array, y0: Array, u: Array, floor: Array, measured: Array) -> tuple[Array, Array, Array]:
    """u @ D(d), u @ D(2d) and the rounding bound of u @ D(d), in one blocked pass.

    Per output, the rounding noise is what a cubic fit in t through f(x) and ``ys`` leaves
    (at least ``measured``, at least ``floor``); the fit runs on f(x + t d) - f(x), which
    is small, so it does not itself round at the level of |f|. Blocks of columns stay in
    cache and run on threads; their partial sums are added at the end.
    """
    points = ys.shape[0] + 1
    fit = _FIT[ys.shape[0] > len(PROJECTION_OFFSETS)]
    starts = range(0, ys.shape[1], BLOCK_COLUMNS)

    def block(start: int) -> Array:
        cols = slice(start, start + BLOCK_COLUMNS)
        # einsum, not matmul: BLAS would start its own threads inside each of ours.
        residuals = np.einsum("ij,jk->ik", fit, ys[:, cols] - y0[cols])
        np.square(residuals, out=residuals)
        sigma = np.sqrt(np.sum(residuals, axis=0) / (points - 4))
        sigma[~np.isfinite(sigma)] = 0.0
        per_output = np.maximum(NOISE_SIGMAS * np.maximum(sigma, measured[cols]), floor[cols])
        uc = u[:, cols]
        return np.stack([np.einsum("ij,j->i", uc, (ys[0, cols] - ys[1, cols]) / 2.0),
                         np.einsum("ij,j->i", uc, (ys[2, cols] - ys[3, cols]) / 4.0),
                         np.einsum("ij,j->i", np.square(uc), np.square(per_output))])

    with np.errstate(all="ignore"):
        total = np.sum(parallel.run_all([functools.partial(block, start) for start in starts]), axis=0)
    return total[0], total[1], np.sqrt(total[2])


def projections(evaluate: Evaluator, x: Array, scale: Array, count: int,
                seed: int) -> tuple[Array, Array, Array, Array]:
    """``--fast``: seeded random projections u_k^T J d, without forming J.

    One direction d has entries +-eps^(1/3) * scale (Rademacher signs) and each u_k is
    uniform in [-1, 1] over the outputs: J d is measured once, by central differences, and
    read through ``count`` projections (each costs the analytic side one vector product;
    the numerical side, four to six evaluations in all). A wrong J changes J d for almost every d,
    and then u^T (J_wrong - J) d is non-zero for almost every u. The truncation error is
    |D(d) - D(2d)| / 3; the rounding error is the forward's noise, measured from the same
    evaluations (a cubic fit in t through them leaves only noise), combined over
    u_k as independent errors. Returns (u (count, M), d (count, N), values (count,),
    errors (count,)).
    """
    m = int(evaluate.y0.size)
    signs, u = _draws(seed, count, x.size, m)
    size = evaluate.eps ** (1.0 / 3.0) * scale
    direction = np.where(signs.reshape(x.shape), size, -size)
    offsets = PROJECTION_OFFSETS if m >= MANY_OUTPUTS else np.concatenate([PROJECTION_OFFSETS, NOISE_OFFSETS])
    y0 = evaluate.y0.ravel()
    floor = ROUNDING_ULPS * evaluate.eps * np.abs(y0)
    # Large steps (float32, or |x| in the hundreds) can outrun the curvature while D(d) and
    # D(2d) still agree (log_softmax is piecewise linear at logits of 1000): there, also
    # require agreement with the estimate at d / 8, shrinking until the two agree.
    cautious = evaluate.dtype != np.float64 or float(np.max(np.abs(x), initial=0.0)) > 100.0
    best: tuple[Array, Array, Array] | None = None  # (values, errors, step)
    previous: tuple[Array, Array] | None = None
    for level in range(REFINEMENTS + 1):
        step = evaluate.exact_steps(x, direction / 8.0**level)
        ys = evaluate.along(x, step, offsets)
        d1, d2, rounding = _projected(ys, y0, u, floor, evaluate.noise)
        errors = np.abs(d1 - d2) / 3.0 + rounding
        if best is None or np.all(errors < best[1]):
            best = (d1, errors, step)
        asymptotic = bool(np.all(np.abs(d1 - d2) / 3.0 <= NONASYMPTOTIC * np.abs(d1)))
        agrees = previous is None or bool(np.all(np.abs(d1 - previous[0]) <= 4.0 * (errors + previous[1])))
        if asymptotic and (not cautious or (previous is not None and agrees)):
            break
        if previous is not None and not agrees:
            best = (d1, errors, step)  # the finer step is the trusted one
        previous = (d1, errors)
    assert best is not None
    values, errors, step = best
    return u, np.broadcast_to(step.ravel(), (count, x.size)), values, errors


def group_of(kind: str, coords: NDArray[np.intp], k: int) -> NDArray[np.intp]:
    """The groups (under ``kind``) that move the flat input coordinates ``coords``."""
    if kind == ELEMENTWISE:
        return np.zeros(1, dtype=np.intp)
    if kind == ROWWISE:
        return np.unique(coords % k)
    return np.unique(coords)


def complete(evaluate: Evaluator, x: Array, scale: Array, method: str, kind: str, form: str,
             value: Array, error: Array, coords: NDArray[np.intp]) -> tuple[Array, Array]:
    """Recompute, with the full stencil and its truncation bound, the columns of a quick
    estimate that move input ``coords``; return (value, error) in ``form``, patched in place
    (the full stencil's figures supersede the quick ones for every later reader).

    Column j of a blocks or dense form is group j's outputs, so a group's full estimate
    replaces exactly that column; an elementwise (diagonal) estimate is one group.
    """
    stencil = METHODS[method]
    assert isinstance(stencil, _Stencil)
    b, k = x.shape
    m = int(evaluate.y0.size)
    ids = group_of(kind, coords, k)
    v, e, _ = stencil.groups(evaluate, x, scale, Pattern(kind, (b, k), m), subset=ids)
    if form == "diagonal":
        return v.reshape(x.shape), e.reshape(x.shape)
    value[:, ids] = v
    error[:, ids] = e
    return value, error
