"""Processes that run user code: started in their own group, bounded, killed with every descendant.

A check runs plugin code, which may fork, ignore SIGTERM, start a daemon in a new session
or hang. Three mechanisms keep the gate in control:

- each process that runs user code starts its own process group (``os.setsid``), so one
  ``killpg`` reaches everything it forked that stayed in the group;
- on Linux it also asks to die with its parent (``PR_SET_PDEATHSIG``), so killing the
  parent (even with SIGKILL) takes the whole chain down, and the ``gradcheck`` process is a
  child subreaper (``PR_SET_CHILD_SUBREAPER``): a descendant that escaped into a session of
  its own is re-parented to it when its parent dies, where :func:`orphans` finds it;
- :func:`kill_tree` stops a process and all its descendants (SIGSTOP first, so nothing
  forks while the tree is walked), then kills them with SIGKILL.

Where ``fork`` is unsafe or missing (macOS, Windows) processes are spawned: see
:func:`start_method`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from typing import Any

# prctl(2) options (linux/prctl.h).
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
START_METHODS = ("fork", "spawn")
# Signals whose default action ends a process and that someone outside may send on purpose:
# Ctrl-C, Ctrl-\, a CI runner's cancel, a closed terminal, `timeout -s`, a CPU-time limit
# (ulimit -t). gradcheck catches each to kill every process of the run before it exits; their
# default action would leave the checks' helpers running (SIGKILL is the one it cannot catch).
STOP_SIGNALS = tuple(getattr(signal, name) for name in
                     ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGUSR1", "SIGUSR2", "SIGXCPU")
                     if hasattr(signal, name))


def start_method() -> str:
    """``fork`` on Linux, ``spawn`` elsewhere; ``GRADCHECK_START_METHOD`` overrides.

    macOS can fork, but forking a process that has loaded some system libraries (Accelerate,
    Objective-C runtimes) crashes or deadlocks the child, which is why Python spawns there
    by default; Windows has no fork at all.
    """
    from gradcheck_cli.errors import UsageError

    chosen = os.environ.get("GRADCHECK_START_METHOD", "").strip().lower()
    available = multiprocessing.get_all_start_methods()
    if chosen:
        if chosen not in START_METHODS or chosen not in available:
            usable = [m for m in START_METHODS if m in available]
            raise UsageError(f"GRADCHECK_START_METHOD={chosen!r} is not a start method this machine "
                             f"offers; use one of {', '.join(usable)} (or unset it).")
        return chosen
    return "fork" if sys.platform.startswith("linux") and "fork" in available else "spawn"


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux): an escaped daemon stays findable by :func:`orphans`."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def isolate_self(parent: int) -> None:
    """In a freshly started process that runs user code: own session, and die with ``parent``.

    If ``parent`` already died before the death signal was armed, exit at once. The handlers
    ``gradcheck`` installed for its own clean-up (inherited through fork) are put back to
    Python's defaults: here a SIGTERM ends the process, as anywhere else.
    """
    for sig in STOP_SIGNALS:
        handler = signal.getsignal(sig)
        if callable(handler) and handler is not signal.default_int_handler:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    if hasattr(os, "setsid"):
        with contextlib.suppress(OSError):  # already a group leader (a spawned process may be)
            os.setsid()
    if _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL)) and os.getppid() != parent:
        os._exit(1)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _Forgiving):
            setattr(sys, name, _Forgiving(stream))


def leave(code: int) -> None:
    """End this process now with ``code``, after flushing stdout and stderr.

    A forked process ends this way (``os._exit``); a spawned one would run the atexit
    handlers and finalizers a plugin registered, which may hang or print once per process.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def take_down_with(parent: int) -> None:
    """From now on, when ``parent`` dies (even of SIGKILL), kill this process's children and all
    they started, then exit (Linux); a SIGTERM from anyone does the same.

    Used by the loader once loading is over (from then on only gradcheck's own code runs in
    its main thread, so the handler runs at once). Its checks die with it anyway, but the
    helpers a check started have no death signal of their own: without this, ``gradcheck``
    killed with SIGKILL (the OOM killer, ``timeout -s KILL``) would leave them running.
    Forked checks reset the handler (:func:`isolate_self`).
    """

    def stop(signum: int, _frame: object) -> None:
        for child in children(os.getpid()):
            kill_tree(child)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    if _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM)) and os.getppid() != parent:
        stop(int(signal.SIGTERM), None)


