"""How layer code is written, and how gradcheck calls it as written.

A layer entry is a function of named array arguments of any rank (:class:`Arg`) with one
or more named outputs. Libraries hand its derivative over in one of a few styles, each a
small class here that binds the user's code once and offers the same two calls:

- ``forward(point) -> outputs``: the forward pass at ``point`` (argument name -> array);
- ``pullback(point) -> back``: runs the forward once and returns ``back(douts)``, the
  user's raw answer to upstream gradients ``douts`` (one per output): a tuple, a dict
  or an array, checked and named by :func:`by_argument`.

Styles: ``cache`` (CS231n: ``forward(*args, **kwargs) -> (*outputs, cache)`` and
``backward(*douts, cache)``), ``vjp`` (``vjp(*args, *douts, **kwargs)``) and ``stateful``
(a class: ``forward(*inputs)`` stores or returns the output, ``backward(*douts)`` stores
the gradients of its inputs and of its parameters in attributes or dictionaries).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gradcheck_cli.errors import PluginError

INPUT, PARAM = "input", "param"
# Arguments drawn but not differentiated: integer class indices, and boolean masks.
CONSTANT_DOMAINS = ("labels", "mask")
STYLES = ("cache", "vjp", "stateful")


class LayerError(Exception):
    """The layer's code misbehaved in a way that is not a wrong number; the message is user-facing."""


@dataclass(frozen=True)
class Arg:
    """One array argument: its name, default shape, the domain its values come from, its role."""

    name: str
    shape: tuple[int, ...]
    domain: str = "real"
    role: str = INPUT
    classes: int = 0
    """``domain="labels"``: integer class indices in [0, classes), a constant with no row."""
    scale: float = 1.0
    """The spread of the values drawn, relative to the domain's own (weights of recurrent layers: 0.1)."""
    constant: bool = False
    """Drawn like the others but not differentiated (no row): a real-valued constant."""

    @property
    def differentiable(self) -> bool:
        return self.domain not in CONSTANT_DOMAINS and not self.constant


@dataclass(frozen=True)
class Signature:
    """The arguments (inputs in call order, then parameters), outputs and constants of an entry."""

    args: tuple[Arg, ...]
    outputs: tuple[str, ...] = ("out",)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    stochastic: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.args)

    def arg(self, name: str) -> Arg:
        return next(a for a in self.args if a.name == name)


# --- paths into objects: "weights", "params[W]", "cache.w" ---------------------------------

_STEP = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[([^\]]+)\]")


def parse_path(text: str) -> tuple[tuple[str, str], ...]:
    """``"params[W]"`` -> ``(("attr", "params"), ("key", "W"))``; ValueError when malformed."""
    steps: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _STEP.match(text, pos)
        if m is None or (pos == 0 and text.startswith(".")):
            raise ValueError(f"'{text}' is not an attribute path (write weights, params[W] or layer.weights)")
        steps.append(("attr", m.group(1)) if m.group(1) else ("key", m.group(2).strip("'\"")))
        pos = m.end()
    if not steps or steps[0][0] != "attr":
        raise ValueError(f"'{text}' is not an attribute path (write weights, params[W] or layer.weights)")
    return tuple(steps)


def _key(obj: Any, key: str) -> Any:
    """A ``[key]`` step: a list or tuple takes ``[0]`` as an index; a dict takes it as written."""
    return int(key) if isinstance(obj, list | tuple) and key.lstrip("-").isdigit() else key


def _step(obj: Any, step: tuple[str, str], text: str) -> Any:
    kind, key = step
    if kind == "attr":
        if not hasattr(obj, key):
            have = sorted(k for k in vars(obj) if not k.startswith("__")) if hasattr(obj, "__dict__") else []
            raise LayerError(f"the layer has no attribute '{key}' (from '{text}'); it has: {', '.join(have)}")
        return getattr(obj, key)
    try:
        return obj[_key(obj, key)]
    except (KeyError, IndexError, TypeError):
        have = sorted(map(str, obj)) if isinstance(obj, Mapping) else []
        raise LayerError(f"'{text}': no key '{key}' (keys: {', '.join(have)})") from None


def read_path(obj: Any, text: str) -> Any:
    """The value at attribute path ``text`` of ``obj``."""
    for step in parse_path(text):
        obj = _step(obj, step, text)
    return obj


def write_path(obj: Any, text: str, value: Any) -> None:
    """Set the value at attribute path ``text`` of ``obj``."""
    steps = parse_path(text)
    for step in steps[:-1]:
        obj = _step(obj, step, text)
    kind, key = steps[-1]
    if kind == "attr":
        setattr(obj, key, value)
    else:
        obj[_key(obj, key)] = value


# --- the styles ----------------------------------------------------------------------------


