"""Exit codes and the error tree.

Every user mistake becomes a :class:`GradcheckError` carrying the exit code the CLI
returns; only the CLI's entry point turns it into a message and an exit.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable


class ExitCode(enum.IntEnum):
    """Process exit codes, as PRODUCT.md fixes them."""

    OK = 0
    FLAGGED = 1
    USAGE = 2
    NOT_RUN = 3


class GradcheckError(Exception):
    """A problem the user can fix; the message says what was expected, what came, what to do."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(GradcheckError):
    """Bad command-line input: unknown name, malformed --input, impossible --shape."""


class ConfigError(GradcheckError):
    """A CI config that cannot be read or does not validate."""


class PluginError(GradcheckError):
    """A plugin that cannot be loaded or registers something invalid."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean ...?' for the closest choices, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.6)
    if not close:
        return ""
    quoted = ", ".join(f"'{c}'" for c in close)
    return f" Did you mean {quoted}?"
