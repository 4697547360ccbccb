"""A progress bar that appears only once a run has taken about a second, on a terminal.

The timer lives here and imports nothing heavy; the bar itself is Rich's, drawn by
:mod:`gradcheck_cli.report.terminal` and imported only when it is first shown. A quick
run on a terminal, and any run whose stderr is not a terminal, prints nothing.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

# Seconds a run may take before the bar appears.
DELAY = 1.0


class _LazyProgress:
    """Counts finished checks; shows a bar on stderr once ``DELAY`` has passed."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.label = ""
        self.lock = threading.Lock()
        self.bar: Any = None
        self.task: Any = None
        self.timer = threading.Timer(DELAY, self._show)
        self.timer.daemon = True

    def _show(self) -> None:
        from gradcheck_cli.report.terminal import start_progress

        with self.lock:
            self.bar, self.task = start_progress(self.total, self.done, self.label)

    def __call__(self, done: int, total: int, label: str) -> None:
        with self.lock:
            self.done, self.total, self.label = done, total, label
            if self.bar is not None:
                self.bar.update(self.task, completed=done, total=total, description=label)

    def close(self) -> None:
        self.timer.cancel()
        with self.lock:
            if self.bar is not None:
                self.bar.stop()


@contextlib.contextmanager
def progress() -> Iterator[Callable[[int, int, str], None] | None]:
    """Yield a progress callback ``(done, total, label)`` when stderr is a terminal, else None."""
    if not sys.stderr.isatty():
        yield None
        return
    bar = _LazyProgress()
    bar.timer.start()
    try:
        yield bar
    finally:
        bar.close()
