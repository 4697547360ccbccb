"""Plugin code that misbehaves never takes the suite down: each fault is one row, the rest runs.

One plugin holds every fault (raise, NaN, wrong shape, in-place, non-deterministic, hang,
os._exit) beside a correct entry; ``gradcheck check`` runs it with a short --timeout and two
workers, once, and every test reads that run's JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1"}
ENV.pop("FORCE_COLOR", None)

FAULTS = '''\
import os
import signal
import sys
import time

import numpy as np

from gradcheck_cli import register_activation, register_loss

_calls = [0]


def tanh_grad(x):
    return 1.0 - np.tanh(x) ** 2


def good_vjp(x, g):
    return g * tanh_grad(x)


def raises(x):
    raise RuntimeError("boom from the plugin")


def nan_forward(x):
    return np.full_like(x, np.nan)


def nan_derivative(x):
    return np.full_like(x, np.nan)


def wrong_shape(x):
    return np.ones(x.shape[-1])


def in_place(x):
    x *= 2.0
    return tanh_grad(x / 2.0)


def in_place_forward(x):
    x += 1.0
    return np.tanh(x)


def not_deterministic(x):
    _calls[0] += 1
    return tanh_grad(x) + 1e-3 * _calls[0]


def hangs(x):
    time.sleep(60)
    return tanh_grad(x)


def exits(x):
    os._exit(3)


def sys_exits(x):
    sys.exit(4)


def killed(x):
    os.kill(os.getpid(), signal.SIGKILL)


def returns_text(x, g):
    return "not an array"


def mse(pred, target):
    return np.mean((pred - target) ** 2, axis=(-2, -1))


def gradient_raises(pred, target):
    raise KeyError("target")


register_activation("good", forward=np.tanh, vjp=good_vjp)
register_activation("raises", forward=np.tanh, derivative=raises)
register_activation("forward_raises", forward=raises, derivative=tanh_grad)
register_activation("nan_forward", forward=nan_forward, derivative=tanh_grad)
register_activation("nan_derivative", forward=np.tanh, derivative=nan_derivative)
register_activation("wrong_shape", forward=np.tanh, derivative=wrong_shape)
register_activation("in_place", forward=np.tanh, derivative=in_place)
register_activation("in_place_forward", forward=in_place_forward, derivative=tanh_grad)
register_activation("not_deterministic", forward=np.tanh, derivative=not_deterministic)
register_activation("hangs", forward=np.tanh, derivative=hangs)
register_activation("exits", forward=np.tanh, derivative=exits)
register_activation("sys_exits", forward=np.tanh, derivative=sys_exits)
register_activation("killed", forward=np.tanh, derivative=killed)
register_activation("returns_text", forward=np.tanh, vjp=returns_text)
register_loss("loss_gradient_raises", forward=mse, gradient=gradient_raises)
'''

# name -> (verdict, fragments of the diagnosis)
EXPECTED: dict[str, tuple[str, tuple[str, ...]]] = {
    "good": ("PASS", ()),
    "raises": ("ERROR", ("derivative(x) raised RuntimeError: boom from the plugin",)),
    "forward_raises": ("ERROR", ("forward raised RuntimeError: boom from the plugin",)),
    "nan_forward": ("ERROR", ("forward returned nan",)),
    "nan_derivative": ("FAIL", ("the analytic derivative is nan",)),
    "wrong_shape": ("ERROR", ("returned shape (10,), expected (4, 10)",)),
    "in_place": ("ERROR", ("derivative(x) changes its input in place", "x = x.copy()")),
    "in_place_forward": ("ERROR", ("forward changes its input in place",)),
    "not_deterministic": ("ERROR", ("is not deterministic",)),
    "hangs": ("ERROR", ("timed out after 2 s",)),
    "exits": ("ERROR", ("exited with code 3", "the rest of the suite ran on")),
    "sys_exits": ("ERROR", ("raised SystemExit: 4",)),
    "killed": ("ERROR", ("killed by SIGKILL",)),
    "returns_text": ("ERROR", ("returned str", "expected a float array")),
    "loss_gradient_raises": ("ERROR", ("gradient(pred, target) raised KeyError",)),
}


ERRORS_ONLY = """\
import numpy as np
from gradcheck_cli import register_activation


