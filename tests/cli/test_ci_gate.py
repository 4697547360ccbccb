"""`gradcheck ci CONFIG.yaml` as CI runs it: exit codes, JSON rows, JUnit XML read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import samples

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1"}
ENV.pop("FORCE_COLOR", None)

LAYERS = ('''\
import numpy as np
''' + samples.SOFTMAX + '''\


def softmax_vjp_diagonal(x, g):
    y = softmax(x)
    return y * (1.0 - y) * g


class Scaled:
    def __init__(self, scale):
        self.scale = scale

    def forward(self, x):
        return self.scale * np.tanh(x)

    def derivative(self, x):
        return self.scale * (1.0 - np.tanh(x) ** 2)
''')


class Suite:
    """One 'gradcheck ci' process, started at once and read when a test needs it."""

    def __init__(self, config: Path | str, folder: Path, *extra: str, reports: bool = True) -> None:
        self.config, self.folder = config, folder
        self.junit, self.json = folder / "junit.xml", folder / "report.json"
        argv = [sys.executable, "-m", "gradcheck_cli", "ci", str(config), *extra]
        if reports:
            argv += ["--junit-xml", str(self.junit), "--json", str(self.json)]
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=ENV, cwd=ROOT)
        self.done: subprocess.CompletedProcess[str] | None = None

    @property
    def proc(self) -> subprocess.CompletedProcess[str]:
        if self.done is None:
            out, err = self.popen.communicate(timeout=120)
            self.done = subprocess.CompletedProcess(self.popen.args, self.popen.returncode, out, err)
        return self.done

    @property
    def report(self) -> dict[str, Any]:
        assert "Traceback" not in self.proc.stderr, self.proc.stderr
        return dict(json.loads(self.json.read_text()))

    @property
    def root(self) -> ET.Element:
        assert self.proc.returncode in (0, 1, 3), self.proc.stderr
        return ET.parse(self.junit).getroot()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.communicate()


def write(folder: Path, text: str, name: str = "gradcheck.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def junit_cases(root: ET.Element) -> list[ET.Element]:
    return root.findall("./testsuite/testcase")


def case_name(row: dict[str, Any]) -> str:
    convention = row["convention"]
    return row["component"] if convention in ("", row["component"]) else f"{row['component']} ({convention})"


FAILING = """\
version: 1
defaults: {seed: 0, trials: 1, shape: [2, 4]}
functions:
  good_softmax:
    kind: activation
    forward: layers.py:softmax
    vjp: layers.py:softmax_vjp
  naive_softmax:
    kind: activation
    forward: layers.py:softmax
    vjp: layers.py:softmax_vjp_diagonal
checks:
  - good_softmax
  - {spec: naive_softmax, name: the naive layer}
  - softmax@wrong_input
  - {spec: softmax@diagonal+mse, expect: fail}
"""

XPASS = """\
version: 1
defaults: {trials: 1, shape: [2, 3]}
checks:
  - softmax
  - {spec: tanh, expect: fail, name: tanh should be flagged}
"""

OVERRIDES = """\
version: 1
defaults: {seed: 4, trials: 2, shape: [3, 5], method: central}
checks:
  - softmax
  - {spec: tanh, seed: 11, trials: 1, shape: [2, 2], method: richardson}
  - {spec: sigmoid, input: [[0.5, -1.0, 2.0]]}
  - relu
  - {spec: softmax+mse, name: pair, shape: [2, 3]}
