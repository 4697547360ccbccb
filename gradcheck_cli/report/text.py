"""Plain-text rendering (no colours, no rich): for assertion messages and logs."""

from __future__ import annotations

import math

from gradcheck_cli.results import CheckResult, RunResult, Verdict


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def worst_text(row: CheckResult) -> str:
    """The worst entry in words: values, errors against the reference's noise, method.

    ``analytic -0.0124 vs numeric -0.0001: relative error 1.2e+02, numerical noise 3e-11
    (relative 2.9e-07), 4.1e+08x above noise, tolerance 1.1e-09 (method central)``
    """
    if row.analytic is None or row.numeric is None:
        return ""
    if not math.isfinite(row.analytic):
        return f"analytic {row.analytic} vs numeric {row.numeric:.6g} (method {row.method})"
    err = abs(row.analytic - row.numeric)
    parts = [f"analytic {row.analytic:.6g} vs numeric {row.numeric:.6g}"]
    if row.numeric != 0:
        parts.append(f"relative error {err / abs(row.numeric):.2g}")
    else:
        parts.append(f"absolute error {err:.2g}")
    if row.noise is not None:
        noise = f"numerical noise {row.noise:.2g}"
        if row.numeric != 0:
            noise += f" (relative {row.noise / abs(row.numeric):.2g})"
        parts.append(noise)
        if row.verdict is not Verdict.PASS and row.noise > 0:
            parts.append(f"{err / row.noise:.2g}x above noise")
    parts.append(f"tolerance {_figure(row.tolerance)} (method {row.method})")
    return ", ".join(parts)


def describe_row(row: CheckResult) -> str:
    """One paragraph about one row: verdict, what, why, where, how to reproduce."""
    what = f"{row.component} wrt {row.wrt}" if row.wrt else row.component
    what = what if row.convention in ("", row.component) else f"{what} ({row.convention})"
    lines = [f"{row.verdict.value} {row.check} - {what} [{row.origin}]"]
    if row.diagnosis:
        lines.append(f"  {row.diagnosis}")
    if row.worst_index is not None and row.analytic is not None:
        lines.append(f"  worst entry {row.worst_entry or list(row.worst_index)}: {worst_text(row)}")
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
