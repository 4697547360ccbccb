"""The CI config: every error names file, line and key; valid files become jobs.

:func:`gradcheck_cli.config.load_config` is tested on YAML text; the ``functions:`` and
``plugins:`` sections, which import user code, through
:func:`gradcheck_cli.suite.jobs_from_config` in this process (run without forking). The
``gradcheck ci`` command itself runs in tests/cli/test_ci_gate.py.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import samples

from gradcheck_cli.config import load_config
from gradcheck_cli.errors import ConfigError, GradcheckError, PluginError
from gradcheck_cli.registry import Registry
from gradcheck_cli.results import CheckResult, Verdict
from gradcheck_cli.suite import Job, jobs_from_config, run_jobs

LAYERS = ('''\
import numpy as np
''' + samples.SOFTMAX + samples.MSE + '''\


def mse_grad_binary_only(pred, target):
    if not np.isin(target, (0.0, 1.0)).all():
        raise ValueError("expects 0/1 targets")
    return mse_grad(pred, target)


def log(x):
    return np.log(x)


def log_grad(x):
    return 1.0 / x


class Scaled:
    def __init__(self, scale):
        self.scale = scale

    def forward(self, x):
        return self.scale * np.tanh(x)

    def derivative(self, x):
        return self.scale * (1.0 - np.tanh(x) ** 2)


class Layer:
    """Appends every input; stores its output and its input gradient in attributes."""

    def __init__(self, axis=-1):
        self.axis = axis
        self.seen = []

    def forward(self, x):
        self.seen.append(x)
        self.out = softmax(x)

    def backward(self, g):
        y = softmax(self.seen[0])
        self.dx = y * (g - (y * g).sum(axis=self.axis, keepdims=True))
''')


def write(folder: Path, text: str, name: str = "gradcheck.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def line_of(path: Path, fragment: str) -> int:
    """1-based number of the first line of ``path`` containing ``fragment``."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if fragment in line:
            return number
    raise AssertionError(f"{fragment!r} not in {path}")


