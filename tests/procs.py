"""A ``gradcheck`` process started now and collected when a test needs it (shared by CLI tests)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1"}
ENV.pop("FORCE_COLOR", None)


class Proc:
    """A started process; ``done`` waits for it and requires no traceback on stderr."""

    def __init__(self, argv: list[str], cwd: Path, stdout: int = subprocess.PIPE,
                 preexec: Callable[[], None] | None = None, env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env or ENV,
                                      cwd=cwd, preexec_fn=preexec)
        self.cwd = cwd
        self._done: subprocess.CompletedProcess[str] | None = None

    @property
    def done(self) -> subprocess.CompletedProcess[str]:
        if self._done is None:
            out, err = self.popen.communicate(timeout=120)
            self._done = subprocess.CompletedProcess(self.popen.args, self.popen.returncode, out or "", err)
            assert "Traceback" not in err and "Exception ignored" not in err, err
        return self._done

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.communicate()
