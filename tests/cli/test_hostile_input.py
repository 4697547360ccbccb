"""Hostile input through the real ``gradcheck`` command: YAML bombs, deep nesting, odd digits.

Each must be a clear error with exit code 2, quickly and in bounded memory, never a
traceback or a hang. The processes of a test start together and are read afterwards, so
the slow part (interpreter start-up) overlaps.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1"}
ENV.pop("FORCE_COLOR", None)


def start(folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python -m gradcheck_cli ARGS`` in ``folder``, started, not waited for."""
    return subprocess.Popen([sys.executable, "-m", "gradcheck_cli", *args], cwd=folder, env=env or ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str, str]:
    """Exit code, stdout and stderr (one line per paragraph, wrapping undone)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    text = err.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    return proc.returncode, out.decode("utf-8", "replace"), " ".join(text.split())


def billion_laughs() -> str:
    """Nine levels of nine aliases each: 9**9 (387 million) strings once expanded."""
    lines = ["version: 1", "a: &a [x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join([*lines, "checks: [softmax]", ""])


HOSTILE = {
    "billion_laughs": (billion_laughs(),
                       r"gradcheck.yaml:2: .*more than 100,000 values once its aliases \(\*name\) are expanded"),
    "recursive_alias": ("version: 1\na: &a [*a]\nchecks: [softmax]\n",
                        r"gradcheck.yaml:2: a\[0\]: an alias \(\*name\) is used inside the value its anchor"),
    "recursive_alias_in_a_mapping": ("version: 1\ndefaults: &d {x: *d}\nchecks: [softmax]\n",
                                     r"gradcheck.yaml:2: defaults.x: an alias \(\*name\) is used inside"),
    "deep_nesting": ("version: 1\nchecks: " + "[" * 5000 + "]" * 5000 + "\n",
                     r"gradcheck.yaml:2: lists and mappings are nested more than 64 levels deep"),
    "deep_mappings": ("version: 1\ndefaults: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
                      r"gradcheck.yaml:2: lists and mappings are nested more than 64 levels deep"),
    "deep_through_an_alias": ("version: 1\nd: &d " + "[" * 40 + "]" * 40 + "\nchecks: " + "[" * 40 + "*d"
                              + "]" * 40 + "\n", r"gradcheck.yaml:2: checks.* nested more than 64 levels deep"),
}


def test_yaml_bombs_and_deep_nesting_are_config_errors(tmp_path: Path) -> None:
    procs = {}
    for name, (text, _) in HOSTILE.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "gradcheck.yaml").write_text(text, encoding="utf-8")
        procs[name] = (start(folder, "ci", "gradcheck.yaml"), time.monotonic())
    for name, (proc, began) in procs.items():
        code, _, err = finish(proc)
        # Expanded, the bomb is gigabytes and minutes; refused, it is start-up time.
        assert time.monotonic() - began < 20, name
        assert code == 2, (name, err)
        assert re.match("gradcheck: error: " + HOSTILE[name][1], err), (name, err)


def test_integer_options_and_shape_take_ascii_digits_only(tmp_path: Path) -> None:
    # int() reads Arabic-Indic and full-width digits and underscores; click's INT used it.
    cases = {("--seed", "٤"): "expected a whole number written in ASCII digits 0-9, e.g. 3; got '٤'",
             ("--trials", "4_0"): "expected a whole number written in ASCII digits 0-9, e.g. 3; got '4_0'",
             ("--jobs", "３"): "expected a whole number written in ASCII digits 0-9, e.g. 3; got '３'",
             ("--shape", "٤,١٠"): "--shape expects two positive integers B,K (batch rows, features) written in "
                                 "ASCII digits 0-9, e.g. --shape 4,10; got '٤,١٠'"}
    procs = {args: start(tmp_path, "run", "softmax", *args) for args in cases}
    for args, proc in procs.items():
        code, _, err = finish(proc)
        assert code == 2, (args, err)
        assert cases[args] in err, err
