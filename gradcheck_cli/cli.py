"""The ``gradcheck`` command: parse -> load config -> run -> report -> exit code.

Nothing else lives here: every command builds jobs through :mod:`gradcheck_cli.api`-level
functions and hands plain results to :mod:`gradcheck_cli.report`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from gradcheck_cli.errors import GradcheckError

if TYPE_CHECKING:
    from gradcheck_cli.results import RunResult
    from gradcheck_cli.runner import CheckOptions
    from gradcheck_cli.worker import Load

app = typer.Typer(
    name="gradcheck",
    help="Check hand-written derivatives against finite differences, and say what is wrong.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

DEFAULT_TIMEOUT = 600.0


def ascii_int(value: str | int) -> int:
    """Parse an integer option like click's INT, minus what ``int()`` also reads: '٤', '４', '4_0'."""
    if isinstance(value, int):
        return value  # the default
    if not re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        raise typer.BadParameter(f"expected a whole number written in ASCII digits 0-9, e.g. 3; got {value!r}.")
    return int(value)


def ascii_number(value: str | float) -> float:
    """Parse a number option like click's FLOAT, minus what ``float()`` also reads: '٣', '３', '1_0'."""
    from gradcheck_cli.inputs import ascii_float

    number = ascii_float(value)
    if number is None:
        raise typer.BadParameter(f"expected a number written in ASCII, e.g. 1e-6 or 30; got {value!r}.")
    return number


Seed = Annotated[int, typer.Option(parser=ascii_int, metavar="INTEGER",
                                    help="Random seed; runs repeat exactly with the same seed.")]
Trials = Annotated[int, typer.Option(parser=ascii_int, metavar="INTEGER", help="Random sample points per check.")]
Shape = Annotated[list[str] | None, typer.Option(
    help="Input shape: B,K (batch rows, features; default 4,10) or any rank for a layer's first input "
         "(default: the layer's own); NAME=2,3 sets a layer argument's shape. Repeatable.")]
InputOpt = Annotated[Optional[str], typer.Option("--input", help="Explicit input, e.g. 2,4,2,1; ';' separates rows.")]  # noqa: UP045
TargetOpt = Annotated[Optional[str], typer.Option("--target", help="Explicit loss target, same layout as --input.")]  # noqa: UP045
Method = Annotated[str, typer.Option(help="Finite-difference method: central, richardson or complex.")]
Dtype = Annotated[str, typer.Option(help="Dtype the checked code runs in: float64 or float32.")]
Fast = Annotated[bool, typer.Option("--fast", help="Check seeded random projections u^T J d, not every entry.")]
Edges = Annotated[bool, typer.Option("--edges", help="Add edge probes: +-1000 logits, ties, saturation, p near 0/1.")]
Rtol = Annotated[Optional[float], typer.Option(  # noqa: UP045
    parser=ascii_number, metavar="FLOAT", help="Relative tolerance added to every entry's bound (default 0).")]
Atol = Annotated[Optional[float], typer.Option(  # noqa: UP045
    parser=ascii_number, metavar="FLOAT", help="Absolute tolerance added to every entry.")]
Plugins = Annotated[Optional[list[str]], typer.Option("--plugin", help="Plugin file or module to load (repeatable).")]  # noqa: UP045
JsonPath = Annotated[Optional[str], typer.Option("--json", help="Write a JSON report to PATH ('-' for stdout).")]  # noqa: UP045
JunitPath = Annotated[Optional[str], typer.Option("--junit-xml", help="Write a JUnit XML report to PATH.")]  # noqa: UP045
Jobs = Annotated[int, typer.Option("--jobs", "-j", parser=ascii_int, metavar="INTEGER",
                                    help="Checks to run at once, each in its own process.")]
Timeout = Annotated[float, typer.Option(
    parser=ascii_number, metavar="FLOAT",
    help="Seconds a single check may take before it is stopped; 0 or inf: no limit.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Details, worst entries and heatmaps for every row.")]
