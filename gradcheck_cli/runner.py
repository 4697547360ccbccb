"""The pipeline as a Python API: spec -> inputs -> numdiff -> compare -> diagnose -> rows.

>>> from gradcheck_cli import run
>>> result = run(["softmax+mse"])            # doctest: +SKIP
>>> result.exit_code, result.summary()       # doctest: +SKIP

The CLI is a thin layer over :func:`run` (and :func:`gradcheck_cli.explanation.explain`); both
return plain data.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from gradcheck_cli import conventions, floating, inputs, numdiff, resources, stream, structure
from gradcheck_cli.compare import Comparison, Tolerance, compare, recompare
from gradcheck_cli.conventions import ConventionError
from gradcheck_cli.diagnose import Evidence, Layout, describe, diagnose
from gradcheck_cli.errors import UsageError, suggest
from gradcheck_cli.harness import user_code
from gradcheck_cli.numdiff import EvaluationError, Evaluator
from gradcheck_cli.registry import FunctionSpec, FusedSpec, Registry
from gradcheck_cli.results import CheckResult, RunResult, Verdict

Array = NDArray[np.float64]
Index = NDArray[np.intp]
V = TypeVar("V")
DTYPES = ("float64", "float32")
DEFAULT_SHAPE = (4, 10)
MAX_SAVED_INPUT = 100_000
DENSE_LIMIT = 4_000_000  # entries; a larger failing Jacobian is diagnosed on its worst batch row
HEATMAP_SIZE = 24


@dataclass(frozen=True)
class CheckOptions:
    """How to check: seed, trials, shape or explicit input/target, method, tolerances."""

    seed: int = 0
    trials: int = 3
    shape: tuple[int, ...] | None = None
    """The first input's shape; None: (4, 10) for activations and losses, a layer's own default."""
    input: Array | None = None
    target: Array | None = None
    method: str = "central"
    rtol: float | None = None
    atol: float | None = None
    dtype: str = "float64"
    edges: bool = False
    fast: bool = False
    arg_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    """Shapes of named layer arguments (``--shape w=4,3,3,3``)."""
    arg_values: tuple[tuple[str, Array], ...] = ()
    """Values of named layer arguments, the same in every trial (PyTorch-style ``inputs=``)."""

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(self.rtol, self.atol, eps=float(np.finfo(np.dtype(self.dtype)).eps))

    @property
    def n_random(self) -> int:
        """Sample points before the edge probes: the explicit input, or ``trials`` draws."""
        return 1 if self.input is not None else max(1, self.trials)

    def arguments_fixed(self, names: Sequence[str]) -> bool:
        """Every argument in ``names`` has an explicit value: one point, no random draws."""
        given = {name for name, _ in self.arg_values}
        return all(name in given for name in names)

    @property
    def n_trials(self) -> int:
        return self.n_random + (inputs.N_EDGES if self.edges else 0)

    @property
    def point_shape(self) -> tuple[int, int]:
        """The (B, K) shape of an activation's or a loss's points."""
        if self.input is not None:
            return (int(self.input.shape[0]), int(self.input.shape[1]))
        if self.shape is None:
            return DEFAULT_SHAPE
        return (1, self.shape[0]) if len(self.shape) == 1 else (self.shape[0], self.shape[1])

    def validate(self, spec: Spec | None = None) -> None:
        """Raise :class:`UsageError` for options that cannot run; given the ``spec``, also for a
        check too large for the memory available (:func:`gradcheck_cli.resources.check_fits`)."""
        if self.method not in numdiff.METHODS:
            raise UsageError(
                f"Unknown --method '{self.method}'. Expected one of: "
                f"{', '.join(numdiff.METHODS)}.{suggest(self.method.lower(), numdiff.METHODS)}"
            )
        if self.dtype not in DTYPES:
            raise UsageError(f"Unknown --dtype '{self.dtype}'. Expected one of: {', '.join(DTYPES)}."
                             f"{suggest(self.dtype.lower(), DTYPES)}")
        if self.seed < 0:
            raise UsageError(f"--seed must be a non-negative integer; got {self.seed}.")
        if self.trials < 1:
            raise UsageError(f"--trials must be at least 1; got {self.trials}.")
        for name, value in (("--rtol", self.rtol), ("--atol", self.atol)):
            if value is not None and not (value >= 0 and np.isfinite(value)):
                raise UsageError(f"{name} must be a finite number >= 0; got {value}.")
        if self.input is not None and self.target is not None and self.target.shape != self.input.shape:
            raise UsageError(
                f"--target must have the shape of --input, {self.input.shape}; got "
                f"{self.target.shape}. Give one target value per input value."
            )
        if self.input is None and self.target is not None and self.target.shape != self.point_shape:
            b, k = self.target.shape
            raise UsageError(
                f"--target has shape {b}x{k} but the random inputs have --shape "
                f"{self.point_shape[0]},{self.point_shape[1]}; give --shape {b},{k} (or an --input of that shape)."
            )
        if spec is not None and not per_argument(spec, self):
            if self.arg_shapes:
                raise UsageError(
                    f"--shape {self.arg_shapes[0][0]}=... names an argument, but '{spec.text}' is an "
                    f"activation or loss with a single input; give --shape B,K.")
            resources.check_fits(spec, self)


@dataclass(frozen=True)
class Spec:
    """A parsed check spec: ``ACT``, ``LOSS``, ``ACT+LOSS``, ``LAYER`` or ``LAYER+LOSS``."""

    text: str
    activation: FunctionSpec | None
    loss: FunctionSpec | None
    layer: FunctionSpec | None = None


def per_argument(spec: Spec, options: CheckOptions | None = None) -> bool:
    """Whether ``spec`` is checked argument by argument (:mod:`gradcheck_cli.jacobians`): layers,
    losses on integer labels (whose target has another shape than the prediction), and
    activations and losses at a ``--shape`` of rank 3 or more (the batched (B, K) path's
    structure probes and streaming are written for two axes)."""
    if spec.layer is not None or (spec.loss is not None and spec.loss.target == "labels"):
        return True
    return options is not None and options.input is None and options.shape is not None and len(options.shape) > 2


def parse_spec(text: str, registry: Registry) -> Spec:
    """Resolve ``text`` against ``registry``; unknown names raise with suggestions."""
    parts = [p.strip() for p in text.split("+")]
    if not all(parts) or len(parts) > 2:
        raise UsageError(
            f"A check spec is ACTIVATION+LOSS, ACTIVATION or LOSS (e.g. softmax+mse); got "
            f"'{text}'. Run 'gradcheck list' for the registered names."
        )
    if len(parts) == 2:
        first = registry.get(parts[0], "activation" if parts[0] not in registry else None)
        if first.kind == "layer":
            return Spec(text, None, registry.get(parts[1], "loss"), first)
        return Spec(text, registry.get(parts[0], "activation"), registry.get(parts[1], "loss"))
    entry = registry.get(parts[0])
    if entry.kind == "layer":
        return Spec(text, None, None, entry)
    if entry.kind == "activation":
        return Spec(text, entry, None)
    return Spec(text, None, entry)


class Skip(Exception):
    """A component cannot run; the message becomes an ERROR row."""


class _EdgeSkip(Exception):
    """An edge probe that does not apply to this component (e.g. outside the loss domain)."""


@dataclass
class _Trial:
    """One trial's material for a component: analytic, numeric, and diagnosis hooks."""

    analytic: Array
    estimate: numdiff.Estimate | numdiff.StructuredEstimate
    layout: Layout
    refeed: Callable[[], Array | None] | None = None
    refeed_text: str = ""
    kink: Callable[[], _Kinks | None] | None = None
    notes: list[str] = field(default_factory=list)
    x: Array | None = None
    fp_warnings: tuple[str, ...] = ()
    target: Array | None = None
    changed: Index | None = None
    """Columns whose numerical estimate a completing pass replaced (None: unknown, compare all)."""


