"""The one table of derivative conventions: how a derivative can be handed to gradcheck.

Registration keywords, config keys, the methods a class decorator looks for, ``list`` and
the checking stages all read this table, so a convention is added (or renamed) in one place.
Plain data, no numpy: the config reader and the CLI import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Convention:
    """One way of handing a derivative over.

    ``kinds`` are the entry kinds that take it; ``order`` 2 marks a second derivative given
    beside a first-order convention; ``elementwise`` conventions give f'(x) entry by entry
    (the upstream gradient multiplied in); ``streamable`` ones give vector products, so a
    huge Jacobian can be compared a block of columns at a time.
    """

    keyword: str
    kinds: tuple[str, ...]
    signature: str
    meaning: str
    order: int = 1
    elementwise: bool = False
    streamable: bool = False


TABLE: tuple[Convention, ...] = (
    Convention("jacobian", ("activation",), "J(x) -> (..., K, K)", "J[..., i, j] = dy_i/dx_j"),
    Convention("vjp", ("activation", "layer"), "vjp(x, g) -> like x; layers: vjp(*args, *douts) -> per argument",
               "J^T g", streamable=True),
    Convention("jvp", ("activation",), "jvp(x, v) -> like y", "J v", streamable=True),
    Convention("derivative", ("activation",), "d(x) -> like x", "elementwise f'(x), upstream gradient multiplied in",
               elementwise=True, streamable=True),
    Convention("derivative_of_output", ("activation",), "d(y) -> like y",
               "elementwise, written in terms of y = f(x)", elementwise=True, streamable=True),
    Convention("gradient", ("loss",), "gradient(pred, target) -> like pred", "dL/dpred of the scalar loss"),
    Convention("value_and_grad", ("loss", "layer"), "f(pred, target) -> (loss, grad); layers: f(*args) -> (value, "
               "grads)", "a scalar and its gradient(s) in one call"),
    Convention("backward", ("activation", "loss", "layer"),
               "forward(x) then backward(g) on one instance; cache style: backward(dout, cache)",
               "stateful or cache-style backward pass; results returned or stored in attributes", streamable=True),
    Convention("derivative2", ("activation",), "d2(x) -> like x", "elementwise f''(x)", order=2, elementwise=True),
)
BY_KEYWORD = {c.keyword: c for c in TABLE}


def keywords(kind: str | None = None, order: int | None = 1) -> tuple[str, ...]:
    """The convention keywords ``kind`` takes (every kind when None), of ``order`` (any when None)."""
    return tuple(c.keyword for c in TABLE
                 if (kind is None or kind in c.kinds) and (order is None or c.order == order))


ELEMENTWISE = tuple(c.keyword for c in TABLE if c.elementwise and c.order == 1)
STREAMABLE = tuple(c.keyword for c in TABLE if c.streamable and "activation" in c.kinds)
