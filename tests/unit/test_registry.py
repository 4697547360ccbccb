"""registry and plugins: validation at registration, duplicates, lookup suggestions."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from gradcheck_cli.errors import ExitCode, PluginError, UsageError
from gradcheck_cli.plugins import default_registry, load_builtins
from gradcheck_cli.registry import (
    REGISTRY,
    Registry,
    register_activation,
    register_fused,
    register_loss,
    registering,
)


def _f(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def _d(x: np.ndarray) -> np.ndarray:
    return 1.0 - np.tanh(x) ** 2


def _loss(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.mean((p - t) ** 2, axis=(-2, -1))


def _grad(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    return 2.0 * (p - t) / (p.shape[-1] * p.shape[-2])


@pytest.fixture
def fresh() -> Registry:
    return Registry()


def test_registering_sends_entries_to_the_registry_with_origin(fresh: Registry) -> None:
    before = set(REGISTRY.names())
    with registering(fresh, "tests/plugin.py"):
        spec = register_activation("my_tanh", forward=_f, derivative=_d, formula="1 - y^2")
        register_loss("my_mse", forward=_loss, gradient=_grad, target="real")
    assert fresh.names() == ["my_tanh", "my_mse"]
    assert spec.origin == "tests/plugin.py"
    assert fresh.get("my_tanh") is spec
    assert spec.conventions == ("derivative",)
    assert fresh.get("my_mse").kind == "loss"
    assert set(REGISTRY.names()) == before, "the global registry must not be touched"


def test_registering_restores_the_target_after_an_error(fresh: Registry) -> None:
    other = Registry()
    with pytest.raises(PluginError), registering(fresh, "first"):
        register_activation("bad name", forward=_f, derivative=_d)
    with registering(other, "second"):
        register_activation("ok", forward=_f, derivative=_d)
    assert "ok" in other and "ok" not in fresh


@pytest.mark.parametrize("name", ["bad name", "1abc", "", "a@b@c", "soft/max", 123, None])
def test_bad_name_is_rejected(fresh: Registry, name: object) -> None:
    with pytest.raises(PluginError, match=r"name must be a string like 'my_softmax'.*\(registered by test\)"), \
            registering(fresh, "test"):
        register_activation(name, forward=_f, derivative=_d)  # type: ignore[arg-type]
    assert len(fresh) == 0


@pytest.mark.parametrize(("name", "problem"), [
    ("abc\n", r"it contains '\\n' at position 3; whitespace and control characters cannot be typed"),
    ("\x1b[31mred", r"it contains '\\x1b' at position 0"),
    ("my\tsoftmax", r"it contains '\\t' at position 2"),
    ("zero\u200bwidth", r"it contains '\\u200b' at position 4"),
    ("del\x7f", r"it contains '\\x7f'"),
    ("", r"it is empty"),
    ("softmax+mse", r"'\+' joins ACTIVATION\+LOSS in a spec, so a name containing it could never be run"),
    ("soft@max@v", r"'@' separates NAME@VARIANT, so it comes once"),
    ("@v", r"'@' separates NAME@VARIANT"),
    ("softmax@", r"'@' separates NAME@VARIANT"),
    ("σ", r"use ASCII letters, digits"),
])
def test_name_problems_are_named(fresh: Registry, name: str, problem: str) -> None:
    with pytest.raises(PluginError, match=rf"\(registered by plugin\.py\): {problem}.*Rename it\.$"), \
            registering(fresh, "plugin.py"):
        register_activation(name, forward=_f, derivative=_d)
    with pytest.raises(PluginError, match=problem), registering(fresh, "plugin.py"):
        register_loss(name, forward=_f, gradient=_d)
    assert len(fresh) == 0


def test_good_names_register(fresh: Registry) -> None:
    for name in ("my_softmax", "My.Softmax-2", "_private", "softmax@my_variant", "a@b.c-d"):
        with registering(fresh, "test"):
            register_activation(name, forward=_f, derivative=_d)
    assert len(fresh) == 5


@pytest.mark.parametrize(("kinks", "got"), [
    ([float("nan")], r"got nan in \[nan\]"),
    ((0.0, float("inf")), r"got inf in \(0\.0, inf\)"),
    ([-float("inf")], r"got -inf"),
    (0.0, r"got float 0\.0"),
    ([True], r"got True"),
    (["0"], r"got '0'"),
])
@pytest.mark.parametrize("kind", ["activation", "loss"])
def test_kinks_must_be_finite_numbers(fresh: Registry, kinks: object, got: str, kind: str) -> None:
    with pytest.raises(PluginError, match=rf"'f' \(registered by test\): kinks= must be a list of finite numbers.*"
                                          rf"{got}.*\. A kink at nan or inf marks no point"), \
            registering(fresh, "test"):
        if kind == "activation":
            register_activation("f", forward=_f, derivative=_d, kinks=kinks)  # type: ignore[arg-type]
        else:
            register_loss("f", forward=_f, gradient=_d, kinks=kinks)  # type: ignore[arg-type]
    assert len(fresh) == 0


def test_kinks_of_any_real_type_become_floats(fresh: Registry) -> None:
    with registering(fresh, "test"):
        spec = register_activation("f", forward=_f, derivative=_d, kinks=[np.float32(0.5), np.int64(1), -2])
    assert spec.kinks == (0.5, 1.0, -2.0) and all(type(k) is float for k in spec.kinks)


def test_non_callable_derivative_is_rejected(fresh: Registry) -> None:
    with pytest.raises(PluginError, match=r"derivative= must be callable; got array\(.*Pass the function itself"), \
            registering(fresh, "test"):
        register_activation("my_tanh", forward=_f, derivative=_d(np.zeros(3)))
    assert "my_tanh" not in fresh


def test_non_callable_forward_is_rejected(fresh: Registry) -> None:
    with pytest.raises(PluginError, match=r"forward= must be callable; got 3.0 of type float"), \
            registering(fresh, "test"):
        register_loss("my_loss", forward=3.0, gradient=_grad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keyword", "fragment"),
    [
        ("derivitive", r"unknown keyword 'derivitive' for a activation.*Did you mean 'derivative'"),
        ("jacobain", r"unknown keyword 'jacobain'.*Did you mean 'jacobian'"),
        ("gradient", r"unknown keyword 'gradient' for a activation. Expected one of: jacobian, vjp"),
    ],
)
def test_unknown_activation_keyword_is_rejected(fresh: Registry, keyword: str, fragment: str) -> None:
    with pytest.raises(PluginError, match=fragment), registering(fresh, "test"):
        register_activation("my_tanh", forward=_f, **{keyword: _d})


def test_unknown_loss_keyword_is_rejected(fresh: Registry) -> None:
    with pytest.raises(PluginError, match=r"unknown keyword 'gradeint' for a loss.*Did you mean 'gradient'"), \
            registering(fresh, "test"):
        register_loss("my_mse", forward=_loss, gradeint=_grad)


@pytest.mark.parametrize("kind", ["activation", "loss"])
def test_no_derivative_is_rejected(fresh: Registry, kind: str) -> None:
    with pytest.raises(PluginError, match=r"'thing' \(registered by test\) has no derivative to check"), \
            registering(fresh, "test"):
        if kind == "activation":
            register_activation("thing", forward=_f)
        else:
            register_loss("thing", forward=_loss)


def test_second_order_alone_is_not_enough(fresh: Registry) -> None:
    with pytest.raises(PluginError, match="has no derivative to check"), registering(fresh, "test"):
        register_activation("thing", forward=_f, derivative2=lambda x: -2 * np.tanh(x) * _d(x))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"domain": "postive"}, r"domain='postive' is not one of real, positive, unit. Did you mean 'positive'"),
        ({"target": "one_hot"}, r"target='one_hot' is not one of .*Did you mean 'onehot'"),
    ],
)
def test_bad_domain_or_target_is_rejected(fresh: Registry, kwargs: dict[str, str], fragment: str) -> None:
    with pytest.raises(PluginError, match=fragment), registering(fresh, "test"):
        register_loss("my_mse", forward=_loss, gradient=_grad, **kwargs)


def test_duplicates_are_rejected_naming_both_origins(fresh: Registry) -> None:
    with registering(fresh, "first.py"):
        register_activation("my_tanh", forward=_f, derivative=_d)
    with pytest.raises(PluginError, match=r"'my_tanh' is registered twice: first by first.py, again by second.py"), \
            registering(fresh, "second.py"):
        register_activation("my_tanh", forward=_f, derivative=_d)
    assert fresh.get("my_tanh").origin == "first.py"


def test_duplicate_of_a_builtin_is_rejected() -> None:
    reg = default_registry()
    with pytest.raises(PluginError, match=r"'softmax' is registered twice: first by builtin"), \
            registering(reg, "plugin.py"):
        register_activation("softmax", forward=_f, derivative=_d)


@pytest.mark.parametrize(
    ("name", "kind", "fragment"),
    [
        ("sofmax", None, r"Unknown name 'sofmax'. Did you mean 'softmax'"),
        ("sigmod", None, r"Did you mean 'sigmoid'"),
        ("cross_entropie", "loss", r"Unknown loss name 'cross_entropie'. Did you mean 'cross_entropy'"),
        ("softmax@diagnal", None, r"Did you mean 'softmax@diagonal'"),
        ("zzzzzz", None, r"Unknown name 'zzzzzz'. Run 'gradcheck list'"),
    ],
)
def test_get_suggests_close_names(registry: Registry, name: str, kind: str | None, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment) as info:
        registry.get(name, kind)
    assert info.value.exit_code is ExitCode.USAGE
    if name == "zzzzzz":
        assert "Did you mean" not in info.value.message


def test_get_with_the_wrong_kind(registry: Registry) -> None:
    with pytest.raises(UsageError, match=r"'mse' is a loss, but an activation was expected here"):
        registry.get("mse", "activation")
    with pytest.raises(UsageError, match=r"'softmax' is an? activation, but a loss was expected"):
        registry.get("softmax", "loss")


def test_builtins_replay_into_every_registry() -> None:
    a, b = Registry(), Registry()
    load_builtins(a)
    load_builtins(b)
    assert a.names() == b.names()
    assert len(a) >= 20
    for name in ("softmax", "log_softmax", "sigmoid", "tanh", "relu", "mse", "cross_entropy",
                 "binary_cross_entropy", "softmax@diagonal", "softmax@wrong_input"):
        assert name in a
        assert a.get(name).origin == "builtin"
    for pair in (("softmax", "cross_entropy"), ("log_softmax", "nll"), ("sigmoid", "binary_cross_entropy")):
        assert a.fused(*pair) is not None
    assert a.fused("softmax", "mse") is None


def test_variants_carry_mistake_and_fix(registry: Registry) -> None:
    variants = [s for s in registry if s.is_variant]
    assert len(variants) >= 7
    for spec in variants:
        assert spec.mistake and spec.fix, spec.name
        assert spec.base in registry, f"{spec.name}'s base entry is missing"
        assert registry.get(spec.base).kind == spec.kind


def test_register_fused_goes_to_the_active_registry(fresh: Registry) -> None:
    with registering(fresh, "test"):
        register_fused("a", "b", gradient=lambda z, t: z - t, formula="z - t")
    fused = fresh.fused("a", "b")
    assert fused is not None and fused.origin == "test"


def test_importing_builtin_functions_first_keeps_the_builtins() -> None:
    code = (
        "from gradcheck_cli.registry.activations import softmax\n"
        "from gradcheck_cli import run\n"
        "from gradcheck_cli.plugins import default_registry\n"
        "names = default_registry().names()\n"
        "assert 'softmax' in names and 'sigmoid' in names, names\n"
        "assert run(['softmax+mse']).passed\n"
    )
    env = {**os.environ, "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