def _handed_over(original: Any) -> Callable[[], Any]:
    """``original`` on the first call, fresh copies of it as it was on the later ones.

    The first backward gets what the forward itself kept (its cache, its layer, its arguments),
    so a backward that writes into them (``x -= ...``) shows on the caller's arrays; later calls
    must not see what an earlier one changed. What cannot be copied is handed over every time.
    """
    try:
        pristine = copy.deepcopy(original)
    except Exception:  # user objects may refuse to be copied
        return lambda: original
    calls = [0]

    def give() -> Any:
        calls[0] += 1
        return original if calls[0] == 1 else copy.deepcopy(pristine)

    return give


def _outputs_of(result: Any, n_out: int, extra: int, who: str) -> tuple[Any, ...]:
    """Split a forward's return into its ``n_out`` outputs (plus ``extra`` trailing values: the cache)."""
    want = n_out + extra
    if want == 1:
        return (result,)
    if not isinstance(result, tuple | list) or len(result) != want:
        what = f"a {type(result).__name__} of {len(result)}" if isinstance(result, tuple | list) else \
            type(result).__name__
        shape = "(" + ", ".join([*(["out"] if n_out == 1 else [f"out{i + 1}" for i in range(n_out)]),
                                 *(["cache"] * extra)]) + ")"
        raise LayerError(f"{who} returned {what}; expected {shape}: {n_out} output(s)"
                         f"{' and the cache' if extra else ''}. Name the outputs with 'outputs:' if there "
                         f"are several")
    return tuple(result)


class Style:
    """A bound layer: ``forward(point)`` and ``pullback(point)``; subclasses per style."""

    name = ""

    def __init__(self, signature: Signature) -> None:
        self.signature = signature

    def _kwargs(self) -> dict[str, Any]:
        # Constants are deep-copied per call: code such as CS231n's batchnorm writes running
        # means into its bn_param, which must not leak from one call into the next. A value
        # that cannot be copied (a module passed as xp=np, a lock) is passed as it is.
        kwargs = dict(self.signature.kwargs)
        try:
            return copy.deepcopy(kwargs)
        except Exception:
            return {k: _copied(v) for k, v in kwargs.items()}

    def _inputs(self, point: Mapping[str, Any]) -> list[Any]:
        return [point[a.name] for a in self.signature.args if a.role == INPUT]

    def forward(self, point: Mapping[str, Any]) -> tuple[Any, ...]:
        raise NotImplementedError

    def pullback(self, point: Mapping[str, Any]) -> tuple[tuple[Any, ...], Callable[[tuple[Any, ...]], Any]]:
        """The outputs at ``point`` and ``back(douts)``, the user's raw gradients."""
        raise NotImplementedError


class Cache(Style):
    """``forward(*args, **kwargs) -> (*outputs, cache)``; ``backward(*douts, cache)``."""

    name = "backward (cache)"

    def __init__(self, signature: Signature, forward: Callable[..., Any], backward: Callable[..., Any]) -> None:
        super().__init__(signature)
        self.user_forward, self.user_backward = forward, backward

    def _run(self, point: Mapping[str, Any]) -> tuple[tuple[Any, ...], Any]:
        result = self.user_forward(*self._inputs(point), **self._kwargs())
        parts = _outputs_of(result, len(self.signature.outputs), 1, "forward")
        return parts[:-1], parts[-1]

    def forward(self, point: Mapping[str, Any]) -> tuple[Any, ...]:
        return self._run(point)[0]

    def pullback(self, point: Mapping[str, Any]) -> tuple[tuple[Any, ...], Callable[[tuple[Any, ...]], Any]]:
        outs, cache = self._run(point)
        held = _handed_over(cache)

        def back(douts: tuple[Any, ...]) -> Any:
            return self.user_backward(*douts, held())

        return outs, back


class Vjp(Style):
    """``forward(*args, **kwargs)``; ``vjp(*args, *douts, **kwargs)``."""

    name = "vjp"

    def __init__(self, signature: Signature, forward: Callable[..., Any], vjp: Callable[..., Any]) -> None:
        super().__init__(signature)
        self.user_forward, self.user_vjp = forward, vjp

    def forward(self, point: Mapping[str, Any]) -> tuple[Any, ...]:
        result = self.user_forward(*self._inputs(point), **self._kwargs())
        return _outputs_of(result, len(self.signature.outputs), 0, "forward")

    def pullback(self, point: Mapping[str, Any]) -> tuple[tuple[Any, ...], Callable[[tuple[Any, ...]], Any]]:
        outs = self.forward(point)
        args = _handed_over(self._inputs(point))

        def back(douts: tuple[Any, ...]) -> Any:
            return self.user_vjp(*args(), *douts, **self._kwargs())

        return outs, back


