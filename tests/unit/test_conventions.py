"""conventions: every way of handing in a derivative becomes the same dense Jacobian."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_cli import conventions
from gradcheck_cli.conventions import ConventionError
from gradcheck_cli.registry import Registry, register_activation, register_loss, registering
from gradcheck_cli.registry.activations import softmax, softmax_jacobian, softmax_vjp


def _jvp(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("bij,bj->bi", softmax_jacobian(x), v)


@pytest.fixture
def reg() -> Registry:
    registry = Registry()
    with registering(registry, "test"):
        register_activation("sm", forward=softmax, jacobian=softmax_jacobian, vjp=softmax_vjp, jvp=_jvp)
        register_activation("th", forward=np.tanh, derivative=lambda x: 1 - np.tanh(x) ** 2,
                            derivative_of_output=lambda y: 1 - y * y)
        register_activation("bad_shape", forward=np.tanh, derivative=lambda x: np.ones(x.shape[-1]))
        register_activation("raises", forward=np.tanh, vjp=lambda x, g: 1 / 0)
        register_loss("sq", forward=lambda p, t: np.sum((p - t) ** 2, axis=(-2, -1)),
                      gradient=lambda p, t: 2 * (p - t))
    return registry


def test_all_softmax_conventions_agree(reg: Registry, rng: np.random.Generator) -> None:
    x = rng.normal(size=(3, 4))
    spec = reg.get("sm")
    dense = {c: conventions.analytic_jacobian(spec, c, x) for c in ("jacobian", "vjp", "jvp")}
    expected = np.zeros((12, 12))
    for b in range(3):
        expected[4 * b:4 * b + 4, 4 * b:4 * b + 4] = softmax_jacobian(x)[b]
    for convention, jac in dense.items():
        np.testing.assert_allclose(jac, expected, atol=1e-15, err_msg=convention)
    # entries between different rows of the batch are zero, and present in the matrix
    assert np.all(expected[:4, 4:] == 0)


def test_elementwise_conventions_are_diagonal(reg: Registry, rng: np.random.Generator) -> None:
    x = rng.normal(size=(2, 3))
    spec = reg.get("th")
    expected = np.diag((1 - np.tanh(x) ** 2).ravel())
    np.testing.assert_allclose(conventions.analytic_jacobian(spec, "derivative", x), expected, atol=1e-15)
    np.testing.assert_allclose(conventions.analytic_jacobian(spec, "derivative_of_output", x), expected,
                               atol=1e-15)


def test_analytic_vjp_multiplies_the_upstream_gradient(reg: Registry, rng: np.random.Generator) -> None:
    x = rng.normal(size=(2, 5))
    g = rng.normal(size=(2, 5))
    for convention in ("jacobian", "vjp", "jvp"):
        out = conventions.analytic_vjp(reg.get("sm"), convention, x, g)
        np.testing.assert_allclose(out, softmax_vjp(x, g), atol=1e-15, err_msg=convention)
    out = conventions.analytic_vjp(reg.get("th"), "derivative_of_output", x, g)
    np.testing.assert_allclose(out, (1 - np.tanh(x) ** 2) * g, atol=1e-15)


def test_jacobian_vjp_multiplies_row_blocks_without_the_dense_matrix(reg: Registry, rng: np.random.Generator,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The chain rule of a (64, 300) pair through a jacobian convention needs J^T g, not the
    # 19,200 x 19,200 block-diagonal matrix.
    def no_dense(blocks: np.ndarray) -> np.ndarray:
        raise AssertionError("dense block-diagonal matrix built")

    monkeypatch.setattr(conventions, "_block_diagonal", no_dense)
    x = rng.normal(size=(64, 300))
    g = rng.normal(size=(64, 300))
    out = conventions.analytic_vjp(reg.get("sm"), "jacobian", x, g)
    np.testing.assert_allclose(out, softmax_vjp(x, g), atol=1e-15)


def test_loss_gradient_is_a_row(reg: Registry, rng: np.random.Generator) -> None:
    p, t = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    row = conventions.analytic_gradient(reg.get("sq"), p, t)
    assert row.shape == (1, 6)
    np.testing.assert_allclose(row.ravel(), (2 * (p - t)).ravel())


def test_wrong_shape_is_reported(reg: Registry) -> None:
    with pytest.raises(ConventionError, match=r"derivative\(x\) returned shape \(3,\), expected \(2, 3\) \(like x\)"):
        conventions.analytic_jacobian(reg.get("bad_shape"), "derivative", np.ones((2, 3)))


def test_exception_in_user_derivative_is_reported(reg: Registry) -> None:
    with pytest.raises(ConventionError, match=r"vjp\(x, g\) raised ZeroDivisionError: division by zero"):
        conventions.analytic_jacobian(reg.get("raises"), "vjp", np.ones((1, 2)))