def boom(x):
    raise ValueError("no")


register_activation("fine", forward=np.tanh, derivative=lambda x: 1 - np.tanh(x) ** 2)
register_activation("broken", forward=np.tanh, derivative=boom)
"""

TIMEOUT_CONFIG = """\
version: 1
plugins: [plugin.py]
defaults: {trials: 1, shape: [2, 3]}
checks:
  - good
  - {spec: hangs, timeout: 1}
  - exits
"""

NOISY = """\
import numpy as np
from gradcheck_cli import register_activation

print("loading my plugin")


def derivative(x):
    print("debug", x.shape)
    return 1 - np.tanh(x) ** 2


register_activation("noisy", forward=np.tanh, derivative=derivative)
"""


COLOURFUL = """\
import numpy as np
from gradcheck_cli import register_activation


def derivative(x):
    raise ValueError("\\x1b[31mshape mismatch\\x1b[0m in \\x00 layer")


register_activation("colourful", forward=np.tanh, derivative=derivative)
"""


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    seconds: float
    report: dict[str, Any]
    rows: dict[str, dict[str, Any]]
    junit: ET.Element


class Background:
    """A gradcheck process started now and collected when a test needs it."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.folder = folder
        self.start = time.perf_counter()
        self.popen = subprocess.Popen([sys.executable, "-m", "gradcheck_cli", *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=ENV, cwd=folder)
        self.done: tuple[subprocess.CompletedProcess[str], float] | None = None

    def result(self) -> tuple[subprocess.CompletedProcess[str], float]:
        if self.done is None:
            out, err = self.popen.communicate(timeout=120)
            proc = subprocess.CompletedProcess(self.popen.args, self.popen.returncode, out, err)
            self.done = (proc, time.perf_counter() - self.start)
        return self.done


@pytest.fixture(scope="module")
def side_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Background]]:
    """The smaller runs, started before the main one: they mostly wait on start-up and timeouts."""
    folders = {name: tmp_path_factory.mktemp(name) for name in ("errors_only", "timeout", "noisy", "colourful")}
    (folders["errors_only"] / "plugin.py").write_text(ERRORS_ONLY)
    (folders["timeout"] / "plugin.py").write_text(FAULTS)
    (folders["timeout"] / "gradcheck.yaml").write_text(TIMEOUT_CONFIG)
    (folders["noisy"] / "noisy.py").write_text(NOISY)
    (folders["colourful"] / "plugin.py").write_text(COLOURFUL)
    runs = {
        "errors_only": Background(folders["errors_only"], "check", "plugin.py", "--json", "-", "--trials", "1"),
        "timeout": Background(folders["timeout"], "ci", "gradcheck.yaml", "--json", "out.json", "--jobs", "2"),
        "noisy": Background(folders["noisy"], "check", "noisy.py", "--json", "-", "--trials", "1"),
        "colourful": Background(folders["colourful"], "check", "plugin.py", "--junit-xml", "out.xml",
                                "--json", "out.json", "--trials", "1"),
    }
    yield runs
    for run in runs.values():
        if run.popen.poll() is None:
            run.popen.kill()
        run.popen.communicate()


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory, side_runs: dict[str, Background]) -> Run:
    folder = tmp_path_factory.mktemp("faults")
    (folder / "plugin.py").write_text(FAULTS)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gradcheck_cli", "check", "plugin.py", "--timeout", "2",
                           "--jobs", "2", "--json", "out.json", "--junit-xml", "out.xml"],
                          capture_output=True, text=True, timeout=120, env=ENV, cwd=folder)
    seconds = time.perf_counter() - start
    report = json.loads((folder / "out.json").read_text())
    rows = {r["check"]: r for r in report["results"]}
    return Run(proc, seconds, report, rows, ET.parse(folder / "out.xml").getroot())


