"""Threads: the shared pool, the threadsafe marker, and identical numbers either way.

User code runs on worker threads only when it is marked threadsafe; everything the
threads compute must equal, bit for bit, what one thread computes.
"""

from __future__ import annotations

import multiprocessing
import platform
import sys
import threading
from typing import Any

import numpy as np
import pytest

from gradcheck_cli import conventions, inputs, numdiff, parallel
from gradcheck_cli.registry import Registry, is_threadsafe, register_activation, registering, threadsafe
from gradcheck_cli.registry.activations import sigmoid, softmax, softmax_jacobian, softmax_vjp
from gradcheck_cli.registry.losses import mse
from gradcheck_cli.results import Verdict
from gradcheck_cli.runner import CheckOptions, run
from gradcheck_cli.structure import ROWWISE, Pattern


@pytest.fixture
def two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADCHECK_THREADS", "2")


def test_run_all_keeps_order_and_raises_the_first_error(two_threads: None) -> None:
    assert parallel.threads() == 2
    assert parallel.run_all([lambda i=i: i * i for i in range(7)]) == [i * i for i in range(7)]

    def boom() -> int:
        raise ValueError("from a worker")

    with pytest.raises(ValueError, match="from a worker"):
        parallel.run_all([lambda: 1, boom, lambda: 3])


def test_thread_count_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADCHECK_THREADS", "1")
    seen: set[int] = set()
    parallel.run_all([lambda: seen.add(threading.get_ident()) for _ in range(4)])
    assert seen == {threading.get_ident()}  # one thread: everything ran here
    monkeypatch.setenv("GRADCHECK_THREADS", "junk")
    assert 1 <= parallel.threads() <= parallel.MAX_THREADS


def _in_child(queue: Any) -> None:
    queue.put(parallel.run_all([lambda i=i: i + 1 for i in range(4)]))


def test_a_forked_process_gets_a_pool_of_its_own(two_threads: None) -> None:
    parallel.run_all([lambda: 0, lambda: 1])  # the parent's pool exists before the fork
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_in_child, args=(queue,))
    child.start()
    assert queue.get(timeout=20) == [1, 2, 3, 4]  # the parent's pool threads do not exist there
    child.join(timeout=20)
    assert child.exitcode == 0


def test_builtins_are_marked_and_user_functions_are_not() -> None:
    assert all(is_threadsafe(fn) for fn in (softmax, softmax_vjp, sigmoid, mse))

    def mine(x: np.ndarray) -> np.ndarray:
        return x * 2.0

    assert not is_threadsafe(mine)
    assert threadsafe(mine) is mine and is_threadsafe(mine)

    class Layer:
        def forward(self, x: np.ndarray) -> np.ndarray:
            return x

    bound = Layer().forward
    assert threadsafe(bound) is bound  # bound methods take no attributes: left unmarked, no error
    assert not is_threadsafe(bound)


def _threads_used(fn: Any, shape: tuple[int, int], rng: np.random.Generator) -> set[int]:
    calls: set[int] = set()

    def recorded(x: np.ndarray) -> np.ndarray:
        calls.add(threading.get_ident())
        return fn(x)

    if is_threadsafe(fn):
        threadsafe(recorded)
    x = rng.normal(size=shape)
    evaluator = numdiff.Evaluator(recorded, x, inputs.step_scale(x, "real"))
    numdiff.Central().groups(evaluator, x, inputs.step_scale(x, "real"), Pattern(ROWWISE, shape, x.size), quick=True)
    return calls


def test_unmarked_code_never_runs_on_a_worker_thread(two_threads: None, rng: np.random.Generator) -> None:
    def user_softmax(x: np.ndarray) -> np.ndarray:  # same numbers as the built-in, but not marked
        return softmax(x)

    assert _threads_used(user_softmax, (1, 800), rng) == {threading.get_ident()}
    assert len(_threads_used(softmax, (1, 800), rng)) > 1


