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

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(GradcheckError):
    """Bad command-line input: unknown name, malformed --input, impossible --shape."""


class ConfigError(GradcheckError):
    """A CI config that cannot be read or does not validate."""


class PluginError(GradcheckError):
    """A plugin that cannot be loaded or registers something invalid."""


# Characters of a message kept when it quotes what user code raised (see clip).
MESSAGE_LIMIT = 2000


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` cut in the middle to about ``limit`` characters, saying how many were cut.

    Messages and diagnoses quote what user code raised, and a plugin's exception text can be
    megabytes: it would bury the one paragraph a user reads (and take the terminal renderer
    minutes to wrap). The head says what happened; the tail keeps the message's advice.
    """
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    tail = limit - head
    return f"{text[:head]} [... {len(text) - head - tail:,} characters cut ...] {text[-tail:]}"


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean ...?' for the closest choices, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.6)
    if not close:
        return ""
    quoted = ", ".join(f"'{c}'" for c in close)
    return f" Did you mean {quoted}?"
