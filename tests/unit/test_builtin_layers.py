"""The built-in layers against a float64 central-difference Jacobian written here, and their
wrong variants against the right gradients, mistake by mistake; then both through the engine.

The reference is independent of gradcheck's engine: one forward per perturbed entry, the
full Jacobian d out / d arg, then the analytic backward's VJP compared with dout^T J.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gradcheck_cli.registry import Registry
from gradcheck_cli.registry import builtin_layers as L
from gradcheck_cli.results import Verdict
from gradcheck_cli.runner import CheckOptions, run

Array = np.ndarray
STEP = 1e-6
DROPOUT_SEED = 7


def _call(forward: Callable[..., Any], args: list[Array], kwargs: dict[str, Any], stochastic: bool) -> Any:
    if stochastic:
        np.random.seed(DROPOUT_SEED)  # the same mask for every call, as gradcheck's replay does
    return forward(*args, **kwargs)


def numeric_jacobian(forward: Callable[..., Any], args: list[Array], kwargs: dict[str, Any], wrt: int,
                     stochastic: bool = False) -> Array:
    """d out.ravel() / d args[wrt].ravel() by central differences, one entry at a time."""
    out = _call(forward, args, kwargs, stochastic)[0]
    jac = np.empty((out.size, args[wrt].size))
    for k in range(args[wrt].size):
        columns = []
        for sign in (1.0, -1.0):
            moved = [a.copy() for a in args]
            moved[wrt].flat[k] += sign * STEP
            columns.append(_call(forward, moved, kwargs, stochastic)[0].ravel())
        jac[:, k] = (columns[0] - columns[1]) / (2.0 * STEP)
    return jac


def grads_of(backward: Callable[..., Any], dout: Array, cache: Any) -> tuple[Array, ...]:
    grads = backward(dout, cache)
    return grads if isinstance(grads, tuple) else (grads,)


# name, forward, backward, argument shapes, kwargs, stochastic
CASES: list[tuple[str, Callable[..., Any], Callable[..., Any], list[tuple[int, ...]], dict[str, Any], bool]] = [
    ("dense", L.affine_forward, L.affine_backward, [(4, 5), (5, 3), (3,)], {}, False),
    ("dense 3d x", L.affine_forward, L.affine_backward, [(3, 2, 2), (4, 3), (3,)], {}, False),
    ("conv s2 p1", L.conv_forward, L.conv_backward, [(2, 2, 5, 5), (3, 2, 3, 3), (3,)],
     {"conv_param": {"stride": 2, "pad": 1}}, False),
    ("conv s1 p1", L.conv_forward, L.conv_backward, [(1, 2, 4, 4), (2, 2, 3, 3), (2,)],
     {"conv_param": {"stride": 1, "pad": 1}}, False),
    ("conv s1 p0 2x3 kernel", L.conv_forward, L.conv_backward, [(2, 1, 4, 5), (2, 1, 2, 3), (2,)],
     {"conv_param": {"stride": 1, "pad": 0}}, False),
    ("maxpool 2x2 s2", L.max_pool_forward, L.max_pool_backward, [(2, 2, 4, 4)],
     {"pool_param": {"pool_height": 2, "pool_width": 2, "stride": 2}}, False),
    ("maxpool 3x2 s1 overlapping", L.max_pool_forward, L.max_pool_backward, [(1, 2, 5, 4)],
     {"pool_param": {"pool_height": 3, "pool_width": 2, "stride": 1}}, False),
    ("batchnorm train", L.batchnorm_forward, L.batchnorm_backward, [(6, 4), (4,), (4,)],
     {"bn_param": {"mode": "train", "eps": 1e-5}}, False),
    ("batchnorm test", L.batchnorm_forward, L.batchnorm_backward, [(6, 4), (4,), (4,)],
     {"bn_param": {"mode": "test", "eps": 1e-5, "running_mean": np.full(4, 0.3),
                   "running_var": np.full(4, 2.0)}}, False),
    ("layernorm", L.layernorm_forward, L.layernorm_backward, [(4, 6), (6,), (6,)], {"ln_param": {"eps": 1e-5}}, False),
    ("layernorm 3d", L.layernorm_forward, L.layernorm_backward, [(2, 3, 4), (4,), (4,)], {"ln_param": {}}, False),
    ("dropout train", L.dropout_forward, L.dropout_backward, [(4, 10)],
     {"dropout_param": {"p": 0.5, "mode": "train"}}, True),
    ("dropout keep 0.8", L.dropout_forward, L.dropout_backward, [(3, 7)],
     {"dropout_param": {"p": 0.8, "mode": "train"}}, True),
    ("dropout test", L.dropout_forward, L.dropout_backward, [(4, 10)],
     {"dropout_param": {"p": 0.5, "mode": "test"}}, True),
]


@pytest.mark.parametrize(("forward", "backward", "shapes", "kwargs", "stochastic"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_backward_matches_central_differences(forward: Callable[..., Any], backward: Callable[..., Any],
                                              shapes: list[tuple[int, ...]], kwargs: dict[str, Any],
                                              stochastic: bool, rng: np.random.Generator) -> None:
    args = [rng.standard_normal(shape) for shape in shapes]
    out, cache = _call(forward, args, kwargs, stochastic)
    dout = rng.standard_normal(out.shape)
    grads = grads_of(backward, dout, cache)
    assert len(grads) == len(args)
    for wrt, (arg, grad) in enumerate(zip(args, grads, strict=True)):
        assert grad.shape == arg.shape, f"d arg {wrt}"
        expected = (dout.ravel() @ numeric_jacobian(forward, args, kwargs, wrt, stochastic)).reshape(arg.shape)
        np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8 * max(1.0, np.abs(expected).max()),
                                   err_msg=f"d arg {wrt}")


def test_forwards_leave_their_parameter_dicts_alone(rng: np.random.Generator) -> None:
    bn_param: dict[str, Any] = {"mode": "train", "eps": 1e-5, "momentum": 0.9}
    L.batchnorm_forward(rng.standard_normal((6, 4)), np.ones(4), np.zeros(4), bn_param)
    assert bn_param == {"mode": "train", "eps": 1e-5, "momentum": 0.9}
    conv_param = {"stride": 2, "pad": 1}
    L.conv_forward(rng.standard_normal((1, 1, 4, 4)), rng.standard_normal((1, 1, 3, 3)), np.zeros(1), conv_param)
    assert conv_param == {"stride": 2, "pad": 1}


def test_conv_and_pool_output_shapes(rng: np.random.Generator) -> None:
    out, _ = L.conv_forward(rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), np.zeros(4),
                            conv_param={"stride": 2, "pad": 1})
    assert out.shape == (2, 4, 3, 3)
    out, _ = L.max_pool_forward(rng.standard_normal((2, 3, 6, 6)),
                                pool_param={"pool_height": 2, "pool_width": 2, "stride": 2})
    assert out.shape == (2, 3, 3, 3)


def test_conv_forward_is_the_textbook_loop(rng: np.random.Generator) -> None:
    x, w, b = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    out, _ = L.conv_forward(x, w, b, conv_param={"stride": 2, "pad": 1})
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for n, f, i, j in np.ndindex(out.shape):
        assert out[n, f, i, j] == pytest.approx(np.sum(xp[n, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3] * w[f]) + b[f])


def test_dropout_keeps_about_p_and_replays_with_the_global_state(rng: np.random.Generator) -> None:
    x = rng.standard_normal((50, 40))
    np.random.seed(3)
    out1, (mask, _) = L.dropout_forward(x, {"p": 0.8, "mode": "train"})
    np.random.seed(3)
    out2, _ = L.dropout_forward(x, {"p": 0.8, "mode": "train"})
    np.testing.assert_array_equal(out1, out2)
    assert set(np.unique(mask)) == {0.0, 1.25}
    assert 0.75 < np.mean(mask != 0) < 0.85


# --- the wrong variants: each differs where its mistake says, and only there ------------


def _run(forward: Callable[..., Any], backward: Callable[..., Any], args: list[Array], rng: np.random.Generator,
         **kwargs: Any) -> tuple[Array, Any, tuple[Array, ...]]:
    out, cache = forward(*args, **kwargs)
    dout = rng.standard_normal(out.shape)
    return dout, cache, grads_of(backward, dout, cache)


def test_dense_transposed_dw_has_w_transposed_shape(rng: np.random.Generator) -> None:
    args = [rng.standard_normal(s) for s in [(4, 5), (5, 3), (3,)]]
    dout, cache, (dx, dw, db) = _run(L.affine_forward, L.affine_backward, args, rng)
    wx, wdw, wdb = L.affine_backward_transposed_dw(dout, cache)
    assert wdw.shape == (3, 5) != dw.shape
    np.testing.assert_allclose(wdw, dw.T)
    np.testing.assert_array_equal(wx, dx)
    np.testing.assert_array_equal(wdb, db)


def test_conv_no_crop_returns_the_padded_dx(rng: np.random.Generator) -> None:
    args = [rng.standard_normal(s) for s in [(2, 3, 6, 6), (4, 3, 3, 3), (4,)]]
    kw = {"conv_param": {"stride": 2, "pad": 1}}
    dout, cache, (dx, dw, db) = _run(L.conv_forward, L.conv_backward, args, rng, **kw)
    wx, wdw, wdb = L.conv_backward_no_crop(dout, cache)
    assert wx.shape == (2, 3, 8, 8)
    np.testing.assert_allclose(wx[:, :, 1:-1, 1:-1], dx)
    assert np.abs(wx[:, :, 0, :]).max() > 0  # gradient on the zero border that is not an input
    np.testing.assert_array_equal(wdw, dw)
    np.testing.assert_array_equal(wdb, db)


def test_conv_unrotated_kernel_is_wrong_unless_the_kernel_is_symmetric(rng: np.random.Generator) -> None:
    x, b = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal(3)
    kw = {"conv_param": {"stride": 1, "pad": 1}}
    w = rng.standard_normal((3, 2, 3, 3))
    dout, cache, (dx, dw, db) = _run(L.conv_forward, L.conv_backward, [x, w, b], rng, **kw)
    wx, wdw, wdb = L.conv_backward_unrotated_kernel(dout, cache)
    assert np.abs(wx - dx).max() > 0.1
    np.testing.assert_array_equal(wdw, dw)
    np.testing.assert_array_equal(wdb, db)
    symmetric = w + w[:, :, ::-1, ::-1]
    dout, cache, (dx, _, _) = _run(L.conv_forward, L.conv_backward, [x, symmetric, b], rng, **kw)
    np.testing.assert_allclose(L.conv_backward_unrotated_kernel(dout, cache)[0], dx)


def test_maxpool_every_position_adds_gradient_off_the_maximum(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 6, 6))
    kw = {"pool_param": {"pool_height": 2, "pool_width": 2, "stride": 2}}
    dout, cache, (dx,) = _run(L.max_pool_forward, L.max_pool_backward, [x], rng, **kw)
    wrong = L.max_pool_backward_every_position(dout, cache)
    at_max = dx != 0
    assert at_max.sum() == dout.size  # one position per window
    np.testing.assert_allclose(wrong[at_max], dx[at_max])
    np.testing.assert_allclose(wrong.sum(), 4 * dout.sum())
    assert np.all(wrong[~at_max] != 0)


def test_batchnorm_variants(rng: np.random.Generator) -> None:
    args = [rng.standard_normal(s) for s in [(6, 4), (4,), (4,)]]
    dout, cache, (dx, dgamma, dbeta) = _run(L.batchnorm_forward, L.batchnorm_backward, args, rng,
                                            bn_param={"mode": "train", "eps": 1e-14})
    xhat = cache[1]
    # The right dx is orthogonal to the shift and (eps ~ 0) the scale a batch normalisation removes.
    np.testing.assert_allclose(dx.sum(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose((dx * xhat).sum(axis=0), 0, atol=1e-10)

    no_mean, g1, b1 = L.batchnorm_backward_no_mean_path(dout, cache)
    np.testing.assert_allclose(no_mean, args[1] * dout / np.sqrt(args[0].var(axis=0) + 1e-14))
    assert np.abs(no_mean.sum(axis=0)).max() > 1e-3  # the mean path is what made it sum to zero

    scaled, g2, b2 = L.batchnorm_backward_missing_1_over_n(dout, cache)
    np.testing.assert_allclose(scaled, 6 * dx)

    flipped, g3, b3 = L.batchnorm_backward_dvar_sign(dout, cache)
    np.testing.assert_allclose(flipped.sum(axis=0), 0, atol=1e-10)  # the mean path is intact...
    assert np.abs((flipped * xhat).sum(axis=0)).max() > 1e-3  # ...the variance path is not
    ratio = (flipped - dx) / xhat  # wrong only along x - mean, a per-feature multiple of it
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:1], ratio.shape), rtol=1e-8)
    for g, b in [(g1, b1), (g2, b2), (g3, b3)]:
        np.testing.assert_allclose(g, dgamma)
        np.testing.assert_allclose(b, dbeta)


def test_layernorm_batch_axis_normalises_the_wrong_direction(rng: np.random.Generator) -> None:
    args = [rng.standard_normal(s) for s in [(4, 6), (6,), (6,)]]
    dout, cache, (dx, dgamma, dbeta) = _run(L.layernorm_forward, L.layernorm_backward, args, rng,
                                            ln_param={"eps": 1e-5})
    wrong, wg, wb = L.layernorm_backward_batch_axis(dout, cache)
    np.testing.assert_allclose(dx.sum(axis=1), 0, atol=1e-12)  # a per-sample shift changes nothing
    assert np.abs(wrong.sum(axis=1)).max() > 1e-3
    np.testing.assert_allclose(wg, dgamma)
    np.testing.assert_allclose(wb, dbeta)


def test_dropout_no_rescale_is_p_times_the_gradient(rng: np.random.Generator) -> None:
    np.random.seed(DROPOUT_SEED)
    dout, cache, (dx,) = _run(L.dropout_forward, L.dropout_backward, [rng.standard_normal((4, 10))], rng,
                              dropout_param={"p": 0.5, "mode": "train"})
    np.testing.assert_allclose(L.dropout_backward_no_rescale(dout, cache), 0.5 * dx)
    assert np.count_nonzero(dx) > 0


# --- through the engine: registered, passing, and each variant flagged for its own argument ---

LAYERS = ["dense", "conv2d", "maxpool2d", "batchnorm", "layernorm", "dropout"]
ARGS = {"dense": {"x", "w", "b"}, "conv2d": {"x", "w", "b"}, "maxpool2d": {"x"},
        "batchnorm": {"x", "gamma", "beta"}, "layernorm": {"x", "gamma", "beta"}, "dropout": {"x"}}
# variant -> (the arguments whose rows fail, a fragment of the diagnosis)
VARIANTS = {
    "dense@transposed_dw": ({"w"}, "dw has shape (3, 5), but w has shape (5, 3)"),
    "conv2d@no_crop": ({"x"}, "dx has shape (2, 3, 8, 8), but x has shape (2, 3, 6, 6)"),
    "conv2d@unrotated_kernel": ({"x"}, "entries wrong"),
    "maxpool2d@every_position": ({"x"}, "where the output does not depend on x at all"),
    "batchnorm@no_mean_path": ({"x"}, "a path through a batch statistic"),
    "batchnorm@missing_1_over_n": ({"x"}, "1/N is missing (N = 6, the size of axis 0 of x)"),
    "batchnorm@dvar_sign": ({"x"}, "entries wrong"),
    "layernorm@batch_axis": ({"x"}, "reduces over the batch axis"),
    "dropout@no_rescale": ({"x"}, "constant factor 1/2"),
}


def test_every_layer_and_variant_is_registered_with_its_texts(registry: Registry) -> None:
    for name in LAYERS:
        spec = registry.get(name)
        assert spec.kind == "layer" and spec.formula and not spec.is_variant
    for name in VARIANTS:
        spec = registry.get(name)
        assert spec.kind == "layer" and spec.formula and spec.mistake and spec.fix
    assert {s.name for s in registry if s.kind == "layer" and s.is_variant} >= set(VARIANTS)


@pytest.mark.parametrize("options", [CheckOptions(seed=seed, trials=1) for seed in range(3)]
                         + [CheckOptions(seed=5, trials=1, dtype="float32"),
                            CheckOptions(seed=6, trials=1, method="richardson")],
                         ids=["seed0", "seed1", "seed2", "float32", "richardson"])
def test_layers_pass_through_the_engine(registry: Registry, options: CheckOptions) -> None:
    result = run(LAYERS, options, registry=registry)
    assert [(r.check, r.wrt, r.verdict.value, r.diagnosis) for r in result.results if r.verdict is not Verdict.PASS] \
        == []
    assert {r.check for r in result.results} == set(LAYERS)
    for name in LAYERS:
        assert {r.wrt for r in result.results if r.check == name} == ARGS[name]
    assert result.exit_code == 0


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants_fail_on_their_own_argument(registry: Registry, name: str) -> None:
    failing, fragment = VARIANTS[name]
    result = run([name], CheckOptions(seed=1, trials=1), registry=registry)
    assert result.exit_code == 1
    assert {r.wrt for r in result.results if r.verdict is Verdict.FAIL} == failing
    assert {r.verdict for r in result.results if r.wrt not in failing} <= {Verdict.PASS}
    assert any(fragment in r.diagnosis + " ".join(r.worst_entries) for r in result.results
               if r.verdict is Verdict.FAIL), [r.diagnosis for r in result.results]


def test_dense_chains_into_mse(registry: Registry) -> None:
    result = run(["dense+mse"], CheckOptions(trials=1), registry=registry)
    assert result.exit_code == 0
    assert {r.component for r in result.results} >= {"jacobian", "gradient", "chain"}


def test_shapes_that_do_not_fit_say_which_would(registry: Registry) -> None:
    result = run(["batchnorm"], CheckOptions(trials=1, shape=(3, 5)), registry=registry)
    assert result.exit_code == 3
    assert "batchnorm expects x (N, D), gamma (D,) and beta (D,); got x (3, 5), gamma (4,)" \
        in result.results[0].diagnosis
    assert "--shape gamma=5 --shape beta=5" in result.results[0].diagnosis
    result = run(["conv2d"], CheckOptions(trials=1, shape=(2, 2, 5, 5)), registry=registry)
    assert "--shape w=4,2,3,3 --shape b=4" in result.results[0].diagnosis
