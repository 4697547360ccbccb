"""Check a model's derivative with respect to each of its arguments: one row per argument.

The stages, per trial: sample a point (one array per argument, constants after), call
the forward once through the harness (:class:`Harness`: dtype, replayed random state,
in-place and determinism checks, user exceptions as messages), build the analytic
Jacobian of every output with respect to each argument from the user's backward (one
upstream basis vector per output entry), estimate the same Jacobian numerically
(:func:`gradcheck_cli.numdiff.estimate` on the flattened argument), compare. Rows are
built from the worst trial of each argument: PASS, KINK (the forward has a kink there and
the analytic value lies between its one-sided slopes), FAIL with a diagnosis
(:func:`gradcheck_cli.diagnose.diagnose_argument`), or ERROR.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gradcheck_cli import floating, inputs, numdiff
from gradcheck_cli.compare import Comparison, Tolerance, compare
from gradcheck_cli.conventions import ConventionError
from gradcheck_cli.diagnose import ArgumentEvidence, diagnose_argument, entry_name
from gradcheck_cli.harness import user_code
from gradcheck_cli.models import Model, Point
from gradcheck_cli.registry.styles import INPUT, LayerError
from gradcheck_cli.results import CheckResult, Verdict

Array = NDArray[np.float64]
# Above this many Jacobian entries per argument (summed over outputs) a check would hold
# too much: refuse with a message naming smaller shapes.
MAX_ENTRIES = 4_000_000
MAX_OUTPUTS = 20_000
FAST_PROJECTIONS = 3


class Refused(Exception):
    """The model cannot be checked at this point; the message says why (an ERROR row)."""


@dataclass
class Harness:
    """Every call into user code: inputs in the checked dtype, numpy's random state replayed
    for stochastic code, floating-point warnings recorded, exceptions turned into messages."""

    model: Model
    dtype: np.dtype[Any]
    state: Any = None
    warnings: list[str] = field(default_factory=list)

    def cast(self, value: Any) -> Any:
        arr = np.asarray(value)
        if self.dtype != np.float64 and arr.dtype.kind == "f":
            return arr.astype(self.dtype)
        return arr.copy() if isinstance(value, np.ndarray) else value

    def point(self, point: Point) -> Point:
        return {k: self.cast(v) for k, v in point.items()}

    def __call__(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        if self.state is not None:
            np.random.set_state(self.state)
        try:
            with user_code(what, Refused, self.warnings, keep=(LayerError, Refused, ConventionError)):
                return fn(*args)
        except (LayerError, ConventionError) as exc:  # the message is already the user's
            raise Refused(str(exc)) from exc


def _numbers(value: Any, what: str) -> Array:
    try:
        arr = np.asarray(value)
    except Exception as exc:  # a ragged list, an object numpy refuses
        raise Refused(f"{what} returned {type(value).__name__}, not an array: {exc}") from exc
    if arr.dtype.kind not in "fiub":
        raise Refused(f"{what} returned an array of dtype {arr.dtype}, expected numbers")
    return arr.astype(np.float64)


def _differenced(value: Any) -> Array:
    """A forward's output as differencing takes it: float64, or complex as it came (complex step)."""
    arr = np.asarray(value)
    if arr.dtype.kind == "c":
        return arr.astype(np.complex128)
    return _numbers(arr, "forward")


@dataclass
class _Worst:
    """The worst trial so far of one argument."""

    ratio: float = -1.0
    trial: int = 0
    comparison: Comparison | None = None
    analytic: Array | None = None
    numeric: numdiff.Estimate | None = None
    evaluator: numdiff.Evaluator | None = None
    x: Array | None = None
    others: dict[str, Array] = field(default_factory=dict)
    out_shapes: tuple[tuple[int, ...], ...] = ()
    projected: bool = False
    point: Point | None = None


