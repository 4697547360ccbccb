"""Plain-text rendering (no colours, no rich): for assertion messages and logs."""

from __future__ import annotations

from gradcheck_cli.results import CheckResult, RunResult, Verdict


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def describe_row(row: CheckResult) -> str:
    """One paragraph about one row: verdict, what, why, where, how to reproduce."""
    what = row.component if row.convention in ("", row.component) else f"{row.component} ({row.convention})"
    lines = [f"{row.verdict.value} {row.check} - {what} [{row.origin}]"]
    if row.diagnosis:
        lines.append(f"  {row.diagnosis}")
    if row.worst_index is not None and row.analytic is not None:
        lines.append(f"  worst entry {list(row.worst_index)}: analytic {row.analytic:.6g} vs numeric "
                     f"{row.numeric:.6g}; max abs error {_figure(row.max_abs_error)}, tolerance "
                     f"{_figure(row.tolerance)}, method {row.method}")
    for note in row.notes:
        lines.append(f"  note: {note}")
    if row.reproduce:
        lines.append(f"  reproduce: {row.reproduce}")
    return "\n".join(lines)


def summary(result: RunResult) -> str:
    """Every row that did not pass, then the counts."""
    bad = [r for r in result.results if r.verdict not in (Verdict.PASS, Verdict.XFAIL, Verdict.KINK)]
    counts = ", ".join(f"{n} {v}" for v, n in result.summary().items() if n)
    return "\n".join([describe_row(r) for r in bad] + [f"({counts}; exit code {int(result.exit_code)})"])
