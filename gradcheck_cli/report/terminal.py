"""Terminal rendering with Rich: the only module that imports rich.

Colours are off when the stream is not a terminal or ``NO_COLOR`` is set (Rich honours
both). Numbers are shown to three significant digits; arrays never in full. Control
characters in any text are shown escaped (:func:`clean`): names, origins and exception
messages come from plugins, and must not drive the user's terminal.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Iterable
from typing import IO, Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gradcheck_cli.registry import EntrySummary
from gradcheck_cli.report.text import worst_text
from gradcheck_cli.results import CheckResult, RunResult, Verdict

STYLES = {Verdict.PASS: "green", Verdict.FAIL: "bold red", Verdict.KINK: "yellow",
          Verdict.ERROR: "bold magenta", Verdict.XFAIL: "green", Verdict.XPASS: "bold red"}
SUMMARY_WORDS = {"PASS": "passed", "FAIL": "failed", "KINK": "at a kink", "ERROR": "could not run",
                 "XFAIL": "failed as expected", "XPASS": "passed unexpectedly"}
MAX_SHOWN = 8

# C0 controls but newline (ESC among them), DEL and C1 (0x9b is a one-byte CSI to some
# terminals). A plugin's `raise ValueError("\x1b[2J")` must print as text, not clear the
# screen. Rich's own styling is added after this, when segments are written.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """``text`` with control characters (C0 but newline, DEL, C1) written as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class SafeConsole(Console):
    """A Console that escapes control characters in every string it renders (see :func:`clean`).

    Strings reach Rich as print arguments, table cells and titles, and all of them become
    Text through ``render_str``; Text built here from user text is cleaned where it is built.
    A reader that went away raises BrokenPipeError instead of Rich's exit with code 1.
    """

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(clean(text), **kwargs)

    def on_broken_pipe(self) -> None:
        # Rich's default exits with code 1, which means "flagged" here: let the caller, who
        # knows the run's verdict, handle the reader that went away.
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def console(stream: IO[str] | None = None) -> Console:
    """A console for ``stream``: full width on a terminal, 140 columns (or $COLUMNS) otherwise."""
    stream = stream or sys.stdout
    tty = stream.isatty()
    width = None if tty else int(os.environ.get("COLUMNS", "140"))
    # markup=False, emoji=False: messages quote user text ("gradcheck-cli[plot]", dy[0,1],
    # a plugin named "f:x:") verbatim; no emoji table is loaded either.
    return SafeConsole(file=stream, width=width, no_color=not tty or None, highlight=False,
                       soft_wrap=False, markup=False, emoji=False)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2e}" if value != 0 else "0"


def _short_origin(origin: str) -> str:
    """An origin as the table shows it: the file's name (with its line), not its whole path;
    the details, JSON and JUnit keep the full origin."""
    return origin.replace("\\", "/").rsplit("/", 1)[-1]


def _component(row: CheckResult, brief: bool = False) -> str:
    """``jacobian (vjp)``; a layer's row names its argument, ``jacobian wrt w``, and in the table
    (``brief``) leaves its convention, the same on every row of the layer, to the details."""
    text = f"{row.component} wrt {row.wrt}" if row.wrt else row.component
    if brief and row.wrt:
        return text
    if row.convention and row.convention != row.component:
        return f"{text} ({row.convention})"
    return text


def _index(row: CheckResult) -> str:
    idx = row.worst_index
    if row.worst_entry:
        return row.worst_entry
    if idx is None:
        return "-"
    if len(idx) == 4:
        return f"dy[{idx[0]},{idx[1]}]/dx[{idx[2]},{idx[3]}]"
    if len(idx) == 1:
        return f"projection {idx[0]} (u^T J d)"
    return f"dL/dx[{idx[0]},{idx[1]}]"