"""

# name, config text (None: no file), expected "FILE" suffix "LINE: KEY: ", message fragment
BAD = [
    ("unknown_key", "version: 1\nchecks:\n  - softmax\n  - {spec: relu, trails: 3}\n",
     ":4: checks[1].trails: ", "Did you mean 'trials'?"),
    ("bad_spec", "version: 1\nchecks:\n  - softmax\n  - softmax+mse_loss\n",
     ":4: checks[1]: ", "Unknown loss name 'mse_loss'"),
    ("broken_plugin", "version: 1\nplugins: [broken.py]\nchecks: [softmax]\n",
     ":2: plugins[0]: ", "raised while loading: ZeroDivisionError: division by zero"),
    ("wrong_init", "version: 1\nfunctions:\n  scaled:\n    kind: activation\n"
                   "    forward: layers.py:Scaled.forward\n    derivative: layers.py:Scaled.derivative\n"
                   "    init: {factor: 2}\nchecks: [scaled]\n",
     ":7: functions.scaled.init: ", "unexpected keyword argument 'factor'"),
    ("python_tag", "version: 1\ndefaults: !!python/object/apply:os.system [\"touch {folder}/pwned\"]\n"
                   "checks: [softmax]\n",
     ":2: defaults: ", "the YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed"),
    ("missing_config", None, "", "does not exist"),
]


@pytest.fixture(scope="module")
def suites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Suite]]:
    """Every 'gradcheck ci' run of this module, started together (each is mostly start-up)."""
    runs: dict[str, Suite] = {"example": Suite("configs/example.yaml", tmp_path_factory.mktemp("example"))}
    configs = (("failing", FAILING, ()), ("xpass", XPASS, ()), ("overrides", OVERRIDES, ("--jobs", "2")))
    for name, text, extra in configs:
        folder = tmp_path_factory.mktemp(name)
        (folder / "layers.py").write_text(LAYERS)
        runs[name] = Suite(write(folder, text), folder, *extra)
    folder = tmp_path_factory.mktemp("unwritable")
    runs["unwritable"] = Suite("configs/example.yaml", folder, "--json", str(folder / "report.json"),
                               "--junit-xml", str(folder / "no" / "such" / "dir" / "junit.xml"), reports=False)
    for name, text, _, _ in BAD:
        folder = tmp_path_factory.mktemp(name)
        (folder / "broken.py").write_text("import numpy\n1 / 0\n")
        (folder / "layers.py").write_text(LAYERS)
        config = folder / "gradcheck.yaml"
        if text is not None:
            config.write_text(text.replace("{folder}", str(folder)))
        runs[name] = Suite(config, folder)
    yield runs
    for run in runs.values():
        run.stop()


# --- the example suite -----------------------------------------------------------------------

def test_example_suite_exits_0(suites: dict[str, Suite]) -> None:
    run = suites["example"]
    assert run.proc.returncode == 0, run.proc.stdout + run.proc.stderr
    report = run.report
    assert report["exit_code"] == 0 and report["schema"] == 1
    summary = report["summary"]
    assert summary["FAIL"] == summary["ERROR"] == summary["XPASS"] == 0
    assert summary["XFAIL"] >= 2 and summary["PASS"] >= 10
    assert "exit code 0" in run.proc.stdout


def test_example_suite_covers_every_configured_check(suites: dict[str, Suite]) -> None:
    report = suites["example"].report
    checks = list(dict.fromkeys(r["check"] for r in report["results"]))
    assert checks == ["softmax+mse", "softmax+cross_entropy", "my_softmax", "lib_sigmoid+lib_mse",
                      "lib_softmax+lib_mse", "naive softmax is flagged", "softmax@diagonal"]
    rows = {(r["check"], r["component"]): r for r in report["results"]}
    assert rows[("softmax+cross_entropy", "fused")]["verdict"] == "PASS"
    assert rows[("lib_softmax+lib_mse", "jacobian")]["convention"] == "backward"
    assert rows[("my_softmax", "jacobian")]["origin"].endswith("example_plugin.py")
    for name in ("naive softmax is flagged", "softmax@diagonal"):
        assert rows[(name, "jacobian")]["verdict"] == "XFAIL"
        assert "only the Jacobian's diagonal" in rows[(name, "jacobian")]["diagnosis"]


def test_example_overrides_reach_their_rows(suites: dict[str, Suite]) -> None:
    for row in suites["example"].report["results"]:
        expected = [8, 3] if row["check"] == "lib_softmax+lib_mse" else [4, 10]
        assert row["shape"] == expected, row
        assert (row["trials"], row["seed"]) == (3, 0), row
        if row["component"] != "second_derivative":
            assert row["method"] == "central", row


def test_example_junit_has_one_testcase_per_json_row(suites: dict[str, Suite]) -> None:
    report, root = suites["example"].report, suites["example"].root
    rows, cases = report["results"], junit_cases(root)
    assert len(cases) == len(rows)
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("tests") == str(len(rows))
    assert suite.get("failures") == suite.get("errors") == "0"
    assert suite.get("skipped") == str(report["summary"]["XFAIL"])
    for row, case in zip(rows, cases, strict=True):
        assert (case.get("classname"), case.get("name")) == (row["check"], case_name(row))
        skipped = case.find("skipped")
        if row["verdict"] == "XFAIL":
            assert skipped is not None and row["diagnosis"] in (skipped.get("message") or "")
        else:
            assert skipped is None and case.find("failure") is None and case.find("error") is None


# --- suites that fail ---------------------------------------------------------------------

def test_failing_check_is_a_junit_failure_with_its_diagnosis(suites: dict[str, Suite]) -> None:
    run = suites["failing"]
    assert run.proc.returncode == 1, run.proc.stdout + run.proc.stderr
    report, root = run.report, run.root
    assert report["exit_code"] == 1
    verdicts = [(r["check"], r["component"], r["verdict"]) for r in report["results"]]
    assert verdicts[:3] == [("good_softmax", "jacobian", "PASS"), ("the naive layer", "jacobian", "FAIL"),
                            ("softmax@wrong_input", "jacobian", "FAIL")]
    # expect: fail on a pair: the flagged components are XFAIL, the right one stays PASS
    assert {(c, v) for _, c, v in verdicts[3:]} == {("jacobian", "XFAIL"), ("gradient", "PASS"), ("chain", "XFAIL")}
    cases = junit_cases(root)
    assert len(cases) == len(verdicts)
    suite = root.find("testsuite")
    assert suite is not None and (suite.get("failures"), suite.get("skipped")) == ("2", "2")
    assert cases[0].find("failure") is None
    assert [c.find("skipped") is not None for c in cases[3:]] == [v == "XFAIL" for _, _, v in verdicts[3:]]
    for row, case in zip(report["results"][1:3], cases[1:3], strict=True):
        failure = case.find("failure")
        assert failure is not None, ET.tostring(case, encoding="unicode")
        assert failure.get("type") == "FAIL"
        assert row["diagnosis"] and row["diagnosis"] in (failure.get("message") or "")
        assert row["diagnosis"] in (failure.text or "")
        assert f"origin: {row['origin']}" in (failure.text or "")
    assert "fed f(x)" in report["results"][2]["diagnosis"]
    assert "the naive layer" in run.proc.stdout and "exit code 1" in run.proc.stdout


def test_expected_failure_that_passes_is_xpass_and_exit_1(suites: dict[str, Suite]) -> None:
    run = suites["xpass"]
    assert run.proc.returncode == 1, run.proc.stdout + run.proc.stderr
    report = run.report
    verdicts = [(r["check"], r["verdict"]) for r in report["results"]]
    assert verdicts[-1] == ("tanh should be flagged", "XPASS")
    assert {v for c, v in verdicts if c == "softmax"} == {"PASS"}
    assert "expect: fail" in report["results"][-1]["diagnosis"]
    failure = junit_cases(run.root)[-1].find("failure")
    assert failure is not None and failure.get("type") == "XPASS"
    assert "expected to fail" in (failure.get("message") or "")


def test_defaults_and_per_check_overrides_in_order_with_two_workers(suites: dict[str, Suite]) -> None:
    run = suites["overrides"]
    assert run.proc.returncode == 0, run.proc.stdout + run.proc.stderr
    report = run.report
    checks = list(dict.fromkeys(r["check"] for r in report["results"]))
    assert checks == ["softmax", "tanh", "sigmoid", "relu", "pair"], "rows keep the configured order"
    got: dict[str, tuple[Any, ...]] = {}
    for r in report["results"]:  # the first row of each check: its first-order jacobian or gradient
        got.setdefault(r["check"], (r["seed"], r["trials"], r["shape"], r["method"]))
    assert got["softmax"] == (4, 2, [3, 5], "central")
    assert got["tanh"] == (11, 1, [2, 2], "richardson")
    assert got["sigmoid"][1:3] == (1, [1, 3])
    assert got["relu"] == (4, 2, [3, 5], "central")
    assert got["pair"] == (4, 2, [2, 3], "central")
    assert "--seed 11 --trials 1 --shape 2,2 --method richardson" in next(
        r["reproduce"] for r in report["results"] if r["check"] == "tanh")
    assert [c.get("classname") for c in junit_cases(run.root)] == [r["check"] for r in report["results"]]


# --- every config problem: exit 2, file, line, key, nothing run --------------------------------

@pytest.mark.parametrize(("name", "where", "fragment"), [(b[0], b[2], b[3]) for b in BAD], ids=[b[0] for b in BAD])
def test_config_error_exits_2_naming_file_line_and_key(suites: dict[str, Suite], name: str, where: str,
                                                       fragment: str) -> None:
    run = suites[name]
    proc = run.proc
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"gradcheck: error: {run.config}{where}") or (
        name == "missing_config" and f"'{run.config}'" in proc.stderr), proc.stderr
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == "" and not run.junit.exists() and not run.json.exists(), "nothing runs on a config error"


def test_python_tag_never_runs(suites: dict[str, Suite]) -> None:
    assert suites["python_tag"].proc.returncode == 2
    assert not (suites["python_tag"].folder / "pwned").exists()


def test_unwritable_report_path_is_a_usage_error_before_anything_runs(suites: dict[str, Suite]) -> None:
    run = suites["unwritable"]
    assert run.proc.returncode == 2
    assert "Cannot write the JUnit report" in run.proc.stderr
    assert not (run.folder / "report.json").exists(), "nothing is checked (or reported) after a usage error"
