"""The loader process: plugins, configs and checks run there, never in ``gradcheck`` itself.

The ``gradcheck`` process never imports user code. A plugin that calls ``os._exit(0)``,
crashes, raises KeyboardInterrupt, hangs, starts a thread or prints while it loads could
otherwise end the gate green without checking, wedge it, or corrupt a report on stdout.

``gradcheck`` starts one loader process (forked, or spawned where fork is unsafe) with a
:class:`Load`: which command, plugins, config and options. The loader loads the built-ins,
entry points, plugins and config, builds the checks and runs them, each in a process of
its own (:func:`gradcheck_cli.suite.run_jobs`), and sends back plain data only: what is
loading, which checks there are, when each starts (its pid) and its rows.
:func:`supervise` follows it from ``gradcheck``:

- loading is bounded by the timeout; a loader that ends, crashes or hangs while loading is
  a load error (exit 2) naming the plugin it was loading;
- a loader that dies or stops answering after loading leaves ERROR rows for every check it
  did not report (never a pass), and a backstop deadline per started check catches a
  loader that does not enforce timeouts any more;
- SIGINT, SIGTERM, SIGHUP (and the other signals of :data:`processes.STOP_SIGNALS`) kill
  every process of the run, its checks and whatever they started, before ``gradcheck``
  exits with 128 + the signal's number. A signal the caller set to be ignored (``nohup``,
  a background job of a script) stays ignored.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from gradcheck_cli import processes
from gradcheck_cli.errors import ExitCode, GradcheckError, PluginError, clip

if TYPE_CHECKING:
    from gradcheck_cli.registry import Registry
    from gradcheck_cli.results import CheckResult, RunResult
    from gradcheck_cli.runner import CheckOptions
    from gradcheck_cli.suite import Job

# Seconds the loader may overrun a check's own timeout (killing a tree takes a moment)
# before gradcheck decides that the loader itself is stuck.
BACKSTOP_GRACE = 10.0
# Seconds a loader that reported everything may take to exit before it is killed.
EXIT_GRACE = 5.0
# Seconds between looks at whether the loader is still alive.
POLL = 0.2


@dataclass(frozen=True)
class Load:
    """What a loader process loads and does; plain data, so a spawned process can receive it.

    ``command`` is ``run``, ``check``, ``ci``, ``list`` or ``explain``; ``source`` the plugin
    (check), the config file (ci) or the name to explain.
    """

    command: str
    plugins: tuple[str, ...] = ()
    specs: tuple[str, ...] = ()
    options: CheckOptions | None = None
    timeout: float | None = None
    source: str = ""
    shard: tuple[int, int] | None = None
    only: tuple[str, ...] = ()


class Interrupted(Exception):
    """``gradcheck`` received SIGINT, SIGTERM, SIGHUP or another stop signal; every process of the run is gone."""

    def __init__(self, signum: int, finished: int, total: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.finished = finished
        self.total = total

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def message(self) -> str:
        name = signal.Signals(self.signum).name
        done = f"; {self.finished} of {self.total} checks had finished" if self.total else ""
        return (f"interrupted by {name}: every check process was stopped{done}. No report was written "
                f"(an existing report file was left as it was).")


def build_jobs(load: Load) -> tuple[Registry, list[Job]]:
    """The registry and the checks ``load`` describes (runs plugin code: loader processes only)."""
    from gradcheck_cli.plugins import default_registry, load_plugin
    from gradcheck_cli.suite import jobs_for, jobs_from_config, select_only, select_shard

    if load.command == "ci":
        registry, jobs = jobs_from_config(load.source, load.timeout)
        return registry, select_shard(select_only(jobs, load.only), load.shard)
    assert load.options is not None
    if load.command == "check":
        registry = default_registry()
        names = load_plugin(load.source, registry)
        if not names:
            raise PluginError(f"Plugin '{load.source}' loaded but registered nothing. Call "
                              f"register_activation(...) or register_loss(...) at import time.")
        return registry, jobs_for(names, load.options, registry, load.timeout)
    registry = default_registry(load.plugins)
    return registry, jobs_for(list(load.specs), load.options, registry, load.timeout)


def _loader(load: Load, conn: Connection, workers: int, parent: int) -> None:
    """The loader process's main function."""
    processes.isolate_self(parent)
    try:
        _serve(load, conn, workers, parent)
    except BaseException as exc:  # noqa: BLE001 - a plugin's KeyboardInterrupt, SystemExit, anything
        with contextlib.suppress(Exception):
            conn.send(("error", clip(f"{type(exc).__name__}: {exc}"), int(ExitCode.USAGE)))
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        processes.leave(0)  # without a plugin's atexit handlers, spawned or forked alike


