"""``--save-failures DIR``: the failing inputs, one ``.npz`` per FAIL row, for a test to load.

    data = np.load("failures/000-softmax@diagonal-jacobian-derivative.npz")
    x, target = data["input"], data.get("target")

A layer's file holds every array of the failing point under its argument's name
(``data["x"], data["w"], data["b"]``, and ``data["target"]`` for a loss) and ``wrt``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from gradcheck_cli.report import ReportError, write_atomic
from gradcheck_cli.results import RunResult, Verdict

# File names stay far below the usual 255-byte limit, whatever the check is called.
MAX_STEM = 100


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@+_.-]+", "_", text).strip("_") or "check"


def file_name(index: int, check: str, component: str, convention: str) -> str:
    """``000-softmax@diagonal-jacobian-derivative.npz``; a long name is cut and given a short hash.

    The slug is ASCII, so characters are bytes; the hash of the full name keeps two long
    names that share their first bytes apart.
    """
    stem = f"{index:03d}-{_slug(check)}-{_slug(component)}-{_slug(convention)}"
    if len(stem) > MAX_STEM:
        digest = hashlib.sha1(stem.encode(), usedforsecurity=False).hexdigest()[:10]
        stem = f"{stem[:MAX_STEM - 11]}-{digest}"
    return f"{stem}.npz"


def save(result: RunResult, folder: str) -> list[Path]:
    """Write every FAIL row's input (and target) to ``folder``; return the paths written.

    The folder (and its missing parents) is created only when there is something to save;
    each file is written atomically.

    Raises
    ------
    ReportError
        When the folder cannot be created or a file cannot be written.
    """
    rows = [(i, row) for i, row in enumerate(result.results)
            if row.verdict is Verdict.FAIL and (row.input is not None or row.point is not None)]
    if not rows:
        return []
    directory = Path(folder)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"Cannot create the --save-failures folder '{folder}': {exc.strerror or exc}. "
                          f"Give a writable folder path.") from exc
    written = []
    for index, row in rows:
        component = f"{row.component}-{row.wrt}" if row.wrt else row.component
        path = directory / file_name(index, row.check, component, row.convention)
        arrays: dict[str, Any] = {
            "check": np.asarray(row.check),
            "component": np.asarray(row.component), "seed": np.asarray(row.seed),
            "trial": np.asarray(row.trial), "diagnosis": np.asarray(row.diagnosis),
            "reproduce": np.asarray(row.reproduce)}
        if row.input is not None:
            arrays["input"] = np.asarray(row.input, dtype=np.float64)
        if row.target is not None:
            arrays["target"] = np.asarray(row.target, dtype=np.float64)
        if row.point is not None:
            arrays["wrt"] = np.asarray(row.wrt)
            for name, shape, values in row.point:
                arrays.setdefault(name, np.asarray(values).reshape(shape))
        write_atomic(path, functools.partial(np.savez, **arrays), "a --save-failures file")
        written.append(path)
    return written
