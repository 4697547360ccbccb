"""Plain result data: what every report renders. No numpy arrays, no formatting."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from gradcheck_cli.errors import ExitCode


class Verdict(enum.StrEnum):
    """Outcome of one checked component."""

    PASS = "PASS"
    FAIL = "FAIL"
    KINK = "KINK"
    ERROR = "ERROR"
    XFAIL = "XFAIL"
    XPASS = "XPASS"

    def __str__(self) -> str:
        return self.value


COMPONENTS = ("jacobian", "gradient", "chain", "fused", "second_derivative")


@dataclass(frozen=True)
class CheckResult:
    """One row of a report: one component of one check.

    ``tolerance`` is the tolerance at the worst entry; ``ratio`` the largest
    ``abs_err / tolerance`` over all entries (above 1 fails). ``worst_index`` is
    ``[b, i, b', j]`` for a Jacobian entry d y[b, i] / d x[b', j] and ``[b, k]`` for a
    gradient entry dL / d x[b, k]; ``analytic``, ``numeric`` and ``noise`` (the numerical
    reference's own error bound) are the values at that entry. FAIL rows also carry the
    failing ``input`` and ``target`` (up to 100,000 values) and a ``heatmap`` of
    |analytic - numeric| / tolerance over the worst batch block, pooled to 24 x 24.
    """

    check: str
    component: str
    verdict: Verdict
    convention: str = ""
    shape: tuple[int, ...] = ()
    trials: int = 0
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    tolerance: float | None = None
    ratio: float | None = None
    worst_index: tuple[int, ...] | None = None
    analytic: float | None = None
    numeric: float | None = None
    noise: float | None = None
    diagnosis: str = ""
    method: str = "central"
    seed: int = 0
    trial: int = 0
    origin: str = "builtin"
    reproduce: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    input: tuple[tuple[float, ...], ...] | None = None
    target: tuple[tuple[float, ...], ...] | None = None
    heatmap: tuple[tuple[float, ...], ...] | None = None
    worst_entries: tuple[str, ...] = ()
    wrt: str = ""
    worst_entry: str = ""
    """The worst entry by name, ``dout[1,2]/dw[0,3]`` (rows of layers), or empty."""
    point: tuple[tuple[str, tuple[int, ...], tuple[float, ...]], ...] | None = None
    """FAIL rows of layers: every array of the failing point as (name, shape, flat values)."""
    """The argument this row differentiates with respect to (layers: ``x``, ``w``, ``b``), or empty."""

    @property
    def failed(self) -> bool:
        return self.verdict in (Verdict.FAIL, Verdict.XPASS)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        data["shape"] = list(self.shape)
        data["worst_index"] = list(self.worst_index) if self.worst_index is not None else None
        data["notes"] = list(self.notes)
        data["worst_entries"] = list(self.worst_entries)
        data["point"] = ({name: {"shape": list(shape), "values": list(values)} for name, shape, values in self.point}
                         if self.point is not None else None)
        for key in ("input", "target", "heatmap"):
            value = getattr(self, key)
            data[key] = [list(r) for r in value] if value is not None else None
        return data


@dataclass(frozen=True)
class RunResult:
    """Every row of a run, in order."""

    results: tuple[CheckResult, ...]

    def summary(self) -> dict[str, int]:
        counts = Counter(r.verdict.value for r in self.results)
        return {v.value: counts.get(v.value, 0) for v in Verdict}

    @property
    def exit_code(self) -> ExitCode:
        """1 if anything was flagged, else 3 if anything could not run, else 0."""
        if any(r.failed for r in self.results):
            return ExitCode.FLAGGED
        if any(r.verdict is Verdict.ERROR for r in self.results):
            return ExitCode.NOT_RUN
        return ExitCode.OK

    @property
    def passed(self) -> bool:
        return self.exit_code is ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "results": [r.to_dict() for r in self.results],
            "summary": self.summary(),
            "exit_code": int(self.exit_code),
        }
