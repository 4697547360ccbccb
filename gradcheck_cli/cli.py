"""The ``gradcheck`` command: parse -> load config -> run -> report -> exit code.

Nothing else lives here: every command builds jobs through :mod:`gradcheck_cli.api`-level
functions and hands plain results to :mod:`gradcheck_cli.report`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from gradcheck_cli.errors import GradcheckError

if TYPE_CHECKING:
    from gradcheck_cli.registry import Registry
    from gradcheck_cli.results import RunResult
    from gradcheck_cli.runner import CheckOptions
    from gradcheck_cli.suite import Job

app = typer.Typer(
    name="gradcheck",
    help="Check hand-written derivatives against finite differences, and say what is wrong.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

DEFAULT_TIMEOUT = 600.0

Seed = Annotated[int, typer.Option(help="Random seed; runs repeat exactly with the same seed.")]
Trials = Annotated[int, typer.Option(help="Random sample points per check.")]
Shape = Annotated[str, typer.Option(help="Input shape B,K (batch rows, features).")]
InputOpt = Annotated[Optional[str], typer.Option("--input", help="Explicit input, e.g. 2,4,2,1; ';' separates rows.")]  # noqa: UP045
TargetOpt = Annotated[Optional[str], typer.Option("--target", help="Explicit loss target, same layout as --input.")]  # noqa: UP045
Method = Annotated[str, typer.Option(help="Finite-difference method: central, richardson or complex.")]
Dtype = Annotated[str, typer.Option(help="Dtype the checked code runs in: float64 or float32.")]
Fast = Annotated[bool, typer.Option("--fast", help="Check seeded random projections u^T J d, not every entry.")]
Edges = Annotated[bool, typer.Option("--edges", help="Add edge probes: +-1000 logits, ties, saturation, p near 0/1.")]
Rtol = Annotated[Optional[float], typer.Option(help="Relative tolerance added to every entry's bound (default 0).")]  # noqa: UP045
Atol = Annotated[Optional[float], typer.Option(help="Absolute tolerance added to every entry.")]  # noqa: UP045
Plugins = Annotated[Optional[list[str]], typer.Option("--plugin", help="Plugin file or module to load (repeatable).")]  # noqa: UP045
JsonPath = Annotated[Optional[str], typer.Option("--json", help="Write a JSON report to PATH ('-' for stdout).")]  # noqa: UP045
JunitPath = Annotated[Optional[str], typer.Option("--junit-xml", help="Write a JUnit XML report to PATH.")]  # noqa: UP045
Jobs = Annotated[int, typer.Option("--jobs", "-j", help="Checks to run at once, each in its own process.")]
Timeout = Annotated[float, typer.Option(help="Seconds a single check may take before it is stopped.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Details, worst entries and heatmaps for every row.")]
SaveFailures = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--save-failures", metavar="DIR", help="Write failing inputs as .npz files to DIR.")]


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`GradcheckError` into its message on stderr and its exit code."""
    try:
        yield
    except GradcheckError as exc:
        from gradcheck_cli.report import terminal

        terminal.console(sys.stderr).print(f"gradcheck: error: {exc.message}", style="red", soft_wrap=True)
        raise typer.Exit(int(exc.exit_code)) from None


