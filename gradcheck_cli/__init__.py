"""gradcheck: check hand-written derivatives against finite differences.

The public API, usable from your own tests::

    from gradcheck_cli import register_activation, run, CheckOptions
    result = run(["softmax+mse"], CheckOptions(seed=0))
    assert result.passed, result.to_dict()

    from gradcheck_cli import assert_gradients
    assert_gradients(my_softmax, vjp=my_softmax_vjp)   # AssertionError says what is wrong
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradcheck_cli.errors import ExitCode, GradcheckError
from gradcheck_cli.registry import register_activation, register_fused, register_layer, register_loss, threadsafe

if TYPE_CHECKING:
    from gradcheck_cli.explanation import explain
    from gradcheck_cli.results import CheckResult, RunResult, Verdict
    from gradcheck_cli.runner import CheckOptions, run
    from gradcheck_cli.testing import assert_gradients

__all__ = [
    "CheckOptions", "CheckResult", "ExitCode", "GradcheckError", "RunResult", "Verdict",
    "assert_gradients", "explain", "register_activation", "register_fused", "register_layer", "register_loss", "run",
    "threadsafe",
]
__version__ = "0.1.0"

_LAZY = {"CheckOptions": "runner", "explain": "explanation", "run": "runner",
         "CheckResult": "results", "RunResult": "results", "Verdict": "results",
         "assert_gradients": "testing"}


def __getattr__(name: str) -> Any:
    # numpy-heavy modules load on first use, so `import gradcheck_cli` in a plugin is cheap.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"gradcheck_cli.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gradcheck_cli' has no attribute {name!r}")
