"""A shared thread pool for numpy work on large stacks.

numpy releases the GIL inside ufunc loops, so chunks of a stacked evaluation or of the
comparison run truly in parallel on threads, with no pickling and no copies. User code
runs on these threads only when it is marked :func:`gradcheck_cli.threadsafe` (the
built-ins are): a layer that keeps ``self.out`` between statements would race and give a
wrong, unreproducible number, and a false failure is the one thing a checker must not do.

``GRADCHECK_THREADS`` sets the number of threads (default: the CPUs this process may use,
at most 8); ``1`` turns threading off. A forked suite worker uses one thread when several
workers share the machine.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

T = TypeVar("T")
MAX_THREADS = 8
# Results from this many entries on are large enough for a probe's repeat call (the
# determinism check) to run on another thread, beside the first call.
BESIDE_SIZE = 1 << 16
_PREFIX = "gradcheck-pool"
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid that made it, pool): threads do not survive fork
_limit: list[int] = []


def threads() -> int:
    """How many threads chunked work may use here."""
    if _limit:
        return _limit[-1]
    configured = os.environ.get("GRADCHECK_THREADS", "")
    if configured.strip().isdigit() and int(configured) > 0:
        return int(configured)
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, available))


def limit(count: int) -> None:
    """Use at most ``count`` threads in this process from now on (suite workers)."""
    _limit.append(max(1, count))


def _executor() -> ThreadPoolExecutor:
    from concurrent.futures import ThreadPoolExecutor  # only when there is parallel work: ~10 ms to import

    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(threads(), thread_name_prefix=_PREFIX))
    return _pool[1]


def background(task: Callable[[], T], threaded: bool = True) -> Callable[[], T]:
    """Start ``task`` on the pool; return a function that waits for its result.

    Without threads the task runs when its result is first asked for, so the caller's
    order of work is the same either way. Asking again gives the same result (or error).
    """
    if not threaded or threads() <= 1 or _on_pool():
        return _Once(task)
    return _executor().submit(task).result


class _Once(Generic[T]):
    """A task run on first call; later calls give the same result or raise the same error."""

    def __init__(self, task: Callable[[], T]) -> None:
        self.task: Callable[[], T] | None = task
        self.outcome: tuple[bool, Any] = (False, None)

    def __call__(self) -> T:
        if self.task is not None:
            task, self.task = self.task, None
            try:
                self.outcome = (True, task())
            except BaseException as exc:
                self.outcome = (False, exc)
        ok, value = self.outcome
        if not ok:
            raise value
        result: T = value
        return result


def _on_pool() -> bool:
    """Is this a pool thread? Work it starts runs inline: waiting on the pool could deadlock it."""
    return threading.current_thread().name.startswith(_PREFIX)


def run_all(tasks: Sequence[Callable[[], T]], threaded: bool = True) -> list[T]:
    """Run ``tasks``, on the pool when ``threaded`` and worthwhile; results in order.

    An exception in a task is raised here, as if the tasks had run one after another.
    """
    if not threaded or threads() <= 1 or len(tasks) <= 1 or _on_pool():
        return [task() for task in tasks]
    pool = _executor()
    futures = [pool.submit(task) for task in tasks]
    return [future.result() for future in futures]
