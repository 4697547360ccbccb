"""The registry: named activations and losses with their analytic derivatives.

Built-ins and user plugins register through the same two functions,
:func:`register_activation` and :func:`register_loss`; both validate at registration so a
bad plugin fails when it loads, naming its origin, not halfway through a check.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from gradcheck_cli.errors import PluginError, UsageError, suggest
from gradcheck_cli.registry import table

if TYPE_CHECKING:
    from gradcheck_cli.registry.styles import Style

ACTIVATION_CONVENTIONS = table.keywords("activation")
LOSS_CONVENTIONS = table.keywords("loss")
SECOND_ORDER = table.keywords("activation", order=2)
DOMAINS = ("real", "positive", "unit")
TARGETS = ("real", "onehot", "probabilities", "binary", "positive", "labels")
REDUCTIONS = ("mean", "sum")
KINDS = ("activation", "loss", "layer")

# Matched with fullmatch: '$' would also match before a final newline, letting "abc\n" in.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*(@[A-Za-z0-9_.-]+)?")


@dataclass(frozen=True)
class FunctionSpec:
    """One registered function and the derivatives handed to the tool.

    Parameters
    ----------
    name : str
        ``snake_case``; a variant is ``NAME@VARIANT``.
    kind : str
        ``"activation"`` (``forward(x) -> y``) or ``"loss"`` (``forward(pred, target)``
        returning a scalar, or one scalar per leading stacked index).
    forward : callable
        The function whose finite differences are the reference.
    derivatives : mapping
        Convention keyword -> callable, in the order they are checked.
    formula : str
        Human-readable analytic derivative, shown by ``list`` and ``explain``.
    domain : str
        Where inputs (activations) or predictions (losses) are drawn from.
    target : str or None
        Target kind of a loss.
    kinks : tuple of float
        Points where the function is not differentiable (of x for activations, of the
        residual pred - target for losses); random inputs keep away from them.
    origin : str
        ``builtin`` or where the plugin came from.
    mistake, fix : str or None
        For deliberately wrong variants: what is wrong and the correct formula.
    """

    name: str
    kind: str
    forward: Callable[..., Any]
    derivatives: Mapping[str, Callable[..., Any]]
    formula: str = ""
    domain: str = "real"
    target: str | None = None
    kinks: tuple[float, ...] = ()
    origin: str = "builtin"
    mistake: str | None = None
    fix: str | None = None
    second: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    layer: Style | None = None
    """For ``kind="layer"``: the bound code, its signature (arguments, outputs, constants)."""

    @property
    def conventions(self) -> tuple[str, ...]:
        """The first-order convention keywords, in check order."""
        return tuple(self.derivatives)

    @property
    def base(self) -> str:
        """The name without its ``@variant`` suffix."""
        return self.name.split("@", 1)[0]

    @property
    def is_variant(self) -> bool:
        return "@" in self.name

    def summary(self) -> EntrySummary:
        """What ``list`` and ``explain`` show of this entry, as plain (picklable) data."""
        args = tuple((a.name, a.shape) for a in self.layer.signature.args) if self.layer is not None else ()
        return EntrySummary(self.name, self.kind, self.conventions, tuple(self.second), self.formula,
                            self.domain, self.target, self.origin, self.mistake, self.fix, args)


@dataclass(frozen=True)
class EntrySummary:
    """A registry entry without its code: what a report shows of it."""

    name: str
    kind: str
    conventions: tuple[str, ...]
    second: tuple[str, ...]
    formula: str
    domain: str
    target: str | None
    origin: str
    mistake: str | None
    fix: str | None
    args: tuple[tuple[str, tuple[int, ...]], ...] = ()
    """A layer's arguments and their default shapes."""

    @property
    def is_variant(self) -> bool:
        return "@" in self.name


@dataclass(frozen=True)
class FusedSpec:
    """A known closed form for dL/dz of ``loss(activation(z), t)``."""

    activation: str
    loss: str
    gradient: Callable[[Any, Any], Any]
    formula: str
    origin: str = "builtin"