def _serve(load: Load, conn: Connection, workers: int, parent: int) -> None:
    from gradcheck_cli.plugins import announcing

    def tell(what: str) -> None:
        conn.send(("loading", what))

    try:
        with announcing(tell):
            if load.command == "list":
                conn.send(("result", _entries(load)))
                return
            if load.command == "explain":
                conn.send(("result", _explain(load, conn)))
                return
            registry, jobs = build_jobs(load)
    except GradcheckError as exc:
        conn.send(("error", clip(exc.message), int(exc.exit_code)))
        return
    except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt or SystemExit raised by a plugin
        conn.send(("load-raised", clip(f"{type(exc).__name__}: {exc}")))
        return
    from gradcheck_cli.suite import error_row, run_jobs

    conn.send(("jobs", [(job.name, job.timeout, error_row(job, "")) for job in jobs]))
    processes.take_down_with(parent)
    if hasattr(signal, "SIGCHLD"):  # a plugin that ignored it would have the kernel reap checks unseen
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    run_jobs(jobs, registry, workers=workers, load=load,
             on_start=lambda i, pid: conn.send(("start", i, pid)),
             on_done=lambda i, rows: conn.send(("done", i, rows)), inherited=(conn,))
    conn.send(("end",))


def _entries(load: Load) -> tuple[list[Any], list[tuple[str, str, str]]]:
    from gradcheck_cli.plugins import default_registry

    registry = default_registry(load.plugins)
    return [spec.summary() for spec in registry], registry.fused_summaries()


def _explain(load: Load, conn: Connection) -> Any:
    from gradcheck_cli.explanation import explain
    from gradcheck_cli.plugins import default_registry

    registry = default_registry(load.plugins)
    conn.send(("step", f"explaining '{load.source}'"))
    return explain(load.source, load.options, registry=registry)


@dataclass
class _Run:
    """What gradcheck knows of the loader's checks."""

    names: list[str]
    timeouts: list[float | None]
    templates: list[CheckResult]
    rows: dict[int, list[CheckResult]]
    started: dict[int, tuple[int, float | None]]  # index -> (pid, backstop deadline)
    keep: set[int]  # this process's children from before the run: not ours to sweep
    complete: bool = False


def supervise(load: Load, *, workers: int = 1, progress: Callable[[int, int, str], None] | None = None,
              meanwhile: Callable[[], object] | None = None) -> Any:
    """Run ``load`` in a loader process and follow it; return its result.

    ``run``/``check``/``ci`` give a :class:`RunResult`; ``list`` gives (entries, fused);
    ``explain`` an :class:`~gradcheck_cli.explanation.Explanation`. Load problems raise
    :class:`GradcheckError`; a signal raises :class:`Interrupted` once every process is gone.
    ``meanwhile`` is work of gradcheck's own, done while the loader loads.
    """
    ctx: Any = multiprocessing.get_context(processes.start_method())
    try:
        receive, send = ctx.Pipe(duplex=False)
    except OSError as exc:
        raise _cannot_start(exc) from None
    # Not a daemon: daemonic processes may not start processes (its checks); _clean_up ends it.
    proc = ctx.Process(target=_loader, args=(load, send, workers, os.getpid()), daemon=False)
    run = _Run([], [], [], {}, {}, set())
    with _signals_raise(run):
        try:
            try:
                proc.start()
            except OSError as exc:
                send.close()
                raise _cannot_start(exc) from None
            # Children from before the run, and those starting the loader made (spawn's
            # resource tracker), are not ours to sweep; the loader has started no check yet.
            run.keep = set(processes.children(os.getpid())) - {proc.pid}
            send.close()
            if meanwhile is not None:
                meanwhile()
            return _follow(load, proc, receive, run, progress)
        finally:
            _clean_up(proc, run)
            receive.close()