def render_run(result: RunResult, out: Console, verbose: bool = False, elapsed: float | None = None,
               exit_code: int | None = None) -> None:
    """The results table, one explanation per flagged row, and a summary line.

    ``exit_code`` is the process's code when it differs from the verdict's (a report
    that could not be written); the summary line states it.
    """
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    show_origin = any(r.origin != "builtin" for r in result.results)
    for name, justify in (("check", "left"), ("component", "left"), ("input x trials", "right"),
                          ("max abs err", "right"), ("max rel err", "right"),
                          ("tolerance", "right"), ("verdict", "left")):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    if show_origin:
        table.add_column("origin", overflow="fold", max_width=40)
    for row in result.results:
        shape = "x".join(str(s) for s in row.shape) if row.shape else ("scalar" if row.wrt else "-")
        cells: list[Any] = [row.check, _component(row, brief=True), f"{shape} x {row.trials}", _num(row.max_abs_error),
                            _num(row.max_rel_error), _num(row.tolerance),
                            Text(row.verdict.value, style=STYLES[row.verdict])]
        table.add_row(*cells, *([Text(clean(_short_origin(row.origin)), style="dim")] if show_origin else []))
    out.print(table)
    for row in result.results:
        if row.verdict is Verdict.PASS and not verbose:
            continue
        if row.verdict in (Verdict.PASS, Verdict.XFAIL) and not row.diagnosis and not row.notes:
            continue
        _render_detail(row, out, verbose)
    noted = sum(1 for r in result.results if r.verdict is Verdict.PASS and r.notes)
    if noted and not verbose:
        out.print(f"\n{noted} passing row{'s' if noted > 1 else ''} carr{'y' if noted > 1 else 'ies'} notes: "
                  f"run with --verbose to read them.", style="dim")
    summary = ", ".join(f"{n} {SUMMARY_WORDS[v]}" for v, n in result.summary().items() if n)
    took = f" in {elapsed:.2f}s" if elapsed is not None else ""
    code = int(result.exit_code) if exit_code is None else exit_code
    out.print(f"\n{summary or 'nothing checked'}{took}; exit code {code}")


HEAT_LEVELS = ((1e-2, " ", "grey11"), (1.0, ".", "dark_green"), (1e3, "+", "orange3"), (float("inf"), "#", "red3"))


def render_heatmap(grid: Any, out: Console, title: str) -> None:
    """A character/colour map of error-to-tolerance ratios: ' ' <1e-2, '.' <=1, '+' <=1e3, '#' above."""
    out.print(title + "  (' ' < 0.01, '.' <= 1 passes, '+' <= 1e3, '#' > 1e3)")
    for line in grid:
        text = Text("    ")
        for value in line:
            char, colour = next((c, col) for limit, c, col in HEAT_LEVELS if value <= limit)
            text.append(char * 2, style=f"on {colour}")
        out.print(text)


def _render_detail(row: CheckResult, out: Console, verbose: bool = False) -> None:
    head = Text()
    head.append(f"\n{row.verdict.value} ", style=STYLES[row.verdict])
    head.append(clean(f"{row.check} - {_component(row)}"))
    out.print(head)
    if row.diagnosis:
        out.print(f"  {row.diagnosis}")
    if row.worst_index is not None and row.analytic is not None:
        out.print(f"  worst {_index(row)}: {worst_text(row)}")
    if verbose and row.worst_entries:
        out.print("  worst entries:")
        for text in row.worst_entries:
            out.print(f"    {text}")
    if verbose and row.heatmap:
        render_heatmap(row.heatmap, out, "  |analytic - numeric| / tolerance"
                       + (" over the worst batch block" if row.worst_index and len(row.worst_index) == 4 else ""))
    for note in row.notes:
        out.print(f"  note: {note}", style="dim")
    if row.verdict in (Verdict.FAIL, Verdict.XPASS, Verdict.ERROR) and row.reproduce:
        out.print(f"  reproduce: {row.reproduce}", style="dim")


def render_list(entries: Iterable[EntrySummary], fused: Iterable[tuple[str, str, str]], out: Console) -> None:
    """Every registered entry with its convention, domain/target, formula and origin."""
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("convention", overflow="fold", max_width=22)
    table.add_column("domain / target / args", overflow="fold", max_width=30)
    table.add_column("formula", overflow="fold", min_width=30)
    table.add_column("origin", overflow="fold", max_width=24)
    for spec in entries:
        where = spec.domain if spec.kind == "activation" else f"{spec.domain} / {spec.target}"
        if spec.args:
            where = ", ".join(f"{name} {'x'.join(map(str, shape)) or 'scalar'}" for name, shape in spec.args)
        conventions = ", ".join(spec.conventions + tuple(spec.second))
        table.add_row(Text(clean(spec.name), style="red" if spec.is_variant else ""), spec.kind, conventions, where,
                      spec.formula, spec.origin)
    out.print(table)
    pairs = Table(show_edge=False, header_style="bold", pad_edge=False, title="fused pair formulas",
                  title_justify="left")
    for name in ("pair", "formula", "origin"):
        pairs.add_column(name)
    for pair, formula, origin in fused:
        pairs.add_row(pair, formula, origin)
    out.print()
    out.print(pairs)
    from gradcheck_cli.registry.table import TABLE

    keywords = Table(show_edge=False, header_style="bold", pad_edge=False, title="derivative conventions",
                     title_justify="left")
    for name in ("keyword", "kinds", "signature", "meaning"):
        keywords.add_column(name, overflow="fold")
    for c in TABLE:
        keywords.add_row(c.keyword, ", ".join(c.kinds), c.signature, c.meaning)
    out.print()
    out.print(keywords)
    out.print("\nNames in red are deliberately wrong variants (NAME@VARIANT): run one to see a flag.")