class _Forgiving:
    """A standard stream whose reader may stop reading (``gradcheck ... | head -1``).

    A plugin's ``print`` would then raise BrokenPipeError inside its import or its check,
    and a reader that went away would turn into a load error or an ERROR row. gradcheck
    itself treats that reader as no error; here too, later writes are discarded.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._discard()

    def _discard(self) -> None:
        # The descriptor, not just this object: the buffered text and raw writes go nowhere too.
        from gradcheck_cli.report import silence

        with contextlib.suppress(OSError):
            silence(self._stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _children_proc(pid: int) -> list[int] | None:
    """Direct children of ``pid`` from /proc (Linux); None where that file is missing."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    found: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as handle:
                found += [int(p) for p in handle.read().split()]
        except OSError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended meanwhile
            return None  # kernel without CONFIG_PROC_CHILDREN
    return found


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found = _children_proc(pid)
    if found is not None:
        return found
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency
        return []
    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def orphans(keep: set[int]) -> list[int]:
    """This process's children that are not in ``keep``: descendants that were adopted."""
    return [p for p in children(os.getpid()) if p not in keep]


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, sig)


def kill_tree(pid: int) -> None:
    """Kill ``pid``, its process group and every descendant (SIGKILL), without reaping ``pid``.

    Each process is stopped before its children are listed, so that none can fork a new
    one in between; stopped processes are then killed together.
    """
    if sys.platform == "win32":  # pragma: no cover - no signals to stop with
        _kill_tree_windows(pid)
        return
    stopped: list[int] = []
    frontier = [pid]
    seen: set[int] = set()
    while frontier:
        nxt = []
        for p in frontier:
            if p in seen:
                continue
            seen.add(p)
            _signal(p, signal.SIGSTOP)
            stopped.append(p)
            nxt += children(p)
        frontier = nxt
    for p in stopped:
        with contextlib.suppress(OSError):
            os.killpg(p, signal.SIGKILL)  # the group, if p leads one (its non-escaped helpers)
        _signal(p, signal.SIGKILL)
    for p in stopped[1:]:
        reap(p)


def _kill_tree_windows(pid: int) -> None:  # pragma: no cover - tested only where Windows runs
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def join(proc: Any, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``proc`` (a multiprocessing Process) to end; whether it did.

    Polls its exit status, and whether the process still exists: ``proc.join(timeout)``
    waits on its sentinel, which a helper it forked inherits and holds open (and which the
    process may close itself), and where a plugin made the kernel reap children (SIGCHLD
    ignored) no exit status ever comes.
    """
    end = time.monotonic() + timeout
    while proc.is_alive():
        if os.name == "posix":  # on Windows os.kill(pid, 0) would terminate the process
            try:
                os.kill(proc.pid, 0)  # a zombie still exists; is_alive() collects its status next time
            except ProcessLookupError:
                return True  # reaped by the kernel: gone, without an exit status
            except OSError:
                pass
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)
    return True


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is a dead child of this process (no zombie left)."""
    if not hasattr(os, "WNOHANG"):  # Windows: no zombies to collect
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def sweep(keep: set[int]) -> int:
    """Kill every adopted orphan (see :func:`become_subreaper`) not in ``keep``; how many."""
    found = orphans(keep)
    for pid in found:
        kill_tree(pid)
        if hasattr(os, "WNOHANG"):
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, 0)
    return len(found)


def exit_text(exitcode: int | None) -> str:
    """``exit code 7`` or ``killed by SIGSEGV`` for a process's exit status."""
    if exitcode is None:
        return "no exit status"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"