def _forward_values(evaluator: Evaluator, who: str, x: Array) -> Array:
    y = evaluator.y0
    bad = ~np.isfinite(y)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0]) if y.ndim else ()
        where = ""
        if y.ndim == x.ndim and y.shape[:-1] == x.shape[:-1]:
            where = f" (input row {list(idx[:-1])}: {np.array2string(x[idx[:-1]], precision=4, threshold=8)})"
        why = (f"; numpy reported: {', '.join(evaluator.warnings)}" if evaluator.warnings
               else "; check it for overflow (e.g. exp of a large value)")
        raise Skip(f"{who} returned {y[idx] if y.ndim else y} at output {list(idx)}{where}{why}")
    return y


def _scalar_loss(evaluator: Evaluator, who: str) -> None:
    """A loss is one number; per-sample losses (shape (B,)) must be reduced by the loss itself."""
    shape = evaluator.y0.shape
    if evaluator.y0.size != 1:
        raise Skip(f"{who} returned an array of shape {shape}, but a loss must return a scalar: the "
                    f"derivative checked is that of one number, dL/dpred. Reduce it inside the loss "
                    f"(np.mean or np.sum over the samples) and give the gradient of that reduced loss")


def _numeric(f: Callable[[Array], Array], x: Array, domain: str, options: CheckOptions,
             who: str, quick: bool = False, scalar: bool = False) -> tuple[Evaluator, numdiff.Estimate]:
    method = options.method
    scale = inputs.step_scale(x, domain)
    try:
        evaluator = Evaluator(f, x, scale, options.dtype)
        if scalar:
            _scalar_loss(evaluator, who)
        _forward_values(evaluator, who, x)
        est = numdiff.estimate(f, x, scale, method, evaluator, quick=quick)
    except EvaluationError as exc:
        raise Skip(f"{who} {exc}") from exc
    if not np.all(np.isfinite(est.value)):
        m, n = (int(v) for v in np.argwhere(~np.isfinite(est.value))[0])
        raise Skip(f"finite differences of {who} are not finite at entry ({m}, {n}): the "
                    f"function is not finite within a step of the input")
    return evaluator, est


FAST_PROJECTIONS = 3
# A `jacobian` convention returning more entries than this is skipped when the entry has another.
JACOBIAN_LIMIT = 25_000_000


def _fast_trial(f: Callable[[Array], Array], x: Array, domain: str, options: CheckOptions, who: str,
                analytic: Callable[[Array, Array, Array], Array], seed: int, target: Array | None = None) -> _Trial:
    """--fast: compare seeded random projections u^T J d instead of every entry (``target``: a loss's)."""
    scale = inputs.step_scale(x, domain)
    try:
        evaluator = Evaluator(f, x, scale, options.dtype, light=True)
        if target is not None:
            _scalar_loss(evaluator, who)
        _forward_values(evaluator, who, x)
        u, d, values, errors = numdiff.projections(evaluator, x, scale, FAST_PROJECTIONS, seed)
    except EvaluationError as exc:
        raise Skip(f"{who} {exc}") from exc
    est = numdiff.Estimate(values[None, :], errors[None, :], np.zeros(0), options.method,
                           f"--fast: {FAST_PROJECTIONS} seeded random projections u^T J d, not every entry")
    layout = Layout(1, 1, FAST_PROJECTIONS, scalar=True, projection=True)
    return _Trial(analytic(evaluator.y0, u, d)[None, :], est, layout, x=x, target=target)


def _output_width(act: FunctionSpec, points: Points, options: CheckOptions) -> int | None:
    """K_out of the activation's output rows, for deciding whether to stream (None if unusual)."""
    b, k = options.point_shape
    if b * k * k <= stream.STREAM_LIMIT:
        return k  # small either way; the exact width does not matter
    try:
        y = call_forward(act, points.input_only(0))
    except Skip:
        return None
    return int(y.shape[-1]) if y.ndim == 2 and y.shape[0] == b else None


class _StreamedJudge:
    """One row for a Jacobian too large to hold: compared column chunk by column chunk."""

    def __init__(self, spec: Spec, act: FunctionSpec, convention: str, points: Points, options: CheckOptions,
                 finish: Callable[[CheckResult], CheckResult] | None = None) -> None:
        self.base = CheckResult(check=spec.text, component="jacobian", verdict=Verdict.ERROR, convention=convention,
                                shape=options.point_shape, trials=options.n_trials, method=options.method,
                                seed=options.seed, origin=act.origin,
                                reproduce=reproduce_command(spec.text, options, spec))
        self.act, self.convention, self.points, self.options, self.finish = act, convention, points, options, finish
        self.worst: tuple[int, stream.Streamed, Layout] | None = None
        self.verdict_note = ""
        self.stopped: CheckResult | None = None

    def step(self, t: int) -> None:
        """Compare trial ``t`` chunk by chunk; keep its aggregate if it is the worst so far."""
        if self.stopped is not None:
            return
        act, options = self.act, self.options
        try:
            x = self.points.input_only(t)
            scale = inputs.step_scale(x, act.domain)
            evaluator = Evaluator(act.forward, x, scale, options.dtype)
            _forward_values(evaluator, f"{act.name} forward", x)
            structure_kind = stream_structure(evaluator, x, scale)
            result = stream.compare_streamed(act, self.convention, x, evaluator, scale, options.method,
                                             options.tolerance, structure_kind)
            ok, why = (stream.projection_agrees(act, self.convention, x, evaluator, scale, options.tolerance)
                       if result.comparison.passed else (True, ""))
        except (Skip, _EdgeSkip, ConventionError, EvaluationError, MemoryError) as exc:
            self.stopped = replace(self.base, diagnosis=resources.out_of_memory(exc) or str(exc), trial=t)
            return
        y = evaluator.y0
        layout = Layout(x.shape[0], y.shape[-1], x.shape[-1],
                        form="blocks" if result.structure == "rowwise" else "dense")
        if not ok:
            self.verdict_note = why
        if self.worst is None or result.comparison.max_ratio > self.worst[1].comparison.max_ratio or not ok:
            self.worst = (t, result, layout)

    def row(self) -> CheckResult:
        """The row, from the worst trial."""
        row = self.stopped if self.stopped is not None else self._row()
        return self.finish(row) if self.finish is not None else row

    def _row(self) -> CheckResult:
        assert self.worst is not None
        t, result, layout = self.worst
        comp = result.comparison
        failed = not comp.passed or bool(self.verdict_note)
        diagnosis = ""
        if not comp.passed:
            listed = "; ".join(describe(e, layout) for e in comp.bad[:3])
            diagnosis = f"{comp.n_bad} of {comp.n_total} entries wrong (compared in column chunks); worst {listed}"
        elif self.verdict_note:
            diagnosis = self.verdict_note
        note = (f"{comp.n_total:,} entries compared in column chunks ({result.structure} structure) to bound "
                f"memory; diagnosis beyond the worst entries needs a smaller --shape")
        return replace(self.base, verdict=Verdict.FAIL if failed else Verdict.PASS, diagnosis=diagnosis, trial=t,
                       max_abs_error=comp.max_abs_err, max_rel_error=comp.max_rel_err,
                       tolerance=comp.worst.tolerance, ratio=comp.max_ratio,
                       worst_index=layout.worst_index(comp.worst.index), analytic=comp.worst.analytic,
                       numeric=comp.worst.numeric, noise=comp.worst.error, notes=(note,),
                       worst_entries=tuple(describe(e, layout) for e in comp.bad) if failed else ())


class _Component(Protocol):
    """A row in the making: judged one trial at a time, then made into its row."""

    def step(self, t: int) -> None: ...

    def row(self) -> CheckResult: ...


def stream_structure(evaluator: Evaluator, x: Array, scale: Array) -> str:
    """Row-wise or general, from the bit-exact probes (elementwise streams as row-wise)."""
    kind = structure.detect(evaluator, x, evaluator.y0, scale)
    return "general" if kind == "general" else "rowwise"


