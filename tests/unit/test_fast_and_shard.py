"""``--fast`` (seeded random projections u^T J d), the JACOBIAN_LIMIT skip, and ``ci --shard I/N``.

The in-process tests call :func:`gradcheck_cli.runner.run`. Every ``gradcheck`` process the
CLI tests need is started at once by an autouse module fixture, when the module's first test
starts: they run on the second core while the in-process tests run, and the CLI tests at the
end of the module only collect their results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from gradcheck_cli import numdiff, runner
from gradcheck_cli.cli import app
from gradcheck_cli.plugins import load_builtins
from gradcheck_cli.registry import Registry, register_activation, register_fused, registering
from gradcheck_cli.registry.activations import softmax, softmax_jacobian, softmax_vjp
from gradcheck_cli.results import CheckResult, Verdict
from gradcheck_cli.runner import CheckOptions, run

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "example.yaml"
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1"}
ENV.pop("FORCE_COLOR", None)
SHAPE = (3, 5)
SEEDS = range(8)


def _names(registry: Registry, variants: bool) -> list[str]:
    # Layers need their own shapes: tests/unit/test_builtin_layers.py checks them.
    return [spec.name for spec in registry if ("@" in spec.name) == variants and spec.kind != "layer"]


def _projection_note(row: CheckResult) -> bool:
    return any("projections" in note for note in row.notes)


# --- --fast in process -------------------------------------------------------------------------

def test_fast_passes_every_builtin_correct_entry_for_many_seeds(registry: Registry) -> None:
    names = _names(registry, variants=False)
    assert {"softmax", "log_softmax", "sigmoid", "relu", "mse", "cross_entropy", "kl_div"} <= set(names)
    surprises = []
    for seed in SEEDS:
        result = run(names, CheckOptions(seed=seed, shape=SHAPE, fast=True), registry=registry)
        assert {r.check for r in result.results} == set(names)
        for row in result.results:
            if row.verdict is not Verdict.PASS:
                surprises.append((seed, row.check, row.component, row.verdict.value, row.diagnosis[:120]))
            assert _projection_note(row), row.notes
            assert row.worst_index is not None and len(row.worst_index) == 1
            assert 0 <= row.worst_index[0] < runner.FAST_PROJECTIONS
            assert row.reproduce.endswith("--fast")
            assert row.shape == SHAPE and row.trials == 3
    assert not surprises, surprises[:5]


def test_fast_flags_every_builtin_variant_for_many_seeds(registry: Registry) -> None:
    variants = _names(registry, variants=True)
    assert {"softmax@diagonal", "softmax@wrong_input", "softmax@batch_sum", "mse@no_mean"} <= set(variants)
    missed = []
    for seed in SEEDS:
        result = run(variants, CheckOptions(seed=seed, shape=SHAPE, fast=True), registry=registry)
        for name in variants:
            rows = [r for r in result.results if r.check == name]
            assert rows and all(r.verdict is not Verdict.ERROR for r in rows), [r.diagnosis for r in rows]
            failed = [r for r in rows if r.verdict is Verdict.FAIL]
            if not failed:
                missed.append((seed, name))
            for row in failed:
                assert _projection_note(row)
                assert row.worst_index is not None and len(row.worst_index) == 1
                assert "random projection" in row.diagnosis and "--fast" in row.diagnosis
                assert row.ratio is not None and row.ratio > 1.0
    assert not missed, missed


@pytest.mark.parametrize("pair", ["softmax+cross_entropy", "log_softmax+nll", "sigmoid+binary_cross_entropy",
                                  "softmax+mse", "tanh+huber"])
def test_fast_pairs_pass_with_chain_and_fused_rows(registry: Registry, pair: str) -> None:
    fused = pair in ("softmax+cross_entropy", "log_softmax+nll", "sigmoid+binary_cross_entropy")
    for seed in range(5):
        rows = run([pair], CheckOptions(seed=seed, shape=SHAPE, fast=True), registry=registry).results
        components = [r.component for r in rows]
        assert "gradient" in components and "chain" in components and "jacobian" in components
        assert ("fused" in components) == fused
        for row in rows:
            assert row.verdict is Verdict.PASS, (seed, row.component, row.diagnosis)
            assert _projection_note(row) and row.worst_index is not None and len(row.worst_index) == 1


def test_fast_flags_wrong_pairs_row_by_row(registry: Registry) -> None:
    rows = {(r.check, r.component): r for r in run(["softmax@diagonal+mse", "softmax+mse@no_mean"],
                                                    CheckOptions(seed=2, shape=SHAPE, fast=True),
                                                    registry=registry).results}
    assert rows["softmax@diagonal+mse", "jacobian"].verdict is Verdict.FAIL
    assert rows["softmax@diagonal+mse", "gradient"].verdict is Verdict.PASS
    chain = rows["softmax@diagonal+mse", "chain"]
    assert chain.verdict is Verdict.FAIL and "follows from the wrong activation Jacobian" in chain.diagnosis
    assert rows["softmax+mse@no_mean", "gradient"].verdict is Verdict.FAIL
    assert all(r.verdict is Verdict.PASS for (check, comp), r in rows.items()
               if check == "softmax+mse@no_mean" and comp == "jacobian")
    assert rows["softmax+mse@no_mean", "chain"].verdict is Verdict.FAIL
    assert "loss gradient" in rows["softmax+mse@no_mean", "chain"].diagnosis


def test_fast_flags_a_wrong_fused_formula() -> None:
    registry = Registry()
    load_builtins(registry)
    with registering(registry, "test"):
        register_activation("my_softmax", forward=softmax, vjp=softmax_vjp)
        # The fused gradient without the 1/B of the batch mean.
        register_fused("my_softmax", "cross_entropy", gradient=lambda z, t: softmax(z) - t, formula="p - t")
    rows = {r.component: r for r in run(["my_softmax+cross_entropy"], CheckOptions(seed=1, shape=SHAPE, fast=True),
                                         registry=registry).results}
    assert [rows[c].verdict for c in ("jacobian", "gradient", "chain")] == [Verdict.PASS] * 3
    assert rows["fused"].verdict is Verdict.FAIL
    assert rows["fused"].worst_index is not None and len(rows["fused"].worst_index) == 1
    # The same wrong formula checked entry by entry is named exactly.
    full = {r.component: r for r in run(["my_softmax+cross_entropy"], CheckOptions(seed=1, shape=SHAPE),
                                        registry=registry).results}
    assert full["fused"].verdict is Verdict.FAIL and "B, the batch size" in full["fused"].diagnosis


def test_fast_is_seeded(registry: Registry) -> None:
    def figures(seed: int) -> list[dict[str, Any]]:
        rows = run(["softmax+cross_entropy"], CheckOptions(seed=seed, shape=SHAPE, fast=True), registry=registry)
        return [r.to_dict() for r in rows.results]

    assert figures(4) == figures(4)
    assert [r["max_abs_error"] for r in figures(4)] != [r["max_abs_error"] for r in figures(5)]


def test_fast_result_agrees_with_the_full_check_on_a_wrong_user_vjp() -> None:
    registry = Registry()
    with registering(registry, "test"):
        register_activation("off_by_percent", forward=softmax, vjp=lambda x, g: 1.01 * softmax_vjp(x, g))
    for fast in (False, True):
        (row,) = run(["off_by_percent"], CheckOptions(seed=0, shape=SHAPE, fast=fast), registry=registry).results
        assert row.verdict is Verdict.FAIL, (fast, row.diagnosis)


# --- JACOBIAN_LIMIT ------------------------------------------------------------------------------

def test_fast_at_thousands_of_outputs_passes_correct_code_and_catches_small_errors() -> None:
    # From MANY_OUTPUTS outputs on, a direction costs four evaluations and the noise fit has
    # one degree of freedom per output, averaged over thousands of them by the projections.
    n = 2 * numdiff.MANY_OUTPUTS
    reg = Registry()
    with registering(reg, "test"):
        register_activation("right", forward=softmax, vjp=softmax_vjp)
        register_activation("scaled", forward=softmax, vjp=lambda x, g: softmax_vjp(x, g) * (1 + 1e-6))
        register_activation("off_diagonal", forward=softmax,  # -1e-6 p_i p_j added to every entry
                            vjp=lambda x, g: softmax_vjp(x, g) - 1e-6 * softmax(x) * np.sum(softmax(x) * g, axis=-1,
                                                                                          keepdims=True))
    for seed in range(3):
        rows = run(reg.names(), CheckOptions(seed=seed, shape=(1, n), fast=True), registry=reg).results
        assert [r.verdict for r in rows] == [Verdict.PASS, Verdict.FAIL, Verdict.FAIL], [r.ratio for r in rows]
        assert rows[0].ratio < 0.5 and min(r.ratio for r in rows[1:]) > 10


def test_builtin_softmax_too_large_for_a_jacobian_keeps_only_the_vjp_row(registry: Registry) -> None:
    shape = (1, 6000)
    assert shape[0] * shape[1] ** 2 > runner.JACOBIAN_LIMIT, "the test needs a Jacobian above the limit"
    rows = run(["softmax"], CheckOptions(seed=0, shape=shape, fast=True, trials=1), registry=registry).results
    assert [(r.component, r.convention) for r in rows] == [("jacobian", "vjp")]
    (row,) = rows
    assert row.verdict is Verdict.PASS, row.diagnosis
    note = next(n for n in row.notes if "not checked at this size" in n)
    assert "36,000,000 entries" in note and "this row checks the same derivative" in note


class JacobianSpy:
    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.shapes.append(x.shape)
        return softmax_jacobian(x)


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """A limit of 100 entries: a (2, 8) batch's Jacobian (128 entries) is over it."""
    monkeypatch.setattr(runner, "JACOBIAN_LIMIT", 100)
    return 100