@dataclass
class _ArgState:
    name: str
    shape: tuple[int, ...]
    worst: _Worst = field(default_factory=_Worst)
    wrong_shape: str = ""
    error: str = ""
    changed_upstream: str = ""
    nonlinear: str = ""
    squeezed: str = ""

    @property
    def misuse(self) -> str:
        """What the backward does wrong besides its numbers: in-place writes, nonlinearity, a shape
        that differs from the argument's only by size-1 axes."""
        return "; ".join(m for m in (self.squeezed, self.changed_upstream, self.nonlinear) if m)


class Check:
    """Judge one model over the trials of a run; ``rows()`` gives one row per argument."""

    def __init__(self, check: str, model: Model, seed: int, trials: int, method: str, dtype: str,
                 tolerance: Tolerance, reproduce: str = "", fixed: Mapping[str, Any] | None = None,
                 fast: bool = False, edges: bool = False) -> None:
        self.check, self.model = check, model
        self.n_random = trials
        trials += inputs.N_EDGES if edges else 0
        self.fixed = dict(fixed or {})
        self.seed, self.n_trials, self.method, self.dtype = seed, trials, method, dtype
        self.tolerance, self.reproduce = tolerance, reproduce
        self.args = {a.name: _ArgState(a.name, a.shape) for a in model.differentiable}
        self.error = ""
        self.notes: list[str] = list(model.notes)
        self.fast = fast
        self.projected = False
        self._given: tuple[Point, dict[str, Array]] = ({}, {})

    # --- sampling ------------------------------------------------------------------------

    def sample(self, t: int, harness: Harness) -> Point:
        """The point of trial ``t``: each argument from its domain, then the constants."""
        rng = np.random.default_rng([self.seed, t, 7])
        point: Point = {}
        edge = t - self.n_random
        for a in self.model.args:
            if a.name in self.fixed:  # given by the caller: checked where it is, in every trial
                x = np.array(self.fixed[a.name], dtype=np.float64)
            elif a.domain == "labels":  # integer class indices (an embedding's x): a constant, not differentiated
                point[a.name] = rng.integers(0, max(a.classes, 1), a.shape)
                continue
            elif a.domain == "mask":  # a boolean mask, mostly True and never all False: a constant
                mask = rng.random(a.shape) < 0.75
                mask.flat[0] = True
                point[a.name] = mask
                continue
            elif edge >= 0 and a.role == INPUT:  # --edges: the inputs take the values that break naive code
                size = _size(a.shape)
                rows = a.shape[0] if len(a.shape) > 1 else 1
                x = inputs.edge_input(a.domain, (rows, size // rows), edge, self.model.kinks, self.dtype)[1]
                x = x.reshape(a.shape)
            else:
                x = inputs.sample_domain(a.domain, a.shape, rng, self.model.kinks)  # type: ignore[arg-type]
                if a.scale != 1.0 and a.domain in ("real", "positive"):
                    x = x * a.scale
            point[a.name] = x.astype(self.dtype).astype(np.float64) if self.dtype != "float64" else x
        if self.model.constants is not None:
            point.update(harness("forward", self.model.constants, harness.point(point), rng))
        return point

    # --- one trial -----------------------------------------------------------------------

    @contextlib.contextmanager
    def harness(self, t: int) -> Iterator[Harness]:
        """The harness of trial ``t``: a stochastic model's random state seeded for the trial and
        replayed before every call; numpy's global state is restored afterwards."""
        harness = Harness(self.model, np.dtype(self.dtype))
        saved = np.random.get_state()
        try:
            if self.model.stochastic:
                np.random.seed([self.seed, t])
                harness.state = np.random.get_state()
            yield harness
        finally:
            np.random.set_state(saved)

    def step(self, t: int) -> None:
        if self.error:
            return
        try:
            with self.harness(t) as harness:
                self._trial(t, harness)
        except Refused as exc:
            self.error = str(exc)

    def _trial(self, t: int, harness: Harness) -> None:
        point = self.sample(t, harness)
        outs, back = self._reference(point, harness)
        if self.fast or self._too_large(outs):
            if not self.fast and not self.projected:
                self.notes.append(f"the Jacobians hold {sum(o.size for o in outs):,} output entries, too many to "
                                  f"build whole: checked by random projections u^T J d, as with --fast")
            self.projected = True
            self._projected_trial(t, point, outs, back, harness)
            return
        out_shapes = tuple(o.shape for o in outs)
        analytic = self._dense(outs, back, harness)
        for a in self.model.differentiable:
            state = self.args[a.name]
            if state.error or state.wrong_shape or a.name not in analytic:
                continue
            try:
                est, evaluator, x = self._numeric(point, a.name, a.domain, harness, out_shapes, quick=True)
                comp = compare(analytic[a.name], est.value, est.error, self.tolerance)
                if not comp.passed and self.method == "central":  # the quick pass is only a first look
                    est, evaluator, x = self._numeric(point, a.name, a.domain, harness, out_shapes,
                                                      evaluator=evaluator)
                    comp = compare(analytic[a.name], est.value, est.error, self.tolerance)
            except numdiff.EvaluationError as exc:
                self.error = f"forward {exc}"
                return
            if comp.max_ratio > state.worst.ratio:
                keep = not comp.passed
                state.worst = _Worst(comp.max_ratio, t, comp, analytic[a.name] if keep else None,
                                     est if keep else None, evaluator if keep else None, x if keep else None,
                                     {}, out_shapes)
                if keep:
                    state.worst.others = self._numeric_others(point, a.name, harness, out_shapes)
                    state.worst.point = point

    def _outputs(self, raw: tuple[Any, ...], what: str, warnings: list[str] | None = None) -> list[Array]:
        outs = [_numbers(o, f"{what} ({name})") for o, name in zip(raw, self.model.outputs, strict=True)]
        for o, name in zip(outs, self.model.outputs, strict=True):
            if not np.all(np.isfinite(o)):
                idx = tuple(int(i) for i in np.argwhere(~np.isfinite(o))[0])
                where = f"{name}{list(idx)}" if idx else f"the {name}"
                warned = f" (numpy reported: {', '.join(warnings)})" if warnings else ""
                if self.model.component == "chain":
                    raise Refused(f"the loss of {self.model.name.split('+')[0]}'s output is {o[idx]}{warned}: the loss "
                                  f"needs predictions from its own domain (probabilities, positive numbers), and the "
                                  f"layer's outputs are not; check the two apart, or a loss that takes any real "
                                  f"prediction (mse, or one on logits)")
                raise Refused(f"forward returned {o[idx]} at {where}{warned}; the check needs finite outputs "
                              f"(inputs are drawn from each argument's domain: declare domain: positive or "
                              f"unit in args if the function needs it)")
        return outs

    def _reference(self, point: Point, harness: Harness) -> tuple[list[Array], Callable[..., Any]]:
        """The outputs at ``point`` and the user's backward there, after the in-place and
        determinism checks of the forward."""
        given = harness.point(point)
        raw, back = harness("forward", self.model.pullback, given)
        for name in given:
            if name in point and not floating.same_values(np.asarray(given[name]),
                                                          np.asarray(point[name]).astype(harness.dtype)):
                raise Refused(f"forward changes its argument {name} in place; callers' arrays would be corrupted. "
                              f"Work on a copy ({name} = {name}.copy())")
        self._given = (given, {k: np.array(v, copy=True) for k, v in given.items() if isinstance(v, np.ndarray)})
        outs = self._outputs(tuple(raw), "forward", harness.warnings)
        again = self._outputs(tuple(harness("forward", self.model.forward, harness.point(point))), "forward")
        if not all(floating.same_values(a, b) for a, b in zip(outs, again, strict=True)):
            hint = ("it is marked stochastic, so it may draw only from numpy's global random state (np.random.*), "
                    "which gradcheck replays" if self.model.stochastic else
                    "if it draws random numbers (dropout), mark it stochastic: true")
            raise Refused(f"forward is not deterministic: two calls at the same point gave different outputs; {hint}")
        return outs, back

    def _too_large(self, outs: list[Array]) -> bool:
        """Whether the dense Jacobians (one backward call per output entry) are beyond the limits."""
        m = sum(o.size for o in outs)
        return m > MAX_OUTPUTS or any(m * _size(a.shape) > MAX_ENTRIES
                                      for a in self.args.values())

    def _analytic(self, point: Point, harness: Harness) -> tuple[tuple[tuple[int, ...], ...], dict[str, Array]]:
        """Outputs' shapes and, per argument, the analytic Jacobian (M, N) from the backward."""
        outs, back = self._reference(point, harness)
        if self._too_large(outs):
            raise Refused(f"the outputs have {sum(o.size for o in outs):,} entries; whole Jacobians of this size "
                          f"are not built here: use smaller shapes (--shape NAME=...)")
        return tuple(o.shape for o in outs), self._dense(outs, back, harness)

    def _douts(self, outs: list[Array], flat: Array, harness: Harness) -> list[Array]:
        """One upstream gradient per output, from a flat vector over all outputs."""
        douts, start = [], 0
        for o in outs:
            douts.append(flat[start:start + o.size].reshape(o.shape).astype(harness.dtype))
            start += o.size
        return douts

    def _grads(self, back: Callable[..., Any], douts: list[Array], harness: Harness) -> dict[str, Array | None]:
        """The user's gradients for ``douts``, as float arrays; wrong shapes are noted on the argument."""
        sent = [d.copy() for d in douts]
        grads = harness("backward", self._call_back, back, tuple(douts))
        self._upstream_kept(sent, douts)
        self._inputs_kept()
        out: dict[str, Array | None] = {}
        for a in self.model.differentiable:
            state = self.args[a.name]
            g = _numbers(grads[a.name], f"backward (d{a.name})") if grads[a.name] is not None else None
            if g is not None and g.shape != state.shape and g.size == _size(state.shape) and \
                    tuple(d for d in g.shape if d != 1) == tuple(d for d in state.shape if d != 1):
                # Only size-1 axes differ (np.sum(...) for an alpha of shape (1,)): still a wrong shape, but
                # the values are compared too, so that a wrong value is named as well.
                state.squeezed = state.squeezed or (
                    f"d{a.name} has shape {g.shape}, but {a.name} has shape {state.shape}: the gradient of an "
                    f"argument has the argument's shape (only size-1 axes differ: return "
                    f"d{a.name}.reshape({a.name}.shape))")
                g = g.reshape(state.shape)
            if g is None:
                state.wrong_shape = state.wrong_shape or (
                    f"backward returned None for d{a.name}; it must return the gradient of {a.name}, an array of "
                    f"{a.name}'s shape {state.shape}")
            elif g.shape != state.shape:
                state.wrong_shape = state.wrong_shape or (
                    f"d{a.name} has shape {g.shape}, but {a.name} has shape {state.shape}: the gradient of an "
                    f"argument has the argument's shape")
                g = None
            out[a.name] = g
        return out

    def _dense(self, outs: list[Array], back: Callable[..., Any], harness: Harness) -> dict[str, Array]:
        """Per argument, the analytic Jacobian (M, N): one backward call per output entry."""
        sizes = [o.size for o in outs]
        m = sum(sizes)
        jac = {a.name: np.zeros((m, _size(self.args[a.name].shape)))
               for a in self.model.differentiable}
        for row in range(m):
            basis = np.zeros(m)
            basis[row] = 1.0
            grads = self._grads(back, self._douts(outs, basis, harness), harness)
            for name, g in grads.items():
                if g is None:
                    jac.pop(name, None)
                elif name in jac:
                    jac[name][row] = g.ravel()
        self._linear_probe(back, outs, np.concatenate([[0], np.cumsum(sizes)]), jac, harness)
        return jac

    def _projected_trial(self, t: int, point: Point, outs: list[Array], back: Callable[..., Any],
                         harness: Harness) -> None:
        """``--fast``: per argument, u_k^T J d from the backward (J^T u_k . d) against central
        differences along d (:func:`gradcheck_cli.numdiff.projections`), never forming J."""
        out_shapes = tuple(o.shape for o in outs)
        for a in self.model.differentiable:
            state = self.args[a.name]
            if state.wrong_shape:
                continue
            x = np.asarray(point[a.name], dtype=np.float64).reshape(1, -1)
            f = self._flat_forward(point, a.name, state.shape, harness)
            scale = inputs.step_scale(x, a.domain)
            try:
                evaluator = numdiff.Evaluator(f, x, scale, self.dtype, light=True)
                u, d, values, errors = numdiff.projections(evaluator, x, scale, FAST_PROJECTIONS,
                                                           self.seed * 1000 + t)
            except numdiff.EvaluationError as exc:
                self.error = f"forward {exc}"
                return
            analytic = np.empty(len(values))
            for k in range(len(values)):
                g = self._grads(back, self._douts(outs, u[k], harness), harness)[a.name]
                if g is None:
                    break
                analytic[k] = float(np.dot(g.ravel(), d[k]))
            if state.wrong_shape:
                continue
            comp = compare(analytic[None, :], values[None, :], errors[None, :], self.tolerance)
            if comp.max_ratio > state.worst.ratio:
                state.worst = _Worst(comp.max_ratio, t, comp, out_shapes=out_shapes, projected=True,
                                     point=None if comp.passed else point)

    def _linear_probe(self, back: Callable[[tuple[Any, ...]], dict[str, Any]], outs: list[Array],
                      offsets: Array, jac: dict[str, Array], harness: Harness) -> None:
        """One more backward, with a random upstream gradient g: its answer must be g @ J, the
        Jacobian built from the unit gradients. The unit gradients alone cannot tell a backward
        that uses dout linearly from one that does not (np.maximum(dout, 0) agrees with dout on
        every 0/1 vector)."""
        m = int(offsets[-1])
        probe = np.random.default_rng([self.seed, m, 11]).standard_normal(m).astype(harness.dtype)
        douts = tuple(probe[int(offsets[i]):int(offsets[i + 1])].reshape(o.shape) for i, o in enumerate(outs))
        grads = harness("backward", self._call_back, back, tuple(d.copy() for d in douts))
        g = probe.astype(np.float64)
        for name, j in jac.items():
            state = self.args[name]
            if state.nonlinear or grads.get(name) is None:
                continue
            got = _numbers(grads[name], f"backward (d{name})")
            if got.shape != state.shape:
                continue
            expected = g @ j
            # Rounding differs between the user's sums and ours: a few ulps of the sum of magnitudes.
            tol = 8.0 * np.sqrt(np.finfo(harness.dtype).eps) * (np.abs(g) @ np.abs(j)) + 1e-300
            bad = np.abs(got.ravel() - expected) > tol
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                idx = list(_unravel(k, state.shape))
                state.nonlinear = (f"backward is not linear in its upstream gradient: for a random upstream gradient "
                                   f"d{name}{idx} is {got.ravel()[k]:.6g}, but its answers to unit gradients add up to "
                                   f"{expected[k]:.6g}; a backward uses the upstream gradient only linearly (products "
                                   f"with it, sums, reshapes), never e.g. np.maximum(dout, 0), np.sign(dout) or "
                                   f"dout ** 2")

    @staticmethod
    def _call_back(back: Callable[[tuple[Any, ...]], dict[str, Any]], douts: tuple[Any, ...]) -> dict[str, Any]:
        return back(douts)

    def _inputs_kept(self) -> None:
        """The forward's own input arrays, after a backward: a backward that writes into what its
        cache (or its layer) holds (``x -= x.mean(0)``) corrupts the caller's arrays."""
        given, before = self._given
        for name, copy_ in before.items():
            if not floating.same_values(np.asarray(given[name]), copy_):
                self._blame_every_row(
                    f"backward changes the forward's input {name} in place (through what the cache or the layer "
                    f"keeps of it, e.g. '{name} -= ...'), so the caller's {name} is corrupted after the call. Work "
                    f"on a copy ({name} = {name} - ...)")
                return

    def _upstream_kept(self, sent: list[Array], douts: list[Array]) -> None:
        for name, before, after in zip(self.model.outputs, sent, douts, strict=True):
            if not floating.same_values(before, after):
                self._blame_every_row(
                    f"backward changes its upstream gradient d{name} in place (the caller's array: e.g. "
                    f"'d{name} += ...'), so the caller's gradient is corrupted after the call. Work on a copy "
                    f"(d{name} = d{name} + ...)")
                return

    def _blame_every_row(self, message: str) -> None:
        """A write into the caller's arrays corrupts every gradient computed after it: each row says so
        (the first such write found is the one named)."""
        for a in self.args.values():
            a.changed_upstream = a.changed_upstream or message

    def _numeric(self, point: Point, name: str, domain: str, harness: Harness,
                 out_shapes: tuple[tuple[int, ...], ...], quick: bool = False,
                 evaluator: numdiff.Evaluator | None = None) -> tuple[numdiff.Estimate, numdiff.Evaluator, Array]:
        """The numerical Jacobian of every output with respect to argument ``name``, (M, N).

        ``quick`` (central differences): f(x +- h) alone with a rounding-only bound, a first
        pass whose tolerance is if anything too tight; what fails it is estimated again in full.
        """
        shape = self.args[name].shape
        x = np.asarray(point[name], dtype=np.float64).reshape(1, -1)
        scale = inputs.step_scale(x, domain)
        if evaluator is None:
            evaluator = numdiff.Evaluator(self._flat_forward(point, name, shape, harness), x, scale, self.dtype)
        est = numdiff.estimate(evaluator.user_f, x, scale, self.method, evaluator, self.dtype,
                               quick=quick and self.method == "central")
        if est.note and est.note not in self.notes:
            self.notes.append(est.note)
        return est, evaluator, x

    def _flat_forward(self, point: Point, name: str, shape: tuple[int, ...],
                      harness: Harness) -> Callable[[Any], Array]:
        model = self.model
        rest = {k: v for k, v in point.items() if k != name}

        def one(v: Any) -> Array:
            moved = dict(rest)
            moved[name] = np.asarray(v).reshape(shape)
            outs = harness("forward", model.forward, harness.point(moved))
            return np.concatenate([_differenced(o).ravel() for o in outs])

        def f(v: Any) -> Array:
            v = np.asarray(v)
            if v.ndim == 3:  # a stack of points from the evaluator: one call each
                return np.stack([one(p) for p in v])
            try:
                return one(v)
            except Refused as exc:
                raise numdiff.EvaluationError(str(exc)) from exc

        return f

    def _numeric_others(self, point: Point, name: str, harness: Harness,
                        out_shapes: tuple[tuple[int, ...], ...]) -> dict[str, Array]:
        """Numerical Jacobians of the other arguments of the same shape: a diagnosis of
        gradients swapped between arguments needs them."""
        out: dict[str, Array] = {}
        for a in self.model.differentiable:
            if a.name != name and self.args[a.name].shape == self.args[name].shape:
                try:
                    out[a.name] = self._numeric(point, a.name, a.domain, harness, out_shapes)[0].value
                except (numdiff.EvaluationError, Refused):
                    continue
        return out

    # --- rows ----------------------------------------------------------------------------

    def rows(self) -> list[CheckResult]:
        return [self._row(state) for state in self.args.values()]

    def _base(self, state: _ArgState) -> CheckResult:
        return CheckResult(check=self.check, component=self.model.component, verdict=Verdict.PASS,
                           convention=self.model.convention, shape=state.shape, trials=self.n_trials,
                           method=self.method, seed=self.seed, origin=self.model.origin, reproduce=self.reproduce,
                           wrt=state.name if self.model.named else "", notes=tuple(self.notes))

    def _row(self, state: _ArgState) -> CheckResult:
        base = self._base(state)
        if self.error:
            return replace(base, verdict=Verdict.ERROR, diagnosis=self.error)
        if state.wrong_shape:
            return replace(base, verdict=Verdict.FAIL, diagnosis=state.wrong_shape)
        worst = state.worst
        comp = worst.comparison
        if comp is None:
            return replace(base, verdict=Verdict.ERROR, diagnosis="no trial reached this argument")
        if worst.projected:
            return self._projected_row(base, state, comp)
        figures: dict[str, Any] = dict(
            max_abs_error=comp.max_abs_err, max_rel_error=comp.max_rel_err, tolerance=comp.worst.tolerance,
            ratio=comp.max_ratio, analytic=comp.worst.analytic, numeric=comp.worst.numeric,
            noise=comp.worst.error, trial=worst.trial,
            worst_index=_worst_index(comp.worst.index, worst.out_shapes, state.shape),
            worst_entry=_labeller(self.model.outputs, worst.out_shapes, state.name, state.shape)(comp.worst.index))
        if comp.passed:
            if state.misuse:
                return replace(base, verdict=Verdict.FAIL, diagnosis=state.misuse, **figures)
            return replace(base, **figures)
        assert worst.analytic is not None and worst.numeric is not None and worst.x is not None
        label = _labeller(self.model.outputs, worst.out_shapes, state.name, state.shape)
        kink = self._kink(worst, comp, label)
        if kink:
            return replace(base, verdict=Verdict.KINK, diagnosis=kink, **figures)
        evidence = ArgumentEvidence(worst.analytic, worst.numeric.value, worst.numeric.error, self.tolerance, comp,
                                    state.name, state.shape, label, worst.others, self.model.outputs,
                                    worst.out_shapes)
        diagnosis = diagnose_argument(evidence)
        if state.misuse:
            diagnosis = f"{diagnosis}; also, {state.misuse}"
        entries = tuple(f"{label(e.index)}: analytic {e.analytic:.6g} vs numeric {e.numeric:.6g}" for e in comp.bad)
        return replace(base, verdict=Verdict.FAIL, diagnosis=diagnosis, worst_entries=entries,
                       point=_saved(worst.point), **figures)

    def _projected_row(self, base: CheckResult, state: _ArgState, comp: Comparison) -> CheckResult:
        e = comp.worst
        figures: dict[str, Any] = dict(
            max_abs_error=comp.max_abs_err, max_rel_error=comp.max_rel_err, tolerance=e.tolerance,
            ratio=comp.max_ratio, analytic=e.analytic, numeric=e.numeric, noise=e.error, trial=state.worst.trial,
            worst_index=(e.index[1],), worst_entry=f"projection {e.index[1]} (u^T J d)",
            notes=(*base.notes, "checked by random projections u^T J d (--fast), not entry by entry"))
        if comp.passed:
            if state.misuse:
                return replace(base, verdict=Verdict.FAIL, diagnosis=state.misuse, **figures)
            return replace(base, **figures)
        return replace(base, verdict=Verdict.FAIL, **figures, point=_saved(state.worst.point), diagnosis=(
            f"d{state.name}: random projection {e.index[1]}: u^T J d is {e.analytic:.6g} from the analytic gradient "
            f"but {e.numeric:.6g} numerically; projections show that d{state.name} is wrong, not where: run without "
            f"--fast at smaller shapes to see which entries are wrong"))

    def _kink(self, worst: _Worst, comp: Comparison, label: Callable[[tuple[int, int]], str]) -> str | None:
        """A kink explains the failure when every failing column's one-sided slopes differ and
        the analytic entry lies between them (the derivative there is a subgradient)."""
        assert worst.evaluator is not None and worst.numeric is not None and worst.x is not None
        assert worst.analytic is not None
        mask = comp.bad_mask
        if mask is None:
            return None
        cols = np.flatnonzero(mask.any(axis=0))
        h = worst.numeric.step.ravel()
        try:
            left, right = numdiff.one_sided(worst.evaluator, worst.x, h.reshape(worst.x.shape))
        except numdiff.EvaluationError:
            return None
        a = worst.analytic
        tol = self.tolerance.entries(worst.numeric.value, worst.numeric.error, a)
        for j in cols:
            rows = np.flatnonzero(mask[:, j])
            lo = np.minimum(left[rows, j], right[rows, j]) - tol[rows, j]
            hi = np.maximum(left[rows, j], right[rows, j]) + tol[rows, j]
            jump = np.abs(left[rows, j] - right[rows, j]) > tol[rows, j]
            if not (np.all(jump) and np.all((a[rows, j] >= lo) & (a[rows, j] <= hi))):
                return None
        e = comp.worst
        row, col = e.index
        return (f"{label(e.index)}: the forward has a kink at this point (one-sided slopes {left[row, col]:.6g} and "
                f"{right[row, col]:.6g}); the analytic value {e.analytic:.6g} lies between them, a valid subgradient")


MAX_SAVED_VALUES = 100_000


def _saved(point: Point | None) -> tuple[tuple[str, tuple[int, ...], tuple[float, ...]], ...] | None:
    """The failing point as plain data for reports (None beyond MAX_SAVED_VALUES values)."""
    if point is None:
        return None
    arrays = {name: np.asarray(value, dtype=np.float64) for name, value in point.items()}
    if sum(a.size for a in arrays.values()) > MAX_SAVED_VALUES:
        return None
    return tuple((name, tuple(a.shape), tuple(float(v) for v in a.ravel())) for name, a in arrays.items())


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


def _locate(row: int, out_shapes: tuple[tuple[int, ...], ...]) -> tuple[int, tuple[int, ...]]:
    start = 0
    for k, s in enumerate(out_shapes):
        size = _size(s)
        if row < start + size:
            return k, _unravel(row - start, s)
        start += size
    return len(out_shapes) - 1, ()


def _worst_index(index: tuple[int, int], out_shapes: tuple[tuple[int, ...], ...],
                 arg_shape: tuple[int, ...]) -> tuple[int, ...]:
    _, out_idx = _locate(index[0], out_shapes)
    return (*out_idx, *_unravel(index[1], arg_shape))


def _labeller(outputs: tuple[str, ...], out_shapes: tuple[tuple[int, ...], ...], name: str,
              shape: tuple[int, ...]) -> Callable[[tuple[int, int]], str]:
    def label(index: tuple[int, int]) -> str:
        k, out_idx = _locate(index[0], out_shapes)
        return entry_name(outputs[k], out_idx, name, _unravel(index[1], shape))

    return label


def check_model(check: str, model: Model, seed: int, trials: int, method: str, dtype: str, tolerance: Tolerance,
                reproduce: str = "", fixed: Mapping[str, Any] | None = None, fast: bool = False,
                edges: bool = False) -> list[CheckResult]:
    """Every argument's row of one model, over ``trials`` trials (then the edge probes of the inputs,
    with ``edges``); ``fixed`` arguments keep their given values; ``fast`` checks random projections
    instead of whole Jacobians."""
    judge = Check(check, model, seed, trials, method, dtype, tolerance, reproduce, fixed, fast, edges)
    with floating.own_errstate():
        for t in range(judge.n_trials):
            judge.step(t)
    return judge.rows()



def output_shape(model: Model, seed: int, dtype: str) -> tuple[int, ...]:
    """The shape of the model's first output at the point of trial 0."""
    judge = Check("", model, seed, 1, "central", dtype, Tolerance())
    with judge.harness(0) as harness:
        point = judge.sample(0, harness)
        outs = harness("forward", model.forward, harness.point(point))
        return tuple(_numbers(outs[0], "forward").shape)


def explain_model(model: Model, seed: int, method: str, dtype: str
                  ) -> tuple[Point, list[Array], dict[str, tuple[Array, Array]]]:
    """The point of trial 0, the outputs there and, per argument, the analytic and numerical
    Jacobians of the first output (what ``gradcheck explain`` prints)."""
    judge = Check("", model, seed, 1, method, dtype, Tolerance())
    with judge.harness(0) as harness:
        point = judge.sample(0, harness)
        outs = judge._outputs(tuple(harness("forward", model.forward, harness.point(point))), "forward")
        shapes, analytic = judge._analytic(point, harness)
        first = _size(shapes[0])
        parts: dict[str, tuple[Array, Array]] = {}
        for a in model.differentiable:
            if a.name in analytic:
                try:
                    est = judge._numeric(point, a.name, a.domain, harness, shapes)[0]
                except numdiff.EvaluationError as exc:
                    raise Refused(f"forward {exc}") from exc
                parts[a.name] = (analytic[a.name][:first], est.value[:first])
        return point, outs, parts
