"""Reports of the real entry point: --save-failures, --verbose, explain --plot, and JSON FAIL rows.

Every process is started at once by a module fixture, so they overlap; each test reads the
one it needs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from procs import Proc

ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1"}
ENV.pop("FORCE_COLOR", None)
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
LEGEND = "(' ' < 0.01, '.' <= 1 passes, '+' <= 1e3, '#' > 1e3)"
FAILING = ["softmax@diagonal+mse", "mse@no_mean", "softmax+mse", "tanh@sign_flip"]
RUN_ARGS = ["--shape", "2,4", "--trials", "1", "--seed", "3"]
# Run the CLI with matplotlib made unimportable, whether or not it is installed.
WITHOUT_MATPLOTLIB = ("import sys; sys.modules['matplotlib'] = None; sys.argv = ['gradcheck', *sys.argv[1:]]; "
                      "from gradcheck_cli.cli import entry; entry()")


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proc]]:
    cli = [sys.executable, "-m", "gradcheck_cli"]
    folders = {name: tmp_path_factory.mktemp(name) for name in ("verbose", "quiet", "plot", "noplot")}
    started = {
        "verbose": Proc([*cli, "run", *FAILING, *RUN_ARGS, "--save-failures", "saved", "--json", "report.json",
                         "--verbose"], folders["verbose"]),
        "quiet": Proc([*cli, "run", *FAILING, *RUN_ARGS], folders["quiet"]),
        "plot": Proc([*cli, "explain", "softmax", "--plot", "out.png"], folders["plot"]),
        "noplot": Proc([sys.executable, "-c", WITHOUT_MATPLOTLIB, "explain", "softmax", "--plot", "out.png"],
                       folders["noplot"]),
    }
    yield started
    for proc in started.values():
        proc.stop()


@pytest.fixture(scope="module")
def report(procs: dict[str, Proc]) -> dict[str, Any]:
    proc = procs["verbose"]
    assert proc.done.returncode == 1, proc.done.stdout + proc.done.stderr
    return dict(json.loads((proc.cwd / "report.json").read_text()))


def _fails(report: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, row) for i, row in enumerate(report["results"]) if row["verdict"] == "FAIL"]


# --- --save-failures -----------------------------------------------------------------------------

def test_save_failures_writes_one_npz_per_fail_row(procs: dict[str, Proc], report: dict[str, Any]) -> None:
    folder = procs["verbose"].cwd / "saved"
    files = sorted(folder.glob("*.npz"))
    fails = _fails(report)
    assert len(fails) >= 4, [(r["check"], r["component"]) for _, r in fails]
    assert len(files) == len(fails), (files, fails)
    assert sorted(p.name for p in folder.iterdir()) == [p.name for p in files], "nothing but the .npz files"
    assert f"saved {len(fails)} failing input(s) to saved/" in procs["verbose"].done.stdout
    for path, (index, row) in zip(files, fails, strict=True):
        assert re.fullmatch(r"\d{3}-.+\.npz", path.name), path.name
        assert path.name == f"{index:03d}-{row['check']}-{row['component']}-{row['convention']}.npz"


def test_saved_failure_reloads_the_failing_input(procs: dict[str, Proc], report: dict[str, Any]) -> None:
    folder = procs["verbose"].cwd / "saved"
    by_index = dict(_fails(report))
    for path in sorted(folder.glob("*.npz")):
        row = by_index[int(path.name[:3])]
        with np.load(path) as data:
            keys = set(data.files)
            assert {"input", "reproduce", "check", "component", "seed", "diagnosis"} <= keys
            x = data["input"]
            assert x.dtype == np.float64 and x.shape == tuple(row["shape"]) == (2, 4)
            assert np.array_equal(x, np.asarray(row["input"]))
            assert str(data["reproduce"]) == row["reproduce"]
            assert str(data["reproduce"]).startswith(f"gradcheck run {row['check']} --seed 3 --trials 1 --shape 2,4")
            assert str(data["check"]) == row["check"] and str(data["component"]) == row["component"]
            assert int(data["seed"]) == 3
            loss_side = row["component"] in ("gradient", "chain", "fused")
            assert ("target" in keys) == loss_side, (path.name, keys)
            if loss_side:
                assert data["target"].shape == x.shape
                assert np.array_equal(data["target"], np.asarray(row["target"]))


def test_saved_input_reproduces_the_failure(procs: dict[str, Proc], report: dict[str, Any]) -> None:
    from gradcheck_cli.plugins import default_registry
    from gradcheck_cli.runner import CheckOptions, run

    registry = default_registry()
    folder = procs["verbose"].cwd / "saved"
    path = next(p for p in folder.glob("*.npz") if "softmax@diagonal+mse-jacobian" in p.name)
    with np.load(path) as data:
        x = data["input"]
    (row,) = [r for r in run(["softmax@diagonal"], CheckOptions(input=x), registry=registry).results]
    assert row.verdict.value == "FAIL" and "only the Jacobian's diagonal" in row.diagnosis


# --- --verbose -----------------------------------------------------------------------------------

def test_verbose_failing_check_prints_worst_entries_and_the_heatmap(procs: dict[str, Proc]) -> None:
    out = procs["verbose"].done.stdout
    assert out.count("worst entries:") == out.count("\nFAIL ") >= 4
    assert LEGEND in out
    assert "|analytic - numeric| / tolerance over the worst batch block" in out  # a Jacobian row
    heat = re.findall(r"^    [ .+#]{2,}$", out, flags=re.MULTILINE)
    assert heat and any("#" in line for line in heat)
    # Each listed entry names its position and both values.
    entries = re.findall(r"^    (dy\[\d,\d\]/dx\[\d,\d\]|dL/dx\[\d,\d\]): analytic \S+ vs numeric \S+$", out,
                         flags=re.MULTILINE)
    assert entries


def test_without_verbose_there_are_no_worst_entries_or_heatmaps(procs: dict[str, Proc]) -> None:
    proc = procs["quiet"].done
    assert proc.returncode == 1
    assert "FAIL softmax@diagonal+mse - jacobian (derivative)" in proc.stdout
    assert "worst entries:" not in proc.stdout and LEGEND not in proc.stdout
    assert "reproduce: gradcheck run softmax@diagonal+mse --seed 3 --trials 1 --shape 2,4" in proc.stdout


# --- explain --plot ------------------------------------------------------------------------------

def test_explain_plot_writes_a_png_or_asks_for_matplotlib(procs: dict[str, Proc]) -> None:
    # Whichever the environment has: with matplotlib a PNG, without it the install hint.
    proc = procs["plot"]
    png = proc.cwd / "out.png"
    if HAS_MATPLOTLIB:
        assert proc.done.returncode == 0, proc.done.stderr
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width > height > 100, "three panels side by side"
        assert "plot written to out.png" in proc.done.stdout
    else:
        assert proc.done.returncode == 2
        assert "pip install" in proc.done.stderr
        assert not png.exists()


def test_explain_plot_without_matplotlib_exits_2_with_the_install_hint(procs: dict[str, Proc]) -> None:
    proc = procs["noplot"]
    assert proc.done.returncode == 2, proc.done.stdout + proc.done.stderr
    assert "pip install" in proc.done.stderr and "matplotlib" in proc.done.stderr
    assert not (proc.cwd / "out.png").exists()
    assert proc.done.stdout == "", "nothing is explained before the usage error"


# --- JSON FAIL rows --------------------------------------------------------------------------------

def test_json_fail_rows_carry_input_heatmap_worst_entries_noise_and_ratio(report: dict[str, Any]) -> None:
    fails = [row for _, row in _fails(report)]
    assert {(r["check"], r["component"]) for r in fails} >= {
        ("softmax@diagonal+mse", "jacobian"), ("softmax@diagonal+mse", "chain"), ("mse@no_mean", "gradient"),
        ("tanh@sign_flip", "jacobian")}
    for row in fails:
        for key in ("input", "heatmap", "worst_entries", "noise", "ratio"):
            assert key in row and row[key] not in (None, [], ""), (row["check"], row["component"], key)
        assert np.asarray(row["input"]).shape == tuple(row["shape"]) == (2, 4)
        assert isinstance(row["noise"], float) and row["noise"] > 0
        assert isinstance(row["ratio"], float) and row["ratio"] > 1
        assert row["max_abs_error"] > row["tolerance"]
        heat = np.asarray(row["heatmap"], dtype=float)
        assert heat.ndim == 2 and 1 <= heat.shape[0] <= 24 and 1 <= heat.shape[1] <= 24
        assert heat.max() > 1 and np.all(heat >= 0)
        assert all(isinstance(e, str) and "analytic" in e and "vs numeric" in e for e in row["worst_entries"])
        assert len(row["worst_entries"]) <= 5
        if row["component"] in ("gradient", "chain", "fused"):
            # A gradient row's heatmap is the whole (B, K) batch: its largest cell is the ratio.
            assert heat.shape == (2, 4)
            assert heat.max() == pytest.approx(row["ratio"], rel=1e-9)
            assert np.asarray(row["target"]).shape == (2, 4)
        elif row["check"].startswith("tanh"):
            # An elementwise function: the map is its diagonal, one cell per input, (B, K).
            assert heat.shape == (2, 4)
            assert heat.max() == pytest.approx(row["ratio"], rel=1e-9)
            assert row["target"] is None
        else:
            # A row-wise function: the map is the worst batch row's K x K block.
            assert heat.shape == (4, 4)
            assert row["target"] is None


def test_json_pass_rows_carry_no_failure_payload(report: dict[str, Any]) -> None:
    passed = [row for row in report["results"] if row["verdict"] == "PASS"]
    assert {r["check"] for r in passed} >= {"softmax+mse"}
    for row in passed:
        assert row["input"] is None and row["target"] is None and row["heatmap"] is None
        assert row["worst_entries"] == []
        assert row["ratio"] <= 1 and row["noise"] is not None
    assert report["summary"]["FAIL"] == len(_fails(report))
    assert report["exit_code"] == 1