def _cannot_start(exc: OSError) -> GradcheckError:
    """The loader process could not be started: out of processes, memory or file descriptors."""
    # Not a usage error (exit 3): the checks could not run.
    return GradcheckError(f"Could not start gradcheck's loader process: {exc.strerror or exc} (the machine, or "
                          f"this user, is out of processes, memory or file descriptors). Nothing was checked. "
                          f"Try again when fewer processes run, or raise the limit (ulimit -u, ulimit -n).",
                          ExitCode.NOT_RUN)


class _Signalled(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _ignore(signum: int, frame: object) -> None:
    """A stop signal that came while the run is already being stopped."""


@contextlib.contextmanager
def _signals_raise(run: _Run) -> Iterator[None]:
    """Stop signals raise in the main thread (once; later ones are ignored while cleaning up).

    Only signals that would end gradcheck by their default action are caught: one the caller
    ignores (``nohup`` ignores SIGHUP, a script's background job SIGINT) or handles stays so.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        for sig in previous:
            # Not SIG_IGN: a second signal already caught by Python would then be reported
            # as "Exception ignored ... Signal 15 ignored due to race condition".
            signal.signal(sig, _ignore)
        raise _Signalled(signum)

    defaults = (signal.SIG_DFL, signal.default_int_handler)
    previous = {sig: signal.signal(sig, handler) for sig in processes.STOP_SIGNALS
                if signal.getsignal(sig) in defaults}
    try:
        yield
    except _Signalled as got:
        raise Interrupted(got.signum, len(run.rows), len(run.names)) from None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _Garbled(Exception):
    """What came from the loader is not one of its messages (a plugin wrote into its pipe)."""


def _next(conn: Connection, proc: Any, deadline: float | None) -> tuple[Any, ...] | None:
    """The loader's next message; None when it is gone; TimeoutError past ``deadline``;
    :class:`_Garbled` when what came cannot be read as a message."""
    from multiprocessing.connection import wait

    # Wake up now and then to see whether the loader ended: the checks it forked inherit its
    # pipe and its process sentinel, so neither tells when the loader alone is gone.
    while not wait([conn], POLL):
        if not proc.is_alive():
            if conn.poll(0):
                break
            return None
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError
    try:
        message = conn.recv()
    except (EOFError, OSError):
        return None
    except Exception as exc:  # noqa: BLE001 - bytes a plugin wrote into the pipe: whatever unpickling raises
        raise _Garbled(clip(f"{type(exc).__name__}: {exc}")) from None
    if not (isinstance(message, tuple) and message and isinstance(message[0], str)):
        raise _Garbled(f"an object of type {type(message).__name__}")
    return message


def _follow(load: Load, proc: Any, conn: Connection, run: _Run,
            progress: Callable[[int, int, str], None] | None) -> Any:
    step = "loading the built-in entries"
    deadline = time.monotonic() + load.timeout if load.timeout else None
    while True:
        loading = step.startswith("loading")
        advice = ("Make importing it only register entries" if loading else
                  "Run 'gradcheck run' on it to see which part fails")
        try:
            message = _next(conn, proc, deadline)
        except _Garbled as garbled:
            raise _step_error(loading)(f"{_capital(step)} garbled gradcheck's line to its loader process (what "
                                       f"came was not a message: {garbled}): the code it runs writes into file "
                                       f"descriptors it did not open. Nothing was checked. {advice}.") from None
        except TimeoutError:
            raise _step_error(loading)(f"{_capital(step)} did not finish within {load.timeout:g} s (--timeout): "
                                       f"{'its import' if loading else 'it'} hangs or is far too slow. Nothing was "
                                       f"checked. {advice}, or raise --timeout.") from None
        if message is None:
            processes.join(proc, EXIT_GRACE)
            raise _step_error(loading)(f"{_capital(step)} ended gradcheck's loader process "
                                       f"({processes.exit_text(proc.exitcode)}) before "
                                       f"{'anything was checked' if loading else 'it finished'}: the code it runs "
                                       f"exits, crashes or kills its process. {advice}.")
        kind = message[0]
        if kind == "loading":
            step = f"loading {message[1]}"
        elif kind == "step":
            step = message[1]
        elif kind == "error":
            raise GradcheckError(message[1], ExitCode(message[2]))
        elif kind == "load-raised":
            raise _step_error(loading)(f"{_capital(step)} raised {message[1]}. Nothing was checked. {advice}.")
        elif kind == "result":
            run.complete = True
            return message[1]
        elif kind == "jobs":
            for name, timeout, template in message[1]:
                run.names.append(name)
                run.timeouts.append(timeout)
                run.templates.append(template)
            if progress is not None:
                progress(0, len(run.names), "")
            return _follow_checks(proc, conn, run, progress)


class CheckCrashed(GradcheckError):
    """Code run for ``explain`` after loading crashed or hung: a check that could not run (exit 3)."""

    exit_code = ExitCode.NOT_RUN


def _step_error(loading: bool) -> type[GradcheckError]:
    return PluginError if loading else CheckCrashed


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _follow_checks(proc: Any, conn: Connection, run: _Run,
                   progress: Callable[[int, int, str], None] | None) -> RunResult:
    from gradcheck_cli.results import RunResult

    why = ""
    while len(run.rows) < len(run.names):
        backstops = [d for i, (_, d) in run.started.items() if d is not None and i not in run.rows]
        try:
            message = _next(conn, proc, min(backstops) if backstops else None)
        except TimeoutError:
            why = ("gradcheck's loader process stopped answering (a check ran past its timeout and was "
                   "not stopped); every process of the run was killed")
            break
        except _Garbled as garbled:
            why = (f"gradcheck's line to its loader process was garbled (what came was not a message: {garbled}): "
                   f"a plugin writes into file descriptors it did not open; every process of the run was killed")
            break
        if message is None:
            processes.join(proc, EXIT_GRACE)
            why = why or (f"gradcheck's loader process ended ({processes.exit_text(proc.exitcode)}) before this "
                          f"check reported: it was killed from outside, or a plugin's code ended it")
            break
        if message[0] == "start":
            index, pid = message[1], message[2]
            limit = run.timeouts[index]
            run.started[index] = (pid, time.monotonic() + limit + BACKSTOP_GRACE if limit else None)
        elif message[0] == "done":
            run.rows[message[1]] = message[2]
            processes.sweep(run.keep | {proc.pid})  # daemons a check left behind in a session of their own
            if progress is not None:
                progress(len(run.rows), len(run.names), run.names[message[1]])
        elif message[0] == "end":
            run.complete = True
            break
        elif message[0] == "error":  # gradcheck's own failure in the loader, after loading
            why = f"gradcheck's loader process failed: {message[1]}"
    rows: list[CheckResult] = []
    for i, template in enumerate(run.templates):
        if i in run.rows:
            rows += run.rows[i]
        else:
            rows.append(replace(template, diagnosis=why or "the check did not report"))
    return RunResult(tuple(rows))


def _clean_up(proc: Any, run: _Run) -> None:
    """Leave nothing behind: the loader, its checks, and whatever they started."""
    if proc.pid is None:
        return
    if not processes.join(proc, EXIT_GRACE if run.complete else 0):
        processes.kill_tree(proc.pid)
    for index, (pid, _) in run.started.items():
        if index not in run.rows and hasattr(os, "killpg"):  # still running when the loader went
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
    proc.join()
    processes.sweep(run.keep)
