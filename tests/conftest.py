"""Shared fixtures: one seeded RNG, the built-in registry, hypothesis profiles.

Entry-point plugins installed in the environment must not change what the tests see,
so auto-loading is turned off before anything from gradcheck_cli is imported; the
variable is inherited by the CLI subprocesses too.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from gradcheck_cli.plugins import default_registry
from gradcheck_cli.registry import Registry

# Read when a registry is built, not at import: setting it here, before any test module
# is collected, is early enough.
os.environ["GRADCHECK_DISABLE_PLUGIN_AUTOLOAD"] = "1"

# Load the built-ins once, before test modules import gradcheck_cli.registry.activations
# for its functions, so no test depends on collection order. Importing that module first
# is itself covered, in a fresh interpreter, by
# tests/unit/test_registry.py::test_importing_builtin_functions_first_keeps_the_builtins.
default_registry()

# `default` for local runs; `ci` is reproducible (HYPOTHESIS_PROFILE=ci).
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

SEED = 20240229


@pytest.fixture
def rng() -> np.random.Generator:
    """The one seeded random generator of the suite."""
    return np.random.default_rng(SEED)


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The built-ins (activations, losses, variants, fused pairs), no entry points."""
    return default_registry()
