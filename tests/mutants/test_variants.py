"""The shipped wrong variants MUST fail, with the diagnosis naming the mistake."""

from __future__ import annotations

import pytest

from gradcheck_cli.plugins import default_registry
from gradcheck_cli.registry import Registry
from gradcheck_cli.results import CheckResult, Verdict
from gradcheck_cli.runner import CheckOptions, run

DIAGNOSES = {
    "softmax@diagonal": "only the Jacobian's diagonal",
    "softmax@wrong_input": "fed f(x)",
    "tanh@sign_flip": "sign flipped",
    "log_softmax@transposed": "transposed",
    "mse@no_mean": "1/N of a mean",
    "mse@factor2": "1/2",
    "softmax@batch_sum": "leak",
}
# Layers need their own shapes: tests/unit/test_builtin_layers.py checks them.
VARIANTS = [spec.name for spec in default_registry() if "@" in spec.name and spec.kind != "layer"]
SEEDS = range(6)


def test_every_documented_variant_is_registered() -> None:
    assert set(DIAGNOSES) <= set(VARIANTS)


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_fails_for_every_seed(registry: Registry, name: str) -> None:
    for seed in SEEDS:
        result = run([name], CheckOptions(seed=seed, trials=1, shape=(3, 5)), registry=registry)
        assert result.exit_code == 1, (seed, [r.to_dict() for r in result.results])
        failed = [r for r in result.results if r.verdict is Verdict.FAIL]
        assert failed, seed
        for row in failed:
            assert row.max_abs_error is not None and row.tolerance is not None
            assert row.max_abs_error > row.tolerance
            assert row.ratio is not None and row.ratio > 1
            assert row.worst_index is not None
            assert f"--seed {seed}" in row.reproduce
            if name in DIAGNOSES:
                assert DIAGNOSES[name] in row.diagnosis, (seed, row.diagnosis)


@pytest.mark.parametrize("shape", [(1, 4), (2, 3), (4, 6)])
@pytest.mark.parametrize("name", sorted(set(DIAGNOSES) - {"softmax@batch_sum"}))
def test_variant_diagnosis_holds_across_shapes(registry: Registry, name: str, shape: tuple[int, int]) -> None:
    result = run([name], CheckOptions(seed=11, trials=2, shape=shape), registry=registry)
    (row,) = result.results
    assert row.verdict is Verdict.FAIL
    assert DIAGNOSES[name] in row.diagnosis, row.diagnosis


def test_batch_leak_is_invisible_with_one_row_and_caught_with_two(registry: Registry) -> None:
    one = run(["softmax@batch_sum"], CheckOptions(seed=0, shape=(1, 5)), registry=registry)
    two = run(["softmax@batch_sum"], CheckOptions(seed=0, shape=(2, 5)), registry=registry)
    assert one.passed, "with B = 1 the whole-batch sum is the row sum: nothing to flag"
    assert two.results[0].verdict is Verdict.FAIL
    assert "leak" in two.results[0].diagnosis


def test_diagonal_variant_worst_entry_is_off_the_diagonal(registry: Registry) -> None:
    (row,) = run(["softmax@diagonal"], CheckOptions(seed=2, shape=(3, 5)), registry=registry).results
    assert row.worst_index is not None
    b_out, i, b_in, j = row.worst_index
    assert b_out == b_in and i != j
    assert row.analytic == 0.0
    assert row.numeric is not None and row.numeric < 0  # -p_i p_j


def test_no_mean_names_the_element_count(registry: Registry) -> None:
    (row,) = run(["mse@no_mean"], CheckOptions(seed=0, shape=(3, 5)), registry=registry).results
    assert "15 = N" in row.diagnosis


def _by_component(rows: tuple[CheckResult, ...]) -> dict[str, list[CheckResult]]:
    out: dict[str, list[CheckResult]] = {}
    for row in rows:
        out.setdefault(row.component, []).append(row)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diagonal_pair_blames_the_activation(registry: Registry, seed: int) -> None:
    result = run(["softmax@diagonal+mse"], CheckOptions(seed=seed, trials=1, shape=(3, 5)), registry=registry)
    rows = _by_component(result.results)
    assert [r.verdict for r in rows["jacobian"]] == [Verdict.FAIL]
    assert [r.verdict for r in rows["gradient"]] == [Verdict.PASS]
    (chain,) = rows["chain"]
    assert chain.verdict is Verdict.FAIL
    assert "activation Jacobian" in chain.diagnosis
    assert "loss gradient" not in chain.diagnosis
    assert "fused" not in rows
    assert result.exit_code == 1


def test_wrong_loss_in_a_pair_blames_the_loss(registry: Registry) -> None:
    result = run(["softmax+mse@no_mean"], CheckOptions(seed=0, trials=1, shape=(3, 5)), registry=registry)
    rows = _by_component(result.results)
    assert all(r.verdict is Verdict.PASS for r in rows["jacobian"])
    (grad,) = rows["gradient"]
    assert grad.verdict is Verdict.FAIL and "1/N of a mean" in grad.diagnosis
    (chain,) = rows["chain"]
    assert chain.verdict is Verdict.FAIL
    assert "loss gradient" in chain.diagnosis and "activation Jacobian" not in chain.diagnosis


def test_both_wrong_names_both(registry: Registry) -> None:
    result = run(["tanh@sign_flip+mse@factor2"], CheckOptions(seed=0, trials=1, shape=(3, 5)), registry=registry)
    (chain,) = _by_component(result.results)["chain"]
    assert chain.verdict is Verdict.FAIL
    assert "activation Jacobian" in chain.diagnosis and "loss gradient" in chain.diagnosis


def test_fused_formula_of_the_base_pair_still_passes(registry: Registry) -> None:
    result = run(["log_softmax@transposed+nll"], CheckOptions(seed=0, trials=1, shape=(3, 5)), registry=registry)
    rows = _by_component(result.results)
    assert rows["jacobian"][0].verdict is Verdict.FAIL and "transposed" in rows["jacobian"][0].diagnosis
    assert rows["chain"][0].verdict is Verdict.FAIL
    assert rows["fused"][0].verdict is Verdict.PASS


def test_json_rows_carry_the_diagnosis(registry: Registry) -> None:
    data = run(["softmax@wrong_input"], CheckOptions(seed=0), registry=registry).to_dict()
    assert data["schema"] == 1 and data["exit_code"] == 1
    assert data["summary"]["FAIL"] == 1
    (row,) = data["results"]
    assert row["verdict"] == "FAIL" and "fed f(x)" in row["diagnosis"]
    assert len(row["worst_index"]) == 4


@pytest.mark.parametrize("name", sorted(DIAGNOSES))
def test_explain_with_defaults_shows_every_variant_flagged(registry: Registry, name: str) -> None:
    from gradcheck_cli.explanation import explain

    exp = explain(name, registry=registry)
    assert exp.rows.exit_code == 1
    assert DIAGNOSES[name] in exp.rows.results[0].diagnosis
