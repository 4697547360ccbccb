"""Memory: peak independent of --trials, sizes that cannot fit refused up front, a hard cap.

The available memory is set with ``GRADCHECK_MEMORY_LIMIT`` rather than by allocating for
real; the cap is tried in a subprocess, where it cannot hurt the test runner.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gradcheck_cli import inputs
from gradcheck_cli.errors import ConfigError, UsageError
from gradcheck_cli.explanation import explain
from gradcheck_cli.registry import Registry
from gradcheck_cli.resources import ENV_LIMIT, available_memory, estimate_bytes, parse_size
from gradcheck_cli.results import CheckResult
from gradcheck_cli.runner import CheckOptions, parse_spec, run
from gradcheck_cli.suite import jobs_from_config

HUGE = (1, inputs.MAX_ELEMENTS)


def _peak(registry: Registry, spec: str, options: CheckOptions) -> int:
    """Peak traced memory of one run (tracemalloc sees numpy's allocations)."""
    tracemalloc.start()
    try:
        run([spec], options, registry=registry)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("spec", "options"), [
    ("softmax+mse", CheckOptions(shape=(16, 100))),
    ("sigmoid+mse", CheckOptions(shape=(100, 1000), fast=True)),
])
def test_peak_memory_does_not_grow_with_trials(registry: Registry, spec: str, options: CheckOptions) -> None:
    # Keeping every trial's point and quick estimate made trials=8 peak at ~3x trials=2.
    two = _peak(registry, spec, replace(options, trials=2))
    eight = _peak(registry, spec, replace(options, trials=8))
    assert eight <= 1.15 * two, f"trials=8 peaked at {eight / 1e6:.1f} MB, trials=2 at {two / 1e6:.1f} MB"


FIGURES = ("verdict", "component", "convention", "max_abs_error", "max_rel_error", "tolerance", "ratio",
           "worst_index", "analytic", "numeric", "noise", "method")


def _figures(row: CheckResult) -> tuple[object, ...]:
    return tuple(getattr(row, name) for name in FIGURES)


@pytest.mark.parametrize("spec", ["tanh", "softmax", "softmax@diagonal", "softmax+mse", "tanh@sign_flip+mse"])
def test_rows_of_many_trials_equal_each_trial_checked_afresh(registry: Registry, spec: str) -> None:
    """Each row is its worst trial, with the numbers that trial gives alone: nothing shared
    between the components of a trial leaks into another trial."""
    parsed = parse_spec(spec, registry)
    act, loss = parsed.activation, parsed.loss
    options = CheckOptions(seed=7, trials=4, shape=(3, 5))
    rows = run([spec], options, registry=registry).results
    alone = []
    for t in range(options.trials):
        rng = np.random.default_rng([options.seed, t])
        if act is not None:
            x = inputs.sample_domain(act.domain, options.shape, rng, act.kinks)
            target = inputs.sample_target(loss.target or "real", options.shape, rng) if loss is not None else None
        else:
            assert loss is not None
            target = inputs.sample_target(loss.target or "real", options.shape, rng)
            x = inputs.sample_prediction(loss.domain, target, rng, loss.kinks)
        alone.append(run([spec], CheckOptions(seed=7, input=x, target=target), registry=registry).results)
    for i, row in enumerate(rows):
        assert _figures(row) == _figures(alone[row.trial][i])
        assert all(single[i].ratio <= row.ratio for single in alone)


def test_parse_size() -> None:
    assert parse_size("4G") == 4 << 30
    assert parse_size("512m") == 512 << 20
    assert parse_size("1.5GB") == int(1.5 * (1 << 30))
    assert parse_size("123456") == 123456
    with pytest.raises(UsageError, match=f"{ENV_LIMIT} must be a number of bytes.*got 'lots'"):
        parse_size("lots")


def test_available_memory_is_measured_or_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_LIMIT, raising=False)
    assert 0 < available_memory()
    monkeypatch.setenv(ENV_LIMIT, "3G")
    assert available_memory() == 3 << 30


def test_estimate_grows_with_shape_not_with_trials(registry: Registry) -> None:
    spec = parse_spec("softmax+mse", registry)
    small, large = CheckOptions(shape=(4, 100)), CheckOptions(shape=(64, 300))
    assert estimate_bytes(spec, small) < estimate_bytes(spec, large)
    assert estimate_bytes(spec, large) == estimate_bytes(spec, CheckOptions(shape=(64, 300), trials=50, edges=True))
    assert estimate_bytes(spec, CheckOptions(shape=HUGE, fast=True)) < estimate_bytes(spec, CheckOptions(shape=HUGE))


