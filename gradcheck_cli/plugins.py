"""Load plugins: a ``.py`` file, an importable module, or an entry point.

The built-ins are plugins too (``gradcheck_cli.registry.activations`` and friends), loaded
through :func:`load_plugin` like any user module, so the loader is exercised on every run.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import re
import stat
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any

from gradcheck_cli.errors import PluginError, UsageError, suggest
from gradcheck_cli.registry import REGISTRY, FunctionSpec, FusedSpec, Registry, registering

BUILTIN_MODULES = (
    "gradcheck_cli.registry.activations",
    "gradcheck_cli.registry.builtin_layers",
    "gradcheck_cli.registry.losses",
    "gradcheck_cli.registry.variants",
)
ENTRY_POINT_GROUP = "gradcheck_cli.plugins"
AUTOLOAD_SWITCH = "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD"
# Only a true value turns auto-loading off: "0" or "false" must not (pytest's
# PYTEST_DISABLE_PLUGIN_AUTOLOAD reads any non-empty value as true, a known surprise).
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")

# Who is told what is about to load (the loader process tells the gradcheck process, so that
# a plugin that ends or hangs its process is named). A stack: the innermost listener hears.
_listeners: list[Callable[[str], None]] = []


@contextlib.contextmanager
def announcing(listener: Callable[[str], None]) -> Iterator[None]:
    """Call ``listener(what)`` before each plugin, entry point or config function loads."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.pop()


def announce(what: str) -> None:
    """Say that ``what`` (a plugin, an entry point, a config function) is about to load."""
    if _listeners:
        _listeners[-1](what)


# A module registers at import time, which happens once per process; remember what it
# registered so a second registry (tests, a fresh run) can be given the same entries.
_recorded: dict[str, tuple[list[FunctionSpec], list[FusedSpec]]] = {}


def _describe_exception(exc: BaseException) -> str:
    package = str(Path(__file__).parent)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(package)]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _replay(module: str, registry: Registry) -> None:
    specs, fused = _recorded[module]
    for spec in specs:
        registry.add(spec)
    for item in fused:
        registry.add_fused(item)


def _import_module(module: str, registry: Registry, origin: str) -> None:
    if module in _recorded:
        _replay(module, registry)
        return
    scratch = Registry()
    with registering(scratch, origin):
        if module in sys.modules:
            # Imported before (e.g. to reuse a function) outside the loader: run it again
            # so that its registrations reach this registry.
            importlib.reload(sys.modules[module])
        else:
            importlib.import_module(module)
    _recorded[module] = (list(scratch), scratch.fused_formulas())
    _replay(module, registry)


def load_plugin(source: str, registry: Registry = REGISTRY) -> list[str]:
    """Load one plugin and return the names it registered.

    ``source`` is a path to a ``.py`` file or a dotted module name. A plugin that fails
    to import raises :class:`PluginError` naming the source and the exception.
    """
    is_file = _plugin_path(source)
    key = os.path.realpath(source) if is_file else source
    if key in registry.sources:
        # Already loaded into this registry (an entry point named again): nothing new.
        return list(registry.sources[key])
    before = set(registry.names())
    announce(f"plugin '{source}'")
    try:
        if is_file:
            path = Path(source)
            _check_plugin_file(source)
            import runpy  # only file plugins need it

            with registering(registry, str(path)):
                runpy.run_path(str(path), run_name=f"gradcheck_plugin_{path.stem}")
        else:
            _import_module(source, registry, source)
    except PluginError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and source.startswith(exc.name):
            here = exc.name.split(".")[0]
            file = f"{source.replace('.', '/')}.py"
            where = f"its path, ./{file}" if os.path.isfile(file) else "the path of its .py file"
            hint = (f" ('{here}' is here, but 'gradcheck' imports modules from sys.path, which does not hold the "
                    f"current folder: give {where}, or set PYTHONPATH=.)") if (
                os.path.lexists(here) or os.path.lexists(f"{here}.py")) else ""
            raise PluginError(
                f"Plugin module '{source}' cannot be imported: no module named '{exc.name}'{hint}. "
                f"Install the package that provides it, or pass a file path instead."
            ) from exc
        raise PluginError(f"Plugin '{source}' failed to import: {_describe_exception(exc)}.") from exc
    except (Exception, SystemExit) as exc:
        raise PluginError(
            f"Plugin '{source}' raised while loading: {_describe_exception(exc)}. "
            f"Fix the plugin so that importing it only registers entries."
        ) from exc
    names = [n for n in registry.names() if n not in before]
    registry.sources[key] = names
    return names


_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _plugin_path(source: str) -> bool:
    """Whether ``source`` names a file (a path, or something that exists here) rather than a module.

    A module name is dotted identifiers; anything else (``''``, ``..x``, ``good.pyc``, a
    folder) is refused here with a message of its own instead of an import error about it.
    """
    if source.endswith((".py", ".pyc", ".pyw")) or os.sep in source or "/" in source:
        return True
    if not _MODULE_NAME.fullmatch(source):
        if os.path.lexists(source):
            return True
        raise PluginError(
            f"Plugin {source!r} is neither a file here nor a module name. Expected a path to a .py file "
            f"(e.g. tools/my_plugin.py) or an importable dotted module name (e.g. mylib.gradcheck_plugin)."
        )
    return False


