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
    "deep_nesting": ("version: 1\nchecks: " + "[" * 5000 + "]" * 5000 + "\n",
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
             ("--shape", "٤,١٠"): "--shape expects positive integers separated by commas, B,K (batch rows, "
                                 "features) for activations and losses or any rank for layers (2,3,8,8), "
                                 "written in ASCII digits 0-9, e.g. --shape 4,10; got '٤,١٠'"}
    procs = {args: start(tmp_path, "run", "softmax", *args) for args in cases}
    for args, proc in procs.items():
        code, _, err = finish(proc)
        assert code == 2, (args, err)
        assert cases[args] in err, err


# --- control characters from plugins never reach the terminal --------------------------------

ESCAPES = "\x1b[2J\x1b]0;pwned\x07\x9b31m\x7f\r"
FORMULA = "\x1b[5mblink" + ESCAPES
PLUGIN = f'''\
import numpy as np

from gradcheck_cli import register_activation


def derivative(x):
    raise ValueError({ESCAPES!r})


register_activation("boom", forward=np.tanh, derivative=derivative, formula={FORMULA!r})
'''


def assert_no_control_bytes(data: bytes) -> None:
    """Nothing a terminal would act on: no ESC, no C1 (UTF-8 c2 80-9f), no BEL/CR/DEL."""
    text = data.decode("utf-8")
    bad = [c for c in text if c != "\n" and (ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f)]
    assert not bad, (bad, text)


def test_control_characters_are_escaped_in_every_report_text(tmp_path: Path) -> None:
    # The plugin's folder name (its origin), its exception message, its formula and a
    # config's check name all carry escape sequences; stdout is a pipe, NO_COLOR is set.
    folder = tmp_path / "evil\x1b[2J"
    folder.mkdir()
    (folder / "plugin.py").write_text(PLUGIN, encoding="utf-8")
    (folder / "gradcheck.yaml").write_text(
        'version: 1\nplugins: [plugin.py]\nchecks:\n  - {spec: boom, name: "\\e[31mred\\x9b", trials: 1}\n',
        encoding="utf-8")
    broken = tmp_path / "broken.py"
    broken.write_text(f"raise RuntimeError({ESCAPES!r})\n", encoding="utf-8")
    badly_named = tmp_path / "badly_named.py"
    badly_named.write_text(PLUGIN.replace('"boom"', repr("\x1b[31mred")), encoding="utf-8")
    procs = {
        "check": start(tmp_path, "check", str(folder / "plugin.py"), "--trials", "1", "--verbose"),
        "ci": start(folder, "ci", "gradcheck.yaml"),
        "list": start(tmp_path, "list", "--plugin", str(folder / "plugin.py")),
        "load error": start(tmp_path, "run", "softmax", "--plugin", str(broken)),
        "bad name": start(tmp_path, "check", str(badly_named)),
    }
    outputs = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert_no_control_bytes(out)
        assert_no_control_bytes(err)
        outputs[name] = (proc.returncode, out.decode() + err.decode())
    code, text = outputs["check"]
    assert code == 3, text
    assert "ValueError: \\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\x7f\\x0d" in text  # the diagnosis, escaped
    assert "evil\\x1b[2J" in text  # the origin
    code, text = outputs["ci"]
    assert code == 3 and "\\x1b[31mred\\x9b" in text, text  # the check's name
    code, text = outputs["list"]
    assert code == 0 and "\\x1b[5mblink" in text, text
    code, text = outputs["load error"]
    assert code == 2 and "RuntimeError: \\x1b[2J" in text, text
    code, text = outputs["bad name"]
    assert code == 2, text
    assert f"got '\\x1b[31mred' of type str (registered by {badly_named}): it contains '\\x1b' at position 0" \
        in " ".join(text.split()), text
