"""The real command on paths and numbers that are not what they look like: a report to
/dev/stdout or to a FIFO nobody reads, a config that is a FIFO, digits of other scripts,
YAML 1.1 octal, a plugin path that is a folder. Each exits with the code PRODUCT.md gives it,
quickly, with no traceback.

A module fixture starts every run at once (each is small) and the tests read them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1"}
ENV.pop("FORCE_COLOR", None)
SMALL = ["--shape", "2,3", "--trials", "1"]


class Run:
    def __init__(self, folder: Path, *args: str) -> None:
        self.popen = subprocess.Popen([sys.executable, "-m", "gradcheck_cli", *args], cwd=folder, env=ENV,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._out: tuple[str, str] | None = None

    def result(self) -> tuple[int, str, str]:
        if self._out is None:
            out, err = self.popen.communicate(timeout=60)
            assert "Traceback" not in err, err
            self._out = (out, " ".join(err.split()))
        return self.popen.returncode, *self._out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    folder = tmp_path_factory.mktemp("paths")
    os.mkfifo(folder / "report.fifo")
    os.mkfifo(folder / "config.fifo")
    (folder / "plugins").mkdir()
    (folder / "octal.yaml").write_text("version: 1\ndefaults: {seed: 010}\nchecks: [softmax]\n")
    started = {
        "json_dev_stdout": Run(folder, "run", "softmax", *SMALL, "--json", "/dev/stdout"),
        "json_fifo": Run(folder, "run", "softmax", *SMALL, "--json", "report.fifo"),
        "config_fifo": Run(folder, "ci", "config.fifo"),
        "rtol_arabic": Run(folder, "run", "softmax", "--rtol", "٣"),
        "timeout_fullwidth": Run(folder, "ci", "octal.yaml", "--timeout", "３"),
        "input_underscore": Run(folder, "run", "softmax", "--input", "1_0,2"),
        "octal": Run(folder, "ci", "octal.yaml"),
        "plugin_folder": Run(folder, "run", "softmax", "--plugin", "./plugins"),
        "explain_large": Run(folder, "explain", "softmax", "--shape", "100,100"),
    }
    yield started
    for run in started.values():
        if run.popen.poll() is None:
            run.popen.kill()
        run.popen.communicate()


def test_a_report_to_dev_stdout_is_the_report_on_stdout(runs: dict[str, Run]) -> None:
    code, out, err = runs["json_dev_stdout"].result()
    assert code == 0, err
    assert json.loads(out)["exit_code"] == 0  # the table went to stderr, as with --json -
    assert "2 passed" in err and "exit code 0" in err


def test_a_report_to_a_fifo_nobody_reads_keeps_the_table_and_exits_3(runs: dict[str, Run]) -> None:
    code, out, err = runs["json_fifo"].result()
    assert code == 3
    assert "2 passed" in out and "exit code 3" in out
    assert "Cannot write the JSON report to 'report.fifo': it is a FIFO (named pipe) that no process is reading" \
        in err


def test_a_config_fifo_nobody_writes_is_an_empty_config(runs: dict[str, Run]) -> None:
    code, _, err = runs["config_fifo"].result()
    assert code == 2
    assert "config.fifo:1: the config is empty" in err


@pytest.mark.parametrize(("name", "fragment"), [
    ("rtol_arabic", "Invalid value for '--rtol': expected a number written in ASCII, e.g. 1e-6 or 30; got '٣'"),
    ("timeout_fullwidth", "Invalid value for '--timeout': expected a number written in ASCII"),
    ("input_underscore", "--input expects comma-separated numbers, rows separated by ';'; row 0 has '1_0'"),
    ("octal", "octal.yaml:2: defaults.seed: YAML 1.1 reads '010' as an octal number, 8"),
    ("plugin_folder", "Plugin './plugins' is a folder. Give the .py file that registers the entries"),
    ("explain_large", "explain shows whole Jacobians, so it takes small inputs: at most 1,000 values"),
])
def test_look_alike_input_is_a_usage_error(runs: dict[str, Run], name: str, fragment: str) -> None:
    code, out, err = runs[name].result()
    assert code == 2, (out, err)
    assert fragment in err, err
