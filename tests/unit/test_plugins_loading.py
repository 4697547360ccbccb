"""Loading plugins in-process: a .py file, an importable module, and what a broken one says.

The installed-package entry point is exercised for real in tests/cli/test_entry_points.py.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import samples

from gradcheck_cli.errors import PluginError
from gradcheck_cli.plugins import default_registry, load_builtins, load_entry_points, load_plugin
from gradcheck_cli.registry import Registry
from gradcheck_cli.results import Verdict
from gradcheck_cli.runner import CheckOptions, run

OPTIONS = CheckOptions(seed=0, trials=1, shape=(2, 3))

PLUGIN = ("""\
import numpy as np
from gradcheck_cli import register_activation, register_loss
""" + samples.SOFTMAX + samples.MSE + """\


register_activation("{prefix}_softmax", forward=softmax, vjp=softmax_vjp)
register_loss("{prefix}_mse", forward=mse, gradient=mse_grad, target="real")
""")


@pytest.fixture
def reg() -> Registry:
    registry = Registry()
    load_builtins(registry)
    return registry


@pytest.fixture
def module_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A unique importable module name in tmp_path (the loader remembers modules by name)."""
    name = f"gc_test_plugin_{uuid.uuid4().hex[:12]}"
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_file_plugin_registers_with_its_path_as_origin(reg: Registry, tmp_path: Path) -> None:
    path = tmp_path / "my_plugin.py"
    path.write_text(PLUGIN.format(prefix="file"))
    names = load_plugin(str(path), reg)
    assert names == ["file_softmax", "file_mse"]
    assert reg.get("file_softmax").origin == str(path)
    rows = run(["file_softmax+file_mse"], OPTIONS, registry=reg).results
    assert [r.verdict for r in rows] == [Verdict.PASS] * 3
    assert {r.origin for r in rows} == {str(path)}


def test_file_plugin_can_be_loaded_into_two_registries(reg: Registry, tmp_path: Path) -> None:
    path = tmp_path / "twice.py"
    path.write_text(PLUGIN.format(prefix="twice"))
    other = Registry()
    assert load_plugin(str(path), reg) == load_plugin(str(path), other) == ["twice_softmax", "twice_mse"]


def test_module_plugin(reg: Registry, tmp_path: Path, module_name: str) -> None:
    (tmp_path / f"{module_name}.py").write_text(PLUGIN.format(prefix="mod"))
    assert load_plugin(module_name, reg) == ["mod_softmax", "mod_mse"]
    assert reg.get("mod_mse").origin == module_name
    rows = run(["mod_softmax"], OPTIONS, registry=reg).results
    assert rows[0].verdict is Verdict.PASS and rows[0].origin == module_name
    # A module is imported once per process; a second registry still gets its entries.
    again = Registry()
    assert load_plugin(module_name, again) == ["mod_softmax", "mod_mse"]


def test_module_plugin_inside_a_package(reg: Registry, tmp_path: Path, module_name: str) -> None:
    package = tmp_path / module_name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "gradcheck_plugin.py").write_text(PLUGIN.format(prefix="pkg"))
    try:
        assert load_plugin(f"{module_name}.gradcheck_plugin", reg) == ["pkg_softmax", "pkg_mse"]
    finally:
        sys.modules.pop(f"{module_name}.gradcheck_plugin", None)


def test_default_registry_takes_plugins(tmp_path: Path) -> None:
    path = tmp_path / "extra.py"
    path.write_text(PLUGIN.format(prefix="extra"))
    registry = default_registry((str(path),))
    assert "extra_softmax" in registry and "softmax" in registry


def test_missing_plugin_file(reg: Registry, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=r"Plugin file '.*nope\.py' does not exist\. Expected a path"):
        load_plugin(str(tmp_path / "nope.py"), reg)


def test_missing_plugin_module(reg: Registry) -> None:
    with pytest.raises(PluginError, match=r"Plugin module 'no_such_gc_plugin_zz' cannot be imported: "
                                          r"no module named 'no_such_gc_plugin_zz'\. Install"):
        load_plugin("no_such_gc_plugin_zz", reg)


@pytest.mark.parametrize(("body", "pattern"), [
    ("raise RuntimeError('no GPU here')\n",
     r"Plugin '.*broken\.py' raised while loading: RuntimeError: no GPU here \(at .*broken\.py:1\)"),
    ("import sys\nsys.exit('bye')\n", r"raised while loading: SystemExit: bye"),
    ("def f(x:\n    return x\n", r"raised while loading: SyntaxError"),
    ("import gc_dependency_that_is_missing_zz\n",
     r"failed to import: ModuleNotFoundError: No module named 'gc_dependency_that_is_missing_zz'"),
    ("from gradcheck_cli import register_activation\nregister_activation('softmax', forward=abs, derivative=abs)\n",
     r"'softmax' is registered twice: first by builtin, again by .*broken\.py"),
    ("from gradcheck_cli import register_activation\nregister_activation('x', forward=abs, vjp=3)\n",
     r"'x' \(registered by .*broken\.py\): vjp= must be callable"),
])
def test_broken_file_plugin_names_itself_and_the_exception(reg: Registry, tmp_path: Path, body: str,
                                                           pattern: str) -> None:
    path = tmp_path / "broken.py"
    path.write_text(body)
    with pytest.raises(PluginError, match=pattern):
        load_plugin(str(path), reg)


def test_broken_module_plugin(reg: Registry, tmp_path: Path, module_name: str) -> None:
    (tmp_path / f"{module_name}.py").write_text("raise ValueError('bad config value')\n")
    with pytest.raises(PluginError, match=rf"Plugin '{module_name}' raised while loading: ValueError: "
                                          rf"bad config value \(at .*{module_name}\.py:1\)"):
        load_plugin(module_name, reg)


def test_module_whose_dependency_is_missing_names_the_dependency(reg: Registry, tmp_path: Path,
                                                                 module_name: str) -> None:
    (tmp_path / f"{module_name}.py").write_text("import gc_other_missing_dependency_zz\n")
    with pytest.raises(PluginError, match=rf"Plugin '{module_name}' failed to import: ModuleNotFoundError: "
                                          r"No module named 'gc_other_missing_dependency_zz'"):
        load_plugin(module_name, reg)


def test_entry_points_are_skipped_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADCHECK_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert load_entry_points(Registry()) == []



def test_entry_point_look_ahead_finds_what_importlib_metadata_would(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    # importlib.metadata is only imported when some distribution on sys.path might declare the group.
    from gradcheck_cli.plugins import ENTRY_POINT_GROUP, _group_may_be_declared

    site = tmp_path / "site"
    info = site / "demo_pkg-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "entry_points.txt").write_text("[console_scripts]\ndemo = demo:main\n")
    monkeypatch.setattr(sys, "path", [str(site), str(tmp_path / "missing")])
    assert not _group_may_be_declared(ENTRY_POINT_GROUP)
    assert _group_may_be_declared("console_scripts")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ndemo = demo_plugin\n")
    assert _group_may_be_declared(ENTRY_POINT_GROUP)
    archive = tmp_path / "bundle.zip"
    archive.write_bytes(b"")
    monkeypatch.setattr(sys, "path", [str(archive)])
    assert _group_may_be_declared(ENTRY_POINT_GROUP)  # an archive: importlib.metadata decides