class Registry:
    """Name -> :class:`FunctionSpec`, plus fused pair formulas."""

    def __init__(self) -> None:
        self._entries: dict[str, FunctionSpec] = {}
        self._fused: dict[tuple[str, str], FusedSpec] = {}
        self.sources: dict[str, list[str]] = {}
        """Plugin source (resolved file path or module) -> names it registered here."""

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[FunctionSpec]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def add(self, spec: FunctionSpec) -> None:
        if spec.name in self._entries:
            prior = self._entries[spec.name]
            raise PluginError(
                f"'{spec.name}' is registered twice: first by {prior.origin}, again by "
                f"{spec.origin}. Each name must be unique; rename one of them "
                f"(a variant of an entry is spelt NAME@VARIANT)."
            )
        self._entries[spec.name] = spec

    def add_fused(self, fused: FusedSpec) -> None:
        self._fused[(fused.activation, fused.loss)] = fused

    def fused_formulas(self) -> list[FusedSpec]:
        return list(self._fused.values())

    def fused_summaries(self) -> list[tuple[str, str, str]]:
        """``(ACT+LOSS, formula, origin)`` of every fused formula, as plain data."""
        return [(f"{f.activation}+{f.loss}", f.formula, f.origin) for f in self._fused.values()]

    def fused(self, activation: str, loss: str) -> FusedSpec | None:
        return self._fused.get((activation, loss))

    def get(self, name: str, kind: str | None = None) -> FunctionSpec:
        """Look ``name`` up, raising a :class:`UsageError` with suggestions when absent."""
        spec = self._entries.get(name)
        if spec is not None and (kind is None or spec.kind == kind):
            return spec
        pool = [s.name for s in self if kind is None or s.kind == kind]
        what = f"{kind} " if kind else ""
        if spec is not None:
            raise UsageError(
                f"'{name}' is {'an' if spec.kind == 'activation' else 'a'} {spec.kind}, but "
                f"{'an' if kind == 'activation' else 'a'} {kind} was "
                f"expected here. "
                f"A pair is written ACTIVATION+LOSS or LAYER+LOSS, e.g. 'softmax+cross_entropy' or 'dense+mse'."
            )
        raise UsageError(
            f"Unknown {what}name '{name}'.{suggest(name, pool)} "
            f"Run 'gradcheck list' to see every registered name."
        )


REGISTRY = Registry()
_active: list[tuple[Registry, str]] = []


@contextlib.contextmanager
def registering(registry: Registry, origin: str) -> Iterator[None]:
    """Send register_* calls made inside the block to ``registry``, tagged ``origin``."""
    _active.append((registry, origin))
    try:
        yield
    finally:
        _active.pop()