@pytest.mark.parametrize("fast", [False, True], ids=["full", "fast"])
def test_jacobian_over_the_limit_is_skipped_only_beside_another_convention(small_limit: int, fast: bool) -> None:
    both, alone = JacobianSpy(), JacobianSpy()
    registry = Registry()
    with registering(registry, "test"):
        register_activation("both", forward=softmax, jacobian=both, vjp=softmax_vjp)
        register_activation("alone", forward=softmax, jacobian=alone)
    result = run(["both", "alone"], CheckOptions(seed=0, shape=(2, 8), fast=fast), registry=registry)
    rows = {(r.check, r.convention): r for r in result.results}
    assert set(rows) == {("both", "vjp"), ("alone", "jacobian")}
    assert both.shapes == [], "the skipped jacobian convention must not even be called"
    assert alone.shapes, "an entry with only a jacobian is still checked through it"
    assert all(r.verdict is Verdict.PASS for r in rows.values())
    assert any("not checked at this size" in n for n in rows["both", "vjp"].notes)
    assert not any("not checked at this size" in n for n in rows["alone", "jacobian"].notes)
    # At a size under the limit both conventions are checked again.
    small = run(["both"], CheckOptions(seed=0, shape=(1, 8), fast=fast), registry=registry).results
    assert [r.convention for r in small] == ["jacobian", "vjp"]