SaveFailures = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--save-failures", metavar="DIR", help="Write failing inputs as .npz files to DIR.")]


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`GradcheckError` into its message on stderr and its exit code."""
    from gradcheck_cli.worker import Interrupted

    try:
        yield
    except GradcheckError as exc:
        from gradcheck_cli.report import silence, terminal

        try:
            terminal.console(sys.stderr).print(f"gradcheck: error: {exc.message}", style="red", soft_wrap=True)
        except OSError:  # stderr is closed or full: the exit code still says what happened
            silence(sys.stderr)
        raise typer.Exit(int(exc.exit_code)) from None
    except Interrupted as stop:
        sys.stderr.write(f"gradcheck: {stop.message}\n")
        raise typer.Exit(stop.exit_code) from None


def _options(seed: int, trials: int, shape: list[str] | None, input_text: str | None, target_text: str | None,
             method: str, rtol: float | None, atol: float | None, dtype: str = "float64",
             edges: bool = False, fast: bool = False) -> CheckOptions:
    from gradcheck_cli import inputs
    from gradcheck_cli.runner import CheckOptions

    shapes = inputs.parse_shapes(shape or [])
    options = CheckOptions(
        seed=seed, trials=trials, shape=shapes[0], arg_shapes=shapes[1],
        input=inputs.parse_matrix(input_text, "--input") if input_text is not None else None,
        target=inputs.parse_matrix(target_text, "--target") if target_text is not None else None,
        method=method, rtol=rtol, atol=atol, dtype=dtype, edges=edges, fast=fast,
    )
    options.validate()
    return options


@dataclass(frozen=True)
class Outputs:
    """Where a run's reports go: --json, --junit-xml, --save-failures, and how verbose."""

    json: str | None = None
    junit: str | None = None
    save_failures: str | None = None
    verbose: bool = False

    @property
    def stdout_taken(self) -> bool:
        """A report goes to standard output ('-', or a path to it such as /dev/stdout): the table moves to stderr."""
        from gradcheck_cli.report import standard_stream

        return any(path is not None and standard_stream(path) is sys.stdout for path in (self.json, self.junit))

    def check(self) -> None:
        """Refuse report paths that cannot work before anything runs (exit 2 means nothing checked)."""
        from gradcheck_cli.report import check_paths

        check_paths({"--json": self.json, "--junit-xml": self.junit}, {"--save-failures": self.save_failures})

    @contextlib.contextmanager
    def reserve_stdout(self) -> Iterator[None]:
        """With a report on stdout, send everything plugins print (even from forked children) to stderr."""
        if not self.stdout_taken:
            yield
            return
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def _execute(load: Load, workers: int, outputs: Outputs, start: float) -> int:
    """Run ``load`` in a loader process (progress bar on a terminal), write every report; return the exit code."""
    from gradcheck_cli.errors import UsageError
    from gradcheck_cli.report.progress import progress
    from gradcheck_cli.worker import supervise

    if workers < 1:
        raise UsageError(f"--jobs must be at least 1; got {workers}.")
    outputs.check()
    with outputs.reserve_stdout(), progress() as advance:
        # Rich (~30 ms to import) loads in this process while the loader loads the plugins.
        result: RunResult = supervise(load, workers=workers, progress=advance, meanwhile=_load_terminal)
    return _deliver(result, outputs, time.perf_counter() - start)


def _deliver(result: RunResult, outputs: Outputs, elapsed: float) -> int:
    """Write the reports, then the table; return the exit code.

    The code is the verdict, unless a report could not be written: then 3 where the verdict
    was 0 (the result was not delivered), never 2 (something was checked). The table comes
    last so that its summary line states that code; the problems follow it on stderr.
    """
    from gradcheck_cli.report import Delivery, standard_stream, terminal

    delivery = Delivery(int(result.exit_code))
    saved = None
    if outputs.save_failures is not None:
        from gradcheck_cli.report import failures

        folder = outputs.save_failures
        saved = delivery.attempt(lambda: failures.save(result, folder))
    if outputs.junit is not None:
        from gradcheck_cli.report import junit

        junit_path = outputs.junit
        delivery.attempt(lambda: junit.write(result, junit_path, elapsed), standard_stream(junit_path),
                         "the JUnit report")
    if outputs.json is not None:
        from gradcheck_cli.report import json as json_report

        json_path = outputs.json
        data = {**result.to_dict(), "exit_code": delivery.exit_code}
        delivery.attempt(lambda: json_report.write(data, json_path), standard_stream(json_path), "the JSON report")
    stream = sys.stderr if outputs.stdout_taken else sys.stdout

    def show() -> None:
        out = terminal.console(stream)
        terminal.render_run(result, out, verbose=outputs.verbose, elapsed=elapsed, exit_code=delivery.exit_code)
        if saved:
            out.print(f"saved {len(saved)} failing input(s) to {outputs.save_failures}/ (np.load(path)['input'])")
        elif saved is not None:
            out.print(f"no failing inputs to save in {outputs.save_failures}/")

    delivery.attempt(show, stream, "the results table")
    delivery.report_problems()
    return delivery.exit_code