def test_too_large_a_check_is_refused_before_anything_runs(registry: Registry,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_LIMIT, "8G")
    with pytest.raises(UsageError, match=r"Checking 'softmax' at shape 1x50000000 needs about [0-9.]+ GB of memory "
                                         r"by gradcheck's estimate, but 8\.6 GB is available \(GRADCHECK_MEMORY_LIMIT\)"
                                         r"; nothing was checked\. Give a smaller shape"):
        run(["softmax"], CheckOptions(shape=HUGE, trials=1), registry=registry)
    with pytest.raises(UsageError, match="needs about"):
        explain("softmax", CheckOptions(shape=HUGE, trials=1), registry=registry)


def test_refusal_suggests_fast_when_it_fits(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    options = CheckOptions(shape=(1, 5_000_000))
    every, fast = (estimate_bytes(parse_spec("sigmoid", registry), replace(options, fast=f)) for f in (False, True))
    monkeypatch.setenv(ENV_LIMIT, str((every + fast) // 2))  # room for --fast only
    with pytest.raises(UsageError, match=r"or check random projections with --fast \(fast: true in a config; "
                                         r"about [0-9.]+ GB here\)"):
        run(["sigmoid"], options, registry=registry)
    monkeypatch.setenv(ENV_LIMIT, "8G")
    with pytest.raises(UsageError, match=r"with --fast needs about") as info:
        run(["sigmoid"], CheckOptions(shape=HUGE, fast=True), registry=registry)
    assert "random projections" not in info.value.message


def test_a_check_that_fits_runs(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_LIMIT, "1G")
    assert run(["softmax+mse"], CheckOptions(trials=1), registry=registry).exit_code == 0


def test_config_shape_too_large_names_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_LIMIT, "8G")
    path = tmp_path / "suite.yaml"
    path.write_text("version: 1\nchecks:\n  - softmax+mse\n  - {spec: softmax, shape: [1, 50000000]}\n")
    with pytest.raises(ConfigError, match=r"needs about .* GB of memory") as info:
        jobs_from_config(str(path), 60.0)
    assert info.value.message.startswith(f"{path}:4: checks[1]: Checking 'softmax' at shape 1x50000000")


def test_cli_refuses_with_exit_2_quickly(tmp_path: Path) -> None:
    env = {"PATH": "", "NO_COLOR": "1", "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1", ENV_LIMIT: "8G"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gradcheck_cli", "run", "softmax", "--shape", "1,50000000",
                           "--trials", "1"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "needs about" in proc.stderr and "Traceback" not in proc.stderr
    assert time.perf_counter() - start < 20


CAPPED = textwrap.dedent("""\
    import numpy as np
    from gradcheck_cli.plugins import load_builtins
    from gradcheck_cli.registry import Registry, register_activation, registering
    from gradcheck_cli.resources import cap_memory
    from gradcheck_cli.runner import CheckOptions, run

    def hungry(x):
        return np.ones((4 << 30) // 8)[:x.size].reshape(x.shape)  # 4 GB, far past the cap

    registry = Registry()
    load_builtins(registry)
    with registering(registry, "test"):
        register_activation("hungry", forward=np.tanh, derivative=hungry)
    cap_memory(1 << 30)
    for row in run(["hungry", "tanh"], CheckOptions(trials=1), registry=registry).results:
        print(row.verdict.value, row.diagnosis)
    """)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA caps memory on Linux only")
def test_a_check_past_the_cap_is_an_error_row_not_a_killed_machine(tmp_path: Path) -> None:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CAPPED], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    first, *rest = proc.stdout.splitlines()
    assert first.startswith("ERROR ran out of memory: the check needed more than 1.1 GB"), proc.stdout
    assert "smaller --shape, or --fast" in first
    assert rest and rest[0].startswith("PASS")  # tanh, checked after it in the same capped process
    assert time.perf_counter() - start < 30


def test_the_estimate_knows_where_streaming_starts() -> None:
    from gradcheck_cli import resources, stream

    assert resources.STREAM_LIMIT == stream.STREAM_LIMIT
