"""Hypothesis: over random shapes and seeds, correct derivatives pass and injected bugs fail.

Each built-in's first derivative convention is re-registered into a fresh registry, either
unchanged (the control: the wrapping itself must not break anything) or with one bug
injected: scaled by a constant c not within 1e-3 of 1, sign flipped, or 1e-4 added to a
single entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradcheck_cli.plugins import default_registry
from gradcheck_cli.registry import FunctionSpec, Registry, register_activation, register_loss, registering
from gradcheck_cli.results import Verdict
from gradcheck_cli.runner import CheckOptions, run

_BUILTIN = {spec.name: spec for spec in default_registry() if "@" not in spec.name and spec.kind != "layer"}
BUILTINS = sorted(_BUILTIN)
# Entries whose derivative can vanish on a whole small sample (relu at all-negative
# inputs): scaling or negating zero changes nothing, so they sit out those two bug kinds.
CAN_VANISH = {"relu", "hard_tanh", "hard_sigmoid"}
NONVANISHING = [n for n in BUILTINS if n not in CAN_VANISH]

Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]

shapes = st.tuples(st.integers(1, 4), st.integers(2, 6))
seeds = st.integers(0, 2**32 - 1)
factors = st.floats(-3.0, 3.0, allow_nan=False).filter(lambda c: abs(c - 1.0) > 1e-3)


def _register(spec: FunctionSpec, wrap: Wrap) -> Registry:
    registry = Registry()
    convention = spec.conventions[0]
    derivative = wrap(spec.derivatives[convention])
    with registering(registry, "property"):
        if spec.kind == "activation":
            register_activation("under_test", forward=spec.forward, domain=spec.domain, kinks=spec.kinks,
                                **{convention: derivative})
        else:
            assert spec.target is not None
            register_loss("under_test", forward=spec.forward, target=spec.target, domain=spec.domain,
                          kinks=spec.kinks, **{convention: derivative})
    return registry


def _verdict(name: str, wrap: Wrap, shape: tuple[int, int], seed: int) -> tuple[Verdict, str]:
    registry = _register(_BUILTIN[name], wrap)
    (row,) = run(["under_test"], CheckOptions(seed=seed, trials=1, shape=shape), registry=registry).results
    return row.verdict, row.diagnosis


def unchanged(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


def scaled(c: float) -> Wrap:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *args: c * np.asarray(fn(*args))
    return wrap


def negated(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *args: -np.asarray(fn(*args))


def bumped(fn: Callable[..., Any]) -> Callable[..., Any]:
    def bump(*args: Any) -> np.ndarray:
        out = np.array(fn(*args), dtype=np.float64)
        out.flat[0] += 1e-4
        return out
    return bump


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(BUILTINS), shape=shapes, seed=seeds)
def test_correct_builtins_pass(name: str, shape: tuple[int, int], seed: int) -> None:
    result = run([name], CheckOptions(seed=seed, trials=1, shape=shape), registry=default_registry())
    assert [(r.verdict, r.diagnosis) for r in result.results if r.verdict is not Verdict.PASS] == []


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(BUILTINS), shape=shapes, seed=seeds)
def test_rewrapped_correct_derivative_passes(name: str, shape: tuple[int, int], seed: int) -> None:
    assert _verdict(name, unchanged, shape, seed)[0] is Verdict.PASS


@settings(max_examples=50, deadline=None)
@given(name=st.sampled_from(NONVANISHING), shape=shapes, seed=seeds, c=factors)
def test_scaled_derivative_fails(name: str, shape: tuple[int, int], seed: int, c: float) -> None:
    verdict, diagnosis = _verdict(name, scaled(c), shape, seed)
    assert verdict is Verdict.FAIL, (c, diagnosis)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(NONVANISHING), shape=shapes, seed=seeds)
def test_sign_flipped_derivative_fails(name: str, shape: tuple[int, int], seed: int) -> None:
    verdict, diagnosis = _verdict(name, negated, shape, seed)
    assert verdict is Verdict.FAIL
    assert "sign flipped" in diagnosis, diagnosis


@settings(max_examples=50, deadline=None)
@given(name=st.sampled_from(BUILTINS), shape=shapes, seed=seeds)
def test_one_entry_bumped_by_1e4_fails(name: str, shape: tuple[int, int], seed: int) -> None:
    verdict, diagnosis = _verdict(name, bumped, shape, seed)
    assert verdict is Verdict.FAIL, diagnosis


# --- extreme explicit inputs -------------------------------------------------------------

# Ranges chosen inside what float64 represents with full relative precision for each
# function's outputs (see tests/oracle/test_extremes.py for the known failures beyond).
RANGES = {"softmax": 300.0, "log_softmax": 15.0, "sigmoid": 40.0, "tanh": 20.0, "softplus": 40.0,
          "silu": 40.0, "elu": 40.0, "gelu": 8.0, "softsign": 1e6}


@st.composite
def extreme_inputs(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    name = draw(st.sampled_from(sorted(RANGES)))
    bound = RANGES[name]
    shape = draw(shapes)
    values = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    return name, draw(hnp.arrays(np.float64, shape, elements=values))


@settings(max_examples=80, deadline=None)
@given(case=extreme_inputs())
def test_extreme_explicit_inputs_pass(case: tuple[str, np.ndarray]) -> None:
    name, x = case
    result = run([name], CheckOptions(input=x), registry=default_registry())
    assert [(r.convention, r.verdict, r.diagnosis) for r in result.results if r.verdict is not Verdict.PASS] == []