def _load_terminal() -> None:
    import gradcheck_cli.report.terminal  # noqa: F401


@app.command()
def run(
    specs: Annotated[list[str], typer.Argument(metavar="SPEC...", help="ACT+LOSS, ACT or LOSS, e.g. softmax+mse.")],
    seed: Seed = 0, trials: Trials = 3, shape: Shape = None, input: InputOpt = None,
    target: TargetOpt = None, method: Method = "central", dtype: Dtype = "float64", edges: Edges = False,
    fast: Fast = False, rtol: Rtol = None, atol: Atol = None, plugin: Plugins = None, json: JsonPath = None,
    junit_xml: JunitPath = None, jobs: Jobs = 1, timeout: Timeout = DEFAULT_TIMEOUT,
    save_failures: SaveFailures = None, verbose: Verbose = False,
) -> None:
    """Check registry entries: the activation's Jacobian, the loss gradient, the chain rule."""
    from gradcheck_cli.inputs import parse_timeout
    from gradcheck_cli.worker import Load

    start = time.perf_counter()
    with user_errors():
        options = _options(seed, trials, shape, input, target, method, rtol, atol, dtype, edges, fast)
        load = Load("run", plugins=tuple(plugin or ()), specs=tuple(specs), options=options,
                    timeout=parse_timeout(timeout))
        code = _execute(load, jobs, Outputs(json, junit_xml, save_failures, verbose), start)
    raise typer.Exit(code)


@app.command("list")
def list_entries(plugin: Plugins = None, json: JsonPath = None, timeout: Timeout = DEFAULT_TIMEOUT) -> None:
    """Table of every registered activation, loss and variant."""
    from gradcheck_cli.inputs import parse_timeout
    from gradcheck_cli.worker import Load, supervise

    with user_errors():
        outputs = Outputs(json=json)
        outputs.check()
        limit = parse_timeout(timeout)
        with outputs.reserve_stdout():
            entries, fused = supervise(Load("list", plugins=tuple(plugin or ()), timeout=limit),
                                       meanwhile=_load_terminal)
    from gradcheck_cli.report import Delivery, standard_stream, terminal

    delivery = Delivery(0, ran=False)
    if json is not None:
        from gradcheck_cli.report import json as json_report

        rows = [{"name": s.name, "kind": s.kind, "convention": s.conventions[0],
                 "conventions": list(s.conventions) + list(s.second), "formula": s.formula,
                 "origin": s.origin, "domain": s.domain, "target": s.target,
                 "mistake": s.mistake, "fix": s.fix,
                 **({"args": {name: list(shape) for name, shape in s.args}} if s.args else {})} for s in entries]
        from gradcheck_cli.registry import table

        conventions = [{"keyword": c.keyword, "kinds": list(c.kinds), "signature": c.signature, "meaning": c.meaning}
                       for c in table.TABLE]
        document = {"schema": 1, "entries": rows, "conventions": conventions}
        delivery.attempt(lambda: json_report.write(document, json), standard_stream(json),
                         "the JSON list")
    if not outputs.stdout_taken:
        delivery.attempt(lambda: terminal.render_list(entries, fused, terminal.console()), sys.stdout, "the list")
    delivery.report_problems()
    raise typer.Exit(delivery.exit_code)


@app.command()
def explain(
    name: Annotated[str, typer.Argument(help="An activation, loss or variant, e.g. softmax@diagonal.")],
    input: InputOpt = None, target: TargetOpt = None, seed: Seed = 0,
    shape: Annotated[list[str] | None, typer.Option(help="Random input shape B,K when no --input (default 2,4).")
                     ] = None,
    method: Method = "central", dtype: Dtype = "float64", rtol: Rtol = None, atol: Atol = None,
    plugin: Plugins = None, timeout: Timeout = DEFAULT_TIMEOUT,
    plot: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--plot", metavar="FILE.png", help="Also draw the Jacobians (needs matplotlib).")] = None,
) -> None:
    """For a small input: output, analytic and numerical Jacobian, difference, formula."""
    from gradcheck_cli.inputs import parse_timeout
    from gradcheck_cli.report import Delivery, terminal
    from gradcheck_cli.worker import Load, supervise

    with user_errors():
        options = _options(seed, 1, shape or ["2,4"], input, target, method, rtol, atol, dtype)
        exp = supervise(Load("explain", plugins=tuple(plugin or ()), options=options,
                             timeout=parse_timeout(timeout), source=name))
        if plot is not None:
            from gradcheck_cli.report import plot as plotting

            plotting.draw(exp, plot)

    def show() -> None:
        out = terminal.console()
        terminal.render_explanation(exp, out)
        if plot is not None:
            out.print(f"plot written to {plot}")

    delivery = Delivery(int(exp.rows.exit_code))
    delivery.attempt(show, sys.stdout, "the explanation")
    delivery.report_problems()
    raise typer.Exit(delivery.exit_code)