@pytest.fixture
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """jobs_from_config puts the config's folder on sys.path and imports user modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("gc_cfg_"):
            del sys.modules[name]


def run_config(path: Path) -> tuple[Registry, list[Job], list[CheckResult]]:
    registry, jobs = jobs_from_config(str(path), 60.0)
    rows = list(run_jobs(jobs, registry, isolate=False).results)
    return registry, jobs, rows


# --- load_config: errors name file, line and key ---------------------------------------------

ERRORS = [
    ("unknown_check_key", """\
        version: 1
        checks:
          - {spec: softmax, trails: 3}
        """, 3, "checks[0].trails", r"unknown key 'trails' .*Did you mean 'trials'\?"),
    ("unknown_top_key", """\
        version: 1
        check:
          - softmax
        """, 2, "check", r"Did you mean 'checks'\? Allowed keys: version, defaults, plugins, functions, checks"),
    ("unknown_default_key", """\
        version: 1
        defaults:
          seed: 0
          sed: 1
        checks: [softmax]
        """, 4, "defaults.sed", r"Did you mean 'seed'\?"),
    ("unknown_function_key", """\
        version: 1
        functions:
          f:
            kind: activation
            forward: lib.py:f
            jacobain: lib.py:g
        checks: [f]
        """, 6, "functions.f.jacobain", r"unknown key 'jacobain' in function 'f'\. Did you mean 'jacobian'\?"),
    ("trials_text", """\
        version: 1
        defaults:
          trials: three
        checks: [softmax]
        """, 3, "defaults.trials", r"expected an integer >= 1; got str 'three'"),
    ("trials_bool", """\
        version: 1
        checks:
          - {spec: softmax, trials: yes}
        """, 3, "checks[0].trials", r"expected an integer >= 1; got bool True"),
    ("seed_float", """\
        version: 1
        defaults: {seed: 1.5}
        checks: [softmax]
        """, 2, "defaults.seed", r"expected an integer >= 0; got float 1.5"),
    ("shape_scalar", """\
        version: 1
        defaults:
          shape: 4
        checks: [softmax]
        """, 3, "defaults.shape", r"shape expects positive integers .*e\.g\. shape: \[4, 10\]; got int 4"),
    ("shape_zero", """\
        version: 1
        checks:
          - {spec: softmax, shape: [0, 3]}
        """, 3, "checks[0].shape", r"positive integers separated by commas"),
    ("shape_arabic_indic_digits", """\
        version: 1
        checks:
          - {spec: softmax, shape: "٤,١٠"}
        """, 3, "checks[0].shape", r"written in ASCII digits 0-9.*got '٤,١٠'"),
    ("shape_arabic_indic_in_a_list", """\
        version: 1
        defaults: {shape: [٤, 10]}
        checks: [softmax]
        """, 2, "defaults.shape", r"ASCII digits 0-9.*got list \['٤', 10\]"),
    ("shape_underscore", """\
        version: 1
        defaults: {shape: "4_0,10"}
        checks: [softmax]
        """, 2, "defaults.shape", r"ASCII digits 0-9.*got '4_0,10'"),
    ("shape_past_the_size_limit", """\
        version: 1
        defaults:
          shape: [100000, 100000]
        checks: [softmax]
        """, 3, "defaults.shape", r"shape 100000,100000 has 10,000,000,000 elements, more than the 50,000,000"),
    ("rtol_text", """\
        version: 1
        checks:
          - {spec: softmax, rtol: tight}
        """, 3, "checks[0].rtol", r"expected a finite number >= 0; got str 'tight'"),
    ("rtol_negative", """\
        version: 1
        checks:
          - {spec: softmax, rtol: -1e-6}
        """, 3, "checks[0].rtol", r"expected a finite number >= 0"),
    ("timeout_negative", """\
        version: 1
        defaults: {timeout: -1}
        checks: [softmax]
        """, 2, "defaults.timeout", r"expected a number of seconds > 0, or 0 or \.inf for no limit; got int -1"),
    ("timeout_nan", """\
        version: 1
        checks:
          - {spec: softmax, timeout: .nan}
        """, 3, "checks[0].timeout", r"expected a number of seconds > 0, or 0 or \.inf for no limit; got float nan"),
    ("method", """\
        version: 1
        defaults: {method: centrl}
        checks: [softmax]
        """, 2, "defaults.method", r"'centrl' is not one of central, richardson, complex\. Did you mean 'central'\?"),
    ("expect", """\
        version: 1
        checks:
          - {spec: softmax@diagonal, expect: fial}
        """, 3, "checks[0].expect", r"'fial' is not one of pass, fail\. Did you mean 'fail'\?"),
    ("name_not_text", """\
        version: 1
        checks:
          - {spec: softmax, name: 3}
        """, 3, "checks[0].name", r"expected a non-empty string; got int 3"),
    ("spec_missing", """\
        version: 1
        checks:
          - {name: softmax}
        """, 3, "checks[0]", r"missing 'spec'"),
    ("spec_empty", """\
        version: 1
        checks:
          - {spec: }
        """, 3, "checks[0].spec", r"expected a non-empty string; got null"),
    ("check_is_a_list", """\
        version: 1
        checks:
          - [softmax, mse]
        """, 3, "checks[0]", r"expected a mapping"),
    ("checks_empty", """\
        version: 1
        checks: []
        """, 2, "checks", r"expected a non-empty list of checks"),
    ("plugins_text", """\
        version: 1
        plugins: tools/plugin.py
        checks: [softmax]
        """, 2, "plugins", r"expected a list of plugin files or modules; got str"),
    ("input_ragged", """\
        version: 1
        checks:
          - {spec: softmax, input: [[1, 2], [3, x]]}
        """, 3, "checks[0].input", r"expected numbers as"),
    ("version_2", """\
        version: 2
        checks: [softmax]
        """, 1, "version", r"expected 'version: 1'; got 2"),
    ("version_text", """\
        version: "1"
        checks: [softmax]
        """, 1, "version", r"expected 'version: 1'; got '1'"),
    ("version_missing", """\
        checks: [softmax]
        """, 1, "version", r"expected 'version: 1'; got 'nothing'\. Put 'version: 1' at the top"),
    ("duplicate_top_key", """\
        version: 1
        checks: [softmax]
        checks: [relu]
        """, 3, "checks", r"this key appears twice in the same mapping"),
    ("duplicate_nested_key", """\
        version: 1
        defaults:
          seed: 1
          trials: 2
          seed: 2
        checks: [softmax]
        """, 5, "defaults.seed", r"appears twice"),
    ("function_kind", """\
        version: 1
        functions:
          f:
            kind: activaton
            forward: lib.py:f
            vjp: lib.py:g
        checks: [f]
        """, 4, "functions.f.kind", r"'activaton' is not one of activation, loss, layer\. Did you mean 'activation'\?"),
    ("function_without_kind", """\
        version: 1
        functions:
          f:
            forward: lib.py:f
            vjp: lib.py:g
        checks: [f]
        """, 3, "functions.f", r"missing 'kind'"),
    ("function_without_forward", """\
        version: 1
        functions:
          f:
            kind: activation
            vjp: lib.py:g
        checks: [f]
        """, 3, "functions.f", r"missing 'forward'"),
    ("function_without_derivative", """\
        version: 1
        functions:
          f:
            kind: activation
            forward: lib.py:f
        checks: [f]
        """, 3, "functions.f", r"no derivative to check"),
    ("loss_with_vjp", """\
        version: 1
        functions:
          f:
            kind: loss
            forward: lib.py:f
            vjp: lib.py:g
        checks: [f]
        """, 6, "functions.f.vjp", r"'vjp' is not a convention for a loss; use one of gradient"),
    ("function_target", """\
        version: 1
        functions:
          f:
            kind: loss
            forward: lib.py:f
            gradient: lib.py:g
            target: binry
        checks: [f]
        """, 7, "functions.f.target", r"Did you mean 'binary'\?"),
    ("function_domain", """\
        version: 1
        functions:
          f:
            kind: activation
            forward: lib.py:f
            derivative: lib.py:g
            domain: postive
        checks: [f]
        """, 7, "functions.f.domain", r"Did you mean 'positive'\?"),
    ("kink_nan", """\
        version: 1
        functions:
          f:
            kind: activation
            forward: lib.py:f
            derivative: lib.py:g
            kinks: [0.0,
                    .nan]
        checks: [f]
        """, 8, "functions.f.kinks[1]", r"expected a finite number, an input where the function has no derivative; "
                                        r"got float nan"),
    ("kink_inf", """\
        version: 1
        functions:
          f:
            kind: loss
            forward: lib.py:f
            gradient: lib.py:g
            kinks: [-.inf]
        checks: [f]
        """, 7, "functions.f.kinks[0]", r"expected a finite number.*got float -inf"),
    ("kink_text", """\
        version: 1
        functions:
          f:
            kind: activation
            forward: lib.py:f
            derivative: lib.py:g
            kinks: [nan]
        checks: [f]
        """, 7, "functions.f.kinks[0]", r"expected a finite number.*got str 'nan'"),
    ("recursive_alias_in_a_mapping", """\
        version: 1
        defaults: &d {seed: 1, x: *d}
        checks: [softmax]
        """, 2, "defaults.x", r"an alias \(\*name\) is used inside the value its anchor \(&name\) marks"),
    ("alias_cycle_through_two_anchors", """\
        version: 1
        a: &a [1, &b [2, *a]]
        checks: [softmax]
        """, 2, "a[1][1]", r"an alias \(\*name\) is used inside the value its anchor"),
    ("deep_mappings", "version: 1\ndefaults: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
     2, "", r"lists and mappings are nested more than 64 levels deep here"),
    ("function_init_list", """\
        version: 1
        functions:
          f:
            kind: activation
            forward: lib.py:C.f
            derivative: lib.py:C.g
            init: [1, 2]
        checks: [f]
        """, 7, "functions.f.init", r"expected a mapping of constructor keyword arguments; got list"),
    ("malformed_yaml", """\
        version: 1
        defaults: {seed: 0
        checks: [softmax]
        """, 3, "", r"malformed YAML: .*Fix the syntax"),
]


@pytest.mark.parametrize(("text", "line", "key", "pattern"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_config_error_names_file_line_and_key(tmp_path: Path, text: str, line: int, key: str,
                                              pattern: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    prefix = f"{path}:{line}: {key}: " if key else f"{path}:{line}: "
    assert info.value.message.startswith(prefix), info.value.message
    assert int(info.value.exit_code) == 2


def test_python_tag_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write(tmp_path, f"""\
        version: 1
        checks:
          - softmax
          - !!python/object/apply:os.system ["touch {marker}"]
        """)
    with pytest.raises(ConfigError, match=r"the YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' "
                                          r"is not allowed.*Remove the tag") as info:
        load_config(path)
    assert info.value.message.startswith(f"{path}:4: checks[1]: ")
    assert not marker.exists(), "the tag's command must never run"


@pytest.mark.parametrize("tagged", [
    "defaults: !!python/name:os.system {}",
    "defaults: {seed: !!python/object/new:int [3]}",
    "defaults: !custom {seed: 1}",
])
def test_other_object_tags_are_refused(tmp_path: Path, tagged: str) -> None:
    path = write(tmp_path, f"version: 1\n{tagged}\nchecks: [softmax]\n")
    with pytest.raises(ConfigError, match=r"^.*:2: defaults(\.seed)?: the YAML tag '.*' is not allowed"):
        load_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Config file '.*nothere\.yaml' does not exist"):
        load_config(tmp_path / "nothere.yaml")


def test_empty_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":1: the config is empty; it needs at least 'version: 1'"):
        load_config(write(tmp_path, "# nothing yet\n"))


def test_boolean_version_is_rejected(tmp_path: Path) -> None:
    """Regression: 'version: true' was read as version 1 (True == 1)."""
    with pytest.raises(ConfigError, match=r":1: version: expected 'version: 1'"):
        load_config(write(tmp_path, "version: true\nchecks: [softmax]\n"))


# --- load_config: what valid files become ----------------------------------------------------

def test_an_alias_used_twice_is_no_cycle(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """\
        version: 1
        defaults: {shape: &s [2, 3], trials: 1}
        checks:
          - {spec: softmax, shape: *s}
          - {spec: tanh, shape: *s}
        """))
    assert config.defaults["shape"] == (2, 3)
    assert [c.options["shape"] for c in config.checks] == [(2, 3), (2, 3)]


def test_exponent_without_a_dot_is_a_number(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-6 as the string "1e-6"; the config must read it as the number.
    config = load_config(write(tmp_path, """\
        version: 1
        defaults: {rtol: 1e-7, atol: 0}
        checks:
          - {spec: softmax, rtol: 1e-6, atol: 1E-12}
        """))
    assert config.defaults == {"rtol": 1e-7, "atol": 0.0}
    assert config.checks[0].options == {"rtol": 1e-6, "atol": 1e-12}
    assert isinstance(config.checks[0].options["rtol"], float)


def test_checks_defaults_and_overrides(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """\
        version: 1
        defaults: {seed: 3, trials: 2, shape: [2, 5], method: richardson, timeout: 9}
        plugins: [tools/plugin.py, mylib.gradcheck_plugin]
        checks:
          - softmax+mse
          - {spec: relu, name: relu gate, shape: "3,4", seed: 1, expect: fail}
          - {spec: softmax, input: [[1, 2], [3, 4]]}
          - {spec: softmax, input: "2,4,2,1"}
        """))
    assert config.defaults == {"seed": 3, "trials": 2, "shape": (2, 5), "method": "richardson", "timeout": 9.0}
    assert config.plugins == ("tools/plugin.py", "mylib.gradcheck_plugin")
    first, second, third, fourth = config.checks
    assert (first.spec, first.name, first.expect, dict(first.options)) == ("softmax+mse", "softmax+mse", "pass", {})
    assert (second.spec, second.name, second.expect) == ("relu", "relu gate", "fail")
    assert second.options == {"shape": (3, 4), "seed": 1}
    assert third.options == {"input": "1.0,2.0;3.0,4.0"}
    assert fourth.options == {"input": "2,4,2,1"}
    assert first.where == f"{config.path}:5" and second.where == f"{config.path}:6"


def test_functions_are_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """\
        version: 1
        functions:
          lib_layer:
            kind: activation
            forward: lib/layers.py:Layer.forward
            backward: lib/layers.py:Layer.backward
            output_attr: out
            grad_attr: dx
            init: {axis: -1}
            domain: unit
            kinks: [0, "0.5"]
          lib_loss:
            kind: loss
            forward: mylib.losses:mse
            gradient: mylib.losses:mse_grad
            target: binary
        checks: [lib_layer+lib_loss]
        """))
    layer, loss = config.functions
    assert (layer.name, layer.kind, layer.forward) == ("lib_layer", "activation", "lib/layers.py:Layer.forward")
    assert dict(layer.conventions) == {"backward": "lib/layers.py:Layer.backward"}
    assert (layer.output_attr, layer.grad_attr, dict(layer.init)) == ("out", "dx", {"axis": -1})
    assert (layer.domain, layer.kinks, layer.target) == ("unit", (0.0, 0.5), None)
    assert (loss.target, loss.domain) == ("binary", "real")
    assert dict(loss.conventions) == {"gradient": "mylib.losses:mse_grad"}
    assert layer.where == f"{config.path}:3"


# --- jobs_from_config: functions, plugins and specs, resolved -------------------------------

@pytest.fixture
def library(tmp_path: Path, isolated_imports: None) -> str:
    """lib/layers.py under tmp_path, and the same code as an importable module; its name."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "layers.py").write_text(LAYERS)
    module = f"gc_cfg_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(LAYERS)
    return module


def test_functions_by_file_and_by_module(tmp_path: Path, library: str) -> None:
    path = write(tmp_path, f"""\
        version: 1
        defaults: {{seed: 0, trials: 1, shape: [2, 4]}}
        functions:
          by_file:
            kind: activation
            forward: lib/layers.py:softmax
            vjp: lib/layers.py:softmax_vjp
          by_module:
            kind: activation
            forward: {library}:softmax
            vjp: {library}:softmax_vjp
          lib_mse:
            kind: loss
            forward: {library}:mse
            gradient: lib/layers.py:mse_grad
        checks: [by_file, by_module+lib_mse]
        """)
    registry, jobs, rows = run_config(path)
    assert [j.name for j in jobs] == ["by_file", "by_module+lib_mse"]
    assert [(r.check, r.component, r.verdict) for r in rows] == [
        ("by_file", "jacobian", Verdict.PASS),
        ("by_module+lib_mse", "jacobian", Verdict.PASS),
        ("by_module+lib_mse", "gradient", Verdict.PASS),
        ("by_module+lib_mse", "chain", Verdict.PASS),
    ]
    assert registry.get("by_file").origin == f"{path}:{line_of(path, 'by_file:')}"
    assert rows[2].origin == f"{path}:{line_of(path, 'lib_mse:')}"


def test_class_method_with_init(tmp_path: Path, library: str) -> None:
    path = write(tmp_path, """\
        version: 1
        defaults: {trials: 1, shape: [2, 3]}
        functions:
          scaled:
            kind: activation
            forward: lib/layers.py:Scaled.forward
            derivative: lib/layers.py:Scaled.derivative
            init: {scale: 3.0}
        checks: [scaled]
        """)
    registry, _, rows = run_config(path)
    assert [r.verdict for r in rows] == [Verdict.PASS]
    bound = registry.get("scaled").forward
    assert getattr(bound, "__self__").scale == 3.0  # noqa: B009 - bound method of one instance


def test_stateful_layer_with_attributes_runs_on_fresh_instances(tmp_path: Path, library: str) -> None:
    path = write(tmp_path, """\
        version: 1
        defaults: {trials: 2, shape: [3, 4]}
        functions:
          layer:
            kind: activation
            forward: lib/layers.py:Layer.forward
            backward: lib/layers.py:Layer.backward
            output_attr: out
            grad_attr: dx
            init: {axis: -1}
        checks: [layer]
        """)
    _, _, rows = run_config(path)
    assert [(r.convention, r.verdict) for r in rows] == [("backward", Verdict.PASS)], rows[0].diagnosis


@pytest.mark.parametrize(("init", "pattern"), [
    ("{scal: 3.0}", r"building Scaled\(\*\*init\) with init=\{'scal': 3.0\} raised TypeError: .*unexpected "
                    r"keyword argument 'scal'.*Set 'init' to the constructor's keyword arguments"),
    ("{}", r"init=\{\} raised TypeError: .*missing 1 required positional argument: 'scale'"),
])
def test_wrong_init_keyword(tmp_path: Path, library: str, init: str, pattern: str) -> None:
    path = write(tmp_path, f"""\
        version: 1
        functions:
          scaled:
            kind: activation
            forward: lib/layers.py:Scaled.forward
            derivative: lib/layers.py:Scaled.derivative
            init: {init}
        checks: [scaled]
        """)
    with pytest.raises(PluginError, match=pattern) as info:
        jobs_from_config(str(path), 60.0)
    assert info.value.message.startswith(f"{path}:7: functions.scaled.init: "), info.value.message


def test_per_entry_target_and_domain(tmp_path: Path, library: str) -> None:
    path = write(tmp_path, """\
        version: 1
        defaults: {trials: 2, shape: [3, 4]}
        functions:
          pos_log:
            kind: activation
            forward: lib/layers.py:log
            derivative: lib/layers.py:log_grad
            domain: positive
          real_log:
            kind: activation
            forward: lib/layers.py:log
            derivative: lib/layers.py:log_grad
          binary_mse:
            kind: loss
            forward: lib/layers.py:mse
            gradient: lib/layers.py:mse_grad_binary_only
            target: binary
          real_mse:
            kind: loss
            forward: lib/layers.py:mse
            gradient: lib/layers.py:mse_grad_binary_only
        checks: [pos_log, real_log, binary_mse, real_mse]
        """)
    registry, _, rows = run_config(path)
    assert (registry.get("pos_log").domain, registry.get("real_log").domain) == ("positive", "real")
    assert (registry.get("binary_mse").target, registry.get("real_mse").target) == ("binary", "real")
    verdicts = {r.check: r for r in rows}
    assert verdicts["pos_log"].verdict is Verdict.PASS
    assert verdicts["real_log"].verdict is Verdict.ERROR and "nan" in verdicts["real_log"].diagnosis
    assert verdicts["binary_mse"].verdict is Verdict.PASS
    assert verdicts["real_mse"].verdict is Verdict.ERROR
    assert "ValueError: expects 0/1 targets" in verdicts["real_mse"].diagnosis


def test_defaults_and_overrides_reach_the_jobs(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        defaults: {seed: 5, trials: 2, shape: [2, 3], method: richardson, rtol: 1e-6, timeout: 7}
        checks:
          - softmax
          - {spec: softmax+mse, seed: 9, trials: 1, shape: [4, 2], method: central, atol: 1e-12, timeout: 3}
        """)
    _, jobs = jobs_from_config(str(path), 600.0)
    first, second = jobs
    assert (first.options.seed, first.options.trials, first.options.shape) == (5, 2, (2, 3))
    assert (first.options.method, first.options.rtol, first.options.atol) == ("richardson", 1e-6, None)
    assert first.timeout == 7.0
    assert (second.options.seed, second.options.trials, second.options.shape) == (9, 1, (4, 2))
    assert (second.options.method, second.options.rtol, second.options.atol) == ("central", 1e-6, 1e-12)
    assert second.timeout == 3.0


def test_timeout_falls_back_to_the_command_default(tmp_path: Path) -> None:
    _, jobs = jobs_from_config(str(write(tmp_path, "version: 1\nchecks: [softmax]\n")), 42.0)
    assert jobs[0].timeout == 42.0


def test_timeout_zero_or_inf_means_no_limit_and_wins_over_the_command_default(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        defaults: {timeout: 0}
        checks:
          - softmax
          - {spec: softmax+mse, timeout: .inf}
          - {spec: mse, timeout: 2.5}
        """)
    _, jobs = jobs_from_config(str(path), 42.0)
    assert [job.timeout for job in jobs] == [None, None, 2.5]


@pytest.mark.parametrize(("checks", "key", "pattern"), [
    ("[softmax, sofmax+mse]", "checks[1]", r"Unknown activation name 'sofmax'\. Did you mean 'softmax'"),
    ("[mse+softmax]", "checks[0]", r"'mse' is a loss, but an activation was expected here"),
    ("['softmax++mse']", "checks[0]", r"A check spec is ACTIVATION\+LOSS"),
    ("[{spec: softmax, input: '1,2;3'}]", "checks[0]", r"rows must all have the same length"),
])
def test_bad_spec_names_the_check(tmp_path: Path, checks: str, key: str, pattern: str) -> None:
    path = write(tmp_path, f"version: 1\nchecks: {checks}\n")
    with pytest.raises(ConfigError, match=pattern) as info:
        jobs_from_config(str(path), 60.0)
    assert info.value.message.startswith(f"{path}:2: {key}: ")


def test_bad_spec_on_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        checks:
          - softmax
          - softmax+cross_entropy
          - relu+crossentropy
        """)
    with pytest.raises(ConfigError, match=r":5: checks\[2\]: Unknown loss name 'crossentropy'\. "
                                          r"Did you mean 'cross_entropy'"):
        jobs_from_config(str(path), 60.0)


def test_plugins_relative_to_the_config_folder(tmp_path: Path, isolated_imports: None) -> None:
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "plug.py").write_text(
        "import numpy as np\nfrom gradcheck_cli import register_activation\n"
        "register_activation('cfg_tanh', forward=np.tanh, derivative=lambda x: 1 - np.tanh(x) ** 2)\n")
    module = f"gc_cfg_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(
        "import numpy as np\nfrom gradcheck_cli import register_activation\n"
        f"register_activation('{module}_sin', forward=np.sin, derivative=np.cos)\n")
    path = write(tmp_path, f"""\
        version: 1
        defaults: {{trials: 1, shape: [2, 3]}}
        plugins: [tools/plug.py, {module}]
        checks: [cfg_tanh, {module}_sin]
        """)
    registry, _, rows = run_config(path)
    assert registry.get("cfg_tanh").origin == str(tmp_path / "tools" / "plug.py")
    assert registry.get(f"{module}_sin").origin == module
    assert [r.verdict for r in rows] == [Verdict.PASS, Verdict.PASS]


def test_a_symlinked_config_resolves_paths_from_the_real_files_folder(tmp_path: Path, library: str) -> None:
    # ci/gradcheck.yaml is a link to lib/gradcheck.yaml: plug.py and layers.py are beside the real file.
    (tmp_path / "lib" / "plug.py").write_text(
        "import numpy as np\nfrom gradcheck_cli import register_activation\n"
        "register_activation('sym_tanh', forward=np.tanh, derivative=lambda x: 1 - np.tanh(x) ** 2)\n")
    real = write(tmp_path / "lib", """\
        version: 1
        defaults: {trials: 1, shape: [2, 3]}
        plugins: [plug.py]
        functions:
          sym_softmax: {kind: activation, forward: "layers.py:softmax", vjp: "layers.py:softmax_vjp"}
        checks: [sym_tanh, sym_softmax]
        """)
    (tmp_path / "ci").mkdir()
    link = tmp_path / "ci" / "gradcheck.yaml"
    link.symlink_to(Path("..") / "lib" / "gradcheck.yaml")
    assert load_config(link).folder == real.resolve().parent
    registry, _, rows = run_config(link)
    assert registry.get("sym_tanh").origin == str(real.resolve().parent / "plug.py")
    assert [(r.check, r.verdict) for r in rows] == [("sym_tanh", Verdict.PASS), ("sym_softmax", Verdict.PASS)]


@pytest.mark.parametrize(("plugin", "body", "pattern"), [
    ("missing.py", None, r"Plugin file '.*missing\.py' does not exist"),
    ("gc_cfg_missing_module_zz", None, r"Plugin module 'gc_cfg_missing_module_zz' cannot be imported"),
    ("broken.py", "raise ImportError('needs CUDA')\n",
     r"Plugin '.*broken\.py' raised while loading: ImportError: needs CUDA \(at .*broken\.py:1\)"),
])
def test_plugin_problems_name_the_config_line(tmp_path: Path, isolated_imports: None, plugin: str,
                                              body: str | None, pattern: str) -> None:
    if body is not None:
        (tmp_path / plugin).write_text(body)
    path = write(tmp_path, f"""\
        version: 1
        plugins:
          - {plugin}
        checks: [softmax]
        """)
    with pytest.raises(ConfigError, match=pattern) as info:
        jobs_from_config(str(path), 60.0)
    assert info.value.message.startswith(f"{path}:3: plugins[0]: ")


@pytest.mark.parametrize(("forward", "pattern"), [
    ("lib/layers.py:softmx", r"'lib/layers\.py' has no attribute 'softmx'\. Did you mean 'softmax'"),
    ("lib/nothere.py:softmax", r"file '.*nothere\.py' does not exist \(paths are relative to the config's folder"),
    ("gc_cfg_no_such_module_zz:softmax", r"cannot import module 'gc_cfg_no_such_module_zz'"),
    ("lib/layers.py", r"'lib/layers\.py' is not a reference; write module:qualname"),
    ("lib/layers.py:Scaled.nope", r"has no attribute 'nope'"),
])
def test_unresolvable_reference(tmp_path: Path, library: str, forward: str, pattern: str) -> None:
    path = write(tmp_path, f"""\
        version: 1
        functions:
          f:
            kind: activation
            forward: {forward}
            vjp: lib/layers.py:softmax_vjp
            init: {{scale: 1}}
        checks: [f]
        """)
    with pytest.raises(GradcheckError, match=pattern) as info:
        jobs_from_config(str(path), 60.0)
    assert info.value.message.startswith(f"{path}:5: functions.f.forward: "), info.value.message
    assert int(info.value.exit_code) == 2


def test_unresolvable_reference_names_the_line_of_its_key(tmp_path: Path, library: str) -> None:
    """Regression: the message paired functions.f.vjp with the line of 'f:'."""
    path = write(tmp_path, """\
        version: 1
        functions:
          f:
            kind: activation
            forward: lib/layers.py:softmax
            vjp: lib/layers.py:softmax_vjpp
        checks: [f]
        """)
    with pytest.raises(GradcheckError, match="has no attribute 'softmax_vjpp'") as info:
        jobs_from_config(str(path), 60.0)
    assert info.value.message.startswith(f"{path}:6: functions.f.vjp: ")


def test_backward_given_a_plain_function_is_refused(tmp_path: Path, library: str) -> None:
    path = write(tmp_path, """\
        version: 1
        functions:
          f:
            kind: activation
            forward: lib/layers.py:softmax
            backward: lib/layers.py:softmax_vjp
        checks: [f]
        """)
    with pytest.raises(PluginError, match=r":3: functions\.f: .*backward= must be a method of a layer instance"):
        jobs_from_config(str(path), 60.0)


def test_function_named_like_a_builtin_is_refused(tmp_path: Path, library: str) -> None:
    path = write(tmp_path, """\
        version: 1
        functions:
          softmax:
            kind: activation
            forward: lib/layers.py:softmax
            vjp: lib/layers.py:softmax_vjp
        checks: [softmax]
        """)
    with pytest.raises(PluginError, match=r"functions\.softmax: 'softmax' is registered twice: first by builtin"):
        jobs_from_config(str(path), 60.0)


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    """Regression: this raised UnicodeDecodeError, so 'gradcheck ci' printed a traceback and exited 1."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\nchecks: [softmax]\n# caf\xe9\n")
    try:
        config = load_config(path)
    except ConfigError as exc:  # refusing it, naming the file, is right
        assert str(path) in exc.message
    else:  # and so is reading past a stray byte in a comment
        assert config.checks[0].spec == "softmax"


