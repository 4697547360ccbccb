"""The real entry points as subprocesses: exit codes, tables, JSON, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

CONSOLE_SCRIPT = Path(sys.executable).parent / "gradcheck"
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1"}
ENV.pop("FORCE_COLOR", None)

Runner = Callable[..., subprocess.CompletedProcess[str]]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=ENV, cwd=cwd)


@pytest.fixture
def gradcheck(tmp_path: Path) -> Runner:
    """``python -m gradcheck_cli ARGS`` in a scratch directory."""

    def invoke(*args: str) -> subprocess.CompletedProcess[str]:
        return _run([sys.executable, "-m", "gradcheck_cli", *args], tmp_path)

    return invoke


def test_console_script_runs(tmp_path: Path) -> None:
    assert CONSOLE_SCRIPT.exists(), f"no console script at {CONSOLE_SCRIPT}"
    proc = _run([str(CONSOLE_SCRIPT), "run", "softmax+mse"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "PASS" in proc.stdout and "FAIL" not in proc.stdout
    assert "exit code 0" in proc.stdout


def test_console_script_flags_a_variant(tmp_path: Path) -> None:
    proc = _run([str(CONSOLE_SCRIPT), "run", "softmax@diagonal+mse"], tmp_path)
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "jacobian" in proc.stdout


def test_run_pair_passes(gradcheck: Runner) -> None:
    proc = gradcheck("run", "softmax+mse")
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout
    assert "PASS" in table and "FAIL" not in table
    for component in ("jacobian", "gradient", "chain"):
        assert component in table
    assert "softmax+mse" in table
    assert "\x1b[" not in table, "NO_COLOR and a pipe: no escape codes"


def test_run_flagged_pair_exits_1_with_diagnosis(gradcheck: Runner) -> None:
    proc = gradcheck("run", "softmax@diagonal+mse")
    assert proc.returncode == 1
    out = proc.stdout
    assert "FAIL" in out and "jacobian" in out
    assert "only the Jacobian's diagonal" in out
    assert "reproduce: gradcheck run softmax@diagonal+mse --seed 0" in out
    assert "Traceback" not in proc.stderr


def test_run_json_to_stdout(gradcheck: Runner) -> None:
    proc = gradcheck("run", "softmax+mse", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # stdout holds the JSON and nothing else
    assert data["schema"] == 1
    assert {"results", "summary", "exit_code"} <= set(data)
    assert data["exit_code"] == 0
    assert data["results"]
    for row in data["results"]:
        assert {"check", "component", "verdict", "max_abs_error", "max_rel_error", "tolerance", "worst_index",
                "diagnosis"} <= set(row)
        assert row["check"] == "softmax+mse"
        assert row["component"] in ("jacobian", "gradient", "chain", "fused", "second_derivative")
        assert row["verdict"] == "PASS"
        assert isinstance(row["max_abs_error"], float) and isinstance(row["tolerance"], float)
        assert row["max_abs_error"] <= row["tolerance"] or row["max_rel_error"] is not None
    assert data["summary"]["PASS"] == len(data["results"])
    assert sum(data["summary"].values()) == len(data["results"])


def test_run_json_to_file_for_a_failure(gradcheck: Runner, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    proc = gradcheck("run", "softmax@diagonal+mse", "--json", str(report))
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout, "the table is still shown when the JSON goes to a file"
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["schema"] == 1 and data["exit_code"] == 1
    by = {(r["component"], r["verdict"]) for r in data["results"]}
    assert ("jacobian", "FAIL") in by and ("gradient", "PASS") in by and ("chain", "FAIL") in by
    failed = [r for r in data["results"] if r["verdict"] == "FAIL"]
    assert all(r["diagnosis"] and len(r["worst_index"]) in (2, 4) for r in failed)


def test_list(gradcheck: Runner) -> None:
    proc = gradcheck("list")
    assert proc.returncode == 0, proc.stderr
    for name in ("softmax", "log_softmax", "cross_entropy", "softmax@diagonal", "softmax@wrong_input", "mse@no_mean"):
        assert name in proc.stdout


def test_list_json(gradcheck: Runner) -> None:
    proc = gradcheck("list", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["schema"] == 1
    entries = {e["name"]: e for e in data["entries"]}
    for entry in entries.values():
        assert {"name", "kind", "convention", "formula", "origin"} <= set(entry)
        assert entry["kind"] in ("activation", "loss", "layer")
    assert entries["softmax@diagonal"]["kind"] == "activation"
    assert entries["conv2d"]["kind"] == "layer" and entries["conv2d"]["convention"] == "backward (cache)"
    assert "missing" in entries["batchnorm@missing_1_over_n"]["mistake"]
    assert entries["softmax@diagonal"]["convention"] == "derivative"
    assert entries["mse"]["kind"] == "loss" and entries["mse"]["origin"] == "builtin"
    assert "S_i (delta_ij - S_j)" in entries["softmax"]["formula"]


def test_explain_seed003(gradcheck: Runner) -> None:
    proc = gradcheck("explain", "softmax", "--input", "2,4,2,1")
    assert proc.returncode == 0, proc.stderr
    assert "0.1025" in proc.stdout and "0.7573" in proc.stdout and "0.0377" in proc.stdout
    assert "PASS" in proc.stdout


def test_explain_variant_shows_the_fix(gradcheck: Runner) -> None:
    proc = gradcheck("explain", "softmax@diagonal")
    assert proc.returncode == 1
    assert "y * (g - sum(y * g" in proc.stdout
    assert "FAIL" in proc.stdout


def test_failure_reproduce_line_reproduces(gradcheck: Runner) -> None:
    first = gradcheck("run", "tanh@sign_flip", "--seed", "5", "--trials", "2", "--shape", "2,3")
    assert first.returncode == 1
    line = next(ln for ln in first.stdout.splitlines() if "reproduce:" in ln)
    argv = line.split("reproduce:", 1)[1].split()
    assert argv[:3] == ["gradcheck", "run", "tanh@sign_flip"]
    again = gradcheck(*argv[1:])
    assert again.returncode == 1
    assert "sign flipped" in again.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "sofmax"], "Did you mean 'softmax'"),
        (["run", "softmax", "--input", "2,x,1"], "'x', which is not a number"),
        (["run", "softmax", "--input", "1,2;3"], "rows must all have the same length"),
        (["run", "softmax", "--shape", "0,3"], "--shape expects positive integers separated by commas"),
        (["run", "softmax", "--shape", "abc"], "--shape expects positive integers separated by commas"),
        (["run", "softmax", "--method", "foo"], "Unknown --method 'foo'"),
        (["run", "softmax", "--trials", "0"], "--trials must be at least 1"),
        (["run", "softmax+sofmax"], "Unknown loss name 'sofmax'"),
        (["run", "mse+softmax"], "'mse' is a loss"),
        (["run", "softmax+mse+tanh"], "A check spec is ACTIVATION+LOSS"),
        (["run", "softmax", "--rtol", "-1"], "--rtol must be a finite number >= 0"),
        (["run", "mse", "--input", "1,2", "--target", "1,2,3"], "--target must have the shape of --input"),
        (["run", "softmax", "--json", "no/such/dir/report.json"], "Cannot write the JSON report"),
        (["explain", "softmax+mse"], "explain takes one activation, layer or loss, not a pair"),
        (["explain", "cross_entropy", "--input", "2,4"], "outside cross_entropy's domain"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_input_exits_2_without_traceback(gradcheck: Runner, args: list[str], fragment: str) -> None:
    proc = gradcheck(*args)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "gradcheck: error:" in proc.stderr
    assert fragment in " ".join(proc.stderr.split()), proc.stderr


def test_target_not_fitting_the_shape_exits_2(gradcheck: Runner) -> None:
    proc = gradcheck("run", "softmax+mse", "--target", "1,2,3")
    assert proc.returncode == 2
    assert "--target" in proc.stderr
    assert "broadcast" not in proc.stdout


@pytest.mark.parametrize("args", [["run", "softmax", "--trials", "abc"], ["run"], ["frobnicate"]])
def test_click_level_usage_errors_exit_2(gradcheck: Runner, args: list[str]) -> None:
    proc = gradcheck(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "Usage:" in proc.stderr or "Error" in proc.stderr


def test_negative_seed_is_a_usage_error(gradcheck: Runner) -> None:
    proc = gradcheck("run", "softmax", "--seed", "-1")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--seed" in proc.stderr


def test_confident_prediction_passes_quietly(gradcheck: Runner) -> None:
    proc = gradcheck("run", "sigmoid+binary_cross_entropy", "--input", "30,-30,0.5", "--target", "1,0,1")
    assert "RuntimeWarning" not in proc.stderr
    assert proc.returncode == 0, proc.stdout


def test_check_that_cannot_run_exits_3(gradcheck: Runner) -> None:
    proc = gradcheck("run", "cross_entropy", "--input", "5e-324,0.5", "--target", "1,0", "--json", "-")
    assert proc.returncode == 3
    data = json.loads(proc.stdout)
    assert data["exit_code"] == 3
    (row,) = data["results"]
    assert row["verdict"] == "ERROR" and "not finite" in row["diagnosis"]
    assert "Traceback" not in proc.stderr


def test_other_methods_from_the_command_line(gradcheck: Runner) -> None:
    proc = gradcheck("run", "softmax+cross_entropy", "tanh", "--method", "richardson", "--shape", "2,3",
                     "--json", "-")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {r["check"] for r in data["results"]} == {"softmax+cross_entropy", "tanh"}
    first_order = [r for r in data["results"] if r["component"] != "second_derivative"]
    assert first_order and all(r["method"] == "richardson" for r in first_order)


# --- in process, through Typer's CliRunner: the same app object the script calls ----------


def test_cli_runner_exit_codes() -> None:
    from typer.testing import CliRunner

    from gradcheck_cli.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["run", "softmax+mse", "--shape", "2,3"], env=ENV).exit_code == 0
    flagged = runner.invoke(app, ["run", "mse@factor2", "--shape", "2,3"], env=ENV)
    assert flagged.exit_code == 1
    assert "1/2" in flagged.output
    assert runner.invoke(app, ["run", "nope"], env=ENV).exit_code == 2