class ValueAndGrad(Style):
    """``f(*args, **kwargs) -> (value, grads)``: a scalar and its gradient with respect to each
    differentiable argument in one call (CS231n's ``temporal_softmax_loss(x, y, mask)``)."""

    name = "value_and_grad"

    def __init__(self, signature: Signature, value_and_grad: Callable[..., Any]) -> None:
        super().__init__(signature)
        self.user_fn = value_and_grad

    def _run(self, point: Mapping[str, Any]) -> tuple[Any, Any]:
        result = self.user_fn(*self._inputs(point), **self._kwargs())
        if not isinstance(result, tuple | list) or len(result) != 2:
            got = f"a {type(result).__name__} of {len(result)}" if isinstance(result, tuple | list) else \
                type(result).__name__
            raise LayerError(f"value_and_grad returned {got}; expected (value, grads): the scalar and its gradients")
        return result[0], result[1]

    def forward(self, point: Mapping[str, Any]) -> tuple[Any, ...]:
        return (self._run(point)[0],)

    def pullback(self, point: Mapping[str, Any]) -> tuple[tuple[Any, ...], Callable[[tuple[Any, ...]], Any]]:
        value, grads = self._run(point)
        names = tuple(a.name for a in self.signature.args if a.differentiable)
        by_name = by_argument(grads, names, "value_and_grad")

        def back(douts: tuple[Any, ...]) -> Any:
            import numpy as np

            scale = np.asarray(douts[0])  # the upstream gradient of the scalar: the gradients scale with it
            return {n: np.asarray(g) * scale for n, g in by_name.items()}

        return (value,), back


class Stateful(Style):
    """A class instance: parameters live on it, results are returned or stored in attributes.

    The instance is built once (at registration) and deep-copied for every forward, so a
    constructor that draws random weights is not re-run per call, and state kept between
    calls never leaks from one evaluation into the next.
    """

    name = "backward (stateful)"

    def __init__(self, signature: Signature, prototype: Any, forward: str, backward: str,
                 params: Mapping[str, str], output_attr: str | None,
                 grad_attr: str | Mapping[str, str] | None) -> None:
        super().__init__(signature)
        self.prototype = prototype
        self.forward_name, self.backward_name = forward, backward
        self.params = dict(params)
        self.output_attr, self.grad_attr = output_attr, grad_attr
        self.scalars = {path: isinstance(read_path(prototype, path), float) for path in self.params}
        # A loss-like layer's backward() may take no upstream gradient (it starts the backward pass from
        # its own scalar output): it is called bare, and its gradients scaled by the upstream gradient.
        self.bare = len(signature.outputs) == 1 and _takes_nothing(getattr(prototype, backward))

    def _run(self, point: Mapping[str, Any]) -> tuple[Any, tuple[Any, ...]]:
        layer = copy.deepcopy(self.prototype)
        for path in self.params:
            value = point[path]
            # A parameter that was a Python float stays one (code may test isinstance or format it).
            write_path(layer, path, float(value) if self.scalars.get(path) else value)
        result = getattr(layer, self.forward_name)(*self._inputs(point), **self._kwargs())
        if self.output_attr is not None:
            result = read_path(layer, self.output_attr)
        elif result is None:
            raise LayerError("forward returned None; if the layer stores its output in an attribute, "
                             "name it with output_attr (e.g. output_attr: output)")
        return layer, _outputs_of(result, len(self.signature.outputs), 0, "forward")

    def forward(self, point: Mapping[str, Any]) -> tuple[Any, ...]:
        return self._run(point)[1]

    def pullback(self, point: Mapping[str, Any]) -> tuple[tuple[Any, ...], Callable[[tuple[Any, ...]], Any]]:
        layer, outs = self._run(point)
        handed = _handed_over(layer)
        inputs = [a.name for a in self.signature.args if a.role == INPUT and a.differentiable]

        def back(douts: tuple[Any, ...]) -> Any:
            held = handed()
            result = getattr(held, self.backward_name)(*(() if self.bare else douts))
            if isinstance(self.grad_attr, Mapping):  # several inputs, each gradient in its own attribute
                result = {name: read_path(held, path) for name, path in self.grad_attr.items()}
            elif self.grad_attr is not None:
                result = read_path(held, self.grad_attr)
            grads: dict[str, Any] = {}
            if inputs:
                if result is None:
                    raise LayerError("backward returned None; if the layer stores the gradient of its input in "
                                     "an attribute, name it with grad_attr (e.g. grad_attr: dinputs)")
                grads.update(by_argument(result, tuple(inputs), "backward"))
            for path, grad_path in self.params.items():
                grads[path] = read_path(held, grad_path)
            if self.bare:
                import numpy as np

                scale = np.asarray(douts[0])
                if scale.size != 1:
                    raise LayerError(f"backward() takes no upstream gradient, so forward's output must be one "
                                     f"number (a loss); it has shape {scale.shape}")
                grads = {n: np.asarray(g) * scale.reshape(()) for n, g in grads.items()}
            return grads

        return outs, back


