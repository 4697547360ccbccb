"""Floating-point events in user code: record numpy's warnings instead of raising them.

User code runs with ``np.errstate(all="warn")`` inside ``warnings.catch_warnings``, so an
overflow in ``exp`` becomes a message ("overflow encountered in exp") that a report can
quote next to the input where it happened, rather than an exception or silence.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

# numpy's own defaults: what gradcheck's arithmetic is written for, whatever a plugin set.
DEFAULT_ERRSTATE: dict[str, Any] = {"divide": "warn", "over": "warn", "invalid": "warn", "under": "ignore"}


def own_errstate() -> np.errstate:
    """gradcheck's numpy error state, numpy's defaults: a plugin's ``np.seterr(all="raise")``
    at import must not turn the tool's own arithmetic (a subnormal cast, 0/0 masked later)
    into errors. User code still runs under :func:`recording`, which sets its own state."""
    return np.errstate(**DEFAULT_ERRSTATE)


@contextlib.contextmanager
def recording(sink: list[str]) -> Iterator[None]:
    """Run the block with numpy warnings recorded (deduplicated) into ``sink``."""
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="warn"):
        warnings.simplefilter("always")
        yield
    for item in caught:
        message = str(item.message)
        # Underflow to 0 is how stable code (exp(-|x|)) works; it explains nothing.
        if issubclass(item.category, RuntimeWarning) and "underflow" not in message and message not in sink:
            sink.append(message)


def same_values(a: Any, b: Any) -> bool:
    """Bitwise-equal arrays (NaN equal to NaN; the NaN-aware pass only when needed)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b)) or bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
