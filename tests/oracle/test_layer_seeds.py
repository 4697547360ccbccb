"""The built-in layers over many seeds, in float64 and float32: every correct row PASS (or KINK
at a max-pool tie) and every wrong variant FAIL on its argument. A false-alarm sweep for the
per-argument checks, as tests/oracle/false_alarms.py is for activations and losses."""

from __future__ import annotations

import pytest

from gradcheck_cli import CheckOptions, run
from gradcheck_cli.plugins import default_registry
from gradcheck_cli.results import Verdict

LAYERS = ("dense", "conv2d", "maxpool2d", "batchnorm", "layernorm", "dropout", "dense+mse")
SEEDS = range(40)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_built_in_layers_pass_and_their_variants_fail_over_many_seeds(dtype: str) -> None:
    registry = default_registry()
    variants = [s.name for s in registry if s.kind == "layer" and s.is_variant]
    surprises = []
    for seed in SEEDS:
        options = CheckOptions(seed=seed, trials=1, dtype=dtype)
        for row in run(list(LAYERS), options, registry=registry).results:
            if row.verdict not in (Verdict.PASS, Verdict.KINK):
                surprises.append(f"{row.check} wrt {row.wrt} seed {seed}: {row.verdict} {row.diagnosis[:120]}")
        for name in variants:
            rows = run([name], options, registry=registry).results
            if not any(r.verdict is Verdict.FAIL for r in rows):
                surprises.append(f"{name} seed {seed}: no FAIL")
    assert not surprises, "\n".join(surprises)