def _takes_nothing(method: Any) -> bool:
    """A bound method called with no arguments (``loss.backward()``)."""
    import inspect

    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return not any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def by_argument(raw: Any, names: tuple[str, ...], who: str) -> dict[str, Any]:
    """The user's gradients as ``{argument: value}``: a dict by name, a tuple in argument order,
    or one array for a single argument. Values are not checked here (see the engine)."""
    if isinstance(raw, Mapping):
        if not all(n in raw for n in names) and all(f"d{n}" in raw for n in names):
            return {n: raw[f"d{n}"] for n in names}  # keyed dx, dw, db: the usual names of gradients
        missing = [n for n in names if n not in raw]
        if missing:
            prefixed = ", ".join("d" + n for n in names)
            raise LayerError(f"{who} returned a dict without {', '.join(repr(m) for m in missing)} (its keys: "
                             f"{', '.join(repr(k) for k in raw)}); expected one gradient per argument, keyed by the "
                             f"argument's name ({', '.join(names)}) or by d + name ({prefixed})")
        return {n: raw[n] for n in names}
    if isinstance(raw, tuple | list) and not (len(names) == 1 and _numeric_list(raw)):
        if len(raw) != len(names):
            raise LayerError(f"{who} returned {len(raw)} value(s); expected {len(names)}, one gradient per "
                             f"argument in order ({', '.join('d' + n for n in names)})")
        return dict(zip(names, raw, strict=True))
    if len(names) != 1:
        raise LayerError(f"{who} returned one {type(raw).__name__}; expected {len(names)} gradients, a tuple in "
                         f"argument order ({', '.join('d' + n for n in names)}) or a dict by name")
    return {names[0]: raw}


def _numeric_list(raw: Sequence[Any]) -> bool:
    """A plain list of numbers, or of such lists (one array written as a nested list: ``dx.tolist()``),
    not a tuple of gradients."""
    return isinstance(raw, list) and all(isinstance(v, int | float) or _numeric_list(v) for v in raw)


def _copied(value: Any) -> Any:
    """A deep copy of ``value``, or ``value`` itself when it cannot be copied."""
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


def owner_of(method: Any) -> Any:
    """The instance a bound method belongs to, or None."""
    owner = getattr(method, "__self__", None)
    return None if owner is None or isinstance(owner, type) else owner


def class_of(function: Any) -> type | None:
    """The class an unbound method (``Layer_Dense.forward``) was defined in, from its qualname."""
    import sys

    qual = getattr(function, "__qualname__", "")
    if "." not in qual or "<locals>" in qual:
        return None
    obj: Any = sys.modules.get(getattr(function, "__module__", ""), None)
    for part in qual.split(".")[:-1]:
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) else None


def build_prototype(name: str, origin: str, forward: Any, init: Mapping[str, Any] | None,
                    backward: Any = None) -> Any:
    """The one instance a stateful layer is checked on: the owner of bound methods, or the
    class of unbound ones built with ``init``.

    An unbound method names the class it was *defined* in: ``Sub.forward`` inherited from
    ``Base`` is ``Base.forward``. The most derived class of forward's and backward's is built,
    so a subclass overriding only ``backward`` is checked with its own backward.
    """
    prototype = owner_of(forward)
    if prototype is None:
        cls = class_of(forward)
        if cls is None:
            raise PluginError(f"'{name}' (registered by {origin}): forward= must be a method of a layer class "
                              f"(Layer.forward, with init= for its constructor) or of an instance (layer.forward); "
                              f"got {forward!r}.")
        other = class_of(backward) if backward is not None and owner_of(backward) is None else None
        if other is not None and other is not cls and issubclass(other, cls):
            cls = other
        try:
            prototype = cls(**dict(init or {}))
        except Exception as exc:
            raise PluginError(f"'{name}' (registered by {origin}): building {cls.__name__}(**init) with init="
                              f"{dict(init or {})!r} raised {type(exc).__name__}: {exc}. Set init to the "
                              f"constructor's keyword arguments.") from exc
    for key, method in (("forward", forward), ("backward", backward)):
        called = getattr(type(prototype), getattr(method, "__name__", ""), None) if method is not None else None
        if method is not None and getattr(called, "__func__", called) is not getattr(method, "__func__", method):
            kind = type(prototype).__name__
            raise PluginError(f"'{name}' (registered by {origin}): {key}={getattr(method, '__qualname__', method)} "
                              f"is not the method gradcheck calls on the layer, {kind}.{method.__name__}: forward "
                              f"and backward run on one {kind} instance. Pass both methods of one class "
                              f"(Layer.forward and Layer.backward) or of one instance.")
    return prototype
