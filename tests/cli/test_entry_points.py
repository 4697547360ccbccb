"""Plugins the three ways a user ships them: a file, a module, an installed package's entry point.

The entry point is exercised for real: a tiny package declaring
``[project.entry-points."gradcheck_cli.plugins"]`` is pip-installed into a scratch folder
(``--target``) which the CLI subprocess then finds on PYTHONPATH.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import samples

from gradcheck_cli.plugins import ENTRY_POINT_GROUP, load_builtins, load_entry_points
from gradcheck_cli.registry import Registry

BASE_ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
BASE_ENV.pop("FORCE_COLOR", None)
BASE_ENV.pop("GRADCHECK_DISABLE_PLUGIN_AUTOLOAD", None)
DISABLED = {**BASE_ENV, "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1"}

SOFTMAX_PLUGIN = ('''\
import numpy as np

from gradcheck_cli import register_activation
''' + samples.SOFTMAX + '''\


register_activation("demo_softmax", forward=softmax, vjp=softmax_vjp)
''')

PYPROJECT = '''\
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.0.1"

[project.entry-points."gradcheck_cli.plugins"]
demo = "{module}"

[tool.setuptools]
py-modules = ["{module}"]
'''


def gradcheck(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gradcheck_cli", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


def _can_build_wheels() -> bool:
    """setuptools builds wheels by itself from 70.1; before that it needs the wheel package."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    if importlib.util.find_spec("wheel") is not None:
        return True
    from importlib.metadata import version

    major, minor = (int(p) for p in version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1)


def _hand_built_wheel(pkgdir: Path, module: str, dist: str, out: Path) -> Path:
    """The wheel setuptools would build for ``pkgdir``: the module, METADATA, entry_points.txt."""
    info = f"{module}-0.0.1.dist-info"
    files = {
        f"{module}.py": (pkgdir / f"{module}.py").read_bytes(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[{ENTRY_POINT_GROUP}]\ndemo = {module}\n".encode(),
    }

    def digest(data: bytes) -> str:
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{name},{digest(data)},{len(data)}\n" for name, data in files.items())
    wheel = out / f"{module}-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{info}/RECORD", record + f"{info}/RECORD,,\n")
    return wheel


def install(folder: Path, module: str, source: str) -> Path:
    """pip-install a one-module package exposing ``module`` as a gradcheck plugin; its --target."""
    dist = module.replace("_", "-")
    pkgdir, target = folder / "src", folder / "site"
    pkgdir.mkdir()
    (pkgdir / "pyproject.toml").write_text(PYPROJECT.format(dist=dist, module=module))
    (pkgdir / f"{module}.py").write_text(source)
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not installed in this interpreter, so no test package can be installed")
    # The pyproject.toml build needs setuptools that can build wheels; without one, pip installs
    # the same package from a wheel built here (still a real install with real metadata).
    what = str(pkgdir) if _can_build_wheels() else str(_hand_built_wheel(pkgdir, module, dist, folder))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "--disable-pip-version-check", "--quiet", "--target", str(target), what],
                          capture_output=True, text=True, timeout=120, env=BASE_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / f"{module}.py").exists()
    return target


