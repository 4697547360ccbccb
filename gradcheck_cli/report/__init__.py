"""Reports: terminal (Rich), JSON and JUnit renderings of plain result data."""

from __future__ import annotations

import sys
from pathlib import Path

from gradcheck_cli.errors import UsageError


def write_text(text: str, path: str, what: str) -> None:
    """Write a report to ``path``; ``-`` means standard output."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot write the {what} report to '{path}': {exc.strerror}. Give a "
                         f"writable file path, or - for standard output.") from exc