def _check_plugin_file(source: str) -> None:
    """Refuse a plugin path that is missing, a folder, or not a regular file (a FIFO would block)."""
    try:
        mode = os.stat(source).st_mode
    except FileNotFoundError:
        raise PluginError(
            f"Plugin file '{source}' does not exist. Expected a path to a .py file "
            f"or an importable module name (e.g. mylib.gradcheck_plugin)."
        ) from None
    except OSError as exc:
        raise PluginError(f"Plugin file '{source}' cannot be read: {exc.strerror}. Give the path to a .py "
                          f"file.") from None
    if stat.S_ISDIR(mode):
        module = Path(source).name or "mylib"
        raise PluginError(
            f"Plugin '{source}' is a folder. Give the .py file that registers the entries (e.g. "
            f"{source.rstrip('/')}/plugin.py), or, for an installed package, its module name "
            f"(e.g. {module}); 'gradcheck' does not import from the current folder unless it is on "
            f"PYTHONPATH."
        )
    if not stat.S_ISREG(mode):
        raise PluginError(f"Plugin file '{source}' is not a regular file (a device or a FIFO). Give the path to "
                          f"a .py file.")


def load_builtins(registry: Registry = REGISTRY) -> None:
    """Register the built-in activations, losses, variants and fused formulas."""
    for module in BUILTIN_MODULES:
        _import_module(module, registry, "builtin")


def load_entry_points(registry: Registry = REGISTRY) -> list[str]:
    """Load every plugin advertised under the ``gradcheck_cli.plugins`` entry-point group.

    Set ``GRADCHECK_DISABLE_PLUGIN_AUTOLOAD=1`` to skip them.
    """
    if autoload_disabled() or not _group_may_be_declared(ENTRY_POINT_GROUP):
        return []
    from importlib import metadata  # ~20 ms with the email package it pulls in: only when needed

    loaded: list[str] = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        announce(f"entry point '{ep.name}' ({ep.value})")
        loaded += load_plugin(ep.value.split(":", 1)[0], registry)
    return loaded


def autoload_disabled() -> bool:
    """Whether ``GRADCHECK_DISABLE_PLUGIN_AUTOLOAD`` turns entry points off: 1/true/yes/on, any case.

    0/false/no/off and empty (or unset) keep them on; any other value is a :class:`UsageError`,
    since guessing would either load code the user meant to keep out or drop plugins silently.
    """
    value = os.environ.get(AUTOLOAD_SWITCH, "")
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise UsageError(f"{AUTOLOAD_SWITCH} is set to {value!r}, which is neither true nor false. Set it to 1, "
                     f"true, yes or on to stop loading installed plugins (entry points), or to 0, false, no, "
                     f"off or nothing to load them (case does not matter).")


def _group_may_be_declared(group: str) -> bool:
    """Could any installed distribution declare entry points in ``group``?

    A cheap look before :mod:`importlib.metadata`, which costs a command's cold start ~20 ms:
    the ``entry_points.txt`` of every ``*.dist-info`` / ``*.egg-info`` folder on ``sys.path``
    (where importlib.metadata looks) is searched for the group's header. Anything it cannot
    read that way (an archive on the path, a meta-path finder that lists distributions of its
    own) answers yes, so importlib.metadata decides.
    """
    if any(hasattr(finder, "find_distributions") and finder is not PathFinder for finder in sys.meta_path):
        return True
    header = f"[{group}]"
    for folder in sys.path:
        try:
            entries = list(os.scandir(folder or "."))
        except NotADirectoryError:
            return True  # a zip archive on sys.path: let importlib.metadata read it
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith((".dist-info", ".egg-info")):
                try:
                    with open(os.path.join(entry.path, "entry_points.txt"), encoding="utf-8") as handle:
                        if header in handle.read():
                            return True
                except OSError:
                    continue
    return False


def default_registry(plugins: list[str] | tuple[str, ...] = ()) -> Registry:
    """A fresh registry with the built-ins, installed entry points and ``plugins``."""
    registry = Registry()
    load_builtins(registry)
    load_entry_points(registry)
    for plugin in plugins:
        load_plugin(plugin, registry)
    return registry




def _load_file_module(path: Path) -> Any:
    """Import a .py file as a module of its own (its folder importable while it loads)."""
    resolved = path.resolve()
    if resolved in _file_modules:
        return _file_modules[resolved]
    name = f"gradcheck_user_{resolved.stem}_{abs(hash(str(resolved))) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise PluginError(f"'{path}' cannot be loaded as a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(resolved.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(resolved.parent))
    _file_modules[resolved] = module
    return module


