"""Structure of a Jacobian: elementwise, row-wise or general, proposed by probes and confirmed.

Covers :func:`gradcheck_cli.structure.detect`, :func:`gradcheck_cli.numdiff.estimate_structured`
(whose structured estimate must agree with the dense one) and, through
:func:`gradcheck_cli.runner.run`, every derivative convention on elementwise, row-wise and
row-mixing functions: correct derivatives pass, wrong ones fail with the right diagnosis,
and a VJP that cannot take a stack of inputs is judged exactly like one that can.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gradcheck_cli import inputs, numdiff, structure
from gradcheck_cli.compare import SAFETY
from gradcheck_cli.numdiff import Evaluator
from gradcheck_cli.registry import Registry, register_activation, registering
from gradcheck_cli.registry.activations import (
    log_softmax,
    log_softmax_jacobian,
    log_softmax_vjp,
    sigmoid,
    softmax,
    softmax_jacobian,
    softmax_vjp,
)
from gradcheck_cli.results import CheckResult, Verdict
from gradcheck_cli.runner import CheckOptions, run

Array = np.ndarray
SHAPE = (3, 5)


# --- functions of each structure -------------------------------------------------------------

def whole_softmax(x: Array) -> Array:
    """Seed 004's forward: normalised over the whole array, so every row depends on every other."""
    e = np.exp(x)
    return e / e.sum()


def whole_softmax_vjp(x: Array, g: Array) -> Array:
    y = whole_softmax(x)
    return y * (g - np.sum(y * g))


def column_softmax(x: Array) -> Array:
    """A softmax over axis 0 (the batch) instead of the features."""
    e = np.exp(x - x.max(axis=-2, keepdims=True))
    return e / e.sum(axis=-2, keepdims=True)


def row_scaled(x: Array) -> Array:
    """Row-wise but not a softmax: each output is scaled by its row's sum."""
    return x * np.sum(x, axis=-1, keepdims=True)


def _estimate(f: Callable[[Array], Array], x: Array) -> tuple[Evaluator, Array, numdiff.StructuredEstimate]:
    scale = inputs.step_scale(x, "real")
    evaluator = Evaluator(f, x, scale)
    return evaluator, scale, numdiff.estimate_structured(evaluator, x, scale)


@pytest.mark.parametrize(
    ("f", "kind"),
    [
        (sigmoid, structure.ELEMENTWISE),
        (np.tanh, structure.ELEMENTWISE),
        (softmax, structure.ROWWISE),
        (log_softmax, structure.ROWWISE),
        (row_scaled, structure.ROWWISE),
        (whole_softmax, structure.GENERAL),
        (column_softmax, structure.GENERAL),
    ],
    ids=["sigmoid", "tanh", "softmax", "log_softmax", "row_scaled", "whole_softmax", "column_softmax"],
)
@pytest.mark.parametrize("shape", [SHAPE, (1, 6), (4, 2)], ids=["3x5", "1x6", "4x2"])
def test_detect_names_the_structure(rng: np.random.Generator, f: Callable[[Array], Array], kind: str,
                                    shape: tuple[int, int]) -> None:
    x = rng.normal(scale=2.0, size=shape)
    scale = inputs.step_scale(x, "real")
    evaluator = Evaluator(f, x, scale)
    expected = kind
    if shape[0] == 1 and f is whole_softmax:
        expected = structure.ROWWISE  # one row: normalising the whole array is a row-wise softmax
    if shape[0] == 1 and f is column_softmax:
        expected = structure.ELEMENTWISE  # one row: a softmax over the batch axis is the constant 1
    assert structure.detect(evaluator, x, evaluator.y0, scale) == expected