def _checked_conventions(act: FunctionSpec, options: CheckOptions) -> list[str]:
    """The activation's conventions, minus a `jacobian` too large to build beside another one."""
    b, k = options.point_shape
    return [c for c in act.conventions
            if not (c == "jacobian" and len(act.conventions) > 1 and b * k * k > JACOBIAN_LIMIT)]


def _numeric_structured(act: FunctionSpec, x: Array, options: CheckOptions, quick: bool = False,
                        prior: tuple[Evaluator, numdiff.StructuredEstimate] | None = None
                        ) -> tuple[Evaluator, numdiff.StructuredEstimate]:
    """The activation's numerical Jacobian, in the form its verified structure allows.

    ``prior`` is the quick pass for the same point: its evaluator and structure are reused.
    """
    who = f"{act.name} forward"
    scale = inputs.step_scale(x, act.domain)
    try:
        evaluator = prior[0] if prior else Evaluator(act.forward, x, scale, options.dtype)
        _forward_values(evaluator, who, x)
        est = numdiff.estimate_structured(evaluator, x, scale, options.method, quick,
                                          prior[1].structure if prior else None)
    except EvaluationError as exc:
        raise Skip(f"{who} {exc}") from exc
    if not np.isfinite(np.sum(est.value)) and not np.all(np.isfinite(est.value)):  # one cheap pass first
        raise Skip(f"finite differences of {who} are not finite: the function is not finite within a "
                    f"step of the input")
    return evaluator, est


@dataclass(frozen=True)
class _Kinks:
    """One-sided derivatives at a trial's point, and which columns a declared kink explains."""

    left: Array
    right: Array
    explain: Callable[[Index], dict[int, str]]
    """For failing columns (flat input coordinates): the text naming the declared kink each reaches."""
    undeclared: str
    """What may hide kinks nobody declared (``mae(softmax(z))``), or '' when every part declares them."""
    x: Array
    label: str = "x"
    """The name of ``x`` in messages: x, pred or z."""


KinkHook = Callable[[], _Kinks | None]
# Failing columns probed for a loss kink reached through the activation (4 forward calls each).
REACH_COLUMNS = 256


def _near_kinks(kinks: tuple[float, ...], residual: Array, h: Array) -> Array:
    """Where the stencil (x +- 2h) reaches a declared kink of ``residual`` (x, or pred - target)."""
    near = np.zeros(residual.shape, dtype=bool)
    for k in kinks:
        near |= np.abs(residual - k) <= 2.0 * h
    return near


def _kink_hook(spec: FunctionSpec, evaluator: Evaluator, x: Array, residual: Array,
               est: numdiff.Estimate | numdiff.StructuredEstimate) -> KinkHook | None:
    """One-sided derivatives, for points whose stencil reaches a kink.

    Declared kinks (relu at 0) are looked for where the stencil reaches them. Code whose
    kinks are not declared (a library's relu mapped in a config) is probed everywhere,
    and :func:`_kink_verdict` then demands a real jump between the one-sided derivatives.
    """
    h = est.step.reshape(x.shape)
    if est.step.size != x.size:
        return None
    near = _near_kinks(spec.kinks, residual, h)
    if spec.kinks and not near.any():
        return None

    def explain(columns: Index) -> dict[int, str]:
        reasons = {}
        for j in columns[near.ravel()[columns]]:
            b, i = np.unravel_index(int(j), x.shape)
            where = f"x[{b},{i}] = {x[b, i]:.6g}" if residual is x else \
                f"pred - target at [{b},{i}] = {residual[b, i]:.3g}"
            reasons[int(j)] = f"{where} is a kink of {spec.name}"
        return reasons

    def hook() -> _Kinks:
        left, right = numdiff.one_sided(evaluator, x, h)
        return _Kinks(left, right, explain, "" if spec.kinks else spec.name, x, "x" if residual is x else "pred")

    return hook


def _composite_kink_hook(act: FunctionSpec, loss: FunctionSpec, evaluator: Evaluator, z: Array,
                         target: Array, est: numdiff.Estimate) -> KinkHook | None:
    """Kinks of L(A(z), t): the activation's at z, and the loss's where pred - target = A(z) - t
    meets one of them within the stencil, moved there through the activation.

    A loss kink is reached along column j when some residual r_i = A(z)_i - t_i lies within
    the largest change of r_i over the stencil z +- h e_j, z +- 2h e_j: for the identity
    activation, exactly the loss row's |r - k| <= 2h.
    """
    h = est.step.reshape(z.shape)
    if est.step.size != z.size:
        return None
    near = _near_kinks(act.kinks, z, h)

    def residuals(moved: Array) -> Array:
        return call_forward(act, moved) - target

    def reach(j: int, base: Array) -> str | None:
        b, c = np.unravel_index(j, z.shape)
        change = np.zeros(base.shape)
        for s in (-2.0, -1.0, 1.0, 2.0):
            moved = z.copy()
            moved[b, c] += s * h[b, c]
            np.maximum(change, np.abs(residuals(moved) - base), out=change)
        for k in loss.kinks:
            hit = np.abs(base - k) <= change
            if hit.any():
                idx = np.unravel_index(int(np.argmin(np.where(hit, np.abs(base - k), np.inf))), base.shape)
                at = ",".join(str(int(v)) for v in idx)
                return (f"pred - target at [{at}] = {base[idx]:.3g} is a kink of {loss.name}, reached "
                        f"through {act.name} from z[{b},{c}] = {z[b, c]:.6g}")
        return None

    def explain(columns: Index) -> dict[int, str]:
        reasons = {}
        for j in columns[near.ravel()[columns]]:
            b, c = np.unravel_index(int(j), z.shape)
            reasons[int(j)] = f"z[{b},{c}] = {z[b, c]:.6g} is a kink of {act.name}"
        rest = [int(j) for j in columns if int(j) not in reasons][:REACH_COLUMNS]
        if loss.kinks and rest:
            try:
                base = residuals(z)
                if base.shape != target.shape:
                    return reasons
                for j in rest:
                    why = reach(j, base)
                    if why:
                        reasons[j] = why
            except Skip:
                pass  # the activation fails near z: no loss kink is shown to be reached
        return reasons

    undeclared = "" if act.kinks and loss.kinks else f"{loss.name}({act.name}(z))"

    def hook() -> _Kinks:
        left, right = numdiff.one_sided(evaluator, z, h)
        return _Kinks(left, right, explain, undeclared, z, "z")

    return hook


def _kink_verdict(trial: _Trial, comp: Comparison, tolerance: Tolerance) -> str | None:
    """If every bad entry lies between the one-sided derivatives at a kink, say it is one.

    A failing column that a declared kink explains (its stencil reaches the kink) needs the
    analytic value between the one-sided derivatives. Any other failing column is excused
    only where kinks may be undeclared, and then needs a real jump between them too.
    """
    if trial.kink is None or not np.all(np.isfinite(trial.analytic)):
        return None  # nan/inf is never a subgradient
    tol = tolerance.entries(trial.estimate.value, trial.estimate.error, trial.analytic)
    bad = np.abs(trial.analytic - trial.estimate.value) > tol
    if not bad.any():
        return None
    found = trial.kink()
    if found is None:
        return None
    left, right = found.left, found.right
    low, high = np.minimum(left, right), np.maximum(left, right)
    slack = tol + 1e-4 * (np.abs(left) + np.abs(right))
    inside = (trial.analytic >= low - slack) & (trial.analytic <= high + slack)
    if not np.all(inside[bad]):
        return None
    reasons = found.explain(np.unique(np.nonzero(bad)[1]))
    unexplained = bad & ~np.isin(np.arange(bad.shape[1]), list(reasons))[None, :]
    if unexplained.any():
        if not found.undeclared:
            return None
        # Without a declared kink, demand a real jump at every such entry, far above the
        # one-sided differences' own O(h) error, so a subtly wrong derivative is not excused.
        jump = np.abs(left - right)
        floor = 1e-6 * float(np.max(np.abs(trial.estimate.value), initial=0.0))
        if not np.all(jump[unexplained] > 1e-2 * (np.abs(left) + np.abs(right))[unexplained] + floor):
            return None
    m, n = comp.worst.index
    if n in reasons:
        where = reasons[n]
    else:
        b, c = np.unravel_index(n, found.x.shape)
        where = f"{found.label}[{b},{c}] = {found.x[b, c]:.6g} is a kink of {found.undeclared} (not declared)"
    return (f"{where}: one-sided derivatives {left[m, n]:.6g} and {right[m, n]:.6g} differ, "
            f"and the analytic {trial.analytic[m, n]:.6g} lies between them (a valid "
            f"subgradient); not a bug")