def test_the_documented_config_example(tmp_path: Path, isolated_imports: None) -> None:
    """PRODUCT.md's CI config, with mylib a package next to the config (module:Class.__call__ form)."""
    package = f"gc_cfg_{uuid.uuid4().hex[:10]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "layers.py").write_text(textwrap.dedent("""\
        import numpy as np

        class Softmax:
            def __call__(self, z):
                e = np.exp(z - z.max(axis=-1, keepdims=True))
                return e / e.sum(axis=-1, keepdims=True)

            def gradient(self, z):
                s = self(z)
                return s * (1 - s)
        """))
    (tmp_path / package / "losses.py").write_text(textwrap.dedent("""\
        import numpy as np

        def mse(pred, target):
            return np.mean((pred - target) ** 2, axis=(-2, -1))

        def mse_grad(pred, target):
            return 2 * (pred - target) / pred.size
        """))
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "layers_plugin.py").write_text(
        "import numpy as np\nfrom gradcheck_cli import register_activation\n"
        "register_activation('doc_tanh', forward=np.tanh, derivative=lambda x: 1 - np.tanh(x) ** 2)\n")
    path = write(tmp_path, f"""\
        version: 1
        defaults: {{seed: 0, trials: 1, shape: [2, 5], method: central}}
        plugins: [tools/layers_plugin.py]
        functions:
          lib_softmax:
            kind: activation
            forward: {package}.layers:Softmax.__call__
            derivative: {package}.layers:Softmax.gradient
            init: {{}}
          lib_mse:
            kind: loss
            forward: {package}.losses:mse
            gradient: {package}.losses:mse_grad
            target: real
        checks:
          - softmax+mse
          - {{spec: doc_tanh+lib_mse, shape: [8, 3], rtol: 1e-6}}
          - {{spec: lib_softmax, expect: fail}}
          - {{spec: softmax@diagonal, expect: fail}}
        """)
    registry, jobs, rows = run_config(path)
    forward, derivative = registry.get("lib_softmax").forward, registry.get("lib_softmax").derivatives["derivative"]
    assert getattr(forward, "__self__") is getattr(derivative, "__self__"), "Class.method: one instance"  # noqa: B009
    assert jobs[1].options.rtol == 1e-6 and jobs[1].options.shape == (8, 3)
    verdicts = {(r.check, r.component): r.verdict for r in rows}
    assert verdicts[("lib_softmax", "jacobian")] is Verdict.XFAIL
    assert verdicts[("softmax@diagonal", "jacobian")] is Verdict.XFAIL
    assert verdicts[("doc_tanh+lib_mse", "gradient")] is Verdict.PASS
    assert all(v is Verdict.PASS for (check, _), v in verdicts.items() if check in ("softmax+mse", "doc_tanh+lib_mse"))
