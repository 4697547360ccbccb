"""The one way gradcheck calls user code: its exceptions become messages, its floating-point
warnings are recorded (or ignored on worker threads), and nothing else escapes.

Every stage that calls user code (the forward's evaluator in numdiff.py, the derivative
conventions in conventions.py, the per-argument checks in jacobians.py, sampling in
runner.py) goes through :func:`user_code`, so the same mistake reads the same wherever it
happens: ``forward raised ValueError: ...``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np

from gradcheck_cli import floating


def described(what: str, exc: BaseException) -> str:
    """``vjp(x, g) raised ValueError: ...`` (``what`` may be empty when the caller names it)."""
    return f"{what} raised {type(exc).__name__}: {exc}".lstrip()


@contextlib.contextmanager
def user_code(what: str, error: Callable[[str], Exception], warnings: list[str] | None = None,
              keep: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Run the block as user code.

    Any exception (except the ``keep`` types, gradcheck's own, which pass through) becomes
    ``error(message)``, chained to it. numpy's floating-point warnings are recorded into
    ``warnings``, deduplicated (:func:`gradcheck_cli.floating.recording`), or ignored when it is
    None: the warnings machinery is process-wide, so calls on worker threads must not touch it.
    """
    try:
        with np.errstate(all="ignore") if warnings is None else floating.recording(warnings):
            yield
    except keep:
        raise
    except Exception as exc:  # user code: any exception becomes a report
        raise error(described(what, exc)) from exc