def _options(seed: int, trials: int, shape: str, input_text: str | None, target_text: str | None,
             method: str, rtol: float | None, atol: float | None, dtype: str = "float64",
             edges: bool = False, fast: bool = False) -> CheckOptions:
    from gradcheck_cli import inputs
    from gradcheck_cli.runner import CheckOptions

    options = CheckOptions(
        seed=seed, trials=trials, shape=inputs.parse_shape(shape),
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
        return "-" in (self.json, self.junit)

    def check(self) -> None:
        """Refuse unwritable report paths before anything runs (exit 2 means nothing checked)."""
        from gradcheck_cli.errors import UsageError

        for option, path in (("JSON", self.json), ("JUnit", self.junit)):
            if path is None or path == "-":
                continue
            folder = Path(path).parent
            if not folder.is_dir() or not os.access(folder, os.W_OK) or Path(path).is_dir():
                raise UsageError(f"Cannot write the {option} report to '{path}': the folder '{folder}' does not "
                                 f"exist or is not writable, or the path is a folder. Give a writable file "
                                 f"path, or - for standard output.")

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


def _execute(load: Callable[[], tuple[Registry, list[Job]]], workers: int, outputs: Outputs,
             start: float) -> RunResult:
    """Load, run jobs isolated (progress bar on a terminal), and write every report."""
    from gradcheck_cli.errors import UsageError
    from gradcheck_cli.report.progress import progress
    from gradcheck_cli.suite import run_jobs

    if workers < 1:
        raise UsageError(f"--jobs must be at least 1; got {workers}.")
    outputs.check()
    with outputs.reserve_stdout():
        registry, jobs = load()
        with progress(len(jobs)) as advance:
            # Rich (~30 ms to import) loads in this process while the first checks run in theirs.
            result = run_jobs(jobs, registry, workers=workers, isolate=True, progress=advance,
                              meanwhile=_load_terminal)
    from gradcheck_cli.report import terminal

    elapsed = time.perf_counter() - start
    if outputs.json is not None:
        from gradcheck_cli.report import json as json_report

        json_report.write(result.to_dict(), outputs.json)
    if outputs.junit is not None:
        from gradcheck_cli.report import junit

        junit.write(result, outputs.junit, elapsed)
    out = terminal.console(sys.stderr if outputs.stdout_taken else sys.stdout)
    terminal.render_run(result, out, verbose=outputs.verbose, elapsed=elapsed)
    if outputs.save_failures is not None:
        from gradcheck_cli.report import failures

        written = failures.save(result, outputs.save_failures)
        out.print(f"saved {len(written)} failing input(s) to {outputs.save_failures}/ (np.load(path)['input'])")
    return result


def _load_terminal() -> None:
    import gradcheck_cli.report.terminal  # noqa: F401


def _jobs_for(names: list[str], options: CheckOptions, registry: Registry, timeout: float) -> list[Job]:
    from gradcheck_cli.runner import check_explicit_input, parse_spec
    from gradcheck_cli.suite import Job

    jobs = []
    for name in names:
        spec = parse_spec(name, registry)
        check_explicit_input(spec, options)
        options.validate(spec)
        jobs.append(Job(name, spec, options, timeout=timeout))
    return jobs


@app.command()
def run(
    specs: Annotated[list[str], typer.Argument(metavar="SPEC...", help="ACT+LOSS, ACT or LOSS, e.g. softmax+mse.")],
    seed: Seed = 0, trials: Trials = 3, shape: Shape = "4,10", input: InputOpt = None,
    target: TargetOpt = None, method: Method = "central", dtype: Dtype = "float64", edges: Edges = False,
    fast: Fast = False, rtol: Rtol = None, atol: Atol = None, plugin: Plugins = None, json: JsonPath = None,
    junit_xml: JunitPath = None, jobs: Jobs = 1, timeout: Timeout = DEFAULT_TIMEOUT,
    save_failures: SaveFailures = None, verbose: Verbose = False,
) -> None:
    """Check registry entries: the activation's Jacobian, the loss gradient, the chain rule."""
    from gradcheck_cli.plugins import default_registry

    start = time.perf_counter()
    with user_errors():
        options = _options(seed, trials, shape, input, target, method, rtol, atol, dtype, edges, fast)

        def load() -> tuple[Registry, list[Job]]:
            registry = default_registry(tuple(plugin or ()))
            return registry, _jobs_for(specs, options, registry, timeout)

        result = _execute(load, jobs, Outputs(json, junit_xml, save_failures, verbose), start)
    raise typer.Exit(int(result.exit_code))


@app.command("list")
def list_entries(plugin: Plugins = None, json: JsonPath = None) -> None:
    """Table of every registered activation, loss and variant."""
    from gradcheck_cli.plugins import default_registry
    from gradcheck_cli.report import terminal

    with user_errors():
        registry = default_registry(tuple(plugin or ()))
        if json is not None:
            from gradcheck_cli.report import json as json_report

            entries = [{"name": s.name, "kind": s.kind, "convention": s.conventions[0],
                        "conventions": list(s.conventions) + list(s.second), "formula": s.formula,
                        "origin": s.origin, "domain": s.domain, "target": s.target,
                        "mistake": s.mistake, "fix": s.fix} for s in registry]
            json_report.write({"schema": 1, "entries": entries}, json)
            if json == "-":
                return
    terminal.render_list(registry, registry.fused_formulas(), terminal.console())


@app.command()
def explain(
    name: Annotated[str, typer.Argument(help="An activation, loss or variant, e.g. softmax@diagonal.")],
    input: InputOpt = None, target: TargetOpt = None, seed: Seed = 0,
    shape: Annotated[str, typer.Option(help="Random input shape B,K when no --input.")] = "2,4",
    method: Method = "central", dtype: Dtype = "float64", rtol: Rtol = None, atol: Atol = None,
    plugin: Plugins = None,
    plot: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--plot", metavar="FILE.png", help="Also draw the Jacobians (needs matplotlib).")] = None,
) -> None:
    """For a small input: output, analytic and numerical Jacobian, difference, formula."""
    from gradcheck_cli.report import terminal
    from gradcheck_cli.runner import explain as explain_entry

    with user_errors():
        options = _options(seed, 1, shape, input, target, method, rtol, atol, dtype)
        exp = explain_entry(name, options, plugins=tuple(plugin or ()))
        if plot is not None:
            from gradcheck_cli.report import plot as plotting

            plotting.draw(exp, plot)
    terminal.render_explanation(exp, terminal.console())
    if plot is not None:
        terminal.console().print(f"plot written to {plot}")
    raise typer.Exit(int(exp.rows.exit_code))


@app.command()
def check(
    plugin_source: Annotated[str, typer.Argument(metavar="PLUGIN", help="Plugin file path or module.")],
    seed: Seed = 0, trials: Trials = 3, shape: Shape = "4,10", method: Method = "central",
    dtype: Dtype = "float64", edges: Edges = False, fast: Fast = False, rtol: Rtol = None, atol: Atol = None,
    json: JsonPath = None, junit_xml: JunitPath = None, jobs: Jobs = 1, timeout: Timeout = DEFAULT_TIMEOUT,
    save_failures: SaveFailures = None, verbose: Verbose = False,
) -> None:
    """Load a plugin and check every entry it registers."""
    from gradcheck_cli.errors import PluginError
    from gradcheck_cli.plugins import default_registry, load_plugin

    start = time.perf_counter()
    with user_errors():
        options = _options(seed, trials, shape, None, None, method, rtol, atol, dtype, edges, fast)

        def load() -> tuple[Registry, list[Job]]:
            registry = default_registry()
            names = load_plugin(plugin_source, registry)
            if not names:
                raise PluginError(f"Plugin '{plugin_source}' loaded but registered nothing. Call "
                                  f"register_activation(...) or register_loss(...) at import time.")
            return registry, _jobs_for(names, options, registry, timeout)

        result = _execute(load, jobs, Outputs(json, junit_xml, save_failures, verbose), start)
    raise typer.Exit(int(result.exit_code))


@app.command()
def ci(
    config: Annotated[str, typer.Argument(metavar="CONFIG.yaml", help="Suite configuration (version: 1).")],
    json: JsonPath = None, junit_xml: JunitPath = None, jobs: Jobs = 1,
    timeout: Annotated[Optional[float], typer.Option(help="Default per-check timeout in seconds.")] = None,  # noqa: UP045
    save_failures: SaveFailures = None, verbose: Verbose = False,
    shard: Annotated[Optional[str], typer.Option(  # noqa: UP045
        metavar="I/N", help="Run only shard I of N (checks I, I+N, ...): spread a suite over N CI jobs.")] = None,
) -> None:
    """Run a configured suite: the CI gate. Exit 0 only when every check is as expected."""
    from gradcheck_cli.suite import jobs_from_config, parse_shard, select_shard

    start = time.perf_counter()
    with user_errors():
        part = parse_shard(shard) if shard is not None else None

        def load() -> tuple[Registry, list[Job]]:
            registry, job_list = jobs_from_config(config, timeout or DEFAULT_TIMEOUT)
            return registry, select_shard(job_list, part)

        result = _execute(load, jobs, Outputs(json, junit_xml, save_failures, verbose), start)
    raise typer.Exit(int(result.exit_code))


def entry() -> None:
    """Console-script entry point."""
    from gradcheck_cli.allocator import keep_freed_memory

    keep_freed_memory()
    app()
