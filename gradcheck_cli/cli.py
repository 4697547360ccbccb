"""The ``gradcheck`` command: parse -> run -> report -> exit code. Nothing else lives here."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from gradcheck_cli.errors import GradcheckError

if TYPE_CHECKING:
    from gradcheck_cli.results import RunResult
    from gradcheck_cli.runner import CheckOptions

app = typer.Typer(
    name="gradcheck",
    help="Check hand-written derivatives against finite differences, and say what is wrong.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

Seed = Annotated[int, typer.Option(help="Random seed; runs repeat exactly with the same seed.")]
Trials = Annotated[int, typer.Option(help="Random sample points per check.")]
Shape = Annotated[str, typer.Option(help="Input shape B,K (batch rows, features).")]
InputOpt = Annotated[Optional[str], typer.Option("--input", help="Explicit input, e.g. 2,4,2,1; ';' separates rows.")]  # noqa: UP045
TargetOpt = Annotated[Optional[str], typer.Option("--target", help="Explicit loss target, same layout as --input.")]  # noqa: UP045
Method = Annotated[str, typer.Option(help="Finite-difference method: central, richardson or complex.")]
Rtol = Annotated[Optional[float], typer.Option(help="Relative tolerance (overrides the default floor).")]  # noqa: UP045
Atol = Annotated[Optional[float], typer.Option(help="Absolute tolerance added to every entry.")]  # noqa: UP045
Plugins = Annotated[Optional[list[str]], typer.Option("--plugin", help="Plugin file or module to load (repeatable).")]  # noqa: UP045
JsonPath = Annotated[Optional[str], typer.Option("--json", help="Write a JSON report to PATH ('-' for stdout).")]  # noqa: UP045
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show details for passing rows too.")]


def _options(seed: int, trials: int, shape: str, input_text: str | None, target_text: str | None,
             method: str, rtol: float | None, atol: float | None) -> CheckOptions:
    from gradcheck_cli import inputs
    from gradcheck_cli.runner import CheckOptions

    return CheckOptions(
        seed=seed, trials=trials, shape=inputs.parse_shape(shape),
        input=inputs.parse_matrix(input_text, "--input") if input_text is not None else None,
        target=inputs.parse_matrix(target_text, "--target") if target_text is not None else None,
        method=method, rtol=rtol, atol=atol,
    )


@app.command()
def run(
    specs: Annotated[list[str], typer.Argument(metavar="SPEC...", help="ACT+LOSS, ACT or LOSS, e.g. softmax+mse.")],
    seed: Seed = 0, trials: Trials = 3, shape: Shape = "4,10", input: InputOpt = None,
    target: TargetOpt = None, method: Method = "central", rtol: Rtol = None, atol: Atol = None,
    plugin: Plugins = None, json: JsonPath = None, verbose: Verbose = False,
) -> None:
    """Check registry entries: the activation's Jacobian, the loss gradient, the chain rule."""
    from gradcheck_cli.runner import run as run_checks

    start = time.perf_counter()
    with user_errors():
        options = _options(seed, trials, shape, input, target, method, rtol, atol)
        result = run_checks(specs, options, plugins=tuple(plugin or ()))
        _report(result, json, verbose, time.perf_counter() - start)
    raise typer.Exit(int(result.exit_code))


def _report(result: RunResult, json_path: str | None, verbose: bool, elapsed: float) -> None:
    from gradcheck_cli.report import terminal

    if json_path is not None:
        from gradcheck_cli.report import json as json_report

        json_report.write(result.to_dict(), json_path)
    terminal.render_run(result, terminal.console(sys.stderr if json_path == "-" else sys.stdout),
                        verbose=verbose, elapsed=elapsed)


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
    terminal.render_list(registry, registry._fused.values(), terminal.console())


@app.command()
def explain(
    name: Annotated[str, typer.Argument(help="An activation, loss or variant, e.g. softmax@diagonal.")],
    input: InputOpt = None, target: TargetOpt = None, seed: Seed = 0,
    shape: Annotated[str, typer.Option(help="Random input shape B,K when no --input.")] = "1,4",
    method: Method = "central", rtol: Rtol = None, atol: Atol = None, plugin: Plugins = None,
) -> None:
    """For a small input: output, analytic and numerical Jacobian, difference, formula."""
    from gradcheck_cli.report import terminal
    from gradcheck_cli.runner import explain as explain_entry

    with user_errors():
        options = _options(seed, 1, shape, input, target, method, rtol, atol)
        exp = explain_entry(name, options, plugins=tuple(plugin or ()))
    terminal.render_explanation(exp, terminal.console())
    raise typer.Exit(int(exp.rows.exit_code))


@app.command()
def check(
    plugin_source: Annotated[str, typer.Argument(metavar="PLUGIN", help="Plugin file path or module.")],
    seed: Seed = 0, trials: Trials = 3, shape: Shape = "4,10", method: Method = "central",
    rtol: Rtol = None, atol: Atol = None, json: JsonPath = None, verbose: Verbose = False,
) -> None:
    """Load a plugin and check every entry it registers."""
    from gradcheck_cli.errors import PluginError
    from gradcheck_cli.plugins import default_registry, load_plugin
    from gradcheck_cli.runner import run as run_checks

    start = time.perf_counter()
    with user_errors():
        registry = default_registry()
        names = load_plugin(plugin_source, registry)
        if not names:
            raise PluginError(f"Plugin '{plugin_source}' loaded but registered nothing. Call "
                              f"register_activation(...) or register_loss(...) at import time.")
        options = _options(seed, trials, shape, None, None, method, rtol, atol)
        result = run_checks(names, options, registry=registry)
        _report(result, json, verbose, time.perf_counter() - start)
    raise typer.Exit(int(result.exit_code))


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`GradcheckError` into its message on stderr and its exit code."""
    try:
        yield
    except GradcheckError as exc:
        from gradcheck_cli.report import terminal

        terminal.console(sys.stderr).print(f"gradcheck: error: {exc.message}", style="red", soft_wrap=True)
        raise typer.Exit(int(exc.exit_code)) from None


def entry() -> None:
    """Console-script entry point."""
    app()
