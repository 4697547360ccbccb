"""Built-in layers through the real ``gradcheck`` command: list, explain, JSON, --save-failures,
--fast, --edges, complex step, and the messages for shapes and pairs that do not fit.

The processes start together (module fixture) and are collected by the tests that need them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from procs import Proc

RUNS: dict[str, list[str]] = {
    "list": ["list"],
    "explain": ["explain", "dense@transposed_dw", "--shape", "x=2,3", "--shape", "w=3,3"],
    "json": ["run", "batchnorm@no_mean_path", "dense", "--json", "-", "--save-failures", "failures"],
    "fast": ["run", "layernorm", "layernorm@batch_axis", "--fast", "--json", "-"],
    "edges": ["run", "dense", "maxpool2d", "--edges", "--json", "-"],
    "complex": ["run", "dense", "--method", "complex", "--json", "-"],
    "shape": ["run", "dense", "--shape", "3,7"],
    "chain": ["run", "conv2d+cross_entropy"],
    "input": ["run", "dense", "--input", "1,2"],
}


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proc]]:
    started = {}
    for name, args in RUNS.items():
        folder = tmp_path_factory.mktemp(name)
        started[name] = Proc([sys.executable, "-m", "gradcheck_cli", *args], folder)
    yield started
    for proc in started.values():
        proc.stop()


def rows(proc: Proc) -> list[dict[str, Any]]:
    return list(json.loads(proc.done.stdout)["results"])


def test_list_shows_each_layer_with_its_arguments_and_default_shapes(procs: dict[str, Proc]) -> None:
    out = procs["list"].done.stdout
    line = next(text for text in out.splitlines() if text.startswith("conv2d "))
    assert "layer" in line and "x 2x3x6x6" in line and "w 4x3x3x3" in line and "b 4" in line
    # The conventions table, from the one table registration and config keys read too.
    from gradcheck_cli.registry.table import TABLE

    listed = out[out.index("derivative conventions"):]
    assert all(any(row.startswith(c.keyword + " ") for row in listed.splitlines()) for c in TABLE)


def test_explain_prints_each_arguments_jacobians_and_names_the_transposed_gradient(procs: dict[str, Proc]) -> None:
    done = procs["explain"].done
    assert done.returncode == 1, done.stderr  # explain exits with the verdict of its rows
    for fragment in ("with respect to x", "with respect to w", "with respect to b",
                     "analytic Jacobian dout/dw", "numerical dout/dw", "dw is transposed"):
        assert fragment in done.stdout, done.stdout


def test_json_rows_name_the_argument_and_the_failing_point_is_saved_by_name(procs: dict[str, Proc]) -> None:
    got = rows(procs["json"])
    failing = [r for r in got if r["verdict"] == "FAIL"]
    assert [(r["check"], r["wrt"]) for r in failing] == [("batchnorm@no_mean_path", "x")]
    row = failing[0]
    assert row["worst_entry"].startswith("dout[") and "/dx[" in row["worst_entry"]
    assert set(row["point"]) == {"x", "gamma", "beta"} and row["point"]["x"]["shape"] == [6, 4]
    saved = list((procs["json"].cwd / "failures").glob("*.npz"))
    assert len(saved) == 1 and "batchnorm@no_mean_path-jacobian-x" in saved[0].name
    data = np.load(saved[0])
    assert str(data["wrt"]) == "x" and data["x"].shape == (6, 4) and data["gamma"].shape == (4,)
    assert {r["wrt"] for r in got if r["check"] == "dense"} == {"x", "w", "b"}


def test_fast_checks_projections_per_argument(procs: dict[str, Proc]) -> None:
    got = rows(procs["fast"])
    assert all("random projections" in " ".join(r["notes"]) for r in got)
    verdicts = {(r["check"], r["wrt"]): r["verdict"] for r in got}
    assert verdicts[("layernorm@batch_axis", "x")] == "FAIL"
    assert verdicts[("layernorm", "x")] == verdicts[("layernorm", "gamma")] == "PASS"
    assert all(v == "PASS" for (check, wrt), v in verdicts.items() if wrt != "x")


def test_edges_adds_the_edge_probes_to_a_layers_inputs(procs: dict[str, Proc]) -> None:
    got = rows(procs["edges"])
    assert all(r["trials"] == 6 for r in got) and procs["edges"].done.returncode == 0
    assert {r["verdict"] for r in got} <= {"PASS", "KINK"}


def test_complex_step_reaches_layers(procs: dict[str, Proc]) -> None:
    got = rows(procs["complex"])
    assert all(r["verdict"] == "PASS" and r["method"] == "complex" and not r["notes"] for r in got)
    assert max(r["max_abs_error"] for r in got) < 1e-13  # central differences leave ~1e-10


def test_a_shape_that_does_not_fit_says_what_the_other_arguments_kept(procs: dict[str, Proc]) -> None:
    done = procs["shape"].done
    said = " ".join(done.stdout.split())
    assert done.returncode == 3 and "a bare --shape sets only the first argument" in said
    assert "--shape w=" in said


def test_a_layer_feeding_a_loss_outside_its_domain_is_told_so(procs: dict[str, Proc]) -> None:
    said = " ".join(procs["chain"].done.stdout.split())
    assert "the loss of conv2d's output is nan" in said and "domain" in said


def test_input_on_a_layer_points_to_shapes_and_python(procs: dict[str, Proc]) -> None:
    done = procs["input"].done
    assert done.returncode == 2 and "--shape NAME=" in done.stderr and "inputs=" in done.stderr


def test_ci_only_names_no_check_with_suggestions(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\nchecks: [dense, {spec: softmax, name: soft}]\n")
    done = Proc([sys.executable, "-m", "gradcheck_cli", "ci", str(config), "--only", "sofft"], tmp_path).done
    assert done.returncode == 2 and "--only 'sofft' names no check of this config. Did you mean 'soft'" in done.stderr
    ok = Proc([sys.executable, "-m", "gradcheck_cli", "ci", str(config), "--only", "dense"], tmp_path).done
    assert ok.returncode == 0 and "soft" not in ok.stdout and "dense" in ok.stdout


def test_junit_has_one_testcase_per_argument(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    done = Proc([sys.executable, "-m", "gradcheck_cli", "run", "dense@transposed_dw", "--junit-xml", "-"],
                tmp_path).done
    cases = ET.fromstring(done.stdout).findall(".//testcase")
    assert [c.get("name") for c in cases] == [f"jacobian wrt {a} (backward (cache))" for a in ("x", "w", "b")]
    assert [c.find("failure") is not None for c in cases] == [False, True, False]
