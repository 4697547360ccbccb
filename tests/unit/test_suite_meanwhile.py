"""run_jobs' ``meanwhile``: the caller's own work, done once while the first checks run."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest

from gradcheck_cli.registry import Registry, register_activation, registering
from gradcheck_cli.results import Verdict
from gradcheck_cli.runner import CheckOptions, parse_spec
from gradcheck_cli.suite import Job, run_jobs

_slept: list[bool] = []


def _slow_once_tanh(x: np.ndarray) -> np.ndarray:
    if not _slept:  # once per process: a forked check starts with a copy of this list
        _slept.append(True)
        time.sleep(0.3)
    return np.tanh(x)


def _jobs() -> tuple[Registry, list[Job]]:
    reg = Registry()
    with registering(reg, "test"):
        register_activation("slow_tanh", forward=_slow_once_tanh, derivative=lambda x: 1.0 - np.tanh(x) ** 2)
    options = CheckOptions(seed=0, trials=1, shape=(2, 3))
    return reg, [Job(f"slow_tanh #{i}", parse_spec("slow_tanh", reg), options) for i in range(3)]


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_meanwhile_runs_once_while_the_first_checks_run() -> None:
    reg, jobs = _jobs()
    calls: list[int] = []

    def meanwhile() -> None:
        calls.append(len(multiprocessing.active_children()))

    _slept.clear()  # each forked check sleeps 0.3 s on its first forward call
    start = time.perf_counter()
    result = run_jobs(jobs, reg, workers=2, meanwhile=meanwhile)
    assert time.perf_counter() - start >= 0.6  # two rounds of sleeping checks: they really ran in processes
    assert calls == [2]  # once, with both workers' checks still running
    assert [r.verdict for r in result.results if r.component == "jacobian"] == [Verdict.PASS] * 3


def test_meanwhile_runs_before_checks_without_processes() -> None:
    reg, jobs = _jobs()
    order: list[str] = []
    _slept.append(True)
    try:
        result = run_jobs(jobs[:1], reg, isolate=False, meanwhile=lambda: order.append("meanwhile"),
                          progress=lambda done, total, label: order.append(label))
    finally:
        _slept.clear()
    assert order == ["meanwhile", "slow_tanh #0"]
    assert result.passed