@pytest.mark.parametrize("n", [*range(1, 70), 1000, 4097])
def test_separating_sets_separate_every_ordered_pair_with_few_sets(n: int) -> None:
    sets = structure.separating_sets(n)
    # For every i != j some set holds j and not i: no index's membership column contains another's.
    inside = sets.T.astype(int)  # (n, sets)
    holds_j_not_i = inside @ (1 - inside).T  # [j, i]: sets holding j but not i
    np.fill_diagonal(holds_j_not_i, 1)
    assert holds_j_not_i.min() >= 1
    m = len(sets)
    assert math.comb(m, m // 2) >= n and (m == 1 or math.comb(m - 1, (m - 1) // 2) < n)  # as few as Sperner allows
    assert m <= 2 * max(1, (n - 1).bit_length())  # never more than the bit-and-complement sets


def test_a_single_coupling_between_far_columns_or_rows_is_seen_by_the_probes(rng: np.random.Generator) -> None:
    # Elementwise except that output 700 also reads input 3: a single pair the sets must separate.
    def almost_elementwise(v: Array) -> Array:
        out = np.tanh(v)
        out[..., 700] += 1e-3 * v[..., 3]
        return out

    x = rng.normal(size=(2, 1000))
    scale = inputs.step_scale(x, "real")
    evaluator = Evaluator(almost_elementwise, x, scale)
    assert structure.detect(evaluator, x, evaluator.y0, scale) == structure.ROWWISE
    evaluator = Evaluator(np.tanh, x, scale)
    assert structure.detect(evaluator, x, evaluator.y0, scale) == structure.ELEMENTWISE

    def one_row_reads_another(v: Array) -> Array:  # row 37 of 40 also reads row 2
        out = softmax(v)
        out[..., 37, :] += 1e-3 * v[..., 2, :1]
        return out

    x = rng.normal(size=(40, 6))
    scale = inputs.step_scale(x, "real")
    evaluator = Evaluator(one_row_reads_another, x, scale)
    assert structure.detect(evaluator, x, evaluator.y0, scale) == structure.GENERAL


def test_detect_refuses_outputs_that_are_not_batched(rng: np.random.Generator) -> None:
    x = rng.normal(size=SHAPE)
    scale = inputs.step_scale(x, "real")
    evaluator = Evaluator(lambda v: np.sum(v**2, axis=(-2, -1)), x, scale)
    assert structure.detect(evaluator, x, evaluator.y0, scale) == structure.GENERAL


@pytest.mark.parametrize(
    ("f", "form", "kind", "value_shape"),
    [
        (sigmoid, "diagonal", structure.ELEMENTWISE, SHAPE),
        (softmax, "blocks", structure.ROWWISE, (SHAPE[0] * SHAPE[1], SHAPE[1])),
        (whole_softmax, "dense", structure.GENERAL, (SHAPE[0] * SHAPE[1],) * 2),
    ],
    ids=["elementwise", "rowwise", "general"],
)
def test_structured_estimate_takes_the_cheapest_form(rng: np.random.Generator, f: Callable[[Array], Array],
                                                     form: str, kind: str, value_shape: tuple[int, int]) -> None:
    x = rng.normal(size=SHAPE)
    _, _, est = _estimate(f, x)
    assert (est.form, est.structure) == (form, kind)
    assert est.value.shape == value_shape and est.error.shape == value_shape
    assert est.method == "central"
    if kind == structure.GENERAL:
        assert "rows of the batch interact" in est.note and "general path" in est.note, est.note
    else:
        assert est.note == "", "a structure the probes found and the directional check confirmed needs no note"


@pytest.mark.parametrize(
    "f", [sigmoid, np.tanh, softmax, log_softmax, row_scaled, whole_softmax],
    ids=["sigmoid", "tanh", "softmax", "log_softmax", "row_scaled", "whole_softmax"],
)
@pytest.mark.parametrize("shape", [SHAPE, (4, 10), (1, 7)], ids=["3x5", "4x10", "1x7"])
def test_structured_estimate_equals_the_dense_one_within_their_bounds(
        rng: np.random.Generator, f: Callable[[Array], Array], shape: tuple[int, int]) -> None:
    for _ in range(3):
        x = rng.normal(scale=3.0, size=shape)
        evaluator, scale, est = _estimate(f, x)
        dense = numdiff.estimate(f, x, scale)
        b = shape[0]
        value = structure.convert(est.form, "dense", est.value, b)
        error = structure.convert_error(est.form, "dense", est.error, b, evaluator.y0, scale, evaluator.eps,
                                        evaluator.tiny)
        assert value.shape == dense.value.shape == error.shape
        assert np.all(np.isfinite(value)) and np.all(error >= 0)
        gap = np.abs(value - dense.value)
        allowed = SAFETY * (error + dense.error)
        worst = np.unravel_index(int(np.argmax(gap - allowed)), gap.shape)
        assert np.all(gap <= allowed), (f, x, worst, value[worst], dense.value[worst], allowed[worst])
        # Entries the structure rules out are exactly zero in the structured estimate,
        # and tiny (below their own bound) in the dense one.
        if est.structure != structure.GENERAL:
            k = shape[1]
            rows, cols = np.indices(value.shape)
            outside = rows // k != cols // k
            if est.structure == structure.ELEMENTWISE:
                outside = rows != cols
            assert np.all(value[outside] == 0.0)
            assert np.all(np.abs(dense.value[outside]) <= SAFETY * (error[outside] + dense.error[outside]))


# --- a function that fools the probes ----------------------------------------------------------
#
# Row b's outputs also depend on column 0 of every *other* row, through phi(t) = t (1 - (t/R)^2)^4
# for |t| < R and exactly 0 beyond. At the checked point (x[:, 0] == ANCHOR, t = 0) phi'(0) = 1,
# so the true Jacobian has cross-row entries COUPLING. The structure probes move a row by at
# least PROBE_STEP * scale = 5e-4 > R: phi is then exactly 0, the other rows do not change by a
# single bit, and the probes propose "row-wise". The directional check moves every coordinate by
# the stencil's step (~6e-6 << R), sees the coupling, and must reject the proposal.

ANCHOR = np.array([0.3, -0.7, 0.9])
COUPLING = 0.5
REACH = 3e-4


def _phi(t: Array) -> Array:
    return t * np.maximum(0.0, 1.0 - (t / REACH) ** 2) ** 4


def _dphi(t: Array) -> Array:
    inside = np.maximum(0.0, 1.0 - (t / REACH) ** 2)
    return inside**4 - 8.0 * (t / REACH) ** 2 * inside**3


def coupled(x: Array) -> Array:
    t = _phi(x[..., :, 0] - ANCHOR)
    others = np.sum(t, axis=-1, keepdims=True) - t
    return softmax(x) + COUPLING * others[..., :, None]


def coupled_vjp(x: Array, g: Array) -> Array:
    slope = _dphi(x[..., :, 0] - ANCHOR)  # (..., B)
    per_row = np.sum(g, axis=-1)  # (..., B): sum_i g[b, i]
    from_others = np.sum(per_row, axis=-1, keepdims=True) - per_row
    out = softmax_vjp(x, g).copy()
    out[..., :, 0] += COUPLING * slope * from_others
    return out


def _coupled_point(rng: np.random.Generator) -> Array:
    x = rng.normal(size=SHAPE)
    x[:, 0] = ANCHOR
    return x


def test_coupled_function_fools_the_probes(rng: np.random.Generator) -> None:
    # Precondition of the next tests: the probes alone would call it row-wise.
    x = _coupled_point(rng)
    scale = inputs.step_scale(x, "real")
    assert np.all(structure.PROBE_STEP * scale[:, 0] > REACH)
    evaluator = Evaluator(coupled, x, scale)
    assert structure.detect(evaluator, x, evaluator.y0, scale) == structure.ROWWISE


def test_directional_check_sends_a_fooling_function_to_the_general_path(rng: np.random.Generator) -> None:
    x = _coupled_point(rng)
    evaluator, scale, est = _estimate(coupled, x)
    assert est.structure == structure.GENERAL and est.form == "dense"
    assert "failed the directional check" in est.note and "general path" in est.note
    dense = numdiff.estimate(coupled, x, scale)
    assert np.array_equal(est.value, dense.value)
    jac = est.value.reshape(SHAPE[0], SHAPE[1], SHAPE[0], SHAPE[1])
    # dy[0, i]/dx[1, 0] = COUPLING * phi'(0): the coupling the probes missed is measured.
    assert jac[0, :, 1, 0] == pytest.approx(np.full(SHAPE[1], COUPLING), rel=1e-2)
    assert jac[0, :, 1, 1:] == pytest.approx(np.zeros((SHAPE[1], SHAPE[1] - 1)), abs=1e-9)


def _user_registry(**entries: dict[str, Any]) -> Registry:
    registry = Registry()
    with registering(registry, "test"):
        for name, kwargs in entries.items():
            register_activation(name, **kwargs)
    return registry


def test_fooling_function_is_checked_on_the_general_path_and_the_row_says_so(rng: np.random.Generator) -> None:
    x = _coupled_point(rng)
    registry = _user_registry(coupled_right=dict(forward=coupled, vjp=coupled_vjp),
                              coupled_rowwise=dict(forward=coupled, vjp=softmax_vjp))
    right, rowwise = run(["coupled_right", "coupled_rowwise"], CheckOptions(input=x), registry=registry).results
    for row in (right, rowwise):
        assert any("failed the directional check" in note for note in row.notes), row.notes
    assert right.verdict is Verdict.PASS, right.diagnosis
    assert rowwise.verdict is Verdict.FAIL
    assert "mixes rows of the batch" in rowwise.diagnosis
    assert len(rowwise.worst_index or ()) == 4
    b_out, _, b_in, j = rowwise.worst_index or ()
    assert b_out != b_in and j == 0, "the worst entry is a cross-row entry of column 0"


# --- verdicts through the runner, every convention ---------------------------------------------

def _rows(registry: Registry, spec: str, seed: int = 0, shape: tuple[int, int] = SHAPE) -> list[CheckResult]:
    return list(run([spec], CheckOptions(seed=seed, shape=shape), registry=registry).results)


def _scaled_off_diagonal(x: Array) -> Array:
    jac = softmax_jacobian(x)
    k = jac.shape[-1]
    return np.where(np.eye(k, dtype=bool), jac, 1.05 * jac)


CORRECT: dict[str, dict[str, Any]] = {
    "sig_derivative": dict(forward=sigmoid, derivative=lambda x: sigmoid(x) * (1.0 - sigmoid(x))),
    "sig_of_output": dict(forward=sigmoid, derivative_of_output=lambda y: y * (1.0 - y)),
    "sig_jacobian": dict(forward=sigmoid, jacobian=lambda x: np.einsum(
        "...i,ij->...ij", sigmoid(x) * (1.0 - sigmoid(x)), np.eye(x.shape[-1]))),
    "sig_vjp": dict(forward=sigmoid, vjp=lambda x, g: sigmoid(x) * (1.0 - sigmoid(x)) * g),
    "sm_jacobian": dict(forward=softmax, jacobian=softmax_jacobian),
    "sm_vjp": dict(forward=softmax, vjp=softmax_vjp),
    "sm_jvp": dict(forward=softmax, jvp=softmax_vjp),  # J is symmetric
    "lsm_jacobian": dict(forward=log_softmax, jacobian=log_softmax_jacobian),
    "lsm_vjp": dict(forward=log_softmax, vjp=log_softmax_vjp),
    "lsm_jvp": dict(forward=log_softmax, jvp=lambda x, v: v - np.sum(softmax(x) * v, axis=-1, keepdims=True)),
    "whole_vjp": dict(forward=whole_softmax, vjp=whole_softmax_vjp),
    "whole_jvp": dict(forward=whole_softmax, jvp=whole_softmax_vjp),  # J is symmetric here too
}

WRONG: dict[str, tuple[dict[str, Any], str]] = {
    "sig_derivative_x2": (dict(forward=sigmoid, derivative=lambda x: 2.0 * sigmoid(x) * (1.0 - sigmoid(x))),
                          "off by a constant factor 2"),
    "sig_of_output_wants_x": (dict(forward=sigmoid, derivative_of_output=lambda y: sigmoid(y) * (1.0 - sigmoid(y))),
                              "matches once fed x"),
    "sm_jacobian_off_diagonal": (dict(forward=softmax, jacobian=_scaled_off_diagonal),
                                 "off-diagonal entries are all"),
    "sm_vjp_sign": (dict(forward=softmax, vjp=lambda x, g: -softmax_vjp(x, g)), "sign flipped"),
    "lsm_jvp_transposed": (dict(forward=log_softmax, jvp=log_softmax_vjp), "transposed"),
    "sm_vjp_batch_sum": (dict(forward=softmax, vjp=lambda x, g: softmax(x) * (g - np.sum(softmax(x) * g))),
                         "leak into each other"),
    "whole_rowwise_vjp": (dict(forward=whole_softmax, vjp=softmax_vjp), "mixes rows of the batch"),
    "sm_elementwise": (dict(forward=softmax, derivative=lambda x: softmax(x) * (1.0 - softmax(x))),
                       "only the Jacobian's diagonal"),
}


@pytest.fixture(scope="module")
def forms() -> Registry:
    return _user_registry(**CORRECT, **{name: kwargs for name, (kwargs, _) in WRONG.items()})


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_derivative_passes_in_every_form(forms: Registry, name: str) -> None:
    for seed in range(3):
        rows = _rows(forms, name, seed)
        assert [r.component for r in rows] == ["jacobian"]
        assert rows[0].verdict is Verdict.PASS, (seed, rows[0].diagnosis)
        assert rows[0].convention == next(iter(CORRECT[name].keys() - {"forward"}))


@pytest.mark.parametrize("name", list(WRONG))
def test_wrong_derivative_fails_in_every_form_with_its_diagnosis(forms: Registry, name: str) -> None:
    fragment = WRONG[name][1]
    for seed in range(3):
        (row,) = _rows(forms, name, seed)
        assert row.verdict is Verdict.FAIL, (seed, row.diagnosis)
        assert fragment in row.diagnosis, (seed, row.diagnosis)
        assert row.ratio is not None and row.ratio > 1.0


def test_builtin_softmax_diagonal_is_flagged_as_the_diagonal_only(registry: Registry) -> None:
    (row,) = _rows(registry, "softmax@diagonal")
    assert row.verdict is Verdict.FAIL and row.convention == "derivative"
    assert "only the Jacobian's diagonal" in row.diagnosis
    assert "output i depends on input j != i" in row.diagnosis
    b_out, i, b_in, j = row.worst_index or ()
    assert b_out == b_in and i != j, "the worst entry is an off-diagonal entry inside one row"
    assert row.analytic == 0.0


def test_builtin_batch_sum_vjp_leaks_rows_at_3x5(registry: Registry) -> None:
    (row,) = _rows(registry, "softmax@batch_sum")
    assert row.verdict is Verdict.FAIL and row.convention == "vjp"
    assert "leak" in row.diagnosis
    assert "sum over the whole batch" in row.diagnosis
    b_out, _, b_in, _ = row.worst_index or ()
    assert b_out != b_in, "the worst entry lies between different rows of the batch"


def test_builtin_correct_softmax_passes_every_convention_at_3x5(registry: Registry) -> None:
    rows = _rows(registry, "softmax")
    assert [(r.convention, r.verdict) for r in rows] == [("jacobian", Verdict.PASS), ("vjp", Verdict.PASS)]


# --- a VJP that cannot take a stack: same verdict as one that can ---------------------------------

class Spy:
    """Records the ndim of every input a VJP sees, and whether it refused one."""

    def __init__(self, vjp: Callable[[Array, Array], Array], stackable: bool) -> None:
        self.vjp = vjp
        self.stackable = stackable
        self.ndims: list[int] = []
        self.refused = 0

    def __call__(self, x: Array, g: Array) -> Array:
        self.ndims.append(x.ndim)
        if not self.stackable and x.ndim != 2:
            self.refused += 1
            raise ValueError(f"expected a (B, K) batch, got {x.ndim}-D input")
        return self.vjp(x, g)


def _loop_softmax_vjp(x: Array, g: Array) -> Array:
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        y = softmax(x[b])
        out[b] = y * (g[b] - y @ g[b])
    return out


def _loop_softmax_vjp_plus(x: Array, g: Array) -> Array:
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        y = softmax(x[b])
        out[b] = y * (g[b] + y @ g[b])  # the sign of the outer-product term flipped
    return out


def _softmax_vjp_plus(x: Array, g: Array) -> Array:
    y = softmax(x)
    return y * (g + np.sum(y * g, axis=-1, keepdims=True))


@pytest.mark.parametrize(
    ("stacked", "looped", "verdict"),
    [(softmax_vjp, _loop_softmax_vjp, Verdict.PASS), (_softmax_vjp_plus, _loop_softmax_vjp_plus, Verdict.FAIL)],
    ids=["correct", "wrong"],
)
@pytest.mark.parametrize("shape", [SHAPE, (6, 4)], ids=["3x5", "6x4"])
def test_row_wise_vjp_read_by_stacked_calls_gives_the_looped_verdict(
        stacked: Callable[[Array, Array], Array], looped: Callable[[Array, Array], Array], verdict: Verdict,
        shape: tuple[int, int]) -> None:
    broadcasting, loop = Spy(stacked, stackable=True), Spy(looped, stackable=False)
    registry = _user_registry(stacked=dict(forward=softmax, vjp=broadcasting),
                              looped=dict(forward=softmax, vjp=loop))
    a, b = run(["stacked", "looped"], CheckOptions(seed=5, shape=shape), registry=registry).results
    assert 3 in broadcasting.ndims, "a row-wise VJP that broadcasts is read K columns at a time, stacked"
    assert loop.refused >= 1, "the looped VJP was offered a stack, refused it, and was then called row by row"
    assert a.verdict is b.verdict is verdict, (a.diagnosis, b.diagnosis)
    assert a.diagnosis == b.diagnosis
    assert a.worst_index == b.worst_index
    assert a.max_abs_error == pytest.approx(b.max_abs_error, rel=1e-9, abs=1e-15)
    assert a.ratio == pytest.approx(b.ratio, rel=1e-9)
    if verdict is Verdict.PASS:
        # Row-wise: one call per column (plus probes) in each of the 3 trials, not one per batch entry.
        assert len(loop.ndims) < 3 * shape[0] * shape[1]


# --- messages ----------------------------------------------------------------------------------

def test_small_constant_factor_is_printed_so_that_it_differs_from_1() -> None:
    registry = _user_registry(sig_ppm=dict(forward=sigmoid,
                                           derivative=lambda x: (1.0 + 1e-6) * sigmoid(x) * (1.0 - sigmoid(x))))
    (row,) = _rows(registry, "sig_ppm")
    assert row.verdict is Verdict.FAIL  # float64 differencing resolves a 1e-6 relative error
    assert "off by a constant factor" in row.diagnosis
    assert "analytic = 1 x numeric" not in row.diagnosis, row.diagnosis
    factor = re.search(r"analytic = ([0-9.]+) x numeric", row.diagnosis)
    assert factor and float(factor.group(1)) == pytest.approx(1.0 + 1e-6, abs=1e-9), row.diagnosis


def test_row_mixing_function_row_says_it_used_the_general_path(forms: Registry) -> None:
    (row,) = _rows(forms, "whole_vjp")
    assert row.verdict is Verdict.PASS
    assert any("general path" in note for note in row.notes), row.notes
    (row_wise,) = _rows(forms, "sm_vjp")
    assert not any("general path" in note for note in row_wise.notes), row_wise.notes
