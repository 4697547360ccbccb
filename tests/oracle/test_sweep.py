"""No false alarm on a correct built-in, and every wrong variant fails, alone and inside pairs.

The whole sweep (every activation, loss and ACT+LOSS pair, float64 and float32, with and
without --edges, seeds 0..199, default shape and trials) is slow: ``pytest -m slow``. A
sample of the pairs that used to raise false alarms (kinks of mae reached through an
activation in float32, softmax+mae at logits of +-1000) runs in the default suite.
"""

from __future__ import annotations

import os

import pytest
from false_alarms import all_specs, expected_verdicts, report, surprises, sweep

from gradcheck_cli.registry import Registry
from gradcheck_cli.results import CheckResult, Verdict

KINKED = ["selu", "elu", "relu", "leaky_relu", "hard_tanh", "softsign", "hard_sigmoid", "softmax"]
# Where the false alarms were: (seed, dtype, edges) per spec, from the sweep before the fix.
KNOWN = [(0, "float32", False, "selu+mae"), (0, "float32", True, "softmax+mae"),
         (1, "float32", True, "softmax+mae"), (3, "float32", True, "softmax+mae"),
         (45, "float64", True, "tanh+nll"), (45, "float64", True, "hard_tanh+nll"), (71, "float64", True, "tanh+nll")]


@pytest.mark.parametrize(("seed", "dtype", "edges", "spec"), KNOWN)
def test_the_known_false_alarms_are_gone(registry: Registry, seed: int, dtype: str, edges: bool, spec: str) -> None:
    found = surprises(seed, dtype, edges, [spec], registry)
    assert not found, report(found)


def test_a_sample_of_kinked_pairs_and_wrong_variants(registry: Registry) -> None:
    specs = [f"{act}+mae" for act in KINKED] + ["softmax@diagonal+mae", "relu+mse@no_mean", "tanh@sign_flip+huber",
                                               "softmax+cross_entropy", "softmax@wrong_input+cross_entropy"]
    found = [s for seed in range(2) for dtype in ("float64", "float32") for edges in (False, True)
             for s in surprises(seed, dtype, edges, specs, registry)]
    assert not found, report(found)


def test_a_chain_row_names_the_loss_kink_it_reaches(registry: Registry) -> None:
    from gradcheck_cli.runner import CheckOptions, run

    rows = run(["selu+mae"], CheckOptions(seed=0, dtype="float32"), registry=registry).results
    chain = next(r for r in rows if r.component == "chain")
    assert chain.verdict is Verdict.KINK
    assert "pred - target at [0,2] = -9e-05 is a kink of mae, reached through selu from z[0,2]" in chain.diagnosis
    assert "valid subgradient" in chain.diagnosis


def test_the_classifier_tells_domain_errors_from_real_ones(registry: Registry) -> None:
    def row(check: str, component: str, diagnosis: str) -> CheckResult:
        return CheckResult(check=check, component=component, verdict=Verdict.ERROR, diagnosis=diagnosis)

    mismatch = "tanh outputs -0.5 at [0, 1], outside cross_entropy's prediction domain (the open interval (0, 1))"
    assert Verdict.ERROR in expected_verdicts(row("tanh+cross_entropy", "chain", mismatch), registry)
    assert Verdict.ERROR not in expected_verdicts(row("tanh+cross_entropy", "jacobian", mismatch), registry)
    assert Verdict.ERROR not in expected_verdicts(row("tanh+mse", "chain", "forward raised ValueError"), registry)
    assert expected_verdicts(row("softmax@diagonal+mse", "chain", ""), registry) == (Verdict.FAIL,)
    assert expected_verdicts(row("softmax@diagonal+cross_entropy", "fused", ""), registry) == (Verdict.PASS,
                                                                                                Verdict.KINK)
    assert expected_verdicts(row("relu+mse@no_mean", "jacobian", ""), registry) == (Verdict.PASS, Verdict.KINK)


def test_the_sweep_covers_every_entry_and_pair(registry: Registry) -> None:
    specs = all_specs(registry)
    acts = [e.name for e in registry if e.kind == "activation"]
    losses = [e.name for e in registry if e.kind == "loss"]
    assert len(specs) == len(acts) + len(losses) + len(acts) * len(losses)
    assert "softmax@diagonal+mse@no_mean" in specs and "selu+mae" in specs


@pytest.mark.slow
def test_no_false_alarm_over_200_seeds() -> None:
    # Two processes (this machine has two cores); see tests/oracle/false_alarms.py for the rules.
    # Pairs holding a wrong variant run for every 4th seed (50 seeds): their correct rows are
    # those of the correct pairs, which run for all 200.
    found = sweep(range(200), processes=min(2, os.cpu_count() or 1), variant_pair_stride=4)
    assert not found, report(found)
