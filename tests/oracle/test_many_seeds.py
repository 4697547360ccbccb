"""Every built-in correct entry passes for 200 seeds, in float64 and float32, and at the
--edges probes; every deliberately wrong variant fails for all of them.

One run() per seed covers every registry entry at once (shape 2x3, one trial), so the
whole sweep stays within a few seconds.
"""

from __future__ import annotations

import pytest

from gradcheck_cli.registry import Registry
from gradcheck_cli.results import Verdict
from gradcheck_cli.runner import CheckOptions, run

SEEDS = range(200)


def _surprises(registry: Registry, options: CheckOptions) -> list[tuple[str, str, str, str]]:
    # Layers need their own shapes: tests/unit/test_builtin_layers.py checks them.
    names = [spec.name for spec in registry if spec.kind != "layer"]
    result = run(names, options, registry=registry)
    wrong = []
    for row in result.results:
        expected_fail = "@" in row.check
        if row.verdict is Verdict.ERROR or (row.verdict is Verdict.FAIL) != expected_fail:
            wrong.append((row.check, row.component, row.verdict.value, row.diagnosis[:120]))
    return wrong


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_builtin_for_200_seeds(registry: Registry, dtype: str) -> None:
    surprises = []
    for seed in SEEDS:
        surprises += [(seed, *s) for s in _surprises(registry, CheckOptions(seed=seed, trials=1, shape=(2, 3),
                                                                            dtype=dtype))]
    assert not surprises, surprises[:5]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(2, 3), (3, 6)])
def test_every_builtin_at_the_edges(registry: Registry, dtype: str, shape: tuple[int, int]) -> None:
    # The edge probes are fixed patterns; the seed only draws the loss targets.
    surprises = []
    for seed in range(5):
        options = CheckOptions(seed=seed, trials=1, shape=shape, dtype=dtype, edges=True)
        surprises += [(seed, *s) for s in _surprises(registry, options)]
    assert not surprises, surprises[:5]