def reproduce_command(check: str, options: CheckOptions, spec: Spec | None = None) -> str:
    """The ``gradcheck run`` command that repeats a check (same seed, shape, method)."""
    parts = ["gradcheck", "run", check, "--seed", str(options.seed)]
    entries = [e for e in (spec.activation, spec.layer, spec.loss) if e is not None] if spec else []
    for origin in dict.fromkeys(e.origin for e in entries):
        # Plugins reload with --plugin; entries mapped in a config (file.yaml:LINE) need the config.
        if origin not in ("builtin", "python") and not origin.rsplit(":", 1)[-1].isdigit():
            parts += ["--plugin", origin]
    if options.input is not None:
        parts += ["--input", ";".join(",".join(f"{v:.17g}" for v in row) for row in options.input)]
        if options.target is not None:
            parts += ["--target", ";".join(",".join(f"{v:.17g}" for v in row) for row in options.target)]
    else:
        parts += ["--trials", str(options.trials)]
        if options.shape is not None:
            parts += ["--shape", ",".join(map(str, options.shape))]
        for name, shape in options.arg_shapes:
            parts += ["--shape", f"{name}={','.join(map(str, shape))}"]
    if options.method != "central":
        parts += ["--method", options.method]
    if options.dtype != "float64":
        parts += ["--dtype", options.dtype]
    if options.edges:
        parts += ["--edges"]
    if options.fast:
        parts += ["--fast"]
    return " ".join(shlex.quote(p) for p in parts)


class _Judge:
    """One component's row, judged trial by trial from the worst trial so far.

    The components of a spec step through the trials together (all of trial t, then t + 1):
    the point and quick estimate they share are then held for one trial at a time, and
    memory does not grow with --trials. Only a failing worst trial keeps its arrays (the
    diagnosis needs them); a passing one keeps its figures.
    """

    def __init__(self, spec: Spec, component: str, convention: str, origin: str, options: CheckOptions,
                 trials: Callable[[int, Index | None], _Trial],
                 finish: Callable[[CheckResult], CheckResult] | None = None) -> None:
        self.base = CheckResult(check=spec.text, component=component, verdict=Verdict.ERROR,
                                convention=convention, shape=options.point_shape, trials=options.n_trials,
                                method=options.method, seed=options.seed, origin=origin,
                                reproduce=reproduce_command(spec.text, options, spec))
        self.convention = convention
        self.options = options
        self.trials = trials
        self.finish = finish
        self.worst: _Worst | None = None
        self.notes: list[str] = []
        self.stopped: CheckResult | None = None
        """The ERROR row of a trial that could not run; later trials are not run."""

    def step(self, t: int) -> None:
        """Judge trial ``t`` and keep it if it is the worst so far."""
        if self.stopped is not None:
            return
        options = self.options
        conventions.FP_WARNINGS.clear()
        try:
            # A quick pass (rounding bound only, two evaluations per column) is exact about
            # passing; only what fails it is judged on the full estimate with its truncation bound.
            trial = self.trials(t, None)
            comp = compare(trial.analytic, trial.estimate.value, trial.estimate.error, options.tolerance)
            failing = _failing_coords(trial, comp)
            if failing.size:
                conventions.FP_WARNINGS.clear()
                quick, trial = trial, self.trials(t, failing)
                comp = _compare_again(quick, trial, comp, options.tolerance)
            trial.fp_warnings = tuple(conventions.FP_WARNINGS)
        except _EdgeSkip as why:
            self.notes.append(str(why))
            return
        except (Skip, ConventionError, EvaluationError, MemoryError) as why:
            self.stopped = replace(self.base, diagnosis=resources.out_of_memory(why) or str(why), trial=t)
            return
        self.notes += [n for n in trial.notes + [trial.estimate.note] if n and n not in self.notes]
        score = comp.max_ratio
        if self.worst is None or score > self.worst.score:
            self.worst = _Worst(score, t, comp if not comp.passed else replace(comp, columns=None),
                                trial.layout, trial.estimate.method, None if comp.passed else trial)

    def row(self) -> CheckResult:
        """The component's row, from the worst trial."""
        row = self.stopped if self.stopped is not None else self._row()
        return self.finish(row) if self.finish is not None else row

    def _row(self) -> CheckResult:
        base, options, notes = self.base, self.options, self.notes
        if self.worst is None:
            return replace(base, diagnosis="no sample point applies to this component", notes=tuple(notes))
        t, comp, trial = self.worst.t, self.worst.comp, self.worst.trial
        verdict, diagnosis = Verdict.PASS, ""
        if trial is not None:
            dense = _densify(trial, comp)
            dense_comp = comp if dense is trial else compare(dense.analytic, dense.estimate.value,
                                                             dense.estimate.error, options.tolerance)
            kink = (_kink_verdict(dense, dense_comp, options.tolerance) if dense.layout.batch == trial.layout.batch
                    else None)
            if kink:
                verdict, diagnosis = Verdict.KINK, kink
            else:
                verdict = Verdict.FAIL
                diagnosis = diagnose(Evidence(dense.analytic, dense.estimate.value, dense.estimate.error,
                                              options.tolerance, dense.layout, self.convention, dense_comp,
                                              dense.refeed, dense.refeed_text, dense.x, dense.fp_warnings))
        failed = verdict is Verdict.FAIL
        layout = self.worst.layout
        return replace(base, verdict=verdict, diagnosis=diagnosis, trial=t,
                       input=_nested(trial.x) if failed and trial is not None else None,
                       target=_nested(trial.target) if failed and trial is not None else None,
                       heatmap=_heatmap(trial, comp, options.tolerance) if failed and trial is not None else None,
                       worst_entries=tuple(describe(e, layout) for e in comp.bad) if failed else (),
                       max_abs_error=comp.max_abs_err, max_rel_error=comp.max_rel_err,
                       tolerance=comp.worst.tolerance, ratio=comp.max_ratio,
                       worst_index=layout.worst_index(comp.worst.index),
                       analytic=comp.worst.analytic, numeric=comp.worst.numeric, noise=comp.worst.error,
                       method=self.worst.method, notes=tuple(notes))


@dataclass
class _Worst:
    """The worst trial of a component so far: its figures, and the trial itself when it failed."""

    score: float
    t: int
    comp: Comparison
    layout: Layout
    method: str
    trial: _Trial | None


class _PerTrial(Generic[V]):
    """Values the components of a spec share for one trial (its point, its quick estimate).

    Only the current trial's are held: moving to another trial drops them, which is free
    because the components step through the trials together; a part's own values are
    dropped as soon as its components are done with the trial.
    """

    def __init__(self) -> None:
        self.trial: int | None = None
        self._values: dict[Hashable, V] = {}

    def _at(self, t: int) -> dict[Hashable, V]:
        if t != self.trial:
            self._values.clear()
            self.trial = t
        return self._values

    def advance(self, t: int) -> None:
        """Drop what is held unless it is trial ``t``'s."""
        self._at(t)

    def clear(self) -> None:
        """Drop everything: its components are done with this trial."""
        self._values.clear()
        self.trial = None

    def get(self, t: int, make: Callable[[], V], key: Hashable = None) -> V:
        """The value for trial ``t`` (and ``key``), made on first use."""
        values = self._at(t)
        if key not in values:
            values[key] = make()
        return values[key]

    def peek(self, t: int, key: Hashable = None) -> V | None:
        """The value for trial ``t`` if some component made it, else None."""
        return self._at(t).get(key)