@pytest.mark.parametrize("fast", [False, True], ids=["full", "fast"])
def test_chain_row_does_not_build_a_jacobian_over_the_limit(small_limit: int, fast: bool) -> None:
    spy = JacobianSpy()
    registry = Registry()
    load_builtins(registry)
    with registering(registry, "test"):
        register_activation("spy_softmax", forward=softmax, jacobian=spy, vjp=softmax_vjp)
    rows = run(["spy_softmax+mse"], CheckOptions(seed=0, shape=(2, 8), fast=fast), registry=registry).results
    assert all(r.verdict is Verdict.PASS for r in rows), [(r.component, r.diagnosis) for r in rows]
    chain = next(r for r in rows if r.component == "chain")
    assert spy.shapes == [], f"jacobian(x) was called {len(spy.shapes)} times for the chain row"
    assert chain.convention == "vjp"


# --- fast mode, float32 and edges together -------------------------------------------------------

@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_fast_float32_edges_pass_builtin_softmaxes(registry: Registry, name: str) -> None:
    rows = run([name], CheckOptions(seed=0, shape=(2, 3), fast=True, dtype="float32", edges=True),
               registry=registry).results
    assert all(r.verdict is Verdict.PASS for r in rows), [(r.trial, r.diagnosis[:100]) for r in rows]


