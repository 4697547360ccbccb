"""``--save-failures DIR``: the failing inputs, one ``.npz`` per FAIL row, for a test to load.

    data = np.load("failures/000-softmax@diagonal-jacobian-derivative.npz")
    x, target = data["input"], data.get("target")
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from gradcheck_cli.errors import UsageError
from gradcheck_cli.results import RunResult, Verdict


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@+_.-]+", "_", text).strip("_") or "check"


def save(result: RunResult, folder: str) -> list[Path]:
    """Write every FAIL row's input (and target) to ``folder``; return the paths written."""
    directory = Path(folder)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"Cannot create --save-failures folder '{folder}': {exc.strerror}. "
                         f"Give a writable folder path.") from exc
    written = []
    for index, row in enumerate(result.results):
        if row.verdict is not Verdict.FAIL or row.input is None:
            continue
        path = directory / f"{index:03d}-{_slug(row.check)}-{row.component}-{row.convention}.npz"
        arrays: dict[str, Any] = {
            "input": np.asarray(row.input, dtype=np.float64), "check": np.asarray(row.check),
            "component": np.asarray(row.component), "seed": np.asarray(row.seed),
            "trial": np.asarray(row.trial), "diagnosis": np.asarray(row.diagnosis),
            "reproduce": np.asarray(row.reproduce)}
        if row.target is not None:
            arrays["target"] = np.asarray(row.target, dtype=np.float64)
        np.savez(path, **arrays)
        written.append(path)
    return written