def test_threaded_estimates_equal_serial_ones_bit_for_bit(monkeypatch: pytest.MonkeyPatch,
                                                          rng: np.random.Generator) -> None:
    x = rng.normal(size=(1, 700))
    scale = inputs.step_scale(x, "real")
    pattern = Pattern(ROWWISE, x.shape, x.size)
    results = []
    for count in ("1", "2"):
        monkeypatch.setenv("GRADCHECK_THREADS", count)
        evaluator = numdiff.Evaluator(softmax, x, scale)
        assert evaluator.threaded  # chunks are threaded whenever the pool has threads
        quick = numdiff.Central().groups(evaluator, x, scale, pattern, quick=True)
        full = numdiff.Central().groups(evaluator, x, scale, pattern)
        results.append((quick, full))
    for serial, threaded in zip(results[0], results[1], strict=True):
        for a, b in zip(serial, threaded, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_vjp_that_cannot_share_x_across_a_stack_still_gets_every_column(rng: np.random.Generator) -> None:
    def looped_vjp(x: np.ndarray, g: np.ndarray) -> np.ndarray:
        # Row by row over x's first axis: a stack of g with one shared x gives the wrong shape.
        return np.stack([softmax_vjp(x[b:b + 1], g[..., b:b + 1, :])[..., 0, :] for b in range(x.shape[0])], axis=-2)

    reg = Registry()
    with registering(reg, "test"):
        register_activation("looped", forward=softmax, vjp=looped_vjp)
        register_activation("wrong_looped", forward=softmax,
                            vjp=lambda x, g: looped_vjp(x, g) * np.where(np.arange(x.shape[-1]) == 3, 1.001, 1.0))
    x = rng.normal(size=(3, 40))
    form, blocks = conventions.analytic_form(reg.get("looped"), "vjp", x, softmax(x), "rowwise")
    assert form == "blocks"
    np.testing.assert_allclose(blocks, softmax_jacobian(x).reshape(3 * 40, 40), rtol=1e-13, atol=1e-16)
    result = run(["looped", "wrong_looped"], CheckOptions(shape=(3, 40), trials=2), registry=reg)
    assert [r.verdict for r in result.results] == [Verdict.PASS, Verdict.FAIL]


def test_probes_still_catch_randomness_when_the_repeat_runs_on_another_thread(two_threads: None) -> None:
    n = parallel.BESIDE_SIZE
    x = np.random.default_rng(0).normal(size=(1, n))
    noise = np.random.default_rng(1)

    @threadsafe
    def dropout(v: np.ndarray) -> np.ndarray:
        return v * (noise.random(v.shape) > 0.1)

    with pytest.raises(numdiff.EvaluationError, match="not deterministic"):
        numdiff.Evaluator(dropout, x, inputs.step_scale(x, "real"), light=True)

    @threadsafe
    def noisy_vjp(v: np.ndarray, g: np.ndarray) -> np.ndarray:
        return softmax_vjp(v, g) * (1.0 + 1e-9 * noise.random())

    reg = Registry()
    with registering(reg, "test"):
        register_activation("noisy", forward=softmax, vjp=noisy_vjp)
    (row,) = run(["noisy"], CheckOptions(shape=(1, n), fast=True, trials=1), registry=reg).results
    assert row.verdict is Verdict.ERROR and "not deterministic" in row.diagnosis

    @threadsafe
    def noisy_jacobian(v: np.ndarray) -> np.ndarray:
        return softmax_jacobian(v) * (1.0 + 1e-9 * noise.random())

    k = int(np.sqrt(n)) + 1  # a K x K Jacobian large enough for its repeat call to run beside the first
    reg = Registry()
    with registering(reg, "test"):
        register_activation("noisy_jacobian", forward=softmax, jacobian=noisy_jacobian)
    (row,) = run(["noisy_jacobian"], CheckOptions(shape=(1, k), trials=1), registry=reg).results
    assert row.verdict is Verdict.ERROR and "not deterministic" in row.diagnosis


def test_work_started_on_a_pool_thread_runs_inline_instead_of_deadlocking(two_threads: None) -> None:
    def nested(i: int) -> list[int]:
        return parallel.run_all([lambda j=j: i * 10 + j for j in range(3)]) + [parallel.background(lambda: -i)()]

    assert parallel.run_all([lambda i=i: nested(i) for i in range(4)]) == [[i * 10, i * 10 + 1, i * 10 + 2, -i]
                                                                            for i in range(4)]


def test_allocator_tuning_defers_to_the_users_malloc_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradcheck_cli.allocator import keep_freed_memory

    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory() is True
