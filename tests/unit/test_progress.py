"""The progress bar: silent off a terminal and for quick runs, Rich's bar on a terminal after the delay."""

from __future__ import annotations

import io
import os
import pty
import select
import sys
import time

import pytest

from gradcheck_cli.report import progress as progress_module
from gradcheck_cli.report.progress import progress


def _read_all(fd: int, wait: float = 0.2) -> str:
    """What the terminal received within ``wait`` seconds (a live bar keeps redrawing)."""
    chunks = []
    deadline = time.monotonic() + wait
    while select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress() as advance:
        assert advance is None


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_bar_appears_on_a_terminal_only_after_the_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "w", buffering=1, encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(progress_module, "DELAY", 0.3)
    try:
        with progress() as advance:
            assert advance is not None
            advance(1, 3, "softmax+mse")
            assert _read_all(master, 0.1) == ""  # a quick run shows nothing
            time.sleep(0.4)
            advance(2, 3, "sigmoid")
            shown = _read_all(master)
        assert "checking" in shown and "2/3" in shown and "sigmoid" in shown
    finally:
        terminal.close()
        os.close(master)
