"""A zoo of layer code written outside gradcheck, mapped in YAML from the README alone, run by the real `gradcheck ci`.

tests/fixtures/layer_zoo holds functional (N, C, H, W / N, T, D) layers, a GRU cell with a dict VJP, losses
on labels and binary targets, and classes in several styles (Keras-like `__call__`, `params`/`grads`
dictionaries, two inputs, running statistics, dropout). Every correct entry must pass on every row; every
`*_bug` entry must be flagged on the argument that holds the mistake, and only there, with a diagnosis
that names it where the README promises one. Behaviour that is wrong today is not encoded here: see
tests/fixtures/layer_zoo/known_gaps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "tests" / "fixtures" / "layer_zoo" / "gradcheck.yaml"
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1"}
ENV.pop("FORCE_COLOR", None)

# Correct entries: every row PASS.
CORRECT = ["sbn", "taffine", "embed", "rnn", "gru", "gnorm", "avgpool", "resblock", "zrelu", "centered",
           "prelu_fn", "svm", "seqce", "sigce_elem", "sigce", "kdense", "mlinear", "mtanh", "mul", "prelu",
           "kdrop", "kbn", "kbn_eval", "gdrop", "ce"]

# Known bugs: {argument flagged: diagnosis fragment, or None where today's diagnosis is only generic}.
# Every other argument of the entry must pass.
BUGS: dict[str, dict[str, str | None]] = {
    "sbn_bug": {"x": None},
    "taffine_bug": {"x": None},
    "embed_bug": {"W": None},
    "rnn_bug": {"Wh": "dWh is transposed"},
    "rnn_nocarry": {name: "misses part of the dependence" for name in ("x", "h0", "Wx", "Wh", "b")},
    "gru_bug": {"h": None},
    "gnorm_bug": {"x": "does not depend on x at all"},
    "avgpool_bug": {"x": "constant factor 4"},
    "resblock_bug": {"x": "the identity path (a skip connection's + x) is missing"},
    "zrelu_inplace": {"x": "changes its upstream gradient dout in place"},
    "prelu_fn_bug": {"alpha": "does not depend on alpha at all"},
    "svm_bug": {"": "missing (N = 5, the size of axis 0"},
    "seqce_bug": {"": "constant factor 3"},
    "sigce_bug": {"": "sign flipped"},
    "kdense_bug": {"bias": "dbias has shape (4,), but bias has shape (3,)"},
    "mlinear_bug": {"params[w]": "constant factor 1/4"},
    "mul_bug": {"a": "swapped", "b": "swapped"},
    "prelu_bug": {"alpha": "sign flipped"},
    "kdrop_bug": {"x": "does not depend on x at all"},
    "kbn_eval_bug": {"x": "reduces over the batch axis"},
    "gdrop_bug": {"x": "does not depend on x at all"},
    "ce_bug": {"": "missing (N = 5, the size of axis 0"},
}


@pytest.fixture(scope="module")
def zoo() -> tuple[subprocess.CompletedProcess[str], dict[str, list[dict[str, Any]]]]:
    """One `gradcheck ci` run over the whole zoo, its JSON rows grouped by check."""
    proc = subprocess.run([sys.executable, "-m", "gradcheck_cli", "ci", str(ZOO), "--json", "-"],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    by_check: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in json.loads(proc.stdout)["results"]:
        by_check[row["check"]].append(row)
    return proc, dict(by_check)


def test_zoo_is_green(zoo: tuple[subprocess.CompletedProcess[str], dict[str, list[dict[str, Any]]]]) -> None:
    proc, rows = zoo
    assert proc.returncode == 0, proc.stderr
    assert set(rows) == set(CORRECT) | set(BUGS)


@pytest.mark.parametrize("check", CORRECT)
def test_correct_layer_passes(check: str,
                              zoo: tuple[subprocess.CompletedProcess[str], dict[str, list[dict[str, Any]]]]) -> None:
    rows = zoo[1][check]
    assert rows
    assert {row["verdict"] for row in rows} == {"PASS"}, [(r["wrt"], r["verdict"], r["diagnosis"]) for r in rows]


@pytest.mark.parametrize("check", sorted(BUGS))
def test_bug_flagged_on_its_argument(check: str,
                                     zoo: tuple[subprocess.CompletedProcess[str],
                                                dict[str, list[dict[str, Any]]]]) -> None:
    expected = BUGS[check]
    rows = {row["wrt"]: row for row in zoo[1][check]}
    assert set(expected) <= set(rows), (expected, list(rows))
    for wrt, row in rows.items():
        if wrt in expected:
            assert row["verdict"] == "XFAIL", (wrt, row["verdict"], row["diagnosis"])
            fragment = expected[wrt]
            if fragment is not None:
                assert fragment in row["diagnosis"], (wrt, row["diagnosis"])
        else:
            assert row["verdict"] == "PASS", (wrt, row["verdict"], row["diagnosis"])