def test_every_entry_is_reported_in_order(faults: Run) -> None:
    assert [r["check"] for r in faults.report["results"]] == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_fault_is_its_own_row(faults: Run, name: str) -> None:
    verdict, fragments = EXPECTED[name]
    row = faults.rows[name]
    assert row["verdict"] == verdict, row
    for fragment in fragments:
        assert fragment in row["diagnosis"], row["diagnosis"]
    assert row["origin"] == "plugin.py"
    if verdict == "ERROR":
        assert row["reproduce"].startswith(f"gradcheck run {name} "), row


def test_a_fail_among_errors_exits_1(faults: Run) -> None:
    assert faults.proc.returncode == 1, faults.proc.stdout + faults.proc.stderr
    assert faults.report["exit_code"] == 1
    summary = faults.report["summary"]
    assert (summary["PASS"], summary["FAIL"]) == (1, 1)
    assert summary["ERROR"] == len(EXPECTED) - 2


def test_faults_do_not_hold_up_the_suite(faults: Run) -> None:
    # One hang (stopped at --timeout 2) and the rest, two at a time.
    assert faults.seconds < 15.0, f"took {faults.seconds:.1f} s"


def test_no_traceback_and_a_readable_table(faults: Run) -> None:
    assert "Traceback" not in faults.proc.stdout + faults.proc.stderr
    table = faults.proc.stdout
    for name in EXPECTED:
        assert name in table
    assert "exit code 1" in table and "\x1b[" not in table


def test_junit_marks_errors_and_failures(faults: Run) -> None:
    cases = faults.junit.findall("./testsuite/testcase")
    assert len(cases) == len(EXPECTED)
    kinds = {c.get("classname"): ("error" if c.find("error") is not None else
                                  "failure" if c.find("failure") is not None else "ok") for c in cases}
    assert kinds == {name: {"ERROR": "error", "FAIL": "failure", "PASS": "ok"}[v] for name, (v, _) in EXPECTED.items()}
    error = next(c for c in cases if c.get("classname") == "hangs").find("error")
    assert error is not None and "timed out" in (error.get("message") or "")


def test_errors_only_exit_3(side_runs: dict[str, Background]) -> None:
    proc, _ = side_runs["errors_only"].result()
    assert proc.returncode == 3, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert [(r["check"], r["verdict"]) for r in report["results"]] == [("fine", "PASS"), ("broken", "ERROR")]
    assert report["exit_code"] == 3
    assert "raised ValueError: no" in report["results"][1]["diagnosis"]


def test_config_timeout_applies_per_check(side_runs: dict[str, Background]) -> None:
    run = side_runs["timeout"]
    proc, seconds = run.result()
    assert proc.returncode == 3, proc.stdout + proc.stderr
    rows = {r["check"]: r for r in json.loads((run.folder / "out.json").read_text())["results"]}
    assert rows["good"]["verdict"] == "PASS"
    assert rows["hangs"]["verdict"] == "ERROR" and "timed out after 1 s" in rows["hangs"]["diagnosis"]
    assert rows["exits"]["verdict"] == "ERROR" and "exited with code 3" in rows["exits"]["diagnosis"]
    assert seconds < 15.0


def test_chatty_plugin_does_not_corrupt_json_on_stdout(side_runs: dict[str, Background]) -> None:
    proc, _ = side_runs["noisy"].result()
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [r["verdict"] for r in report["results"]] == ["PASS"]


def test_control_characters_in_a_diagnosis_keep_the_junit_readable(side_runs: dict[str, Background]) -> None:
    run = side_runs["colourful"]
    proc, _ = run.result()
    assert proc.returncode == 3, proc.stdout + proc.stderr
    row = json.loads((run.folder / "out.json").read_text())["results"][0]
    assert "shape mismatch" in row["diagnosis"]
    case = ET.parse(run.folder / "out.xml").getroot().find("./testsuite/testcase")
    assert case is not None
    error = case.find("error")
    assert error is not None and "shape mismatch" in (error.get("message") or "")
