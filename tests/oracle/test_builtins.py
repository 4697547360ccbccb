"""The built-in table as oracle: every correct entry and pair passes, for many seeds."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_cli.plugins import default_registry
from gradcheck_cli.registry import Registry
from gradcheck_cli.results import RunResult, Verdict
from gradcheck_cli.runner import CheckOptions, run

SEEDS = range(30)
# Layers need their own shapes: tests/unit/test_builtin_layers.py checks them.
BUILTINS = [spec.name for spec in default_registry() if "@" not in spec.name and spec.kind != "layer"]
PAIRS = [
    "softmax+mse", "softmax+cross_entropy", "log_softmax+nll", "sigmoid+binary_cross_entropy",
    "tanh+mse", "relu+huber", "softmax+kl_div", "sigmoid+mse", "identity+mae", "gelu+log_cosh",
    "silu+huber", "elu+mse", "mish+log_cosh", "softplus+mse", "leaky_relu+mae", "gelu_tanh+mse",
    "softsign+mse", "hard_tanh+mse", "log_softmax+mse", "sigmoid+cross_entropy",
]
FUSED = {"softmax+cross_entropy", "log_softmax+nll", "sigmoid+binary_cross_entropy"}


def _not_passing(result: RunResult) -> list[tuple[str, str, str]]:
    return [(r.component, r.verdict.value, r.diagnosis) for r in result.results if r.verdict is not Verdict.PASS]


def test_the_table_holds_the_documented_names() -> None:
    for name in ("softmax", "log_softmax", "sigmoid", "tanh", "relu", "mse", "cross_entropy",
                 "binary_cross_entropy"):
        assert name in BUILTINS
    assert len(BUILTINS) >= 20


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_entry_passes_for_many_seeds(registry: Registry, name: str) -> None:
    spec = registry.get(name)
    failures = {}
    for seed in SEEDS:
        result = run([name], CheckOptions(seed=seed, trials=1, shape=(3, 5)), registry=registry)
        components = [r.component for r in result.results]
        if spec.kind == "activation":
            assert components.count("jacobian") == len(spec.conventions)
            assert set(components) <= {"jacobian", "second_derivative"}
            assert components.count("second_derivative") in (0, len(spec.second))
        else:
            assert components == ["gradient"]
        if _not_passing(result):
            failures[seed] = _not_passing(result)
        assert result.exit_code == 0 or seed in failures
    assert not failures


@pytest.mark.parametrize("pair", PAIRS)
def test_pair_passes_including_chain_and_fused(registry: Registry, pair: str) -> None:
    failures = {}
    for seed in range(10):
        result = run([pair], CheckOptions(seed=seed, trials=1, shape=(3, 5)), registry=registry)
        components = [r.component for r in result.results]
        assert "gradient" in components and "chain" in components and "jacobian" in components
        assert ("fused" in components) == (pair in FUSED)
        if _not_passing(result):
            failures[seed] = _not_passing(result)
    assert not failures


def test_results_are_reproducible_per_seed(registry: Registry) -> None:
    a = run(["softmax+cross_entropy"], CheckOptions(seed=3, trials=2), registry=registry)
    b = run(["softmax+cross_entropy"], CheckOptions(seed=3, trials=2), registry=registry)
    c = run(["softmax+cross_entropy"], CheckOptions(seed=4, trials=2), registry=registry)
    assert [r.to_dict() for r in a.results] == [r.to_dict() for r in b.results]
    assert [r.max_abs_error for r in a.results] != [r.max_abs_error for r in c.results]


def test_richardson_and_complex_methods_pass_too(registry: Registry) -> None:
    for method in ("richardson", "complex"):
        for spec in ("softmax+cross_entropy", "tanh+mse", "sigmoid+binary_cross_entropy", "gelu"):
            result = run([spec], CheckOptions(seed=1, trials=2, shape=(2, 4), method=method), registry=registry)
            assert not _not_passing(result), (method, spec)


def test_default_options_pass_on_a_larger_shape(registry: Registry) -> None:
    result = run(["softmax+cross_entropy", "log_softmax+nll", "gelu+mse"], CheckOptions(shape=(6, 12)),
                 registry=registry)
    assert result.passed, _not_passing(result)
    assert result.summary()["PASS"] == len(result.results)
    assert all(r.shape == (6, 12) and r.trials == 3 for r in result.results)
    assert all(np.isfinite(r.max_abs_error) for r in result.results if r.max_abs_error is not None)
