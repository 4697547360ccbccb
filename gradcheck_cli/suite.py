"""Run many checks: each in its own process, with a timeout, several at once.

A check runs plugin code, which may raise, hang or kill its process. Each check is forked
into a child process that sends its rows back through a pipe; a child that times out is
terminated, one that dies is reported with its exit code or signal, and every other check
still runs. Where ``fork`` is unavailable, checks run in this process (no timeout).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any

from gradcheck_cli import parallel, resources
from gradcheck_cli.registry import Registry
from gradcheck_cli.results import CheckResult, RunResult, Verdict
from gradcheck_cli.runner import CheckOptions, Spec, check_spec, reproduce_command

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Job:
    """One configured check: what to run, how, under what name, and what to expect."""

    name: str
    spec: Spec
    options: CheckOptions
    expect: str = "pass"
    timeout: float | None = None


def _error_row(job: Job, message: str) -> CheckResult:
    entry = job.spec.activation or job.spec.loss
    return CheckResult(check=job.name, component="jacobian" if job.spec.activation else "gradient",
                       convention=entry.conventions[0] if entry else "",
                       reproduce=reproduce_command(job.spec.text, job.options, job.spec),
                       verdict=Verdict.ERROR, shape=job.options.point_shape,
                       trials=job.options.n_trials, method=job.options.method, seed=job.options.seed,
                       origin=entry.origin if entry else "", diagnosis=message)


def run_job(job: Job, registry: Registry) -> list[CheckResult]:
    """Run one job in this process and apply its name and expectation."""
    try:
        rows = check_spec(job.spec, job.options, registry)
    except BaseException as exc:  # noqa: BLE001 - a plugin may even raise SystemExit
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f" at {frame.filename}:{frame.lineno}" if frame else ""
        rows = [_error_row(job, resources.out_of_memory(exc) or f"the check raised {type(exc).__name__}: {exc}{where}")]
    return expect(rows, job)


def expect(rows: list[CheckResult], job: Job) -> list[CheckResult]:
    """Rename rows to the job's name; turn FAIL into XFAIL (PASS into XPASS) for expect: fail."""
    rows = [replace(r, check=job.name) for r in rows]
    if job.expect != "fail":
        return rows
    if any(r.verdict is Verdict.FAIL for r in rows):
        return [replace(r, verdict=Verdict.XFAIL) if r.verdict is Verdict.FAIL else r for r in rows]
    if any(r.verdict is Verdict.ERROR for r in rows):
        return rows
    note = "expected to fail (expect: fail), but every component passed"
    return [replace(r, verdict=Verdict.XPASS, diagnosis=note) if r.verdict is Verdict.PASS else r for r in rows]


def _child(job: Job, registry: Registry, conn: Connection, threads: int) -> None:
    parallel.limit(threads)
    rows = run_job(job, registry)
    conn.send(rows)
    conn.close()


def _died(job: Job, exitcode: int | None) -> CheckResult:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        message = (f"the check's process was killed by {name} (a crash in native code, or "
                   f"the plugin killed its own process); the rest of the suite ran on")
    else:
        message = (f"the check's process exited with code {exitcode} before reporting (the "
                   f"plugin called os._exit or exit); the rest of the suite ran on")
    return _error_row(job, message)