@app.command()
def check(
    plugin_source: Annotated[str, typer.Argument(metavar="PLUGIN", help="Plugin file path or module.")],
    seed: Seed = 0, trials: Trials = 3, shape: Shape = None, method: Method = "central",
    dtype: Dtype = "float64", edges: Edges = False, fast: Fast = False, rtol: Rtol = None, atol: Atol = None,
    json: JsonPath = None, junit_xml: JunitPath = None, jobs: Jobs = 1, timeout: Timeout = DEFAULT_TIMEOUT,
    save_failures: SaveFailures = None, verbose: Verbose = False,
) -> None:
    """Load a plugin and check every entry it registers."""
    from gradcheck_cli.inputs import parse_timeout
    from gradcheck_cli.worker import Load

    start = time.perf_counter()
    with user_errors():
        options = _options(seed, trials, shape, None, None, method, rtol, atol, dtype, edges, fast)
        load = Load("check", options=options, timeout=parse_timeout(timeout), source=plugin_source)
        code = _execute(load, jobs, Outputs(json, junit_xml, save_failures, verbose), start)
    raise typer.Exit(code)


@app.command()
def ci(
    config: Annotated[str, typer.Argument(metavar="CONFIG.yaml", help="Suite configuration (version: 1).")],
    json: JsonPath = None, junit_xml: JunitPath = None, jobs: Jobs = 1,
    timeout: Annotated[Optional[float], typer.Option(  # noqa: UP045
        parser=ascii_number, metavar="FLOAT",
        help="Seconds a check may take, for checks whose config sets no timeout (default 600); 0 or inf: "
             "no limit.")] = None,
    save_failures: SaveFailures = None, verbose: Verbose = False,
    shard: Annotated[Optional[str], typer.Option(  # noqa: UP045
        metavar="I/N", help="Run only shard I of N (checks I, I+N, ...): spread a suite over N CI jobs.")] = None,
    only: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        metavar="NAME", help="Run only the check of this name (its 'name:' key, or its spec). Repeatable.")] = None,
) -> None:
    """Run a configured suite: the CI gate. Exit 0 only when every check is as expected."""
    from gradcheck_cli.inputs import parse_timeout
    from gradcheck_cli.suite import parse_shard
    from gradcheck_cli.worker import Load

    start = time.perf_counter()
    with user_errors():
        part = parse_shard(shard) if shard is not None else None
        limit = parse_timeout(timeout) if timeout is not None else DEFAULT_TIMEOUT
        load = Load("ci", timeout=limit, source=config, shard=part, only=tuple(only or ()))
        code = _execute(load, jobs, Outputs(json, junit_xml, save_failures, verbose), start)
    raise typer.Exit(code)


def entry() -> None:
    """Console-script entry point."""
    from gradcheck_cli.allocator import keep_freed_memory
    from gradcheck_cli.processes import become_subreaper

    _open_standard_streams()
    keep_freed_memory()
    # Adopt what checks leave behind in sessions of their own, so that it can be killed.
    become_subreaper()
    try:
        app()
    finally:
        _flush_stdout()


def _open_standard_streams() -> None:
    """Give a closed standard stream (``>&-``, ``2>&-``, ``<&-``) /dev/null in its place.

    Python starts with ``sys.stdout`` None when descriptor 1 is closed, which would crash the
    report with a traceback; worse, the next file or pipe opened (the loader's pipe) would take
    the free number, and whatever a plugin writes to "stdout" would land in it. What is written
    to a stream the caller closed is discarded; the exit code is still the checks' verdict.
    """
    import io

    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
        if getattr(sys, name) is None:
            raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
            raw.name = f"<{name}>"  # type: ignore[misc]  # what Delivery names in its messages
            setattr(sys, name, io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace",
                                                line_buffering=fd != 0))


def _flush_stdout() -> None:
    """Flush stdout now, so that a reader that went away cannot fail Python's own flush at exit."""
    from gradcheck_cli.report import silence

    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        silence(sys.stdout)
