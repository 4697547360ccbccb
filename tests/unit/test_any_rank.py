"""Activations and losses at a --shape of any rank: checked argument by argument, like layers."""

from __future__ import annotations

import pytest

from gradcheck_cli import CheckOptions, run
from gradcheck_cli.results import Verdict


def rows(spec: str, shape: tuple[int, ...]) -> list[tuple[str, str, tuple[int, ...], Verdict]]:
    result = run([spec], CheckOptions(shape=shape, trials=2))
    return [(r.component, r.convention, r.shape, r.verdict) for r in result.results]


def test_a_rank_3_activation_checks_each_convention_along_the_last_axis() -> None:
    assert rows("softmax", (2, 3, 6)) == [("jacobian", "jacobian", (2, 3, 6), Verdict.PASS),
                                          ("jacobian", "vjp", (2, 3, 6), Verdict.PASS)]


def test_a_rank_3_pair_has_its_activation_loss_and_chain_rows() -> None:
    got = rows("softmax+cross_entropy", (2, 3, 5))
    assert [(c, v) for c, _, _, v in got] == [("jacobian", Verdict.PASS), ("jacobian", Verdict.PASS),
                                             ("gradient", Verdict.PASS), ("chain", Verdict.PASS)]


@pytest.mark.parametrize(("variant", "said"), [
    ("softmax@diagonal", "misses part of the dependence"),
    ("log_softmax@transposed", ""),
])
def test_wrong_variants_still_fail_at_rank_3(variant: str, said: str) -> None:
    result = run([variant], CheckOptions(shape=(2, 2, 4), trials=1))
    failed = [r for r in result.results if r.verdict is Verdict.FAIL]
    assert failed and said in failed[0].diagnosis, [r.diagnosis for r in result.results]


def test_a_named_shape_is_for_layers_only() -> None:
    from gradcheck_cli.errors import UsageError

    with pytest.raises(UsageError, match=r"--shape x=\.\.\. names an argument, but 'softmax' is an activation"):
        run(["softmax"], CheckOptions(arg_shapes=(("x", (2, 3)),)))
