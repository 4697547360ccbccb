"""The two layer libraries that ship in configs/, and known layer bugs, run by the real `gradcheck ci`.

configs/cs231n_layers.yaml maps a CS231n-style functional file and configs/nnfs_layers.yaml
an nnfs-style class file, as written (no wrapper code): every row must pass. The buggy
copies in tests/fixtures/layer_bugs must each be flagged on the argument that is wrong,
and on that argument only, with the diagnosis that names the mistake.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUGS = ROOT / "tests" / "fixtures" / "layer_bugs" / "bugs.yaml"
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1"}
ENV.pop("FORCE_COLOR", None)
CONFIGS = {"cs231n": ROOT / "configs" / "cs231n_layers.yaml", "nnfs": ROOT / "configs" / "nnfs_layers.yaml",
           "bugs": BUGS}


class Suite:
    """One `gradcheck ci CONFIG --json -` process, started at once and read when a test needs it."""

    def __init__(self, config: Path) -> None:
        argv = [sys.executable, "-m", "gradcheck_cli", "ci", str(config), "--json", "-"]
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
    def rows(self) -> dict[str, list[dict[str, Any]]]:
        """The JSON rows of each check, by check name."""
        assert "Traceback" not in self.proc.stderr, self.proc.stderr
        by_check: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in json.loads(self.proc.stdout)["results"]:
            by_check[row["check"]].append(row)
        return dict(by_check)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.communicate()


@pytest.fixture(scope="module")
def suites() -> Iterator[dict[str, Suite]]:
    # The three runs start together: the suite waits for the slowest, not for their sum.
    runs = {name: Suite(config) for name, config in CONFIGS.items()}
    yield runs
    for run in runs.values():
        run.stop()


def _table(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"{r['check']} wrt {r.get('wrt')}: {r['verdict']} {r['diagnosis']}" for r in rows)


@pytest.mark.parametrize("library", ["cs231n", "nnfs"])
def test_shipped_library_passes_as_written(suites: dict[str, Suite], library: str) -> None:
    suite = suites[library]
    assert suite.proc.returncode == 0, suite.proc.stdout[-3000:] + suite.proc.stderr
    rows = [row for check in suite.rows.values() for row in check]
    bad = [row for row in rows if row["verdict"] not in ("PASS", "KINK")]
    assert not bad, _table(bad)


# Every layer argument and every parameter is its own row, named by `wrt`.
EXPECTED_WRT = {
    "cs231n": {
        "cs_affine": {"x", "w", "b"},
        "cs_conv": {"x", "w", "b"},
        "cs_batchnorm": {"x", "gamma", "beta"},
        "cs_rnn_step": {"x", "prev_h", "Wx", "Wh", "b"},
        "cs_lstm_step": {"x", "prev_h", "prev_c", "Wx", "Wh", "b"},
    },
    "nnfs": {
        "nnfs_dense": {"inputs", "weights", "biases"},
        "nnfs_affine_dict": {"x", "params[W]", "params[b]"},
    },
}


@pytest.mark.parametrize("library", ["cs231n", "nnfs"])
def test_every_argument_and_parameter_is_a_row(suites: dict[str, Suite], library: str) -> None:
    rows = suites[library].rows
    for check, wrt in EXPECTED_WRT[library].items():
        assert {row.get("wrt") for row in rows[check]} == wrt, _table(rows[check])


# check -> (the arguments flagged, fragments the diagnoses of those rows must hold).
LSTM_ARGS = {"x", "prev_h", "prev_c", "Wx", "Wh", "b"}
BUGS_EXPECTED: dict[str, tuple[set[str], tuple[str, ...]]] = {
    "bug_affine_transposed_dw": ({"w"}, ("dw is transposed", "dout.T @ x")),
    "bug_conv_shapes_pad0": ({"x"}, ("dx has shape (2, 3, 0, 0), but x has shape (2, 3, 5, 5)",)),
    "bug_conv_shapes_stride": ({"x"}, ("dx has shape (2, 3, 5, 5), but x has shape (2, 3, 6, 6)",)),
    # The gradients are right on the first call: what is wrong is the write into the caller's
    # dnext_c, which corrupts every gradient computed after it, so every row names it.
    "bug_lstm_inplace": (LSTM_ARGS, ("changes its upstream gradient dnext_c in place",)),
    "bug_batchnorm_no_mean_var": ({"x"}, ("batch statistic", "dropped")),
    "bug_scale_shift_swapped": ({"a", "c"}, ("da holds the gradient of c", "dc holds the gradient of a", "swapped")),
    "bug_softmax_loss_no_mean": ({"pred"}, ("constant factor 6", "1/N is missing")),
    "bug_mae_sign": ({"pred"}, ("sign flipped",)),
    "bug_dense_dbiases_axis": ({"biases"}, ("dbiases has shape (5, 1), but biases has shape (1, 4)",)),
}


def _wrt(row: dict[str, Any]) -> str:
    # A loss checked on the batch path (target real) leaves wrt empty: its one argument is the prediction.
    return str(row.get("wrt") or "pred")


@pytest.mark.parametrize("check", sorted(BUGS_EXPECTED))
def test_known_bug_is_flagged_on_its_argument(suites: dict[str, Suite], check: str) -> None:
    rows = suites["bugs"].rows[check]
    wrong, fragments = BUGS_EXPECTED[check]
    # `expect: fail` turns the verdict of a flagged row into XFAIL; anything else is unflagged.
    flagged = {_wrt(row) for row in rows if row["verdict"] == "XFAIL"}
    assert flagged == wrong, _table(rows)
    assert all(row["verdict"] in ("PASS", "KINK") for row in rows if _wrt(row) not in wrong), _table(rows)
    said = " ".join(row["diagnosis"] for row in rows if row["verdict"] == "XFAIL")
    for fragment in fragments:
        assert fragment in said, _table(rows)


def test_bug_config_meets_its_expectations(suites: dict[str, Suite]) -> None:
    # Every bug is `expect: fail` and flagged, the correct counterpart and the conv bug at the
    # shapes that hide it pass: the gate is green.
    suite = suites["bugs"]
    assert suite.proc.returncode == 0, suite.proc.stdout[-3000:] + suite.proc.stderr
    for check in ("scale_shift", "conv bug hidden by the usual shapes"):
        assert {row["verdict"] for row in suite.rows[check]} <= {"PASS", "KINK"}, _table(suite.rows[check])


def test_reproduce_line_of_a_config_row_flags_the_same_argument(suites: dict[str, Suite]) -> None:
    row = next(r for r in suites["bugs"].rows["bug_affine_transposed_dw"] if r["wrt"] == "w")
    argv = shlex.split(row["reproduce"])
    assert argv[:2] == ["gradcheck", "ci"] and argv[-2:] == ["--only", "bug_affine_transposed_dw"], row["reproduce"]
    again = subprocess.run([sys.executable, "-m", "gradcheck_cli", *argv[1:], "--json", "-"], capture_output=True,
                           text=True, env=ENV, cwd=ROOT, timeout=120)
    rows = json.loads(again.stdout)["results"]
    assert {r["wrt"]: r["verdict"] for r in rows} == {"x": "PASS", "w": "XFAIL", "b": "PASS"}, again.stderr
    assert [r["worst_index"] for r in rows if r["wrt"] == "w"] == [row["worst_index"]]
