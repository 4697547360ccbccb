"""``gradcheck explain NAME``: for a small input, the output, the analytic and numerical
derivatives, their difference and the verdict rows, as plain data (rendered by
:func:`gradcheck_cli.report.terminal.render_explanation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from gradcheck_cli import conventions, floating, inputs, numdiff
from gradcheck_cli.conventions import ConventionError
from gradcheck_cli.errors import UsageError
from gradcheck_cli.numdiff import EvaluationError
from gradcheck_cli.registry import EntrySummary, FunctionSpec, Registry
from gradcheck_cli.results import RunResult
from gradcheck_cli.runner import (
    CheckOptions,
    Points,
    Skip,
    Spec,
    argument_rows,
    call_forward,
    check_spec,
    parse_spec,
)

Array = NDArray[np.float64]


EXPLAIN_MAX_VALUES = 1_000


@dataclass(frozen=True)
class Explanation:
    """Everything ``gradcheck explain`` shows for one name at one input."""

    spec: EntrySummary
    convention: str
    x: Array
    target: Array | None
    output: Array
    analytic: Array | None
    numeric: Array | None
    error: Array | None
    rows: RunResult
    upstream: Array | None = None
    analytic_vjp: Array | None = None
    numeric_vjp: Array | None = None
    arguments: tuple[tuple[str, Array, Array, Array], ...] = ()
    """Layers: per argument, its value and the analytic and numerical Jacobians of the output."""
    output_name: str = "y"


def explain(name: str, options: CheckOptions | None = None, registry: Registry | None = None,
            plugins: Sequence[str] = ()) -> Explanation:
    """Output, analytic and numerical derivative, and the verdict rows for ``name``.

    Defaults to two random rows of 4 values (two, so that a derivative mixing rows of
    the batch shows) when no ``input`` is given.
    """
    from gradcheck_cli.plugins import default_registry

    options = options or CheckOptions(shape=(2, 4), trials=1)
    options.validate()
    registry = registry or default_registry(tuple(plugins))
    spec = parse_spec(name, registry)
    first = spec.activation or spec.layer
    if first is not None and spec.loss is not None:
        raise UsageError(
            f"explain takes one activation, layer or loss, not a pair; got '{name}'. Explain each part "
            f"('gradcheck explain {first.name}'), or run the pair with "
            f"'gradcheck run {name} --verbose'."
        )
    if spec.layer is not None:
        with floating.own_errstate():
            return _explain_layer(spec, spec.layer, options)
    entry = spec.activation or spec.loss
    assert entry is not None
    options.validate(spec)
    b, k = options.point_shape
    if b * k > EXPLAIN_MAX_VALUES:
        # explain builds and prints the whole dense Jacobian: (B*K)^2 entries, in this process.
        given = "--input" if options.input is not None else "--shape"
        raise UsageError(
            f"explain shows whole Jacobians, so it takes small inputs: at most {EXPLAIN_MAX_VALUES:,} values; "
            f"the {given} has {b}x{k} = {b * k:,}. Give a smaller {given} (the default shape is 2,4), or check "
            f"the large input with 'gradcheck run {name} --shape {b},{k} --verbose'."
        )
    with floating.own_errstate():  # whatever numpy error state a plugin set at import
        return _explain(spec, entry, options, registry)


def _explain_layer(spec: Spec, entry: FunctionSpec, options: CheckOptions) -> Explanation:
    """:func:`explain` for a layer: per argument, the Jacobians of its first output."""
    from gradcheck_cli import jacobians, models

    shape = None if options.shape == (2, 4) else options.shape  # explain's activation default: the layer's own
    model = models.layer_model(entry, shape, dict(options.arg_shapes))
    for a in model.differentiable:
        if int(np.prod(a.shape, dtype=np.int64)) > EXPLAIN_MAX_VALUES:
            raise UsageError(
                f"explain shows whole Jacobians, so it takes small arguments: at most {EXPLAIN_MAX_VALUES:,} values "
                f"each; {a.name} has shape {'x'.join(map(str, a.shape))}. Give smaller shapes (--shape "
                f"{a.name}=...), or check it with 'gradcheck run {entry.name} --verbose'.")
    rows = RunResult(tuple(argument_rows(spec, replace(options, shape=shape))))
    try:
        point, outputs, parts = jacobians.explain_model(model, options.seed, options.method, options.dtype)
    except jacobians.Refused as why:
        raise UsageError(f"'{entry.name}' cannot be explained: {why}") from None
    first = model.args[0].name
    arguments = tuple((name, np.asarray(point[name], dtype=np.float64), a, n) for name, (a, n) in parts.items())
    return Explanation(entry.summary(), model.convention, np.asarray(point[first], dtype=np.float64), None,
                       outputs[0], None, None, None, rows, arguments=arguments, output_name=model.outputs[0])


def _explain(spec: Spec, entry: FunctionSpec, options: CheckOptions, registry: Registry) -> Explanation:
    """:func:`explain` once its arguments are valid."""
    rows = RunResult(tuple(check_spec(spec, options, registry)))
    convention = entry.conventions[0]
    try:
        x, target = Points(spec, options)(0)
    except Skip as why:
        raise UsageError(str(why)) from None
    analytic = numeric = error = upstream = analytic_vjp = numeric_vjp = None
    try:
        if spec.activation is not None:
            output = call_forward(entry, x)
            est = numdiff.estimate(entry.forward, x, inputs.step_scale(x, entry.domain), options.method,
                                   dtype=options.dtype)
            # A backward pass as a layer would run it: upstream gradient g, result J^T g.
            upstream = np.random.default_rng([options.seed, 99]).normal(size=output.shape)
            numeric_vjp = (est.value.T @ upstream.ravel()).reshape(x.shape)
            analytic_vjp = conventions.analytic_vjp(entry, convention, x, upstream, output)
            analytic = conventions.analytic_jacobian(entry, convention, x, output)
        else:
            assert target is not None
            output = np.asarray(entry.forward(x, target), dtype=np.float64)
            est = numdiff.estimate(lambda p: entry.forward(p, target), x,
                                   inputs.step_scale(x, entry.domain), options.method, dtype=options.dtype)
            analytic = conventions.analytic_gradient(entry, x, target)
        numeric, error = est.value, est.error
    except (Skip, ConventionError, EvaluationError):
        output = np.full(x.shape, np.nan)
    return Explanation(entry.summary(), convention, x, target, output, analytic, numeric, error, rows,
                       upstream, analytic_vjp, numeric_vjp)