def test_fast_float32_and_fast_edges_alone_pass_builtin_softmax(registry: Registry) -> None:
    # The two options each work: only their combination above is flagged.
    for options in (CheckOptions(seed=0, shape=(2, 3), fast=True, dtype="float32"),
                    CheckOptions(seed=0, shape=(2, 3), fast=True, edges=True),
                    CheckOptions(seed=0, shape=(2, 3), dtype="float32", edges=True)):
        rows = run(["softmax", "log_softmax"], options, registry=registry).results
        assert all(r.verdict is Verdict.PASS for r in rows), (options, [r.diagnosis[:100] for r in rows])


# --- the CLI: every process started at once ------------------------------------------------------

CONFIG_WITH_OPTIONS = """\
version: 1
defaults: {seed: 1, trials: 1, shape: [2, 3], fast: true}
checks:
  - softmax+mse
  - {spec: tanh, fast: false, dtype: float32}
  - {spec: sigmoid, fast: false, edges: true}
  - {spec: softmax, dtype: float32, edges: false}
  - {spec: softmax@diagonal, dtype: float32, edges: true, expect: fail}
"""


# A bug that allocates a (200000, 200000) array must fail with MemoryError, never swap or
# wake the OOM killer: the process caps its own address space at 4 GiB before it starts.
LIMITED = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); "
           "sys.argv = ['gradcheck', *sys.argv[1:]]; runpy.run_module('gradcheck_cli', run_name='__main__')")


class Proc:
    def __init__(self, args: list[str], cwd: Path, json_path: Path | None = None, limit: bool = False) -> None:
        argv = [sys.executable, *(("-c", LIMITED) if limit else ("-m", "gradcheck_cli")), *args]
        if json_path is not None:
            argv += ["--json", str(json_path)]
        self.json_path = json_path
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                                      cwd=cwd)
        self._done: subprocess.CompletedProcess[str] | None = None

    @property
    def done(self) -> subprocess.CompletedProcess[str]:
        if self._done is None:
            out, err = self.popen.communicate(timeout=120)
            self._done = subprocess.CompletedProcess(self.popen.args, self.popen.returncode, out, err)
        return self._done

    @property
    def report(self) -> dict[str, Any]:
        assert "Traceback" not in self.done.stderr, self.done.stderr
        assert self.json_path is not None and self.json_path.exists(), (self.done.stdout, self.done.stderr)
        return dict(json.loads(self.json_path.read_text()))

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.communicate()


BAD_SHARDS = ("0/2", "3/2", "a/b", "1", "١/3", "1_0/20")


@pytest.fixture(scope="module", autouse=True)
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proc]]:
    """Start every CLI process with the module's first test: they run while the in-process tests do."""
    folder = tmp_path_factory.mktemp("fast_and_shard")
    config = folder / "options.yaml"
    config.write_text(textwrap.dedent(CONFIG_WITH_OPTIONS), encoding="utf-8")
    specs: dict[str, tuple[list[str], bool, bool]] = {
        "full": (["ci", str(EXAMPLE)], True, False),
        "options": (["ci", str(config)], True, False),
        "fast_200k": (["run", "softmax", "--shape", "1,200000", "--fast", "--trials", "1"], True, True),
        "pair_200k": (["run", "softmax+mse", "--shape", "1,200000", "--fast", "--trials", "1"], True, True),
    }
    for n in (2, 3):
        for i in range(1, n + 1):
            specs[f"{i}/{n}"] = (["ci", str(EXAMPLE), "--shard", f"{i}/{n}"], True, False)
    specs["1/2 again"] = (["ci", str(EXAMPLE), "--shard", "1/2"], True, False)
    started = {}
    for index, (key, (args, with_json, limit)) in enumerate(specs.items()):
        started[key] = Proc(args, folder, folder / f"{index:02d}.json" if with_json else None, limit)
    yield started
    for proc in started.values():
        proc.stop()


def _row_keys(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(r["check"], r["component"], r["convention"]) for r in report["results"]]


def _checks(report: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(r["check"] for r in report["results"]))


def test_cli_fast_softmax_at_200000_passes(procs: dict[str, Proc]) -> None:
    proc = procs["fast_200k"]
    assert proc.done.returncode == 0, proc.done.stdout + proc.done.stderr
    (row,) = proc.report["results"]
    assert (row["component"], row["convention"], row["verdict"]) == ("jacobian", "vjp", "PASS")
    assert row["shape"] == [1, 200000] and row["trials"] == 1
    assert any("projections" in n for n in row["notes"])
    assert any("not checked at this size" in n for n in row["notes"])
    assert "exit code 0" in proc.done.stdout


