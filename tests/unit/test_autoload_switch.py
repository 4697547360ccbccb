"""GRADCHECK_DISABLE_PLUGIN_AUTOLOAD: only a true value turns entry points off.

An entry point is laid out as pip leaves an installed package (a module and its
``.dist-info`` with ``entry_points.txt``) in a scratch folder put on ``sys.path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradcheck_cli.errors import ExitCode, UsageError
from gradcheck_cli.plugins import ENTRY_POINT_GROUP, load_entry_points
from gradcheck_cli.registry import Registry

MODULE = "gc_autoload_switch_demo"


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    info = tmp_path / f"{MODULE}-0.0.1.dist-info"
    info.mkdir()
    (tmp_path / f"{MODULE}.py").write_text(
        "import numpy as np\nfrom gradcheck_cli import register_activation\n"
        "register_activation('switch_tanh', forward=np.tanh, derivative=lambda x: 1 - np.tanh(x) ** 2)\n")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {MODULE}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ndemo = {MODULE}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop(MODULE, None)


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "Yes", "on", " 1 "])
def test_a_true_value_turns_entry_points_off(installed: None, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GRADCHECK_DISABLE_PLUGIN_AUTOLOAD", value)
    assert load_entry_points(Registry()) == []


@pytest.mark.parametrize("value", ["0", "false", "False", "no", "OFF", "", None])
def test_a_false_value_keeps_them_on(installed: None, monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("GRADCHECK_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    else:
        monkeypatch.setenv("GRADCHECK_DISABLE_PLUGIN_AUTOLOAD", value)
    assert load_entry_points(Registry()) == ["switch_tanh"]


@pytest.mark.parametrize("value", ["maybe", "2", "disable"])
def test_any_other_value_is_an_error_listing_the_accepted_ones(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GRADCHECK_DISABLE_PLUGIN_AUTOLOAD", value)
    with pytest.raises(UsageError, match=rf"GRADCHECK_DISABLE_PLUGIN_AUTOLOAD is set to '{value}', which is neither "
                                         r"true nor false\. Set it to 1, true, yes or on .* or to 0, false, no, off"):
        load_entry_points(Registry())


def test_the_command_exits_2_on_an_unreadable_switch(tmp_path: Path) -> None:
    env = {**os.environ, "NO_COLOR": "1", "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "sometimes"}
    proc = subprocess.run([sys.executable, "-m", "gradcheck_cli", "run", "softmax"], capture_output=True,
                          text=True, timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == ExitCode.USAGE
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD is set to 'sometimes'" in " ".join(proc.stderr.split())