def run_jobs(jobs: Sequence[Job], registry: Registry, *, workers: int = 1, isolate: bool = True,
             progress: Progress | None = None, meanwhile: Callable[[], object] | None = None) -> RunResult:
    """Run ``jobs`` (each isolated in a forked process when ``isolate``) and keep their order.

    ``meanwhile`` is work of the caller's own (loading the report modules) done once while
    the first checks run in their processes; without processes, before them.
    """
    results: list[list[CheckResult] | None] = [None] * len(jobs)
    done = 0

    def finish(index: int, rows: list[CheckResult]) -> None:
        nonlocal done
        results[index] = rows
        done += 1
        if progress is not None:
            progress(done, len(jobs), jobs[index].name)

    can_fork = isolate and "fork" in multiprocessing.get_all_start_methods()
    if not can_fork:
        if meanwhile is not None:
            meanwhile()
        for i, job in enumerate(jobs):
            finish(i, run_job(job, registry))
        return RunResult(tuple(r for rows in results if rows for r in rows))

    ctx = multiprocessing.get_context("fork")
    # Workers share the machine's cores: each gets its share of threads (at least one).
    threads = max(1, parallel.threads() // max(1, min(workers, len(jobs))))
    pending = list(range(len(jobs)))
    running: dict[int, tuple[Any, Connection, float | None]] = {}
    while pending or running:
        while pending and len(running) < max(1, workers):
            i = pending.pop(0)
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(jobs[i], registry, send, threads), daemon=True)
            proc.start()
            send.close()
            limit = jobs[i].timeout
            deadline = time.monotonic() + limit if limit else None
            running[i] = (proc, receive, deadline)
        if meanwhile is not None:
            prepare, meanwhile = meanwhile, None
            prepare()
        deadlines = [d for _, _, d in running.values() if d is not None]
        wait_for = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        ready = wait([c for _, c, _ in running.values()], timeout=wait_for)
        now = time.monotonic()
        for i in list(running):
            proc, conn, deadline = running[i]
            if conn in ready:
                try:
                    rows = conn.recv()
                except EOFError:
                    proc.join()
                    rows = [_died(jobs[i], proc.exitcode)]
                proc.join()
            elif deadline is not None and now >= deadline:
                _stop(proc)
                rows = [_error_row(jobs[i], f"timed out after {jobs[i].timeout:g} s (per-check "
                                            f"--timeout); the function hangs or is far too slow "
                                            f"at this size")]
            else:
                continue
            conn.close()
            del running[i]
            finish(i, rows)
    return RunResult(tuple(r for rows in results if rows for r in rows))


def _stop(proc: Any) -> None:
    proc.terminate()
    proc.join(1.0)
    if proc.is_alive() and proc.pid is not None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()


def jobs_from_config(path: str, default_timeout: float) -> tuple[Registry, list[Job]]:
    """Load a config: its plugins and functions into a registry, its checks into jobs.

    Every problem (a bad key, a plugin that fails to import, an unknown name in a spec)
    raises :class:`ConfigError` naming the file and line before anything runs.
    """
    import sys

    from gradcheck_cli import inputs
    from gradcheck_cli.config import load_config
    from gradcheck_cli.errors import ConfigError, GradcheckError
    from gradcheck_cli.plugins import default_registry, load_plugin, register_functions

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
            from gradcheck_cli.runner import check_explicit_input, parse_spec

            options = CheckOptions(
                seed=merged.get("seed", 0), trials=merged.get("trials", 3),
                shape=merged.get("shape", (4, 10)), method=merged.get("method", "central"),
                dtype=merged.get("dtype", "float64"), edges=merged.get("edges", False),
                fast=merged.get("fast", False),
                rtol=merged.get("rtol"), atol=merged.get("atol"),
                input=inputs.parse_matrix(merged["input"], "input") if "input" in merged else None,
                target=inputs.parse_matrix(merged["target"], "target") if "target" in merged else None,
            )
            options.validate()
            spec = parse_spec(check.spec, registry)
            check_explicit_input(spec, options)
            options.validate(spec)
        except GradcheckError as exc:
            raise ConfigError(f"{config.where(key)}: {exc.message}") from exc
        jobs.append(Job(check.name, spec, options, check.expect, merged.get("timeout", default_timeout)))
    return registry, jobs


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4); anything else is a usage error."""
    from gradcheck_cli.errors import UsageError

    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index = count = 0
    if not 1 <= index <= count:
        raise UsageError(f"--shard expects I/N with 1 <= I <= N (e.g. --shard 2/4 for the second of four CI "
                         f"jobs); got {text!r}.")
    return index, count


def select_shard(jobs: list[Job], part: tuple[int, int] | None) -> list[Job]:
    """Checks I, I+N, I+2N, ... (1-based) of the suite: deterministic, and the N shards together
    run every check exactly once."""
    if part is None:
        return jobs
    index, count = part
    return jobs[index - 1::count]