_file_modules: dict[Path, Any] = {}


def resolve_reference(ref: str, base: Path, where: str, init: dict[str, Any], instances: dict[type, Any],
                      init_where: str | None = None) -> tuple[Any, Callable[[], Any] | None]:
    """Resolve ``module:qualname`` or ``path/file.py:qualname`` to an object.

    ``Class.method`` is bound to one instance of ``Class`` built with ``init`` (shared by
    every reference of the same entry, kept in ``instances``); the second value is then a
    factory that builds fresh instances, for layers whose backward depends on state.
    """
    if ":" not in ref:
        raise PluginError(f"{where}: '{ref}' is not a reference; write module:qualname (e.g. "
                          f"mylib.layers:Softmax.forward) or path/file.py:qualname.")
    left, qualname = ref.rsplit(":", 1)
    try:
        if left.endswith(".py") or "/" in left or os.sep in left:
            path = Path(left) if Path(left).is_absolute() else base / left
            if not path.is_file():
                raise PluginError(f"{where}: file '{path}' does not exist (paths are relative to "
                                  f"the config's folder, {base}).")
            module = _load_file_module(path)
        else:
            module = importlib.import_module(left)
    except PluginError:
        raise
    except ModuleNotFoundError as exc:
        raise PluginError(f"{where}: cannot import module '{left}': {exc}. Install the package, "
                          f"or check the spelling and that it is importable from {Path.cwd()}.") from exc
    except Exception as exc:
        raise PluginError(f"{where}: importing '{left}' raised {_describe_exception(exc)}.") from exc
    obj: Any = module
    factory: Callable[[], Any] | None = None
    parts = qualname.split(".")
    for i, part in enumerate(parts):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("__")]
            raise PluginError(f"{where}: '{'.'.join([left] + parts[:i])}' has no attribute "
                              f"'{part}'.{suggest(part, names)}")
        attr = inspect.getattr_static(obj, part) if isinstance(obj, type) else None
        if isinstance(obj, type) and inspect.isfunction(attr):
            cls = obj
            if cls not in instances:
                try:
                    instances[cls] = cls(**init)
                except Exception as exc:
                    raise PluginError(f"{init_where or where}: building {cls.__name__}(**init) with init={init!r} "
                                      f"raised {_describe_exception(exc)}. Set 'init' to the "
                                      f"constructor's keyword arguments.") from exc
            factory = _factory(cls, init)
            obj = getattr(instances[cls], part)
        else:
            obj = getattr(obj, part)
    if not callable(obj):
        raise PluginError(f"{where}: '{ref}' is {type(obj).__name__}, not something callable.")
    return obj, factory


def _factory(cls: type, init: dict[str, Any]) -> Callable[[], Any]:
    return lambda: cls(**init)


def register_functions(functions: Sequence[Any], base: Path, registry: Registry) -> list[str]:
    """Register the ``functions:`` entries of a config (see :mod:`gradcheck_cli.config`)."""
    from gradcheck_cli.registry import register_activation, register_layer, register_loss

    names: list[str] = []
    for fn in functions:
        instances: dict[type, Any] = {}
        key = f"{fn.where}: functions.{fn.name}"
        announce(f"{key} ({fn.forward})")
        init_at = fn.at("init")
        forward, factory = (resolve_reference(fn.forward, base, fn.at("forward"), dict(fn.init), instances, init_at)
                            if fn.forward else (None, None))
        conventions = {}
        for keyword, ref in fn.conventions.items():
            announce(f"{fn.at(keyword)} ({ref})")  # so that a module that exits as it loads is the one named
            conventions[keyword], _ = resolve_reference(ref, base, fn.at(keyword), dict(fn.init), instances, init_at)
        extra: dict[str, Any] = {"formula": fn.formula, "domain": fn.domain, "kinks": fn.kinks}
        with registering(registry, fn.where):
            try:
                if fn.kind == "activation":
                    register_activation(fn.name, forward, output_attr=fn.output_attr, grad_attr=fn.grad_attr,
                                        factory=factory if "backward" in conventions else None,
                                        **extra, **conventions)
                elif fn.kind == "layer":
                    # Class.method references are bound to one instance built with init: the layer's
                    # prototype, copied for every call (never rebuilt, so random weights stay put).
                    register_layer(fn.name, forward, args=dict(fn.args), kwargs=dict(fn.kwargs),
                                   outputs=fn.outputs, params=dict(fn.params), output_attr=fn.output_attr,
                                   grad_attr=fn.grad_attr, stochastic=fn.stochastic, formula=fn.formula,
                                   **conventions)
                else:
                    register_loss(fn.name, forward, target=fn.target or "real", reduction=fn.reduction,
                                  grad_attr=fn.grad_attr, output_attr=fn.output_attr, target_first=fn.target_first,
                                  **extra, **conventions)
            except PluginError as exc:
                raise PluginError(f"{key}: {exc.message}") from exc
        names.append(fn.name)
    return names
