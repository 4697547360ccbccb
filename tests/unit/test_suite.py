"""run_jobs: checks in processes of their own, in order, with start and finish reported."""

from __future__ import annotations

import os
import time

import numpy as np

from gradcheck_cli.registry import Registry, register_activation, registering
from gradcheck_cli.results import Verdict
from gradcheck_cli.runner import CheckOptions, parse_spec
from gradcheck_cli.suite import Job, run_jobs


def _slow_tanh(x: np.ndarray) -> np.ndarray:
    if os.environ.get("GRADCHECK_TEST_SLOW") == "1":
        time.sleep(0.3)
        os.environ["GRADCHECK_TEST_SLOW"] = "0"  # once per process: a forked check starts with a copy
    return np.tanh(x)


def _jobs(count: int) -> tuple[Registry, list[Job]]:
    reg = Registry()
    with registering(reg, "test"):
        register_activation("slow_tanh", forward=_slow_tanh, derivative=lambda x: 1.0 - np.tanh(x) ** 2)
    options = CheckOptions(seed=0, trials=1, shape=(2, 3))
    return reg, [Job(f"slow_tanh #{i}", parse_spec("slow_tanh", reg), options) for i in range(count)]


def test_checks_run_in_processes_of_their_own_two_at_a_time(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    reg, jobs = _jobs(3)
    monkeypatch.setenv("GRADCHECK_TEST_SLOW", "1")
    started: list[tuple[int, int]] = []
    done: list[int] = []
    begin = time.perf_counter()
    result = run_jobs(jobs, reg, workers=2, on_start=lambda i, pid: started.append((i, pid)),
                      on_done=lambda i, rows: done.append(i))
    took = time.perf_counter() - begin
    assert os.environ["GRADCHECK_TEST_SLOW"] == "1"  # the sleeps happened elsewhere
    assert 0.6 <= took  # two rounds of sleeping checks
    assert sorted(i for i, _ in started) == [0, 1, 2]
    assert all(pid != os.getpid() for _, pid in started) and len({pid for _, pid in started}) == 3
    assert sorted(done) == [0, 1, 2]
    assert [r.check for r in result.results if r.component == "jacobian"] == [j.name for j in jobs]
    assert all(r.verdict is Verdict.PASS for r in result.results)


def test_without_processes_checks_run_here_in_order() -> None:
    reg, jobs = _jobs(2)
    done: list[int] = []
    result = run_jobs(jobs, reg, isolate=False, on_done=lambda i, rows: done.append(i))
    assert done == [0, 1]
    assert result.passed