def test_cli_fast_pair_at_200000_passes(procs: dict[str, Proc]) -> None:
    proc = procs["pair_200k"]
    report = proc.report
    assert [r["verdict"] for r in report["results"]] == ["PASS"] * 3, [r["diagnosis"] for r in report["results"]]
    assert proc.done.returncode == 0


@pytest.mark.parametrize("n", [2, 3])
def test_shards_together_run_every_check_exactly_once(procs: dict[str, Proc], n: int) -> None:
    full = procs["full"].report
    checks = _checks(full)
    assert len(checks) >= 4 and len(set(checks)) == len(checks), checks
    union: list[tuple[str, str, str]] = []
    for i in range(1, n + 1):
        shard = procs[f"{i}/{n}"].report
        assert _checks(shard) == checks[i - 1::n], (i, n)
        union += _row_keys(shard)
        # Each check's rows are the full run's rows for it, number for number.
        for row in shard["results"]:
            same = [r for r in full["results"] if (r["check"], r["component"], r["convention"])
                    == (row["check"], row["component"], row["convention"])]
            assert same == [row]
        summary = Counter(r["verdict"] for r in shard["results"])
        assert {k: v for k, v in shard["summary"].items() if v} == dict(summary)
    assert Counter(union) == Counter(_row_keys(full))
    assert all(count == 1 for count in Counter(union).values())


def test_shards_are_deterministic_across_runs(procs: dict[str, Proc]) -> None:
    first, again = procs["1/2"].report, procs["1/2 again"].report
    assert len(_checks(first)) >= 2
    assert [r["check"] for r in first["results"]] == [r["check"] for r in again["results"]]
    assert first["results"] == again["results"]
    assert procs["1/2"].done.returncode == procs["1/2 again"].done.returncode


def test_shard_exit_codes_combine_to_the_full_suite(procs: dict[str, Proc]) -> None:
    full = procs["full"]
    for n in (2, 3):
        codes = [procs[f"{i}/{n}"].done.returncode for i in range(1, n + 1)]
        assert all(code in (0, 1, 3) for code in codes), codes
        assert max(codes, key=[0, 3, 1].index) == full.done.returncode, (codes, full.done.returncode)


@pytest.mark.parametrize("bad", BAD_SHARDS)
def test_bad_shard_is_a_usage_error(bad: str) -> None:
    # In process (typer's runner): the shard is parsed before anything is loaded or forked.
    result = CliRunner().invoke(app, ["ci", str(EXAMPLE), "--shard", bad], env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "--shard expects I/N" in result.stderr
    assert repr(bad) in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "PASS" not in result.stdout and "FAIL" not in result.stdout


def test_config_fast_dtype_edges_keys_reach_every_row(procs: dict[str, Proc]) -> None:
    proc = procs["options"]
    report = proc.report
    assert proc.done.returncode == 0, proc.done.stdout + proc.done.stderr
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in report["results"]:
        rows.setdefault(row["check"], []).append(row)
    assert list(rows) == ["softmax+mse", "tanh", "sigmoid", "softmax", "softmax@diagonal"]
    expected = {  # check: (--fast, --dtype float32, --edges)
        "softmax+mse": (True, False, False),
        "tanh": (False, True, False),
        "sigmoid": (False, False, True),
        "softmax": (True, True, False),
        "softmax@diagonal": (True, True, True),
    }
    for check, (fast, f32, edges) in expected.items():
        for row in rows[check]:
            command = row["reproduce"]
            assert command.startswith(f"gradcheck run {check} --seed 1 --trials 1 --shape 2,3"), command
            assert ("--fast" in command) == fast, command
            assert ("--dtype float32" in command) == f32, command
            assert ("--edges" in command) == edges, command
            assert row["trials"] == (4 if edges else 1), row
            assert any("projections" in n for n in row["notes"]) == fast, row["notes"]
            assert row["verdict"] == ("XFAIL" if check == "softmax@diagonal" and row["component"] == "jacobian"
                                      else "PASS"), row
