"""Column-chunked ("streamed") comparison, used above stream.STREAM_LIMIT entries.

The limit is lowered here so that small inputs take the streamed path; its verdicts must
match the in-memory path's.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_cli import stream
from gradcheck_cli.plugins import load_builtins
from gradcheck_cli.registry import Registry, register_activation, registering
from gradcheck_cli.registry.activations import softmax, softmax_jacobian, softmax_vjp
from gradcheck_cli.results import Verdict
from gradcheck_cli.runner import CheckOptions, run


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "STREAM_LIMIT", 100)
    monkeypatch.setattr(stream, "CHUNK_BYTES", 8 * 60 * 7)  # a few columns per chunk


def _registry() -> Registry:
    reg = Registry()
    load_builtins(reg)
    with registering(reg, "test"):
        register_activation("s_vjp", forward=softmax, vjp=softmax_vjp)
        register_activation("s_jvp", forward=softmax,
                            jvp=lambda x, v: np.einsum("bij,bj->bi", softmax_jacobian(x), v))
        register_activation("s_vjp_off", forward=softmax,
                            vjp=lambda x, g: softmax_vjp(x, g) * (1 + 1e-6 * (np.arange(x.shape[-1]) == 3)))
    return reg


@pytest.mark.parametrize("name", ["s_vjp", "s_jvp", "softmax@diagonal", "softmax@batch_sum", "s_vjp_off",
                                  "sigmoid"])
def test_streamed_verdicts_match_the_in_memory_ones(streamed: None, name: str) -> None:
    reg = _registry()
    options = CheckOptions(seed=1, trials=2, shape=(3, 20))
    rows = run([name], options, registry=reg).results
    jacobian_rows = [r for r in rows if r.component == "jacobian"]
    expected_fail = name in ("softmax@diagonal", "softmax@batch_sum", "s_vjp_off")
    assert jacobian_rows and all((r.verdict is Verdict.FAIL) == expected_fail for r in jacobian_rows), \
        [(r.convention, r.verdict, r.diagnosis) for r in jacobian_rows]
    # An elementwise function's diagonal derivative is compared as its diagonal: nothing to stream.
    streams = name != "sigmoid"
    assert any("column chunks" in note for r in jacobian_rows for note in r.notes) == streams


def test_a_large_elementwise_check_stays_on_the_diagonal() -> None:
    # 8,000 inputs: a 6.4e7-entry Jacobian, but only its 8,000 diagonal entries can be non-zero
    # (the probes verify it), so no column chunks and no K^2 work.
    jacobian, second = run(["sigmoid"], CheckOptions(seed=0, trials=1, shape=(1, 8_000))).results
    assert jacobian.verdict is Verdict.PASS and not any("column chunks" in n for n in jacobian.notes)
    assert second.component == "second_derivative" and second.verdict is Verdict.PASS


def test_streamed_failure_names_the_wrong_entry(streamed: None) -> None:
    row = run(["s_vjp_off"], CheckOptions(seed=0, trials=1, shape=(1, 30)), registry=_registry()).results[0]
    assert row.verdict is Verdict.FAIL
    assert row.worst_index is not None and row.worst_index[1] == 3  # the output row the VJP scaled