class Background:
    """A gradcheck process started now and collected when a test needs it."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.cwd = cwd
        self.popen = subprocess.Popen([sys.executable, "-m", "gradcheck_cli", *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        self.done: subprocess.CompletedProcess[str] | None = None

    def result(self) -> subprocess.CompletedProcess[str]:
        if self.done is None:
            out, err = self.popen.communicate(timeout=120)
            self.done = subprocess.CompletedProcess(self.popen.args, self.popen.returncode, out, err)
        return self.done

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.communicate()


def start_all(commands: dict[str, tuple[list[str], dict[str, str], Path]]) -> dict[str, Background]:
    """Start every command at once: each is mostly interpreter start-up, so they overlap well."""
    return {name: Background(args, env, cwd) for name, (args, env, cwd) in commands.items()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install(tmp_path_factory.mktemp("demo_pkg"), "demo_gc_plugin", SOFTMAX_PLUGIN)


@pytest.fixture(scope="module")
def with_installed(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Background]]:
    """Every CLI run that needs the installed package, started together."""
    cwd = tmp_path_factory.mktemp("cwd")
    auto = {**BASE_ENV, "PYTHONPATH": str(installed)}
    off = {**DISABLED, "PYTHONPATH": str(installed)}
    broken = tmp_path_factory.mktemp("broken_site")
    # Laid out as pip leaves an installed package (module + .dist-info), without running pip again.
    info = broken / "broken_gc_plugin-0.0.1.dist-info"
    info.mkdir()
    (broken / "broken_gc_plugin.py").write_text("raise RuntimeError('this plugin needs a GPU')\n")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-gc-plugin\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nbroken = broken_gc_plugin\n")
    runs = start_all({
        "run": (["run", "demo_softmax", "--json", "-"], auto, cwd),
        "off": (["run", "demo_softmax"], off, cwd),
        "list": (["list", "--json", "-"], auto, cwd),
        "check-again": (["check", "demo_gc_plugin", "--json", "-"], auto, cwd),
        "run-plugin-again": (["run", "demo_softmax", "--plugin", "demo_gc_plugin", "--json", "-"], auto, cwd),
        "broken": (["run", "softmax"], {**BASE_ENV, "PYTHONPATH": str(broken)}, cwd),
    })
    yield runs
    for run in runs.values():
        run.stop()


def test_installed_entry_point_is_loaded(with_installed: dict[str, Background]) -> None:
    proc = with_installed["run"].result()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(proc.stdout)["results"]
    assert [(r["check"], r["convention"], r["verdict"], r["origin"]) for r in rows] == [
        ("demo_softmax", "vjp", "PASS", "demo_gc_plugin")]


def test_entry_points_can_be_switched_off(with_installed: dict[str, Background]) -> None:
    proc = with_installed["off"].result()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Unknown name 'demo_softmax'" in proc.stderr and "Traceback" not in proc.stderr


def test_list_shows_the_entry_point_and_its_origin(with_installed: dict[str, Background]) -> None:
    proc = with_installed["list"].result()
    assert proc.returncode == 0, proc.stderr
    entries = {e["name"]: e for e in json.loads(proc.stdout)["entries"]}
    assert entries["demo_softmax"]["origin"] == "demo_gc_plugin"
    assert entries["demo_softmax"]["kind"] == "activation" and "softmax" in entries


@pytest.mark.parametrize("run", ["check-again", "run-plugin-again"])
def test_naming_an_installed_plugin_again_is_harmless(with_installed: dict[str, Background], run: str) -> None:
    """Regression: this exited 2 with "'demo_softmax' is registered twice" (the entry point, then the module)."""
    proc = with_installed[run].result()
    assert proc.returncode == 0, proc.stderr
    assert [r["check"] for r in json.loads(proc.stdout)["results"]] == ["demo_softmax"]


def test_broken_entry_point_exits_2_naming_it(with_installed: dict[str, Background]) -> None:
    proc = with_installed["broken"].result()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "broken_gc_plugin" in proc.stderr
    assert "RuntimeError: this plugin needs a GPU" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_entry_points_in_process(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADCHECK_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.syspath_prepend(str(installed))
    registry = Registry()
    load_builtins(registry)
    try:
        assert load_entry_points(registry) == ["demo_softmax"]
    finally:
        sys.modules.pop("demo_gc_plugin", None)
    assert registry.get("demo_softmax").origin == "demo_gc_plugin"


# --- gradcheck check PLUGIN: a file or a module, every entry, exit codes ----------------------

GOOD_AND_BAD = '''\
import numpy as np
from gradcheck_cli import register_activation, register_loss


def mse(pred, target):
    return np.mean((pred - target) ** 2, axis=(-2, -1))


register_activation("user_tanh", forward=np.tanh, derivative=lambda x: 1 - np.tanh(x) ** 2)
register_loss("user_mse", forward=mse, gradient=lambda p, t: 2 * (p - t) / p.size)
'''

FLAGGED = GOOD_AND_BAD + '''
register_loss("user_mse_no_mean", forward=mse, gradient=lambda p, t: 2 * (p - t))
'''

CANNOT_LOAD = {
    "raises": ("import numpy\nraise ImportError('needs torch')\n",
               ("Plugin 'plugin.py'", "ImportError: needs torch", "plugin.py:2")),
    "missing-dependency": ("import not_installed_gc_dep_zz\n",
                           ("Plugin 'plugin.py'", "No module named 'not_installed_gc_dep_zz'")),
    "registers-nothing": ("x = 1\n", ("registered nothing",)),
}


@pytest.fixture(scope="module")
def plugin_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Background]]:
    """gradcheck check / run --plugin on files and modules, started together."""
    commands: dict[str, tuple[list[str], dict[str, str], Path]] = {}
    flagged = tmp_path_factory.mktemp("flagged")
    (flagged / "plugin.py").write_text(FLAGGED)
    commands["flagged"] = (["check", "plugin.py", "--json", "out.json", "--trials", "1"], DISABLED, flagged)
    module = tmp_path_factory.mktemp("module")
    (module / "lib").mkdir()
    (module / "lib" / "user_gc_module.py").write_text(GOOD_AND_BAD)
    commands["module"] = (["check", "user_gc_module", "--json", "-", "--trials", "1"],
                          {**DISABLED, "PYTHONPATH": str(module / "lib")}, module)
    pair = tmp_path_factory.mktemp("pair")
    (pair / "plugin.py").write_text(GOOD_AND_BAD)
    commands["run-plugin"] = (["run", "tanh+user_mse", "--plugin", "plugin.py", "--json", "-", "--trials", "1"],
                              DISABLED, pair)
    for name, (body, _) in CANNOT_LOAD.items():
        folder = tmp_path_factory.mktemp(name)
        (folder / "plugin.py").write_text(body)
        commands[name] = (["check", "plugin.py"], DISABLED, folder)
    runs = start_all(commands)
    yield runs
    for run in runs.values():
        run.stop()


def test_check_a_file_checks_every_entry(plugin_runs: dict[str, Background]) -> None:
    run = plugin_runs["flagged"]
    proc = run.result()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = json.loads((run.cwd / "out.json").read_text())["results"]
    assert [(r["check"], r["component"], r["verdict"]) for r in rows] == [
        ("user_tanh", "jacobian", "PASS"), ("user_mse", "gradient", "PASS"), ("user_mse_no_mean", "gradient", "FAIL")]
    assert {r["origin"] for r in rows} == {"plugin.py"}
    assert "user_mse_no_mean" in proc.stdout and "missing the 1/N of a mean" in proc.stdout


def test_check_a_module(plugin_runs: dict[str, Background]) -> None:
    proc = plugin_runs["module"].result()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(proc.stdout)["results"]
    assert [(r["check"], r["verdict"]) for r in rows] == [("user_tanh", "PASS"), ("user_mse", "PASS")]
    assert {r["origin"] for r in rows} == {"user_gc_module"}


def test_run_with_a_plugin_file(plugin_runs: dict[str, Background]) -> None:
    proc = plugin_runs["run-plugin"].result()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(proc.stdout)["results"]
    origins = {(r["component"], r["origin"]) for r in rows}
    assert {("jacobian", "builtin"), ("gradient", "plugin.py"), ("chain", "builtin")} <= origins
    assert {r["verdict"] for r in rows} == {"PASS"}


@pytest.mark.parametrize("name", list(CANNOT_LOAD))
def test_check_a_plugin_that_cannot_load_exits_2(plugin_runs: dict[str, Background], name: str) -> None:
    proc = plugin_runs[name].result()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    for fragment in CANNOT_LOAD[name][1]:
        assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
