"""Load plugins: a ``.py`` file, an importable module, or an entry point.

The built-ins are plugins too (``gradcheck_cli.registry.activations`` and friends), loaded
through :func:`load_plugin` like any user module, so the loader is exercised on every run.
"""

from __future__ import annotations

import importlib
import os
import runpy
import traceback
from importlib import metadata
from pathlib import Path

from gradcheck_cli.errors import PluginError
from gradcheck_cli.registry import REGISTRY, FunctionSpec, FusedSpec, Registry, registering

BUILTIN_MODULES = (
    "gradcheck_cli.registry.activations",
    "gradcheck_cli.registry.losses",
    "gradcheck_cli.registry.variants",
)
ENTRY_POINT_GROUP = "gradcheck_cli.plugins"

# A module registers at import time, which happens once per process; remember what it
# registered so a second registry (tests, a fresh run) can be given the same entries.
_recorded: dict[str, tuple[list[FunctionSpec], list[FusedSpec]]] = {}


def _describe_exception(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
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
        importlib.import_module(module)
    _recorded[module] = (list(scratch), list(scratch._fused.values()))
    _replay(module, registry)


def load_plugin(source: str, registry: Registry = REGISTRY) -> list[str]:
    """Load one plugin and return the names it registered.

    ``source`` is a path to a ``.py`` file or a dotted module name. A plugin that fails
    to import raises :class:`PluginError` naming the source and the exception.
    """
    before = set(registry.names())
    is_file = source.endswith(".py") or os.sep in source or "/" in source
    try:
        if is_file:
            path = Path(source)
            if not path.is_file():
                raise PluginError(
                    f"Plugin file '{source}' does not exist. Expected a path to a .py file "
                    f"or an importable module name (e.g. mylib.gradcheck_plugin)."
                )
            with registering(registry, str(path)):
                runpy.run_path(str(path), run_name=f"gradcheck_plugin_{path.stem}")
        else:
            _import_module(source, registry, source)
    except PluginError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and source.startswith(exc.name):
            raise PluginError(
                f"Plugin module '{source}' cannot be imported: no module named '{exc.name}'. "
                f"Install the package that provides it, or pass a file path instead."
            ) from exc
        raise PluginError(f"Plugin '{source}' failed to import: {_describe_exception(exc)}.") from exc
    except (Exception, SystemExit) as exc:
        raise PluginError(
            f"Plugin '{source}' raised while loading: {_describe_exception(exc)}. "
            f"Fix the plugin so that importing it only registers entries."
        ) from exc
    return [n for n in registry.names() if n not in before]


def load_builtins(registry: Registry = REGISTRY) -> None:
    """Register the built-in activations, losses, variants and fused formulas."""
    for module in BUILTIN_MODULES:
        _import_module(module, registry, "builtin")


def load_entry_points(registry: Registry = REGISTRY) -> list[str]:
    """Load every plugin advertised under the ``gradcheck_cli.plugins`` entry-point group.

    Set ``GRADCHECK_DISABLE_PLUGIN_AUTOLOAD=1`` to skip them.
    """
    if os.environ.get("GRADCHECK_DISABLE_PLUGIN_AUTOLOAD"):
        return []
    loaded: list[str] = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        loaded += load_plugin(ep.value.split(":", 1)[0], registry)
    return loaded


def default_registry(plugins: list[str] | tuple[str, ...] = ()) -> Registry:
    """A fresh registry with the built-ins, installed entry points and ``plugins``."""
    registry = Registry()
    load_builtins(registry)
    load_entry_points(registry)
    for plugin in plugins:
        load_plugin(plugin, registry)
    return registry


__all__ = ["default_registry", "load_builtins", "load_entry_points", "load_plugin"]