def _target() -> tuple[Registry, str]:
    return _active[-1] if _active else (REGISTRY, "python")


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be registered (no spec could name it, or it would garble a report), or None."""
    if not name:
        return "it is empty"
    odd = next((c for c in name if c.isspace() or not c.isprintable()), None)
    if odd is not None:
        return (f"it contains {odd!r} at position {name.index(odd)}; whitespace and control characters "
                f"cannot be typed in a spec, and would garble the reports")
    if "+" in name:
        return "'+' joins ACTIVATION+LOSS in a spec, so a name containing it could never be run"
    if name.count("@") > 1 or name.startswith("@") or name.endswith("@"):
        return "'@' separates NAME@VARIANT, so it comes once, between a name and a variant"
    if not _NAME.fullmatch(name):
        return "use ASCII letters, digits, '_', '.' and '-', starting with a letter or '_'"
    return None


def _validate(name: object, kind: str, forward: object, first: dict[str, Any],
              callables: dict[str, Any], origin: str,
              **choices: tuple[object, tuple[str, ...]]) -> None:
    where = f" (registered by {origin})"
    allowed = ACTIVATION_CONVENTIONS if kind == "activation" else LOSS_CONVENTIONS
    problem = _name_problem(name) if isinstance(name, str) else f"it is {type(name).__name__}, not a string"
    if problem is not None:
        raise PluginError(
            f"{'An' if kind == 'activation' else 'A'} {kind} name must be a string like 'my_softmax' or "
            f"'my_softmax@variant'; "
            f"got {name!r} of type {type(name).__name__}{where}: {problem}. Rename it."
        )
    if not first:
        raise PluginError(
            f"'{name}'{where} has no derivative to check: pass one of "
            f"{', '.join(allowed)} as a keyword argument."
        )
    for key, fn in {"forward": forward, **callables}.items():
        if not callable(fn):
            raise PluginError(
                f"'{name}'{where}: {key}= must be callable; got {fn!r} of type "
                f"{type(fn).__name__}. Pass the function itself, not its result."
            )
    for key, (value, valid) in choices.items():
        if value is not None and value not in valid:
            raise PluginError(
                f"'{name}'{where}: {key}={value!r} is not one of {', '.join(valid)}."
                f"{suggest(str(value), valid)}"
            )


def _finite_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _kinks(name: str, value: object, origin: str) -> tuple[float, ...]:
    """``kinks`` as a tuple of finite floats; anything else is refused at registration."""
    if isinstance(value, list | tuple):
        bad = [k for k in value if not _finite_number(k)]
        if not bad:
            return tuple(float(k) for k in value)
        got = f"{bad[0]!r} in {value!r}"
    else:
        got = f"{type(value).__name__} {value!r}"
    raise PluginError(
        f"'{name}' (registered by {origin}): kinks= must be a list of finite numbers, the inputs where "
        f"the function has no derivative (e.g. kinks=[0.0] for relu); got {got}. A kink at nan or inf "
        f"marks no point: leave it out."
    )


def _split_conventions(name: str, kind: str, kwargs: dict[str, Any],
                       origin: str) -> tuple[dict[str, Any], dict[str, Any]]:
    allowed = ACTIVATION_CONVENTIONS if kind == "activation" else LOSS_CONVENTIONS
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in allowed:
            first[key] = value
        elif key in SECOND_ORDER and kind == "activation":
            second[key] = value
        else:
            valid = allowed + (SECOND_ORDER if kind == "activation" else ())
            raise PluginError(
                f"'{name}' (registered by {origin}): unknown keyword '{key}' for a {kind}. "
                f"Expected one of: {', '.join(valid)}.{suggest(key, valid)}"
            )
    return first, second


THREADSAFE = "__gradcheck_threadsafe__"

F = TypeVar("F", bound=Callable[..., Any])


def threadsafe(fn: F) -> F:
    """Mark a forward function as safe to call from several threads at once.

    Pure numpy code is (it keeps no state between statements); the numerical Jacobian of
    a marked function is then evaluated in parallel chunks. A layer method that stores
    ``self.out`` and reads it back is not: leave it unmarked. Built-ins are marked.

    Returns ``fn`` itself, so it works as a decorator.
    """
    try:
        setattr(fn, THREADSAFE, True)
    except (AttributeError, TypeError):  # builtins and bound methods take no attributes
        pass
    return fn


def is_threadsafe(fn: Any) -> bool:
    return bool(getattr(fn, THREADSAFE, False))


def mark_module_threadsafe(namespace: dict[str, Any]) -> None:
    """Mark every function defined in a module (its ``globals()``) threadsafe: built-ins are pure numpy."""
    for value in list(namespace.values()):
        if callable(value) and getattr(value, "__module__", None) == namespace["__name__"]:
            threadsafe(value)


def _register(kind: str, name: str, forward: Callable[..., Any], conventions: dict[str, Any],
              **fields: Any) -> FunctionSpec:
    from gradcheck_cli.registry import layers

    registry, origin = _target()
    first, second = _split_conventions(name, kind, conventions, origin)
    _validate(name, kind, forward, first, {**first, **second}, origin,
              domain=(fields.get("domain"), DOMAINS), target=(fields.get("target"), TARGETS))
    fields["kinks"] = _kinks(name, fields.get("kinks", ()), origin)
    # Names and texts travel to gradcheck as plain data: a str subclass (its own pickling,
    # hashing or printing) becomes a plain str, and anything else is refused here.
    name = str.__str__(name)
    for key in ("formula", "mistake", "fix", "domain", "target"):
        value = fields.get(key)
        if value is not None and not isinstance(value, str):
            raise PluginError(f"'{name}' (registered by {origin}): {key}= must be a string; got "
                              f"{type(value).__name__}. Pass the text itself.")
        if value is not None:
            fields[key] = str.__str__(value)
    factory = fields.pop("factory", None)
    output_attr = fields.pop("output_attr", None)
    grad_attr = fields.pop("grad_attr", None)
    notes: tuple[str, ...] = ()
    if "backward" in first:
        forward, first["backward"], notes = layers.pair_backward(
            name, origin, forward, first["backward"], factory, output_attr, grad_attr)
    elif output_attr is not None:
        forward = layers.output_from_attr(name, origin, forward, output_attr)
    spec = FunctionSpec(name=name, kind=kind, forward=forward, derivatives=first, origin=origin,
                        second=second, notes=notes, **fields)
    registry.add(spec)
    return spec


def register_activation(name: str, forward: Callable[..., Any] | None = None, *, formula: str = "",
                        domain: str = "real", kinks: tuple[float, ...] = (),
                        mistake: str | None = None, fix: str | None = None,
                        output_attr: str | None = None, grad_attr: str | None = None,
                        factory: Callable[[], Any] | None = None,
                        **conventions: Callable[..., Any]) -> Any:
    """Register an activation ``forward(x) -> y`` with one or more derivative conventions.

    Conventions: ``derivative``, ``derivative_of_output``, ``jacobian``, ``vjp``, ``jvp``,
    ``backward`` (a layer's ``forward(x)`` then ``backward(g)`` on one instance, with
    ``output_attr`` / ``grad_attr`` naming attributes when the layer stores its results)
    and ``derivative2`` (second order). Without ``forward`` it returns a class decorator:
    the class is built with no arguments and its methods named ``forward`` (or
    ``__call__``) and after the convention keywords are registered.

    Examples
    --------
    >>> register_activation("my_softmax", forward=softmax, vjp=softmax_vjp)  # doctest: +SKIP
    """
    fields = dict(formula=formula, domain=domain, kinks=kinks, mistake=mistake, fix=fix,
                  output_attr=output_attr, grad_attr=grad_attr, factory=factory)
    if forward is None and not conventions:
        from gradcheck_cli.registry import layers

        return layers.class_decorator(lambda f, convs, **kw: _register("activation", name, f, convs, **kw),
                                      name, "activation", fields)
    if forward is None:
        raise PluginError(f"'{name}': register_activation needs forward= (the function whose "
                          f"derivative is checked).")
    return _register("activation", name, forward, conventions, **fields)


def register_loss(name: str, forward: Callable[..., Any] | None = None, *, target: str = "real",
                  formula: str = "", domain: str = "real", kinks: tuple[float, ...] = (),
                  mistake: str | None = None, fix: str | None = None, reduction: str | None = None,
                  grad_attr: str | None = None, output_attr: str | None = None, target_first: bool = False,
                  **conventions: Callable[..., Any]) -> Any:
    """Register a loss ``forward(pred, target) -> scalar`` with its gradient.

    The gradient comes as ``gradient(pred, target) -> like pred``, as
    ``value_and_grad(pred, target) -> (loss, grad)`` (then ``forward`` may be omitted), or as
    a stateful loss's ``backward(pred, target)`` method that returns the gradient or stores
    it in ``grad_attr`` (``self.dinputs``). A loss whose backward is handed what its forward
    stored (nnfs's softmax-and-cross-entropy class: ``backward(self.output, y)``) names that
    attribute with ``output_attr``: forward then backward run on one copy of the instance. A
    loss returning one value per sample declares ``reduction="mean"`` or ``"sum"``: the
    checked loss is that reduction of its vector, and the gradient is the reduced loss's.
    ``target_first=True`` is for code that takes the target first, ``(labels, logits)`` or
    ``(y_true, y_pred)`` as TensorFlow and Keras do.

    ``target`` is the kind of target drawn for it: real, onehot, probabilities, binary,
    positive, or labels (integer classes, the prediction's shape without its last axis);
    ``domain`` where predictions are drawn: real, positive or unit. Without ``forward`` and
    conventions it returns a class decorator (methods ``forward``/``__call__`` and ``gradient``).
    """
    fields = dict(formula=formula, domain=domain, target=target, kinks=kinks,
                  mistake=mistake, fix=fix)
    if forward is None and not conventions:
        from gradcheck_cli.registry import layers

        return layers.class_decorator(lambda f, convs, **kw: _register("loss", name, f, convs, **kw),
                                      name, "loss", fields)
    where = f"'{name}' (registered by {_target()[1]})"
    if reduction is not None and reduction not in REDUCTIONS:
        raise PluginError(f"{where}: reduction={reduction!r} is not one of {', '.join(REDUCTIONS)}: the loss "
                          f"checked is the mean or the sum of the per-sample values forward returns.")
    value_and_grad = conventions.pop("value_and_grad", None)
    backward = conventions.pop("backward", None)
    if target_first:  # the user's code takes (target, pred): every call below is made as (pred, target)
        forward = _target_first(forward) if callable(forward) else forward
        value_and_grad = _target_first(value_and_grad) if callable(value_and_grad) else value_and_grad
        if callable(conventions.get("gradient")):
            conventions["gradient"] = _target_first(conventions["gradient"])
    given = [k for k, v in (("gradient", conventions.get("gradient")), ("value_and_grad", value_and_grad),
                            ("backward", backward)) if v is not None]
    if len(given) > 1:
        raise PluginError(f"{where}: give the gradient one way, not {' and '.join(given)}.")
    if output_attr is not None and backward is None:
        raise PluginError(f"{where}: output_attr names what a stateful loss's forward stores for its backward, but "
                          f"there is no backward=. Remove output_attr, or pass backward=Loss.backward.")
    if grad_attr is not None and backward is None:
        raise PluginError(f"{where}: grad_attr names where a stateful loss's backward stores the gradient, but "
                          f"there is no backward=. Remove grad_attr, or pass backward=Loss.backward.")
    if value_and_grad is not None:
        if not callable(value_and_grad):
            raise PluginError(f"{where}: value_and_grad= must be callable; got {value_and_grad!r}.")
        forward, conventions["gradient"] = _split_value_and_grad(value_and_grad, forward)
    if backward is not None:
        if not callable(backward):
            raise PluginError(f"{where}: backward= must be callable; got {backward!r}.")
        conventions["gradient"] = _loss_backward(backward, grad_attr, forward, output_attr, target_first)
    if forward is None:
        raise PluginError(f"'{name}': register_loss needs forward= (the loss whose gradient is checked), or "
                          f"value_and_grad= (a function returning the loss and its gradient).")
    if reduction is not None and callable(forward):
        forward = _reduced(forward, reduction)
    return _register("loss", name, forward, conventions, **fields)


def _split_value_and_grad(value_and_grad: Callable[..., Any], forward: Callable[..., Any] | None
                          ) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(loss, grad) = f(pred, target)`` as a forward (unless one is given) and a gradient."""

    def pair(pred: Any, target: Any) -> tuple[Any, Any]:
        result = value_and_grad(pred, target)
        if not isinstance(result, tuple | list) or len(result) != 2:
            raise ValueError(f"value_and_grad returned {type(result).__name__}"
                             f"{f' of {len(result)}' if isinstance(result, tuple | list) else ''}; expected "
                             f"(loss, grad), two values")
        return result[0], result[1]

    def value(pred: Any, target: Any) -> Any:
        return pair(pred, target)[0]

    def gradient(pred: Any, target: Any) -> Any:
        return pair(pred, target)[1]

    value.__name__ = gradient.__name__ = getattr(value_and_grad, "__name__", "value_and_grad")
    if is_threadsafe(value_and_grad):
        threadsafe(value)
        threadsafe(gradient)
    return forward or value, gradient


def _target_first(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(target, pred)`` called as ``(pred, target)``."""

    def swapped(pred: Any, target: Any) -> Any:
        return fn(target, pred)

    swapped.__name__ = getattr(fn, "__name__", "loss")
    if is_threadsafe(fn):
        threadsafe(swapped)
    return swapped


def _loss_backward(backward: Callable[..., Any], grad_attr: str | None, forward: Callable[..., Any] | None,
                   output_attr: str | None, target_first: bool = False) -> Callable[..., Any]:
    """A stateful loss's ``backward(pred, target)`` as ``gradient(pred, target)``: each call on a
    fresh copy of its instance, the result returned or read from ``grad_attr``. With
    ``output_attr``, forward runs first on the copy and backward is handed what it stored."""
    import copy

    from gradcheck_cli.registry.styles import LayerError, owner_of, read_path

    owner = owner_of(backward)
    method = getattr(backward, "__name__", "backward")

    def gradient(pred: Any, target: Any) -> Any:
        held = copy.deepcopy(owner) if owner is not None else None
        if output_attr is not None:
            if held is None or forward is None:
                raise LayerError(f"output_attr='{output_attr}' needs forward and backward to be methods of one loss "
                                 f"instance")
            forward(pred, target) if held is None else getattr(held, getattr(forward, "__name__", "forward"))(
                *((target, pred) if target_first else (pred, target)))
            pred = read_path(held, output_attr)
        ordered = (target, pred) if target_first else (pred, target)
        result = getattr(held, method)(*ordered) if held is not None else backward(*ordered)
        if grad_attr is not None:
            if held is None:
                raise LayerError(f"grad_attr='{grad_attr}' needs backward to be a method of a loss instance")
            return read_path(held, grad_attr)
        if result is None:
            raise LayerError("backward(pred, target) returned None; if the loss stores the gradient in an "
                             "attribute, name it with grad_attr (e.g. grad_attr: dinputs)")
        return result

    gradient.__name__ = method
    return gradient


def _reduced(forward: Callable[..., Any], reduction: str) -> Callable[..., Any]:
    """The per-sample loss ``forward`` reduced to one number by its declared reduction."""

    def loss(pred: Any, target: Any) -> Any:
        import numpy as np

        values = np.asarray(forward(pred, target))
        return values.mean() if reduction == "mean" else values.sum()

    loss.__name__ = getattr(forward, "__name__", "forward")
    if is_threadsafe(forward):
        threadsafe(loss)
    return loss


def register_fused(activation: str, loss: str, *, gradient: Callable[[Any, Any], Any],
                   formula: str) -> FusedSpec:
    """Register the closed form of dL/dz for the pair ``activation+loss``."""
    registry, origin = _target()
    fused = FusedSpec(activation, loss, gradient, formula, origin)
    registry.add_fused(fused)
    return fused


def _layer_callables(name: str, where: str, forward: object, **derivative: object) -> None:
    """Exactly one derivative keyword, a forward unless value_and_grad gives the value, all callable."""
    given = [k for k, fn in derivative.items() if fn is not None]
    if len(given) != 1:
        raise PluginError(f"'{name}'{where}: pass exactly one of backward= (cache style, or a stateful class's "
                          f"backward method), vjp= (vjp(*args, *douts) -> one gradient per argument) and "
                          f"value_and_grad= (f(*args) -> (scalar, its gradients)).")
    if forward is None and given != ["value_and_grad"]:
        raise PluginError(f"'{name}'{where}: register_layer needs forward= (the function whose derivative is checked).")
    for key, fn in (("forward", forward), *derivative.items()):
        if fn is not None and not callable(fn):
            raise PluginError(f"'{name}'{where}: {key}= must be callable; got {fn!r} of type {type(fn).__name__}.")


def _layer_args(name: str, where: str, args: object) -> tuple[Any, ...]:
    from gradcheck_cli.registry.styles import Arg

    if not isinstance(args, Mapping):
        raise PluginError(f"'{name}'{where}: args= must map each argument name, in call order, to its default "
                          f"shape, e.g. {{'x': (4, 5), 'w': (5, 3), 'b': (3,)}}; got {type(args).__name__} {args!r}.")
    out = []
    for arg, value in args.items():
        if not isinstance(arg, str) or not arg.isidentifier():
            raise PluginError(f"'{name}'{where}: args: {arg!r} is not an argument name (a Python identifier).")
        domain = "real"
        shape = value
        if isinstance(value, Mapping):
            unknown = sorted(set(map(str, value)) - {"shape", "domain", "classes", "scale", "constant"})
            if unknown or "shape" not in value:
                raise PluginError(f"'{name}'{where}: args.{arg}: expected a shape or {{shape: [...], domain: "
                                  f"real|positive|unit|labels|mask, classes: N, scale: s, constant: true}}; got keys "
                                  f"{sorted(map(str, value))}.")
            scale, constant = value.get("scale", 1.0), value.get("constant", False)
            if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale < float("inf") or \
                    not isinstance(constant, bool):
                raise PluginError(f"'{name}'{where}: args.{arg}: scale is a positive number (the spread of the values "
                                  f"drawn) and constant true or false; got scale={scale!r}, constant={constant!r}.")
            shape, domain = value["shape"], value.get("domain", "real")
            if domain not in (*DOMAINS, "labels", "mask"):
                raise PluginError(f"'{name}'{where}: args.{arg}.domain={domain!r} is not one of "
                                  f"{', '.join(DOMAINS)}, labels, mask.{suggest(str(domain), (*DOMAINS, 'labels'))}")
            classes = value.get("classes", 0)
            if (domain == "labels") != ("classes" in value) or not (
                    isinstance(classes, int) and not isinstance(classes, bool) and classes >= 0):
                raise PluginError(f"'{name}'{where}: args.{arg}: integer labels (domain: labels) need classes: N, the "
                                  f"number of classes (indices drawn in [0, N)), and only they take it; got "
                                  f"domain={domain!r}, classes={classes!r}.")
        dims = list(shape) if isinstance(shape, list | tuple) else None
        if dims is None or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
            raise PluginError(f"'{name}'{where}: args.{arg}: expected a shape, a list of positive integers such "
                              f"as [4, 5] (or [] for a scalar); got {type(shape).__name__} {shape!r}.")
        if isinstance(value, Mapping):
            out.append(Arg(arg, tuple(dims), str(domain), classes=int(value.get("classes", 0)),
                           scale=float(value.get("scale", 1.0)), constant=bool(value.get("constant", False))))
        else:
            out.append(Arg(arg, tuple(dims), str(domain)))
    return tuple(out)


def _is_method(function: Any) -> bool:
    """A bound method of an instance, or a plain function defined in a class body (takes self)."""
    import inspect

    from gradcheck_cli.registry.styles import class_of, owner_of

    if owner_of(function) is not None:
        return True
    cls = class_of(function)
    return cls is not None and inspect.isfunction(inspect.getattr_static(cls, function.__name__, None))


def register_layer(name: str, forward: Callable[..., Any] | None = None, *,
                   backward: Callable[..., Any] | None = None, vjp: Callable[..., Any] | None = None,
                   value_and_grad: Callable[..., Any] | None = None, args: Mapping[str, Any] | None = None,
                   kwargs: Mapping[str, Any] | None = None, outputs: tuple[str, ...] | list[str] = ("out",),
                   params: Mapping[str, str] | None = None, init: Mapping[str, Any] | None = None,
                   output_attr: str | None = None, grad_attr: str | Mapping[str, str] | None = None,
                   stochastic: bool = False, formula: str = "", mistake: str | None = None,
                   fix: str | None = None) -> FunctionSpec:
    """Register a layer: named array arguments of any shape, parameters, one or more outputs.

    Three styles, each checked as written (see :mod:`gradcheck_cli.registry.styles`):

    - cache (CS231n): ``forward(*args, **kwargs) -> (out, cache)`` and
      ``backward(dout, cache) -> (dx, dw, db)`` (a tuple in argument order, or a dict);
    - vjp: ``forward(*args, **kwargs) -> out`` and ``vjp(*args, dout, **kwargs) -> (dx, dw, db)``;
    - stateful: ``forward``/``backward`` are methods of a class (bound to an instance, or
      unbound with ``init=`` for its constructor). The layer is built once and copied for
      every call; ``params`` maps parameter paths to their gradients' paths
      (``{"weights": "dweights"}`` or ``{"params[W]": "grads[W]"}``), ``output_attr`` and
      ``grad_attr`` name attributes where forward/backward store their results
      (``grad_attr={"x1": "dx1", "x2": "dx2"}`` for a forward of several inputs).

    ``args`` maps each input, in call order, to its default shape (or ``{"shape": [...],
    "domain": "positive"}``); ``kwargs`` are constants passed by keyword to forward (copied
    per call); ``outputs`` names forward's outputs; ``stochastic=True`` replays numpy's global
    random state before every call, so that forward and backward see the same random draws.

    Examples
    --------
    >>> register_layer("affine", affine_forward, backward=affine_backward,
    ...                args={"x": (4, 5), "w": (5, 3), "b": (3,)})          # doctest: +SKIP
    """
    from gradcheck_cli.registry import styles

    registry, origin = _target()
    where = f" (registered by {origin})"
    problem = _name_problem(name) if isinstance(name, str) else f"it is {type(name).__name__}, not a string"
    if problem is not None:
        raise PluginError(f"A layer name must be a string like 'affine' or 'affine@variant'; got {name!r}{where}: "
                          f"{problem}. Rename it.")
    name = str.__str__(name)
    _layer_callables(name, where, forward, backward=backward, vjp=vjp, value_and_grad=value_and_grad)
    arguments = _layer_args(name, where, {} if args is None else args)
    outs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    if not outs or not all(isinstance(o, str) and o.isidentifier() for o in outs) or len(set(outs)) != len(outs):
        raise PluginError(f"'{name}'{where}: outputs= must name forward's outputs, distinct identifiers such as "
                          f"['next_h', 'next_c']; got {outputs!r}.")
    if kwargs is not None and not (isinstance(kwargs, Mapping) and all(isinstance(k, str) for k in kwargs)):
        raise PluginError(f"'{name}'{where}: kwargs= must map keyword names to constants, e.g. "
                          f"{{'conv_param': {{'stride': 1, 'pad': 1}}}}; got {kwargs!r}.")
    for key, value in (("formula", formula), ("mistake", mistake), ("fix", fix)):
        if value is not None and not isinstance(value, str):
            raise PluginError(f"'{name}'{where}: {key}= must be a string; got {type(value).__name__}.")
    stateful = backward is not None and forward is not None and _is_method(forward) and _is_method(backward)
    if not stateful:
        misplaced: tuple[tuple[str, object], ...] = (("params", params), ("init", init),
                                                      ("output_attr", output_attr), ("grad_attr", grad_attr))
        for key, given in misplaced:
            if given:
                raise PluginError(f"'{name}'{where}: {key}= belongs to a stateful layer (forward and backward "
                                  f"methods of a class), but forward={forward!r} is a plain function. Remove "
                                  f"{key}, or pass the class's methods (Layer.forward, Layer.backward).")
    if stateful:
        assert backward is not None and forward is not None
        style: styles.Style = _stateful(name, where, origin, forward, backward, arguments, outs, kwargs, params, init,
                                        output_attr, grad_attr, stochastic)
        signature = style.signature
    elif value_and_grad is not None:
        if len(outs) != 1:
            raise PluginError(f"'{name}'{where}: value_and_grad= gives one scalar and its gradients; outputs= names "
                              f"{len(outs)}. Remove outputs.")
        signature = styles.Signature(arguments, ("loss",) if outs == ("out",) else outs, dict(kwargs or {}),
                                     bool(stochastic))
        style = styles.ValueAndGrad(signature, value_and_grad)
    else:
        assert forward is not None
        signature = styles.Signature(arguments, outs, dict(kwargs or {}), bool(stochastic))
        style = styles.Cache(signature, forward, backward) if backward is not None else \
            styles.Vjp(signature, forward, vjp)  # type: ignore[arg-type]
    _fits_calls(name, where, style, forward or value_and_grad, backward, vjp)
    if not any(a.differentiable for a in signature.args):
        raise PluginError(f"'{name}'{where}: no argument to differentiate: give args= (inputs and default shapes) "
                          f"or params= (for a stateful layer).")
    unlisted = unlisted_parameters(style)
    notes = (f"the layer holds float arrays that params does not list ({', '.join(unlisted)}): if they are "
             f"parameters, their gradients are not checked; add them to params (NAME: its gradient's attribute)",
             ) if unlisted else ()
    spec = FunctionSpec(name=name, kind="layer", forward=style.forward, derivatives={style.name: style.pullback},
                        formula=formula, origin=origin, mistake=mistake, fix=fix, layer=style, notes=notes)
    registry.add(spec)
    return spec


def _stateful(name: str, where: str, origin: str, forward: Callable[..., Any], backward: Callable[..., Any],
              arguments: tuple[Any, ...], outs: tuple[str, ...], kwargs: Mapping[str, Any] | None,
              params: Mapping[str, str] | None, init: Mapping[str, Any] | None, output_attr: str | None,
              grad_attr: str | Mapping[str, str] | None, stochastic: bool) -> Style:
    """A stateful layer's style: its prototype instance, and its parameters as arguments."""
    import copy

    from gradcheck_cli.registry import styles

    prototype = styles.build_prototype(name, origin, forward, init, backward)
    if styles.owner_of(backward) not in (None, prototype):
        raise PluginError(f"'{name}'{where}: forward= and backward= are methods of two different instances; "
                          f"pass both methods of one instance (or of the class, with init=).")
    try:
        copy.deepcopy(prototype)
    except Exception as exc:
        raise PluginError(f"'{name}'{where}: the layer instance cannot be deep-copied ({type(exc).__name__}: "
                          f"{exc}); gradcheck runs every call on a fresh copy of it, so that no state "
                          f"leaks between calls. Make it copyable.") from exc
    if isinstance(grad_attr, Mapping):
        inputs = {a.name for a in arguments if a.differentiable}
        if set(grad_attr) != inputs or not all(isinstance(v, str) for v in grad_attr.values()):
            raise PluginError(f"'{name}'{where}: grad_attr maps each input to the attribute its gradient is stored "
                              f"in, e.g. {{x1: dx1, x2: dx2}}; the inputs are {', '.join(sorted(inputs))}, got "
                              f"{dict(grad_attr)!r}.")
    param_args = []
    for path, grad_path in (params or {}).items():
        try:
            styles.parse_path(str(path))
            styles.parse_path(str(grad_path))
            value = styles.read_path(prototype, str(path))
        except (ValueError, styles.LayerError) as exc:
            raise PluginError(f"'{name}'{where}: params: {exc}.") from exc
        if isinstance(value, float):  # a Python float (self.alpha = 0.25): a scalar, written back as a float
            param_args.append(styles.Arg(str(path), (), "real", styles.PARAM))
            continue
        shape = getattr(value, "shape", None)
        if not isinstance(shape, tuple) or getattr(value, "dtype", None) is None or value.dtype.kind != "f":
            raise PluginError(f"'{name}'{where}: params: '{path}' is {type(value).__name__}, not a float array or a "
                              f"float; a parameter is what the layer's forward reads (e.g. self.weights).")
        param_args.append(styles.Arg(str(path), tuple(int(d) for d in shape), "real", styles.PARAM))
    signature = styles.Signature((*arguments, *param_args), outs, dict(kwargs or {}), bool(stochastic))
    return styles.Stateful(signature, prototype, forward.__name__, backward.__name__,
                           {str(k): str(v) for k, v in (params or {}).items()}, output_attr, grad_attr)


def unlisted_parameters(style: Style) -> tuple[str, ...]:
    """A stateful layer's float arrays that ``params`` does not list: likely parameters whose
    gradients go unchecked (a forgotten ``params:`` keeps the gate green)."""
    from gradcheck_cli.registry import styles

    if not isinstance(style, styles.Stateful):
        return ()
    listed = {styles.parse_path(p)[0][1] for p in style.params}
    found = []
    for attr, value in vars(style.prototype).items():
        shape = getattr(value, "shape", None)
        floating = getattr(getattr(value, "dtype", None), "kind", "") == "f"
        if attr not in listed and isinstance(shape, tuple) and floating:
            found.append(f"{attr} {'x'.join(map(str, shape)) or 'scalar'}")
    return tuple(found)


def _fits_calls(name: str, where: str, style: Style, forward: Callable[..., Any] | None,
                backward: Callable[..., Any] | None, vjp: Callable[..., Any] | None) -> None:
    """Refuse, at registration, ``args``/``kwargs``/``outputs`` that the user's functions cannot be
    called with (a missing argument, a misspelt keyword), instead of an ERROR row per argument."""
    import inspect

    from gradcheck_cli.registry import styles

    sig = style.signature
    if isinstance(style, styles.Stateful):  # the methods as they are called: bound to the layer instance
        forward = getattr(style.prototype, style.forward_name)
        backward = getattr(style.prototype, style.backward_name)
    inputs = [a.name for a in sig.args if a.role == styles.INPUT]
    douts = [f"d{o}" for o in sig.outputs]
    first = "value_and_grad" if isinstance(style, styles.ValueAndGrad) else "forward"
    calls: list[tuple[str, Callable[..., Any], list[str], dict[str, Any]]] = [(first, forward, inputs,
                                                                              dict(sig.kwargs))] if forward else []
    if isinstance(style, styles.Vjp) and vjp is not None:
        calls.append(("vjp", vjp, inputs + douts, dict(sig.kwargs)))
    elif isinstance(style, styles.Cache) and backward is not None:
        calls.append(("backward", backward, [*douts, "cache"], {}))
    elif isinstance(style, styles.Stateful) and backward is not None:
        calls.append(("backward", backward, [] if style.bare else douts, {}))
    for what, fn, positional, keywords in calls:
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin or a C function: nothing to read
            continue
        try:
            signature.bind(*positional, **keywords)
        except TypeError as exc:
            given = ", ".join([*positional, *(f"{k}=..." for k in keywords)])
            raise PluginError(
                f"'{name}'{where}: {what}{signature} cannot be called as {what}({given}): {exc}. 'args' lists the "
                f"forward's array arguments in call order, 'kwargs' its constants (passed by keyword), 'outputs' "
                f"its outputs (one upstream gradient each for the backward).") from None
