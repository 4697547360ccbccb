"""Layer objects: the ``backward`` convention, attributes, fresh instances, class decorators.

A stateful layer is checked the way it is used: ``forward(x)`` then ``backward(g)`` on one
instance. Real layers keep state across calls (some append every input to a list and
answer backward for all of them), so each forward/backward pair runs on a *fresh*
instance: built by the factory when one is known (a class and its ``init``), otherwise a
deep copy of the instance as it was at registration. The numerical evaluations of the
forward also run on fresh instances, so they never disturb the instance under test.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from gradcheck_cli.errors import PluginError
from gradcheck_cli.registry import table
from gradcheck_cli.registry.styles import owner_of

CONVENTION_METHODS = table.keywords(order=None)
FORWARD_METHODS = ("forward", "__call__")


class LayerError(Exception):
    """The layer's forward/backward pair misbehaved; the message is user-facing."""


def _instance_of(name: str, origin: str, keyword: str, method: Any) -> Any:
    owner = owner_of(method)
    if owner is None:
        raise PluginError(
            f"'{name}' (registered by {origin}): {keyword}= must be a method of a layer instance "
            f"(e.g. layer.{keyword}), because backward(g) answers for the forward(x) called on "
            f"the same instance; got {method!r}. Pass bound methods of one instance, or "
            f"register the class with @register_activation('{name}')."
        )
    return owner


def _fresh_factory(obj: Any) -> tuple[Callable[[], Any], tuple[str, ...]]:
    try:
        pristine = copy.deepcopy(obj)
        copy.deepcopy(pristine)
    except Exception as exc:  # user objects may refuse to be copied
        note = (f"the layer instance cannot be deep-copied ({type(exc).__name__}: {exc}); its "
                f"forward/backward pairs share one instance, so state kept between calls can "
                f"leak between them")
        return (lambda: obj), (note,)
    return (lambda: copy.deepcopy(pristine)), ()


def pair_backward(name: str, origin: str, forward: Callable[..., Any], backward: Callable[..., Any],
                  factory: Callable[[], Any] | None, output_attr: str | None,
                  grad_attr: str | None) -> tuple[Callable[..., Any], Callable[..., Any], tuple[str, ...]]:
    """Turn a layer's forward/backward methods into ``forward(x)`` and ``vjp(x, g)``.

    Each call builds a fresh instance, runs ``forward(x)`` (then ``backward(g)``) on it, and
    takes results from the return values or from ``output_attr`` / ``grad_attr``.
    """
    notes: tuple[str, ...] = ()
    forward_name = getattr(forward, "__name__", "forward")
    backward_name = getattr(backward, "__name__", "backward")
    if factory is None:
        obj = _instance_of(name, origin, "backward", backward)
        owner = owner_of(forward)
        if owner is None:
            raise PluginError(
                f"'{name}' (registered by {origin}): backward= is a method of a layer, so forward= "
                f"must be a method of the same instance (layer.forward), not {forward!r}: each "
                f"check builds a fresh copy of the layer and runs forward then backward on it."
            )
        if owner is not obj:
            raise PluginError(
                f"'{name}' (registered by {origin}): forward= and backward= are methods of two "
                f"different instances; backward(g) must run on the instance whose forward(x) "
                f"saw the input. Pass both methods of one instance."
            )
        factory, notes = _fresh_factory(obj)
    make = factory

    def run_forward(layer: Any, x: Any) -> Any:
        y = getattr(layer, forward_name)(x)
        if output_attr is not None:
            if not hasattr(layer, output_attr):
                raise LayerError(f"after forward(x) the layer has no attribute '{output_attr}' "
                                 f"(output_attr); attributes: {sorted(vars(layer))}")
            y = getattr(layer, output_attr)
        return y

    def fresh_forward(x: Any) -> Any:
        return run_forward(make(), x)

    def vjp(x: Any, g: Any) -> Any:
        layer = make()
        run_forward(layer, x)
        result = getattr(layer, backward_name)(g)
        if grad_attr is not None:
            if not hasattr(layer, grad_attr):
                raise LayerError(f"after backward(g) the layer has no attribute '{grad_attr}' "
                                 f"(grad_attr); attributes: {sorted(vars(layer))}")
            result = getattr(layer, grad_attr)
        elif result is None:
            raise LayerError("backward(g) returned None; if the layer stores the input gradient "
                             "in an attribute, name it with grad_attr")
        return np.asarray(result)

    fresh_forward.__name__ = forward_name
    vjp.__name__ = backward_name
    return fresh_forward, vjp, notes


def output_from_attr(name: str, origin: str, forward: Callable[..., Any], output_attr: str) -> Callable[..., Any]:
    """``forward`` whose output is read from an attribute of its instance after the call."""
    owner = owner_of(forward)
    if owner is None:
        raise PluginError(
            f"'{name}' (registered by {origin}): output_attr='{output_attr}' reads the output from the "
            f"layer after forward(x), so forward= must be a method of a layer instance (layer.forward); "
            f"got {forward!r}."
        )

    def read(x: Any) -> Any:
        forward(x)
        return getattr(owner, output_attr)

    return read


def class_decorator(register: Callable[..., Any], name: str, kind: str,
                    fields: dict[str, Any]) -> Callable[[type], type]:
    """``@register_activation("name")`` on a class: build it, register its methods."""

    def decorate(cls: type) -> type:
        try:
            instance = cls()
        except Exception as exc:
            raise PluginError(
                f"@register_{kind}('{name}') on class {cls.__name__}: the class must be "
                f"constructible with no arguments to be registered this way; {cls.__name__}() "
                f"raised {type(exc).__name__}: {exc}"
            ) from exc
        defined = {name for klass in cls.__mro__ if klass is not object for name in vars(klass)}
        forward_name = next((m for m in FORWARD_METHODS if m in defined), None)
        if forward_name is None:
            raise PluginError(f"@register_{kind}('{name}') on class {cls.__name__}: no 'forward' "
                              f"or '__call__' method to check.")
        conventions = {m: getattr(instance, m) for m in CONVENTION_METHODS if hasattr(cls, m)}
        extra = dict(fields)
        if "backward" in conventions:
            extra["factory"] = cls
        register(getattr(instance, forward_name), conventions, **extra)
        return cls

    return decorate
