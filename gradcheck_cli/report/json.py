"""The ``--json`` report: a stable, documented schema (``schema: 1``).

``{"schema": 1, "results": [row, ...], "summary": {verdict: count}, "exit_code": int}``;
each row has ``check``, ``component``, ``convention``, ``verdict``, ``max_abs_error``,
``max_rel_error``, ``tolerance`` (at the worst entry), ``ratio`` (largest
abs_err / tolerance), ``worst_index``, ``analytic``, ``numeric`` and ``noise`` at the
worst entry, ``diagnosis``, ``method``, ``seed``, ``trial``, ``shape``, ``trials``,
``origin``, ``reproduce``, ``notes``, and for FAIL rows ``input``, ``target``,
``heatmap`` and ``worst_entries`` (null or empty otherwise). Rows of layers also name
the argument, ``wrt`` (``"w"``; empty for activations and losses), and the worst entry,
``worst_entry`` (``"dout[1,2]/dw[0,3]"``); their ``worst_index`` is the output's index
followed by the argument's. Non-finite numbers are written as strings ("inf", "nan").
"""

from __future__ import annotations

import json
import math
from typing import Any

from gradcheck_cli.report import write_text


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def dumps(data: dict[str, Any]) -> str:
    """Serialise a report dict; infinities become strings so any JSON parser reads it."""
    return json.dumps(_finite(data), indent=2) + "\n"


def write(data: dict[str, Any], path: str) -> None:
    """Write ``data`` to ``path``; ``-`` means standard output."""
    write_text(dumps(data), path, "JSON")
