"""Entries as functions of named arrays: the model the per-argument checks work on.

A :class:`Model` is what :mod:`gradcheck_cli.jacobians` checks: named differentiable
arguments of any shape (:class:`~gradcheck_cli.registry.styles.Arg`), constants such as
targets, named outputs, ``forward(point)`` and ``pullback(point)``. Layers are models as
registered; a loss is one of its prediction (the target a constant); ``LAYER+LOSS`` chains
a layer into a loss, the upstream gradient of the layer being the loss's gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gradcheck_cli import inputs
from gradcheck_cli.registry import FunctionSpec
from gradcheck_cli.registry.styles import INPUT, Arg, LayerError, by_argument

Array = NDArray[np.float64]
Point = dict[str, Any]
Back = Callable[[tuple[Any, ...]], dict[str, Any]]
# A loss's target in a point: not an identifier, so no layer argument (a layer may well take
# one named ``target``) is ever overwritten by it.
TARGET = "<target>"


@dataclass(frozen=True)
class Model:
    """A checked function of named arrays.

    ``pullback(point)`` returns the outputs at ``point`` and ``back(douts)``, which gives
    the user's gradients by argument name (values unchecked: shapes are judged later).
    ``constants(point, outputs, rng)`` adds what is not differentiated (a loss's target).
    """

    name: str
    component: str
    convention: str
    args: tuple[Arg, ...]
    outputs: tuple[str, ...]
    forward: Callable[[Point], tuple[Any, ...]]
    pullback: Callable[[Point], tuple[tuple[Any, ...], Back]]
    stochastic: bool = False
    constants: Callable[[Point, np.random.Generator], Point] | None = None
    kinks: tuple[float, ...] = ()
    origin: str = "builtin"
    notes: tuple[str, ...] = field(default_factory=tuple)
    named: bool = True
    """Rows name their argument (``wrt``): a layer's several arguments; an activation's or a
    loss's single input is implied, as on the (B, K) path."""

    @property
    def differentiable(self) -> tuple[Arg, ...]:
        """The arguments with a row: all but integer constants (labels)."""
        return tuple(a for a in self.args if a.differentiable)


def shapes_for(args: tuple[Arg, ...], shape: tuple[int, ...] | None,
               arg_shapes: Mapping[str, tuple[int, ...]]) -> tuple[Arg, ...]:
    """The arguments at the shapes of this run: ``--shape NAME=...`` per argument, a bare
    ``--shape`` for the first input, each entry's own default otherwise."""
    out = []
    first = next((a.name for a in args if a.role == INPUT), None)
    for a in args:
        new = arg_shapes.get(a.name, shape if (a.name == first and shape is not None) else a.shape)
        out.append(Arg(a.name, tuple(new), a.domain, a.role, a.classes, a.scale, a.constant))
    return tuple(out)


def layer_model(spec: FunctionSpec, shape: tuple[int, ...] | None,
                arg_shapes: Mapping[str, tuple[int, ...]]) -> Model:
    """A registered layer as a model."""
    style = spec.layer
    assert style is not None
    sig = style.signature
    names = tuple(a.name for a in sig.args if a.differentiable)

    def pullback(point: Point) -> tuple[tuple[Any, ...], Back]:
        outs, back = style.pullback(point)

        def by_name(douts: tuple[Any, ...]) -> dict[str, Any]:
            # The user's answer (a tuple, a dict or an array; the stateful and value_and_grad styles
            # answer by name already) as {argument: gradient}.
            return by_argument(back(douts), names, style.name.split(" ")[0])

        return outs, by_name

    component = "gradient" if style.name == "value_and_grad" else "jacobian"  # a scalar and its gradients
    return Model(spec.name, component, style.name, shapes_for(sig.args, shape, arg_shapes), sig.outputs,
                 style.forward, pullback, sig.stochastic, origin=spec.origin, notes=spec.notes)


def _target_for(loss: FunctionSpec, pred: Array, rng: np.random.Generator) -> NDArray[Any]:
    """A target of the loss's kind, of the prediction's shape (classes along the last axis);
    integer labels have the prediction's shape without its last axis."""
    if loss.target == "labels":
        classes = pred.shape[-1] if pred.ndim else 1
        return rng.integers(0, classes, pred.shape[:-1])
    flat = pred.reshape(-1, pred.shape[-1]) if pred.ndim >= 1 else pred.reshape(1, 1)
    target = inputs.sample_target(loss.target or "real", (flat.shape[0], flat.shape[1]), rng)
    return target.reshape(pred.shape)


def _as_rows(loss: FunctionSpec, pred: Any, target: Any) -> tuple[Any, Any]:
    """A prediction of rank > 2 as the (B, K) rows a loss on one-hot, real or probability targets
    is written for (classes or features along the last axis): a conv layer's (N, C, H, W)
    output into mse is (N*C*H, W). Losses on integer labels take their prediction as it is."""
    pred = np.asarray(pred)
    if loss.target == "labels" or pred.ndim <= 2:
        return pred, target
    return pred.reshape(-1, pred.shape[-1]), np.asarray(target).reshape(-1, pred.shape[-1])


def _loss_value(loss: FunctionSpec, pred: Any, target: Any) -> Any:
    return loss.forward(*_as_rows(loss, pred, target))


def _loss_gradient(loss: FunctionSpec, pred: Any, target: Any) -> Any:
    grad = loss.derivatives["gradient"](*_as_rows(loss, pred, target))
    shape = np.shape(pred)
    # Rows back to the prediction's shape (a gradient of the wrong size is left for the check to name).
    return np.reshape(grad, shape) if len(shape) > 2 and np.size(grad) == np.prod(shape) else grad


def activation_model(spec: FunctionSpec, shape: tuple[int, ...], convention: str | None = None) -> Model:
    """An activation as a model of one argument ``x``, its derivative as the vector-Jacobian
    product ``convention`` (default: its first) gives."""
    from gradcheck_cli import conventions

    convention = convention or spec.conventions[0]

    def forward(point: Point) -> tuple[Any, ...]:
        return (spec.forward(point["x"]),)

    def pullback(point: Point) -> tuple[tuple[Any, ...], Back]:
        x = np.asarray(point["x"])
        y = spec.forward(x)

        def back(douts: tuple[Any, ...]) -> dict[str, Any]:
            g = np.asarray(douts[0])
            if convention == "jacobian" and x.ndim > 2:
                # J(x) -> (..., K, K) over any leading axes: J^T g row by row.
                jac = np.asarray(spec.derivatives["jacobian"](x))
                k = x.shape[-1]
                if jac.shape != (*x.shape[:-1], k, k):
                    raise LayerError(f"jacobian(x) returned shape {jac.shape}; for x of shape {x.shape} it gives "
                                     f"J[..., i, j] = dy_i/dx_j of shape {(*x.shape[:-1], k, k)}")
                return {"x": np.einsum("...ij,...i->...j", jac, g)}
            return {"x": conventions.analytic_vjp(spec, convention, x, g, np.asarray(y))}

        return (y,), back

    return Model(spec.name, "jacobian", convention, (Arg("x", tuple(shape), spec.domain),), ("y",), forward,
                 pullback, kinks=spec.kinks, origin=spec.origin, notes=spec.notes, named=False)


def loss_model(spec: FunctionSpec, shape: tuple[int, ...] | None,
               arg_shapes: Mapping[str, tuple[int, ...]]) -> Model:
    """A loss as a function of its prediction; the target is a constant of each point."""
    pred_shape = arg_shapes.get("pred", shape if shape is not None else (4, 10))  # activations' default
    args = (Arg("pred", tuple(pred_shape), spec.domain),)

    def constants(point: Point, rng: np.random.Generator) -> Point:
        return {TARGET: _target_for(spec, np.asarray(point["pred"]), rng)}

    def forward(point: Point) -> tuple[Any, ...]:
        return (_loss_value(spec, point["pred"], point[TARGET]),)

    def pullback(point: Point) -> tuple[tuple[Any, ...], Back]:
        outs = forward(point)

        def back(douts: tuple[Any, ...]) -> dict[str, Any]:
            g = _loss_gradient(spec, point["pred"], point[TARGET])
            return {"pred": np.asarray(g) * np.asarray(douts[0])}

        return outs, back

    return Model(spec.name, "gradient", "gradient", args, ("L",), forward, pullback, constants=constants, named=False,
                 kinks=spec.kinks, origin=spec.origin)


def chain_model(first: Model, loss: FunctionSpec) -> Model:
    """``loss(first(point), target)``: its gradient by the chain rule through ``first``'s backward."""
    if len(first.outputs) != 1:
        raise LayerError(f"{first.name} has {len(first.outputs)} outputs ({', '.join(first.outputs)}); a loss "
                         f"takes one prediction, so {first.name}+{loss.name} cannot be formed")

    def constants(point: Point, rng: np.random.Generator) -> Point:
        pred = np.asarray(first.forward(point)[0], dtype=np.float64)
        return {TARGET: _target_for(loss, pred, rng)}

    def forward(point: Point) -> tuple[Any, ...]:
        return (_loss_value(loss, first.forward(point)[0], point[TARGET]),)

    def pullback(point: Point) -> tuple[tuple[Any, ...], Back]:
        outs, back = first.pullback(point)
        pred = outs[0]
        value = _loss_value(loss, pred, point[TARGET])
        g = np.asarray(_loss_gradient(loss, pred, point[TARGET]))

        def chained(douts: tuple[Any, ...]) -> dict[str, Any]:
            return back((g * np.asarray(douts[0]).astype(g.dtype),))

        return (value,), chained

    return Model(f"{first.name}+{loss.name}", "chain", first.convention, first.args, ("L",), forward, pullback,
                 first.stochastic, constants, origin=first.origin, named=first.named)