@dataclass
class _Part:
    """The components of one part of a spec (activation, loss, pair) and what they share per trial."""

    components: list[_Component]
    shared: list[_PerTrial[Any]]


def _compare_again(quick: _Trial, full: _Trial, comp: Comparison, tolerance: Tolerance) -> Comparison:
    """The comparison of ``full``, re-reading only the columns the completing pass replaced."""
    if full.changed is None or quick.layout != full.layout or quick.analytic is not full.analytic:
        return compare(full.analytic, full.estimate.value, full.estimate.error, tolerance)
    return recompare(comp, full.analytic, full.estimate.value, full.estimate.error, full.changed, tolerance)


def _failing_coords(trial: _Trial, comp: Comparison) -> Index:
    """Flat input coordinates whose columns hold an entry that fails the comparison."""
    if comp.passed or comp.columns is None:
        return np.zeros(0, dtype=np.intp)
    rows, cols = np.divmod(comp.columns.bad, comp.shape[1])
    lay = trial.layout
    if lay.form == "blocks" and not lay.scalar:
        return np.unique((rows // lay.k_out) * lay.k_in + cols)
    if lay.form == "diagonal":
        return np.unique(rows * lay.k_in + cols)
    return np.unique(cols)


def _complete(evaluator: Evaluator, x: Array, scale: Array, options: CheckOptions, kind: str,
              est: numdiff.Estimate | numdiff.StructuredEstimate, form: str,
              failing: Index | None) -> numdiff.Estimate | numdiff.StructuredEstimate:
    """The quick estimate with the columns of ``failing`` recomputed in full (central only)."""
    if failing is None or options.method != "central":
        return est
    value, error = numdiff.complete(evaluator, x, scale, options.method, kind, form, est.value, est.error, failing)
    return replace(est, value=value, error=error)  # type: ignore[type-var]


def _densify(trial: _Trial, comp: Comparison) -> _Trial:
    """The trial as a dense Jacobian for diagnosis: whole when small, else the worst batch row."""
    lay = trial.layout
    if lay.form == "dense":
        return trial
    batch = lay.batch
    full = batch * lay.k_out * batch * lay.k_in <= DENSE_LIMIT
    b = 0 if full else lay.entry(comp.worst.index)[0]

    def dense(array: Array) -> Array:
        if full:
            return structure.convert(lay.form, "dense", array, batch)
        if lay.form == "blocks":
            return array[b * lay.k_out:(b + 1) * lay.k_out]
        return structure.diagonal_to_blocks(array[b:b + 1])

    refeed = trial.refeed

    def dense_refeed() -> Array | None:
        got = refeed() if refeed is not None else None
        return dense(got) if got is not None else None

    est = trial.estimate
    dense_est = replace(est, value=dense(est.value), error=dense(est.error))  # type: ignore[type-var]
    return replace(trial, analytic=dense(trial.analytic), estimate=dense_est,
                   layout=replace(lay, form="dense", batch=batch if full else 1),
                   refeed=dense_refeed if refeed is not None else None,
                   x=trial.x if full or trial.x is None else trial.x[b:b + 1])


def _nested(values: Array | None) -> tuple[tuple[float, ...], ...] | None:
    if values is None or values.size > MAX_SAVED_INPUT:
        return None
    return tuple(tuple(float(v) for v in row) for row in np.atleast_2d(values))


def _heatmap(trial: _Trial, comp: Comparison, tolerance: Tolerance) -> tuple[tuple[float, ...], ...]:
    """|analytic - numeric| / tolerance over the worst batch block, max-pooled to <= 24 x 24."""
    tol = tolerance.entries(trial.estimate.value, trial.estimate.error, trial.analytic)
    with np.errstate(all="ignore"):
        ratio = np.abs(trial.analytic - trial.estimate.value) / np.where(tol > 0, tol, np.inf)
    ratio = np.where(np.isfinite(ratio), ratio, 1e300)
    lay = trial.layout
    if lay.scalar:
        grid = ratio.reshape(lay.batch, lay.k_in)
    elif lay.form == "diagonal":
        grid = ratio
    elif lay.form == "blocks":
        b = lay.entry(comp.worst.index)[0]
        grid = ratio[b * lay.k_out:(b + 1) * lay.k_out]
    else:
        m, n = comp.worst.index
        bo, bi = m // lay.k_out, n // lay.k_in
        grid = ratio[bo * lay.k_out:(bo + 1) * lay.k_out, bi * lay.k_in:(bi + 1) * lay.k_in]
    rows = -(-grid.shape[0] // HEATMAP_SIZE)
    cols = -(-grid.shape[1] // HEATMAP_SIZE)
    pooled = [[float(grid[i:i + rows, j:j + cols].max()) for j in range(0, grid.shape[1], cols)]
              for i in range(0, grid.shape[0], rows)]
    return tuple(tuple(r) for r in pooled)


class Points:
    """Seeded sample points for one spec, identical for every component of it (the current
    trial's are kept, see :class:`_PerTrial`)."""

    def __init__(self, spec: Spec, options: CheckOptions) -> None:
        self.spec = spec
        self.options = options
        self._cache: _PerTrial[tuple[Array, Array | None]] = _PerTrial()
        self._inputs: _PerTrial[Array] = _PerTrial()

    def advance(self, trial: int) -> None:
        """Every component is done with the trials before ``trial``: drop their points."""
        self._cache.advance(trial)
        self._inputs.advance(trial)

    def __call__(self, trial: int) -> tuple[Array, Array | None]:  # x (or pred), target
        def draw() -> tuple[Array, Array | None]:
            x, target = self._draw(trial)
            return self._representable(x), target

        return self._cache.get(trial, draw)

    def _representable(self, x: Array) -> Array:
        # The point is one the checked dtype can hold, so every call sees the same x.
        return x.astype(self.options.dtype, copy=False).astype(np.float64, copy=False)

    def input_only(self, trial: int) -> Array:
        """The activation's input for ``trial``, without the loss-side checks (drawn once;
        a million normal draws cost ~15 ms)."""
        if self.spec.activation is None:
            return self(trial)[0]
        return self._inputs.get(trial, lambda: self._representable(self._draw(trial, with_target=False)[0])).copy()

    def _draw(self, trial: int, with_target: bool = True) -> tuple[Array, Array | None]:
        opts, act, loss = self.options, self.spec.activation, self.spec.loss
        rng = np.random.default_rng([opts.seed, trial])
        first = act or loss
        assert first is not None
        edge = trial - opts.n_random if trial >= opts.n_random else None
        x: Array | None
        label = ""
        if edge is not None:
            label, x = inputs.edge_input(first.domain, opts.point_shape, edge, first.kinks, opts.dtype)
            if act is None:
                assert loss is not None
                target = inputs.sample_target(loss.target or "real", opts.point_shape, rng)
                return x, (opts.target if opts.target is not None else target)
        elif opts.input is not None:
            x = opts.input.astype(np.float64)
            bad = inputs.outside_domain(x, first.domain)
            if bad is not None:
                raise Skip(f"--input value {x[bad]} at {list(bad)} is outside {first.name}'s domain "
                            f"({inputs.DOMAIN_TEXT[first.domain]}); give inputs inside it")
        elif act is not None:
            x = inputs.sample_domain(act.domain, opts.point_shape, rng, act.kinks)
        else:
            x = None
        if loss is None or not with_target:
            assert x is not None
            return x, None
        if act is not None:
            assert x is not None
            pred = call_forward(act, x)
            bad = inputs.outside_domain(pred, loss.domain)
            if bad is not None and edge is not None:
                raise _EdgeSkip(f"edge probe '{label}' skipped for the loss side: {act.name} gives "
                                f"{pred[bad]:.3g} there, outside {loss.name}'s domain "
                                f"({inputs.DOMAIN_TEXT[loss.domain]})")
            if bad is not None:
                raise Skip(f"{act.name} outputs {pred[bad]:.6g} at {list(bad)}, outside {loss.name}'s "
                            f"prediction domain ({inputs.DOMAIN_TEXT[loss.domain]}); pair it with an "
                            f"activation whose outputs lie there")
            shape = (int(pred.shape[0]), int(pred.shape[-1]))
        else:
            shape = opts.point_shape
        target = opts.target if opts.target is not None else inputs.sample_target(loss.target or "real", shape, rng)
        if x is None:
            x = inputs.sample_prediction(loss.domain, target, rng, loss.kinks)
        return x, target


def call_forward(spec: FunctionSpec, x: Array) -> Array:
    with user_code("forward", Skip):
        return np.asarray(spec.forward(x.copy()), dtype=np.float64)


def _streams(act: FunctionSpec, convention: str, points: Points, options: CheckOptions, k_out: int | None,
             numeric: _PerTrial[tuple[Evaluator, numdiff.StructuredEstimate]]) -> bool:
    """Is this convention's Jacobian too large to hold, so that it must be streamed?

    ``k_out`` is the output width (:func:`_output_width`; None: never stream). ``numeric``
    shares the quick estimate of the current trial; it gets trial 0's when this looks.
    """
    b, k = options.point_shape
    if k_out is None or not stream.needed(b, k, k_out, convention):
        return False
    if convention in conventions.ELEMENTWISE:
        # A diagonal derivative of a function the probes find elementwise is compared as
        # its diagonal, in O(B*K) memory and time: only other structures need streaming.
        try:
            _, est = numeric.get(0, lambda: _numeric_structured(act, points.input_only(0), options, quick=True))
        except Skip:
            return False  # the in-memory path reports it
        return est.structure != structure.ELEMENTWISE
    return True


class _ActivationTrials:
    """The Jacobian of an activation from one of its conventions, trial by trial.

    ``numeric`` (the quick numerical Jacobian and its verified structure) is shared by every
    convention of the entry at a trial, ``analytic`` caches each convention's analytic form.
    """

    def __init__(self, act: FunctionSpec, convention: str, points: Points, options: CheckOptions,
                 numeric: _PerTrial[tuple[Evaluator, numdiff.StructuredEstimate]],
                 analytic: _PerTrial[tuple[str, Array]]) -> None:
        self.act, self.convention, self.points, self.options = act, convention, points, options
        self.numeric, self.analytic = numeric, analytic

    def trial(self, t: int, failing: Index | None) -> _Trial:
        act, convention, options = self.act, self.convention, self.options
        x = self.points.input_only(t)
        if options.fast:
            return _fast_trial(act.forward, x, act.domain, options, f"{act.name} forward",
                               lambda y, u, d: conventions.analytic_projections(act, convention, x, y, u, d),
                               options.seed)
        evaluator, est = self.numeric.get(t, lambda: _numeric_structured(act, x, options, quick=True))
        structure_kind = est.structure
        analytic_form, analytic = self.analytic.get(
            t, lambda: conventions.analytic_form(act, convention, x, evaluator.y0, structure_kind), convention)
        changed = None
        form = structure.common_form(analytic_form, est.form)
        if failing is not None:
            scale = inputs.step_scale(x, act.domain)
            est = _complete(evaluator, x, scale, options, est.structure, est, est.form,  # type: ignore[assignment]
                            failing)
            if form == est.form != "diagonal" and options.method == "central":
                changed = numdiff.group_of(est.structure, failing, x.shape[1])
        y = evaluator.y0
        analytic = structure.convert(analytic_form, form, analytic, x.shape[0])
        est = replace(est, form=form, value=structure.convert(est.form, form, est.value, x.shape[0]),
                      error=structure.convert_error(est.form, form, est.error, x.shape[0], y,
                                                    inputs.step_scale(x, act.domain), evaluator.eps,
                                                    evaluator.tiny))
        layout = Layout(x.shape[0], y.shape[-1] if y.ndim else 1, x.shape[-1], form=form)
        if convention == "derivative_of_output":
            refeed_text = ("written for the input x but declared derivative_of_output: it "
                           "matches once fed x instead of y = f(x)")
            feed = x
        else:
            refeed_text = ("written for the output y = f(x) but fed x: it matches once fed "
                           "f(x) instead of x (seed 002's Softmax'(a) vs Softmax'(z))")
            feed = y
        refeed = functools.partial(self.refeed, x, y, feed, est.structure, form)
        return _Trial(analytic, est, layout, refeed, refeed_text,
                      _kink_hook(act, evaluator, x, x, est), x=x, changed=changed)

    def refeed(self, x: Array, y: Array, feed: Array, kind: str, form: str) -> Array | None:
        """The analytic derivative fed ``feed`` (f(x) for one written for the input, or x for one
        declared in terms of the output), in ``form``: the "wrong input" diagnosis compares it."""
        if feed.shape != x.shape:
            return None
        try:
            fed_form, fed = conventions.analytic_form(self.act, self.convention, x, y, kind, fed=feed)
        except ConventionError:
            return None
        target = structure.common_form(fed_form, form)
        return structure.convert(fed_form, target, fed, x.shape[0]) if target == form else None


def _activation_rows(spec: Spec, act: FunctionSpec, points: Points, options: CheckOptions) -> _Part:
    """One Jacobian row per convention of the activation (streamed when huge), and its second derivative."""
    rows: list[_Component] = []
    # the current trial's quick numerical Jacobian, shared by every convention of the entry
    numeric: _PerTrial[tuple[Evaluator, numdiff.StructuredEstimate]] = _PerTrial()
    analytic_cache: _PerTrial[tuple[str, Array]] = _PerTrial()
    b, k = options.point_shape
    checked = _checked_conventions(act, options)
    skipped = [c for c in act.conventions if c not in checked]
    finish = None
    if skipped:
        note = (f"the jacobian convention was not checked at this size: it returns {b * k * k:,} entries "
                f"({b * k * k * 8 / 2**30:.1f} GiB); this row checks the same derivative")

        def finish(row: CheckResult) -> CheckResult:
            return replace(row, notes=(*row.notes, note))

    k_out = None if options.fast else _output_width(act, points, options)  # one forward call, not one per convention
    for convention in checked:
        if _streams(act, convention, points, options, k_out, numeric):
            rows.append(_StreamedJudge(spec, act, convention, points, options, finish))
            continue
        trials = _ActivationTrials(act, convention, points, options, numeric, analytic_cache)
        rows.append(_Judge(spec, "jacobian", convention, act.origin, options, trials.trial, finish))
    if "derivative2" in act.second and not options.fast:
        rows.append(_second_row(spec, act, points, options, numeric))
    return _Part(rows, [numeric, analytic_cache])


class _SecondTrials:
    """The elementwise second derivative against second differences, trial by trial.

    ``numeric`` holds the Jacobian rows' evaluator and verified structure for the trial, when
    they ran: the same point, so its noise measurement and structure probes are reused.
    """

    def __init__(self, act: FunctionSpec, points: Points, options: CheckOptions,
                 numeric: _PerTrial[tuple[Evaluator, numdiff.StructuredEstimate]]) -> None:
        self.act, self.points, self.options, self.numeric = act, points, options, numeric

    def trial(self, t: int, failing: Index | None) -> _Trial:
        act = self.act
        x = self.points.input_only(t)
        scale = inputs.step_scale(x, act.domain)
        try:
            kind: str | None = None
            shared = self.numeric.peek(t)
            if shared is not None:  # its structure is only a verdict when elementwise (--method complex skips probes)
                evaluator = shared[0]
                kind = structure.ELEMENTWISE if shared[1].structure == structure.ELEMENTWISE else None
            else:
                evaluator = Evaluator(act.forward, x, scale, self.options.dtype)
            _forward_values(evaluator, f"{act.name} forward", x)
            est = numdiff.second_diagonal(evaluator, x, scale, kind)
        except EvaluationError as exc:
            raise Skip(f"{act.name} forward {exc}") from exc
        layout = Layout(x.shape[0], x.shape[-1], x.shape[-1], scalar=True, second=True)
        return _Trial(conventions.analytic_second(act, x), est, layout, x=x)


def _second_row(spec: Spec, act: FunctionSpec, points: Points, options: CheckOptions,
                numeric: _PerTrial[tuple[Evaluator, numdiff.StructuredEstimate]]) -> _Judge:
    """The second-derivative row of an activation that gives ``derivative2``."""
    trials = _SecondTrials(act, points, options, numeric)
    return _Judge(spec, "second_derivative", "derivative2", act.origin, options, trials.trial)


class _LossTrials:
    """dL/dpred of the loss (at the activation's output, in a pair), trial by trial."""

    def __init__(self, spec: Spec, loss: FunctionSpec, points: Points, options: CheckOptions) -> None:
        self.act, self.loss, self.points, self.options = spec.activation, loss, points, options
        self.quick: _PerTrial[tuple[Evaluator, numdiff.Estimate]] = _PerTrial()

    def trial(self, t: int, failing: Index | None) -> _Trial:
        act, loss, options = self.act, self.loss, self.options
        x, target = self.points(t)
        assert target is not None
        pred = call_forward(act, x) if act is not None else x
        target_in = target.astype(options.dtype)
        if options.fast:
            gradient = conventions.analytic_gradient(loss, pred, target).ravel()
            return _fast_trial(lambda p: loss.forward(p, target_in), pred, loss.domain, options,
                               f"{loss.name} forward", lambda y, u, d: u[:, 0] * (d @ gradient),
                               options.seed, target)
        evaluator, est = self.quick.get(t, lambda: _numeric(lambda p: loss.forward(p, target_in), pred, loss.domain,
                                                            options, f"{loss.name} forward", quick=True, scalar=True))
        est = _complete(evaluator, pred, inputs.step_scale(pred, loss.domain), options, "general", est,  # type: ignore[assignment]
                        "dense", failing)
        analytic = conventions.analytic_gradient(loss, pred, target)
        return _Trial(analytic, est, Layout(pred.shape[0], 1, pred.shape[-1], scalar=True),
                      kink=_kink_hook(loss, evaluator, pred, pred - target, est), x=pred, target=target)


def _loss_row(spec: Spec, loss: FunctionSpec, points: Points, options: CheckOptions) -> _Part:
    """The gradient row of a loss."""
    trials = _LossTrials(spec, loss, points, options)
    return _Part([_Judge(spec, "gradient", "gradient", loss.origin, options, trials.trial)], [trials.quick])


class _PairTrials:
    """L(A(z), t) as one function of z: the chain rule's and the fused formula's trials share
    its numerical gradient (and its kinks: the activation's, and the loss's reached through it)."""

    def __init__(self, act: FunctionSpec, loss: FunctionSpec, points: Points, options: CheckOptions,
                 parts_ok: Callable[[], dict[str, bool]]) -> None:
        self.act, self.loss, self.points, self.options, self.parts_ok = act, loss, points, options, parts_ok
        self.convention = _checked_conventions(act, options)[0]
        self.cache: _PerTrial[tuple[Evaluator, numdiff.Estimate]] = _PerTrial()

    def composite(self, t: int, failing: Index | None) -> tuple[Array, Array, numdiff.Estimate]:
        act, loss, options = self.act, self.loss, self.options
        z, target = self.points(t)
        assert target is not None
        target_in = target.astype(options.dtype)
        evaluator, est = self.cache.get(t, lambda: _numeric(lambda v: loss.forward(act.forward(v), target_in), z,
                                                            act.domain, options, f"{loss.name}({act.name}(z))",
                                                            quick=True, scalar=True))
        est = _complete(evaluator, z, inputs.step_scale(z, act.domain), options, "general", est,  # type: ignore[assignment]
                        "dense", failing)
        return z, target, est

    def kink(self, t: int) -> KinkHook | None:
        # The composite has the activation's kinks and the loss's, reached through the activation.
        z, target = self.points(t)
        assert target is not None
        shared = self.cache.peek(t)
        assert shared is not None  # composite(t) made it
        evaluator, est = shared
        return _composite_kink_hook(self.act, self.loss, evaluator, z, target, est)

    def fast(self, t: int, gradient: Callable[[Array, Array], Array]) -> _Trial:
        act, loss, options = self.act, self.loss, self.options
        z, target = self.points(t)
        assert target is not None
        target_in = target.astype(options.dtype)
        grad = gradient(z, target).ravel()
        return _fast_trial(lambda v: loss.forward(act.forward(v), target_in), z, act.domain, options,
                           f"{loss.name}({act.name}(z))", lambda y, u, d: u[:, 0] * (d @ grad),
                           options.seed, target)

    def chain_gradient(self, z: Array, target: Array) -> Array:
        y = call_forward(self.act, z)
        g = conventions.analytic_gradient(self.loss, y, target).reshape(y.shape)
        return conventions.analytic_vjp(self.act, self.convention, z, g, y)

    def chain(self, t: int, failing: Index | None) -> _Trial:
        if self.options.fast:
            return self.fast(t, self.chain_gradient)
        z, target, est = self.composite(t, failing)
        analytic = self.chain_gradient(z, target).reshape(1, -1)
        return _Trial(analytic, est, Layout(z.shape[0], 1, z.shape[-1], scalar=True), x=z, target=target,
                      kink=self.kink(t))

    def explain_chain(self, row: CheckResult) -> CheckResult:
        if row.verdict is not Verdict.FAIL:
            return row
        wrong = [name for name, ok in self.parts_ok().items() if not ok]
        if wrong:
            return replace(row, diagnosis=(
                f"follows from the wrong {' and '.join(wrong)} (see {'those rows' if len(wrong) > 1 else 'that row'}): "
                f"J^T dL/da built from it gives the wrong dL/dz"))
        return replace(row, diagnosis=(
            "the activation's Jacobian and the loss gradient each pass, but their product does "
            f"not: the {self.convention} mishandles the upstream gradient ({row.diagnosis})"))

    def fused_trial(self, fused: FusedSpec, t: int, failing: Index | None) -> _Trial:
        def fused_gradient(z: Array, target: Array) -> Array:
            return conventions.call_checked("fused gradient(z, t)", fused.gradient, (z, target), z.shape,
                                            "dL/dz, like z")

        if self.options.fast:
            return self.fast(t, fused_gradient)
        z, target, est = self.composite(t, failing)
        out = fused_gradient(z, target)
        return _Trial(out.reshape(1, -1), est, Layout(z.shape[0], 1, z.shape[-1], scalar=True), x=z,
                      target=target, kink=self.kink(t))


def _pair_rows(spec: Spec, act: FunctionSpec, loss: FunctionSpec, points: Points,
               options: CheckOptions, registry: Registry, parts_ok: Callable[[], dict[str, bool]]) -> _Part:
    """The chain row of ``ACT+LOSS`` and, where the registry knows one, the fused row."""
    trials = _PairTrials(act, loss, points, options, parts_ok)
    rows: list[_Component] = [_Judge(spec, "chain", trials.convention, act.origin, options, trials.chain,
                                     trials.explain_chain)]
    fused = registry.fused(act.base, loss.base)
    if fused is not None:
        rows.append(_Judge(spec, "fused", "fused", fused.origin, options, functools.partial(trials.fused_trial, fused)))
    return _Part(rows, [trials.cache])


def prepare_spec(text: str, options: CheckOptions, registry: Registry) -> Spec:
    """Parse ``text`` and refuse, before anything runs, an explicit input outside its domain or
    a check that cannot fit in memory (:class:`UsageError`)."""
    spec = parse_spec(text, registry)
    check_explicit_input(spec, options)
    options.validate(spec)
    return spec


def check_explicit_input(spec: Spec, options: CheckOptions) -> None:
    """An explicit --input outside the checked function's domain is a usage error; so is a
    --shape NAME=... that names no argument of the checked layer."""
    if options.arg_shapes and per_argument(spec, options):
        known = (spec.layer.layer.signature.names if spec.layer is not None and spec.layer.layer is not None
                 else ("pred",))
        for name, _ in options.arg_shapes:
            if name not in known:
                raise UsageError(f"--shape {name}=... names no argument of '{spec.text}': its arguments are "
                                 f"{', '.join(known)}.{suggest(name, known)} (In a config: shape: {{NAME: [...]}}.)")
    if spec.layer is not None and (options.input is not None or options.target is not None):
        names = [a.name for a in spec.layer.layer.signature.args] if spec.layer.layer else []
        raise UsageError(
            f"--input and --target are for activations and losses; the layer '{spec.layer.name}' (arguments: "
            f"{', '.join(names)}) is checked at random points: choose them with --seed and --shape NAME=..., or give "
            f"the arrays themselves from Python (assert_gradients(..., inputs=...) or CheckOptions(arg_values=...)).")
    first = spec.activation or spec.loss
    if options.input is None or first is None:
        return
    bad = inputs.outside_domain(options.input, first.domain)
    if bad is not None:
        raise UsageError(
            f"--input value {options.input[bad]:g} at {list(bad)} is outside {first.name}'s domain "
            f"({inputs.DOMAIN_TEXT[first.domain]}), so '{spec.text}' cannot be checked there. "
            f"Give --input values inside the domain."
        )


def check_spec(spec: Spec, options: CheckOptions, registry: Registry,
               activation_rows: dict[str, list[CheckResult]] | None = None) -> list[CheckResult]:
    """Every component row of one parsed spec.

    ``activation_rows`` maps activation names to their rows from earlier specs of the same
    run (same options): ``softmax+mse softmax+mae`` checks softmax's Jacobian once, since
    both sample the activation's inputs identically.
    """
    with conventions.in_dtype(options.dtype), floating.own_errstate():
        return _check_spec(spec, options, registry, {} if activation_rows is None else activation_rows)


def argument_rows(spec: Spec, options: CheckOptions) -> list[CheckResult]:
    """Rows from the per-argument checks (:mod:`gradcheck_cli.jacobians`): a layer's, one per
    argument; with a loss, also the loss's gradient and the chain rows. Losses on integer
    labels take this path too, their target having another shape than the prediction."""
    from gradcheck_cli import jacobians, models

    values = dict(options.arg_values)
    shapes = {**dict(options.arg_shapes), **{name: tuple(np.shape(v)) for name, v in values.items()}}
    reproduce = reproduce_command(spec.text, options, spec)
    first: models.Model | None = None
    if spec.layer is not None:
        first = models.layer_model(spec.layer, options.shape, shapes)
    judged: list[models.Model] = []
    if spec.activation is not None:  # every convention of the activation is its own row, as on the (B, K) path
        shape = options.shape if options.shape is not None and len(options.shape) > 2 else options.point_shape
        judged = [models.activation_model(spec.activation, shape, c) for c in spec.activation.conventions]
        first = judged[0]
    elif first is not None:
        judged = [first]
    if spec.loss is not None:
        try:  # the loss is checked at the first stage's output shape; a stage that cannot run has its ERROR rows
            if first is None:  # the loss alone: its prediction at --shape (any rank) or --shape pred=...
                judged.append(models.loss_model(spec.loss, options.shape or options.point_shape, shapes))
            else:
                judged.append(models.loss_model(spec.loss, jacobians.output_shape(first, options.seed, options.dtype),
                                                {}))
        except jacobians.Refused:
            pass
        if first is not None:
            judged.append(models.chain_model(first, spec.loss))
    rows: list[CheckResult] = []
    for model in judged:
        trials = 1 if values and options.arguments_fixed([a.name for a in model.differentiable]) else options.n_random
        rows += jacobians.check_model(spec.text, model, options.seed, trials, options.method, options.dtype,
                                      options.tolerance, reproduce, values, options.fast, options.edges)
    if first is not None and (options.shape is not None or options.arg_shapes):
        # A forward that fails after --shape changed some arguments: usually the others no longer fit.
        hint = _shape_hint(first, options)
        rows = [replace(r, diagnosis=f"{r.diagnosis}. {hint}") if r.verdict is Verdict.ERROR
                and r.diagnosis.startswith(("forward raised", "the loss of")) else r for r in rows]
    return rows


def _shape_hint(model: Any, options: CheckOptions) -> str:
    """What --shape set and what it left at the entry's defaults."""
    named = dict(options.arg_shapes)
    shapes = ", ".join(f"{a.name} {'x'.join(map(str, a.shape)) or 'scalar'}" for a in model.differentiable)
    kept = [a.name for a in model.differentiable if a.name not in named and a is not model.differentiable[0]]
    rest = (f"; the others keep their default shapes: give them with --shape NAME=... (e.g. --shape {kept[0]}=...)"
            if kept else "")
    return f"The shapes were {shapes} (a bare --shape sets only the first argument{rest})"


def _check_spec(spec: Spec, options: CheckOptions, registry: Registry,
                activation_rows: dict[str, list[CheckResult]]) -> list[CheckResult]:
    if per_argument(spec, options):
        return argument_rows(spec, options)
    points = Points(spec, options)
    parts: list[_Part] = []
    rows: list[CheckResult] = []
    act = spec.activation
    if act is not None and act.name in activation_rows:
        # Checked by an earlier spec of this run at the same points: the same rows, named for this one.
        reproduce = reproduce_command(spec.text, options, spec)
        rows += [replace(r, check=spec.text, reproduce=reproduce) for r in activation_rows[act.name]]
    elif act is not None:
        parts.append(_activation_rows(spec, act, points, options))
    if spec.loss is not None:
        parts.append(_loss_row(spec, spec.loss, points, options))
    n_parts = len(rows) + sum(len(part.components) for part in parts)

    def parts_ok() -> dict[str, bool]:
        return {what: all(r.verdict is not Verdict.FAIL for r in rows[:n_parts] if r.component == component)
                for what, component in (("activation Jacobian", "jacobian"), ("loss gradient", "gradient"))}

    if spec.activation is not None and spec.loss is not None:
        parts.append(_pair_rows(spec, spec.activation, spec.loss, points, options, registry, parts_ok))
    # Trial by trial, every component: what a part's components share is made once, and
    # dropped when they are done with the trial; the points go when the next trial starts.
    for t in range(options.n_trials):
        points.advance(t)
        for part in parts:
            for component in part.components:
                component.step(t)
            for store in part.shared:
                store.clear()
    for part in parts:  # in order: the pair's rows read the activation's and the loss's
        rows += [component.row() for component in part.components]
    if act is not None and act.name not in activation_rows:
        activation_rows[act.name] = rows[:len(parts[0].components)]
    return rows


def run(specs: Sequence[str], options: CheckOptions | None = None, registry: Registry | None = None,
        plugins: Sequence[str] = ()) -> RunResult:
    """Check every spec and return all rows.

    Parameters
    ----------
    specs : sequence of str
        ``ACT+LOSS``, ``ACT`` or ``LOSS`` names, e.g. ``["softmax+mse", "relu"]``.
    options : CheckOptions, optional
    registry : Registry, optional
        Defaults to the built-ins plus installed entry points plus ``plugins``.

    Raises
    ------
    UsageError
        For unknown names or bad options, before anything runs.
    """
    from gradcheck_cli.plugins import default_registry

    options = options or CheckOptions()
    options.validate()
    registry = registry or default_registry(tuple(plugins))
    parsed = [prepare_spec(s, options, registry) for s in specs]
    rows: list[CheckResult] = []
    activation_rows: dict[str, list[CheckResult]] = {}
    for spec in parsed:
        rows += check_spec(spec, options, registry, activation_rows)
    return RunResult(tuple(rows))