def _matrix(title: str, values: Any, out: Console, fmt: str | None = None) -> None:
    arr = np.atleast_2d(np.asarray(values, dtype=np.float64))
    rows, cols = arr.shape
    shown = arr[:MAX_SHOWN, :MAX_SHOWN]
    if fmt is None:
        finite = np.abs(shown[np.isfinite(shown)])
        fmt = "{: .4f}" if finite.size == 0 or 1e-2 <= finite.max() < 1e4 else "{: .3e}"
    out.print(Text(clean(title), style="bold"))
    table = Table(show_header=False, show_edge=False, pad_edge=False)
    for _ in range(shown.shape[1]):
        table.add_column(justify="right")
    for line in shown:
        table.add_row(*(fmt.format(v) for v in line))
    out.print(table)
    if rows > MAX_SHOWN or cols > MAX_SHOWN:
        out.print(f"  (first {MAX_SHOWN}x{MAX_SHOWN} of {rows}x{cols})", style="dim")


def render_explanation(exp: Any, out: Console) -> None:
    """Input, output, analytic/numerical derivative, their difference, formula and verdicts."""
    spec: EntrySummary = exp.spec
    about = clean(f"  ({spec.kind}, {exp.convention}, origin {spec.origin})")
    out.print(Text(clean(spec.name), style="bold") + Text(about))
    if spec.formula:
        out.print(f"formula: {spec.formula}")
    if not exp.arguments:
        _matrix("input x" if spec.kind == "activation" else "prediction p", exp.x, out)
    if exp.target is not None:
        _matrix("target t", exp.target, out)
    _matrix("output y = f(x)" if spec.kind == "activation" else "loss L(p, t)" if spec.kind == "loss"
            else f"output {exp.output_name}", exp.output.reshape(exp.output.shape[0], -1) if exp.output.ndim > 1
            else exp.output, out)
    what = "Jacobian dy_i/dx_j" if spec.kind == "activation" else "gradient dL/dp"
    if exp.analytic is not None and exp.numeric is not None:
        _matrix(f"analytic {what}", exp.analytic, out)
        _matrix(f"numerical {what} (central differences)" if exp.rows.results[0].method == "central"
                else f"numerical {what}", exp.numeric, out)
        _matrix("difference analytic - numeric", exp.analytic - exp.numeric, out, "{: .1e}")
    for name, value, analytic, numeric in exp.arguments:
        out.print(Text(f"\nwith respect to {name}", style="bold"))
        _matrix(f"{name}", value.reshape(value.shape[0], -1) if value.ndim > 1 else value, out)
        _matrix(f"analytic Jacobian d{exp.output_name}/d{name} (rows: output entries, columns: {name} entries)",
                analytic, out)
        _matrix(f"numerical d{exp.output_name}/d{name}", numeric, out)
        _matrix("difference analytic - numeric", analytic - numeric, out, "{: .1e}")
    if exp.upstream is not None and exp.analytic_vjp is not None and exp.numeric_vjp is not None:
        out.print(Text("\nbackward pass with an upstream gradient g (what a layer computes)", style="bold"))
        _matrix("g", exp.upstream, out)
        _matrix(f"analytic J^T g (via {exp.convention})", exp.analytic_vjp, out)
        _matrix("numerical J^T g", exp.numeric_vjp, out)
        scale = np.maximum(np.abs(exp.numeric_vjp), 1e-300)
        _matrix("relative error", np.abs(exp.analytic_vjp - exp.numeric_vjp) / scale, out, "{: .1e}")
    if spec.mistake:
        out.print(Text("\nwhat is wrong: ", style="bold red") + Text(clean(spec.mistake)))
    if spec.fix:
        out.print(Text("correct: ", style="bold green") + Text(clean(spec.fix)))
    out.print()
    render_run(exp.rows, out, verbose=True)


def start_progress(total: int, done: int, label: str) -> tuple[Any, Any]:
    """A transient Rich progress bar on stderr, started: (bar, task) for ``bar.update``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
    )

    class Label(ProgressColumn):
        """The check being run, as text: a name with '[' is no markup, and control characters are escaped."""

        def render(self, task: Task) -> Text:
            return Text(clean(task.description))

    bar = Progress(TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), Label(),
                   console=SafeConsole(file=sys.stderr, markup=False, emoji=False, highlight=False), transient=True)
    task = bar.add_task(label, total=total or None, completed=done)
    bar.start()
    return bar, task
