"""Run many checks: each in its own process, with a timeout, several at once.

A check runs plugin code, which may raise, hang or kill its process. Each check runs in a
child process of its own (forked from the process that loaded the plugins, or spawned and
loading them again) that sends its rows back through a pipe; a child that times out is
killed with everything it started, one that dies is reported with its exit code or signal,
and every other check still runs. This runs inside the loader process of
:mod:`gradcheck_cli.worker`, never in the ``gradcheck`` process itself.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shlex
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any

from gradcheck_cli import parallel, processes, resources
from gradcheck_cli.errors import clip, suggest
from gradcheck_cli.registry import Registry
from gradcheck_cli.results import CheckResult, RunResult, Verdict
from gradcheck_cli.runner import CheckOptions, Spec, check_spec, reproduce_command


@dataclass(frozen=True)
class Job:
    """One configured check: what to run, how, under what name, and what to expect."""

    name: str
    spec: Spec
    options: CheckOptions
    expect: str = "pass"
    timeout: float | None = None
    reproduce: str = ""
    """The command that repeats this check, when it is not a plain ``gradcheck run`` (a config's check)."""


def error_row(job: Job, message: str) -> CheckResult:
    """An ERROR row for ``job`` carrying ``message``."""
    entry = job.spec.activation or job.spec.layer or job.spec.loss
    message = clip(message)
    return CheckResult(check=job.name, component="gradient" if entry is job.spec.loss else "jacobian",
                       convention=entry.conventions[0] if entry else "",
                       reproduce=job.reproduce or reproduce_command(job.spec.text, job.options, job.spec),
                       verdict=Verdict.ERROR, shape=_shape_of(job),
                       trials=job.options.n_trials, method=job.options.method, seed=job.options.seed,
                       origin=entry.origin if entry else "", diagnosis=message)


def _shape_of(job: Job) -> tuple[int, ...]:
    """The shape a row of ``job`` reports: a layer's first argument's, else the (B, K) points'."""
    layer = job.spec.layer.layer if job.spec.layer is not None else None
    if layer is not None and layer.signature.args:
        return job.options.shape or layer.signature.args[0].shape
    return job.options.shape if job.options.shape is not None and len(job.options.shape) > 2 \
        else job.options.point_shape


def run_job(job: Job, registry: Registry) -> list[CheckResult]:
    """Run one job in this process and apply its name and expectation."""
    try:
        rows = check_spec(job.spec, job.options, registry)
    except BaseException as exc:  # noqa: BLE001 - a plugin may even raise SystemExit
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f" at {frame.filename}:{frame.lineno}" if frame else ""
        rows = [error_row(job, resources.out_of_memory(exc) or f"the check raised {type(exc).__name__}: {exc}{where}")]
    return expect(rows, job)


def expect(rows: list[CheckResult], job: Job) -> list[CheckResult]:
    """Rename rows to the job's name; turn FAIL into XFAIL (PASS into XPASS) for expect: fail.

    Diagnoses and notes that quote user code are clipped (:func:`clip`) on the way out.
    """
    rows = [replace(r, check=job.name, diagnosis=clip(r.diagnosis), notes=tuple(clip(n) for n in r.notes),
                    reproduce=job.reproduce or r.reproduce)
            for r in rows]
    if job.expect != "fail":
        return rows
    if any(r.verdict is Verdict.FAIL for r in rows):
        return [replace(r, verdict=Verdict.XFAIL) if r.verdict is Verdict.FAIL else r for r in rows]
    if any(r.verdict is Verdict.ERROR for r in rows):
        return rows
    note = "expected to fail (expect: fail), but every component passed"
    return [replace(r, verdict=Verdict.XPASS, diagnosis=note) if r.verdict is Verdict.PASS else r for r in rows]


def _forked_child(job: Job, registry: Registry, conn: Connection, threads: int, parent: int,
                  inherited: Sequence[Connection], room: int | None) -> None:
    code = 1
    try:
        processes.isolate_self(parent)
        for other in inherited:  # the loader's line to gradcheck: a helper holding it would hide the loader's end
            other.close()
        _cap_memory(job, room)
        parallel.limit(threads)
        conn.send(run_job(job, registry))
        conn.close()
        code = 0
    finally:
        processes.leave(code)  # not waiting for threads the plugin left running; no traceback on stderr


def _cap_memory(job: Job, room: int | None) -> None:
    """A check may use its share of the memory there was when the suite started (``room``),
    and never less than twice its estimate: past that, a MemoryError (an ERROR row), not
    the kernel's OOM killer taking the machine."""
    if room is None:
        return
    resources.cap_memory(max(room, min(2 * resources.estimate_bytes(job.spec, job.options), room * 4)))


def _room(workers: int) -> int | None:
    """Each of ``workers`` checks' share of the memory available now (None if unknown)."""
    try:
        return resources.available_memory() // max(1, workers)
    except Exception:  # noqa: BLE001 - a cap is a safety net, never a reason to stop
        return None


def _spawned_child(load: Any, index: int, name: str, conn: Connection, threads: int, parent: int,
                   room: int | None) -> None:
    """A check in a spawned process: load the same plugins and config, then run check ``index``.

    It ends as a forked check does, without the plugin's atexit handlers (which could hang
    it past its report, or print once per check).
    """
    code = 1
    try:
        _spawned_check(load, index, name, conn, threads, parent, room)
        code = 0
    finally:
        processes.leave(code)


def _spawned_check(load: Any, index: int, name: str, conn: Connection, threads: int, parent: int,
                   room: int | None) -> None:
    from gradcheck_cli.worker import build_jobs

    processes.isolate_self(parent)
    parallel.limit(threads)
    try:
        registry, jobs = build_jobs(load)
    except BaseException as exc:  # noqa: BLE001 - reported as this check's row
        conn.send(f"loading the plugins again in this check's process failed: {type(exc).__name__}: {exc}")
        return
    if index >= len(jobs) or jobs[index].name != name:
        conn.send("loading the plugins again in this check's process gave other checks (a plugin registers "
                  "different entries each time it is imported); make its registrations deterministic")
        return
    _cap_memory(jobs[index], room)
    conn.send(run_job(jobs[index], registry))
    conn.close()


def _died(job: Job, exitcode: int | None) -> CheckResult:
    if exitcode is not None and exitcode < 0:
        message = (f"the check's process was {processes.exit_text(exitcode)} (a crash in native code, or "
                   f"the plugin killed its own process); the rest of the suite ran on")
    else:
        message = (f"the check's process exited with code {exitcode} before reporting (the "
                   f"plugin called os._exit or exit); the rest of the suite ran on")
    return error_row(job, message)


def _descriptor_budget() -> int:
    """Checks that may run at once without running out of file descriptors (about 4 each)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 64
    if soft == resource.RLIM_INFINITY:
        return 1 << 16
    return max(1, (int(soft) - 48) // 4)


# Seconds between looks for checks that ended without reporting.
POLL = 0.2


@dataclass
class _Running:
    proc: Any
    conn: Connection
    deadline: float | None


def run_jobs(jobs: Sequence[Job], registry: Registry, *, workers: int = 1, isolate: bool = True,
             load: Any = None, on_start: Callable[[int, int], None] | None = None,
             on_done: Callable[[int, list[CheckResult]], None] | None = None,
             inherited: Sequence[Connection] = ()) -> RunResult:
    """Run ``jobs``, each in a process of its own when ``isolate``, and keep their order.

    Processes are forked, or spawned where :func:`processes.start_method` says so; a
    spawned check loads ``load`` (a :class:`gradcheck_cli.worker.Load`) again to rebuild the
    registry. A check that outlives its timeout is killed with every process it started.
    ``on_start(index, pid)`` and ``on_done(index, rows)`` report progress; ``inherited``
    connections are closed in forked checks.
    """
    results: list[list[CheckResult] | None] = [None] * len(jobs)

    def finish(index: int, rows: list[CheckResult]) -> None:
        results[index] = rows
        if on_done is not None:
            on_done(index, rows)

    method = processes.start_method() if isolate else "none"
    if method == "spawn" and load is None:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "none"
    if method == "none":
        for i, job in enumerate(jobs):
            finish(i, run_job(job, registry))
        return RunResult(tuple(r for rows in results if rows for r in rows))

    ctx = multiprocessing.get_context(method)
    workers = max(1, min(workers, len(jobs), _descriptor_budget()))
    # Workers share the machine's cores: each gets its share of threads (at least one).
    threads = max(1, parallel.threads() // workers)
    room = _room(workers)
    pending = list(range(len(jobs)))
    running: dict[int, _Running] = {}
    me = os.getpid()
    while pending or running:
        while pending and len(running) < workers:
            i = pending.pop(0)
            try:
                started = _start(ctx, method, jobs, i, registry, load, threads, me, inherited, room)
            except OSError as exc:  # out of processes or file descriptors
                if running:
                    pending.insert(0, i)  # try again when a running check ends
                    break
                finish(i, [error_row(jobs[i], f"could not start a process for this check: {exc}; "
                                               f"lower --jobs or raise the limit")])
                continue
            running[i] = started
            if on_start is not None and started.proc.pid is not None:
                on_start(i, started.proc.pid)
        if not running:
            continue
        deadlines = [r.deadline for r in running.values() if r.deadline is not None]
        wait_for = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        # Wake up now and then to look for checks that ended without a word: a helper a check
        # forked inherits its pipe (and its process sentinel), so no end-of-file would come.
        wait_for = POLL if wait_for is None else min(wait_for, POLL)
        ready = wait([r.conn for r in running.values()], timeout=wait_for)
        now = time.monotonic()
        for i in list(running):
            run = running[i]
            if run.conn in ready or not run.proc.is_alive():
                rows = _receive(jobs[i], run)
            elif run.deadline is not None and now >= run.deadline:
                _stop(run)
                rows = [error_row(jobs[i], f"timed out after {jobs[i].timeout:g} s (per-check --timeout) and "
                                            f"was stopped with every process it started; the function hangs "
                                            f"or is far too slow at this size")]
            else:
                continue
            _end_group(run.proc.pid)
            run.conn.close()
            del running[i]
            finish(i, rows)
    return RunResult(tuple(r for rows in results if rows for r in rows))


def _start(ctx: Any, method: str, jobs: Sequence[Job], i: int, registry: Registry, load: Any, threads: int,
           me: int, inherited: Sequence[Connection], room: int | None) -> _Running:
    receive, send = ctx.Pipe(duplex=False)
    try:
        if method == "fork":
            proc = ctx.Process(target=_forked_child, args=(jobs[i], registry, send, threads, me, inherited, room),
                               daemon=True)
        else:
            proc = ctx.Process(target=_spawned_child, args=(load, i, jobs[i].name, send, threads, me, room),
                               daemon=True)
        proc.start()
    except BaseException:
        receive.close()
        send.close()
        raise
    send.close()
    limit = jobs[i].timeout
    return _Running(proc, receive, time.monotonic() + limit if limit else None)


def _receive(job: Job, run: _Running) -> list[CheckResult]:
    """The rows a finished check sent, or an ERROR row saying how its process ended."""
    try:
        if not run.conn.poll(0 if not run.proc.is_alive() else None):
            raise EOFError  # ended without a word (a helper may still hold the pipe open)
        sent = run.conn.recv()
    except (EOFError, OSError):
        if processes.join(run.proc, 1.0):
            return [_died(job, run.proc.exitcode)]
        # Alive, but its end of the pipe is closed (the plugin closed descriptors it did not
        # open): it can never report. Waiting for it would wedge the suite until gradcheck's
        # backstop gives every check up; it is stopped like a check past its timeout.
        _stop(run)
        return [error_row(job, "the check closed its connection to gradcheck's loader without reporting (the "
                               "plugin closes file descriptors it did not open) and was stopped with every "
                               "process it started; the rest of the suite ran on")]
    except Exception as exc:  # noqa: BLE001 - rows that cannot be unpickled
        sent = f"its result could not be read back: {type(exc).__name__}: {exc}"
    if not processes.join(run.proc, 5.0):  # sent its rows but does not exit (a non-daemon thread of the plugin)
        _stop(run)
    if isinstance(sent, str):
        return [error_row(job, sent)]
    rows: list[CheckResult] = sent
    return rows


def _stop(run: _Running) -> None:
    """Kill a check with every process it started, and collect its exit status."""
    processes.kill_tree(run.proc.pid)
    run.proc.join()


def _end_group(pid: int | None) -> None:
    """Kill what a finished check left running in its process group (background helpers)."""
    if pid is None or not hasattr(os, "killpg"):
        return
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def jobs_for(names: list[str], options: CheckOptions, registry: Registry, timeout: float | None) -> list[Job]:
    """One job per spec in ``names``; unknown names and inputs outside a domain raise UsageError."""
    from gradcheck_cli.runner import prepare_spec

    return [Job(name, prepare_spec(name, options, registry), options, timeout=timeout) for name in names]


def jobs_from_config(path: str, default_timeout: float | None) -> tuple[Registry, list[Job]]:
    """Load a config: its plugins and functions into a registry, its checks into jobs.

    Every problem (a bad key, a plugin that fails to import, an unknown name in a spec)
    raises :class:`ConfigError` naming the file and line before anything runs.
    """
    import sys

    from gradcheck_cli import inputs
    from gradcheck_cli.config import load_config
    from gradcheck_cli.errors import ConfigError, GradcheckError
    from gradcheck_cli.plugins import announce, default_registry, load_plugin, register_functions

    announce(f"config '{path}'")
    config = load_config(path)
    for folder in (str(config.folder.resolve()), os.getcwd()):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    registry = default_registry()
    for i, plugin in enumerate(config.plugins):
        local = config.folder / plugin
        source = str(local) if plugin.endswith(".py") or "/" in plugin else plugin
        try:
            load_plugin(source, registry)
        except GradcheckError as exc:
            raise ConfigError(f"{config.where(f'plugins[{i}]')}: {exc.message}") from exc
    register_functions(config.functions, config.folder, registry)
    jobs = []
    for i, check in enumerate(config.checks):
        merged = {**config.defaults, **check.options}
        key = f"checks[{i}]"
        try:
            from gradcheck_cli.runner import prepare_spec

            options = CheckOptions(
                seed=merged.get("seed", 0), trials=merged.get("trials", 3),
                shape=merged.get("shape"), method=merged.get("method", "central"),
                dtype=merged.get("dtype", "float64"), edges=merged.get("edges", False),
                fast=merged.get("fast", False), arg_shapes=merged.get("arg_shapes", ()),
                rtol=merged.get("rtol"), atol=merged.get("atol"),
                input=inputs.parse_matrix(merged["input"], "input") if "input" in merged else None,
                target=inputs.parse_matrix(merged["target"], "target") if "target" in merged else None,
            )
            options.validate()
            spec = prepare_spec(check.spec, options, registry)
        except GradcheckError as exc:
            raise ConfigError(f"{config.where(key)}: {exc.message}") from exc
        # A check of an entry the config maps (origin file.yaml:LINE) is repeated through the config;
        # built-ins and plugins repeat with gradcheck run (the row's own command).
        mapped = any(e is not None and e.origin.rsplit(":", 1)[-1].isdigit()
                     for e in (spec.activation, spec.layer, spec.loss))
        again = shlex.join(["gradcheck", "ci", str(path), "--only", check.name]) if mapped else ""
        jobs.append(Job(check.name, spec, options, check.expect, merged.get("timeout", default_timeout), again))
    return registry, jobs


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4); anything else is a usage error."""
    import re

    from gradcheck_cli.errors import UsageError

    found = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", text)  # ASCII digits: int() also takes '٣' and '1_0'
    index, count = (int(found[1]), int(found[2])) if found else (0, 0)
    if not 1 <= index <= count:
        raise UsageError(f"--shard expects I/N in ASCII digits with 1 <= I <= N (e.g. --shard 2/4 for the second "
                         f"of four CI jobs); got {text!r}.")
    return index, count


def select_only(jobs: list[Job], names: tuple[str, ...]) -> list[Job]:
    """The checks named by ``--only`` (a check's ``name:``, or its spec when it has none)."""
    from gradcheck_cli.errors import UsageError

    if not names:
        return jobs
    known = [j.name for j in jobs]
    for name in names:
        if name not in known:
            raise UsageError(f"--only '{name}' names no check of this config.{suggest(name, known)} Checks are named "
                             f"by their 'name:' key, or by their spec when they have none.")
    return [j for j in jobs if j.name in names]


def select_shard(jobs: list[Job], part: tuple[int, int] | None) -> list[Job]:
    """Checks I, I+N, I+2N, ... (1-based) of the suite: deterministic, and the N shards together
    run every check exactly once."""
    if part is None:
        return jobs
    index, count = part
    return jobs[index - 1::count]
