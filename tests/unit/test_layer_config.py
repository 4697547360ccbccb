"""``kind: layer`` in YAML: every style mapped with no wrapper code, errors that name file, line
and key, and a failing row that reproduces with ``gradcheck ci CONFIG --only NAME``.

The layer code is tests/layer_code.py, copied next to the config as ``layers.py`` (the
way a user's library sits next to their gradcheck.yaml).
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import layer_code
import pytest
from procs import Proc

from gradcheck_cli.config import load_config
from gradcheck_cli.errors import ConfigError, GradcheckError
from gradcheck_cli.registry import Registry
from gradcheck_cli.results import CheckResult, Verdict
from gradcheck_cli.suite import Job, jobs_from_config, run_jobs


def write(folder: Path, text: str, name: str = "gradcheck.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def run_config(path: Path) -> tuple[Registry, list[Job], list[CheckResult]]:
    registry, jobs = jobs_from_config(str(path), 60.0)
    return registry, jobs, list(run_jobs(jobs, registry, isolate=False).results)


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """layers.py (tests/layer_code.py) under tmp_path; sys.path restored afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    shutil.copy(layer_code.__file__, tmp_path / "layers.py")
    yield tmp_path / "layers.py"


# --- errors name file, line and key -----------------------------------------------------------

HEAD = """\
    version: 1
    functions:
      f:
        kind: layer
        forward: layers.py:affine_forward
"""

ERRORS = [
    ("bad_shape", HEAD + """\
        backward: layers.py:affine_backward
        args:
          x: [4, -1]
    checks: [f]
    """, 8, "functions.f.args.x", r"shape expects positive integers .*got list \[4, -1\]"),
    ("args_not_a_mapping", HEAD + """\
        backward: layers.py:affine_backward
        args: [4, 5]
    checks: [f]
    """, 7, "functions.f.args", r"expected a mapping of the forward's array arguments.*got list \[4, 5\]"),
    ("unknown_key_under_an_argument", HEAD + """\
        backward: layers.py:affine_backward
        args:
          x: {shape: [4, 5], domian: positive}
    checks: [f]
    """, 8, "functions.f.args.x.domian", r"unknown key 'domian' in argument 'x'.*Did you mean 'domain'\?"),
    ("bad_domain", HEAD + """\
        backward: layers.py:affine_backward
        args:
          x: {shape: [4, 5], domain: positve}
    checks: [f]
    """, 8, "functions.f.args.x.domain", r"positve"),
    ("params_not_a_mapping", HEAD + """\
        backward: layers.py:affine_backward
        args: {x: [4, 5]}
        params: [weights, biases]
    checks: [f]
    """, 8, "functions.f.params", r"expected a mapping from each parameter to its gradient.*got list"),
    ("kwargs_not_a_mapping", HEAD + """\
        backward: layers.py:affine_backward
        args: {x: [4, 5]}
        kwargs: [stride, 2]
    checks: [f]
    """, 8, "functions.f.kwargs", r"expected a mapping of keyword arguments passed to forward.*got list"),
    ("outputs_not_a_list", HEAD + """\
        backward: layers.py:affine_backward
        args: {x: [4, 5]}
        outputs: {next_h: 1}
    checks: [f]
    """, 8, "functions.f.outputs", r"expected a list of distinct output names, e.g. \[next_h, next_c\]"),
    ("outputs_twice", HEAD + """\
        backward: layers.py:affine_backward
        args: {x: [4, 5]}
        outputs: [h, h]
    checks: [f]
    """, 8, "functions.f.outputs", r"distinct output names.*\['h', 'h'\]"),
    ("stochastic_not_a_bool", HEAD + """\
        backward: layers.py:affine_backward
        args: {x: [4, 5]}
        stochastic: 1
    checks: [f]
    """, 8, "functions.f.stochastic", r"expected true or false; got int 1"),
    ("backward_and_vjp", HEAD + """\
        backward: layers.py:affine_backward
        vjp: layers.py:dense_vjp
        args: {x: [4, 5]}
    checks: [f]
    """, 7, "functions.f.vjp", r"give one of 'backward' .*, 'vjp' .* and 'value_and_grad' .*not several"),
    ("reduction_on_a_layer", HEAD + """\
        backward: layers.py:affine_backward
        args: {x: [4, 5]}
        reduction: mean
    checks: [f]
    """, 8, "functions.f.reduction", r"'reduction' belongs to a loss, not to a layer"),
    ("args_on_a_loss", """\
    version: 1
    functions:
      l:
        kind: loss
        value_and_grad: layers.py:softmax_loss
        target: labels
        args: {x: [4, 5]}
    checks: [l]
    """, 7, "functions.l.args", r"'args' belongs to a layer, not to a loss. Remove it, or set 'kind: layer'"),
    ("params_on_an_activation", """\
    version: 1
    functions:
      a:
        kind: activation
        forward: layers.py:sigmoid
        derivative: layers.py:sigmoid
        params: {weights: dweights}
    checks: [a]
    """, 7, "functions.a.params", r"'params' belongs to a layer, not to an activation"),
]


@pytest.mark.parametrize(("text", "line", "key", "pattern"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_layer_config_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int, key: str,
                                                    pattern: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert info.value.message.startswith(f"{path}:{line}: {key}: "), info.value.message
    assert int(info.value.exit_code) == 2


def test_params_naming_no_attribute_of_the_layer(tmp_path: Path, library: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        functions:
          dense:
            kind: layer
            forward: layers.py:Layer_Dense.forward
            backward: layers.py:Layer_Dense.backward
            init: {n_inputs: 4, n_neurons: 3}
            args: {inputs: [2, 4]}
            output_attr: output
            grad_attr: dinputs
            params: {wieghts: dweights}
        checks: [dense]
        """)
    with pytest.raises(GradcheckError, match=r"gradcheck.yaml:3: functions.dense: .*params: the layer has no attribute "
                                        r"'wieghts'.*weights") as info:
        run_config(path)
    assert int(info.value.exit_code) == 2


# --- every style, from YAML alone ---------------------------------------------------------------

STYLES = """\
    version: 1
    defaults: {seed: 0, trials: 1}
    functions:
      affine:
        kind: layer
        forward: layers.py:affine_forward
        backward: layers.py:affine_backward
        args: {x: [4, 2, 5], w: [10, 3], b: [3]}
      conv:
        kind: layer
        forward: layers.py:conv_forward_naive
        backward: layers.py:conv_backward_naive
        args: {x: [1, 2, 5, 5], w: [2, 2, 3, 3], b: [2]}
        kwargs: {conv_param: {stride: 2, pad: 1}}
      lstm_step:
        kind: layer
        forward: layers.py:lstm_step_forward
        backward: layers.py:lstm_step_backward
        args: {x: [3, 4], prev_h: [3, 5], prev_c: [3, 5], Wx: [4, 20], Wh: [5, 20], b: [20]}
        outputs: [next_h, next_c]
      dense_vjp:
        kind: layer
        forward: layers.py:dense
        vjp: layers.py:dense_vjp_dict
        args: {x: [4, 5], w: {shape: [5, 3], domain: positive}, b: [3]}
      nn_dense:
        kind: layer
        forward: layers.py:Layer_Dense.forward
        backward: layers.py:Layer_Dense.backward
        init: {n_inputs: 10, n_neurons: 5}
        args: {inputs: [4, 10]}
        output_attr: output
        grad_attr: dinputs
        params: {weights: dweights, biases: dbiases}
      dict_dense:
        kind: layer
        forward: layers.py:DictDense.forward
        backward: layers.py:DictDense.backward
        init: {n_in: 4, n_out: 3}
        args: {x: [5, 4]}
        params: {'params[W]': 'grads[W]', 'params[b]': 'grads[b]'}
      my_dropout:
        kind: layer
        forward: layers.py:Layer_Dropout.forward
        backward: layers.py:Layer_Dropout.backward
        init: {rate: 0.1}
        args: {inputs: [4, 10]}
        output_attr: output
        grad_attr: dinputs
        stochastic: true
      my_batchnorm:
        kind: layer
        forward: layers.py:batchnorm_forward
        backward: layers.py:batchnorm_backward
        args: {x: [5, 3], gamma: [3], beta: [3]}
        kwargs: {bn_param: {mode: train}}
      softmax_loss:
        kind: loss
        value_and_grad: layers.py:softmax_loss
        target: labels
      nnfs_cce:
        kind: loss
        forward: layers.py:Loss_CategoricalCrossentropy.forward
        backward: layers.py:Loss_CategoricalCrossentropy.backward
        grad_attr: dinputs
        reduction: mean
        target: labels
        domain: unit
    checks:
      - affine
      - {spec: conv, name: conv stride 2}
      - lstm_step
      - dense_vjp
      - nn_dense
      - dict_dense
      - my_dropout
      - my_batchnorm
      - softmax_loss
      - nnfs_cce
      - nn_dense+mse
    """


def test_every_style_maps_from_yaml_and_passes(tmp_path: Path, library: Path) -> None:
    path = write(tmp_path, STYLES)
    _, jobs, rows = run_config(path)
    assert [j.name for j in jobs][:2] == ["affine", "conv stride 2"]
    assert all(r.verdict is Verdict.PASS for r in rows), [(r.check, r.wrt, r.verdict, r.diagnosis) for r in rows
                                                          if r.verdict is not Verdict.PASS]
    wrt = {(r.check, r.component): [] for r in rows}
    for r in rows:
        wrt[(r.check, r.component)].append(r.wrt)
    assert wrt[("affine", "jacobian")] == ["x", "w", "b"]
    assert wrt[("conv stride 2", "jacobian")] == ["x", "w", "b"]
    assert wrt[("lstm_step", "jacobian")] == ["x", "prev_h", "prev_c", "Wx", "Wh", "b"]
    assert wrt[("nn_dense", "jacobian")] == ["inputs", "weights", "biases"]
    assert wrt[("dict_dense", "jacobian")] == ["x", "params[W]", "params[b]"]
    assert wrt[("nn_dense+mse", "chain")] == ["inputs", "weights", "biases"]
    assert wrt[("nnfs_cce", "gradient")] == [""]  # a loss has one input: like the (B, K) path, its row names none


# --- a failing row reproduces with its own command ------------------------------------------------

BUGGY = """\
    version: 1
    defaults: {seed: 3, trials: 2}
    functions:
      affine:
        kind: layer
        forward: layers.py:affine_forward
        backward: layers.py:affine_backward
        args: {x: [4, 5], w: [5, 5], b: [5]}
      affine_transposed:
        kind: layer
        forward: layers.py:affine_forward
        backward: layers.py:affine_backward_transposed
        args: {x: [4, 5], w: [5, 5], b: [5]}
    checks:
      - affine
      - {spec: affine_transposed, name: square affine}
    """


def failing(report: Path) -> list[tuple[str, str, str, str, str]]:
    rows = json.loads(report.read_text())["results"]
    return [(r["check"], r["wrt"], r["verdict"], r["diagnosis"], r["worst_entry"]) for r in rows
            if r["verdict"] != "PASS"]


def test_a_config_layer_fail_reproduces_with_ci_only(tmp_path: Path, library: Path) -> None:
    path = write(tmp_path, BUGGY)
    report = tmp_path / "all.json"
    whole = Proc([sys.executable, "-m", "gradcheck_cli", "ci", str(path), "--json", str(report)], tmp_path).done
    assert whole.returncode == 1, whole.stdout + whole.stderr
    rows = json.loads(report.read_text())["results"]
    bad = [r for r in rows if r["verdict"] != "PASS"]
    assert [(r["check"], r["wrt"]) for r in bad] == [("square affine", "w")]
    assert "transposed" in bad[0]["diagnosis"]
    command = bad[0]["reproduce"]
    assert command.startswith("gradcheck ci ") and "--only" in command, command
    argv = shlex.split(command)
    again = tmp_path / "again.json"
    repro = Proc([sys.executable, "-m", "gradcheck_cli", *argv[1:], "--json", str(again)], tmp_path).done
    assert repro.returncode == 1, repro.stdout + repro.stderr
    assert failing(again) == failing(report)
    assert {r["check"] for r in json.loads(again.read_text())["results"]} == {"square affine"}


@pytest.mark.parametrize(("mapping", "said"), [
    ("args: {x: [4, 5], w: [5, 3]}", r"forward\(x, w, b\) cannot be called as forward\(x, w\): missing a required "
                                     r"argument: 'b'"),
    ("args: {x: [2, 3, 5, 5], w: [2, 3, 3, 3], b: [2]}\n    kwargs: {conv_parm: {stride: 1, pad: 0}}",
     r"cannot be called as forward\(x, w, b, conv_parm=\.\.\.\): missing a required argument: 'conv_param'"),
])
def test_args_and_kwargs_the_forward_cannot_take_are_refused_as_the_config_loads(
        tmp_path: Path, library: Path, mapping: str, said: str) -> None:
    forward = "conv_forward_naive" if "conv" in mapping else "affine_forward"
    backward = forward.replace("forward", "backward")
    path = write(tmp_path, f"""\
version: 1
functions:
  f:
    kind: layer
    forward: layers.py:{forward}
    backward: layers.py:{backward}
    {mapping}
checks: [f]
""")
    with pytest.raises(GradcheckError, match=r"gradcheck.yaml:3: functions\.f: .*" + said) as info:
        run_config(path)
    assert int(info.value.exit_code) == 2


def test_a_check_sets_shapes_of_named_arguments_and_an_argument_may_be_a_scalar(tmp_path: Path, library: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        functions:
          affine:
            kind: layer
            forward: layers.py:affine_forward
            backward: layers.py:affine_backward
            args: {x: [4, 5], w: [5, 3], b: [3]}
          scaled:
            kind: layer
            forward: layers.py:scale_forward
            backward: layers.py:scale_backward
            args: {x: [3, 2], alpha: []}
        checks:
          - {spec: affine, shape: {x: [6, 7], w: [7, 2], b: [2]}}
          - scaled
        """)
    library.write_text(library.read_text() + textwrap.dedent("""

        def scale_forward(x, alpha):
            return alpha * x, (x, alpha)


        def scale_backward(dout, cache):
            x, alpha = cache
            return dout * alpha, np.sum(dout * x)
        """))
    _, _, rows = run_config(path)
    assert [(r.wrt, r.shape, r.verdict) for r in rows] == [
        ("x", (6, 7), Verdict.PASS), ("w", (7, 2), Verdict.PASS), ("b", (2,), Verdict.PASS),
        ("x", (3, 2), Verdict.PASS), ("alpha", (), Verdict.PASS)]


def test_a_missing_args_names_the_function_line(tmp_path: Path, library: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        functions:
          affine:
            kind: layer
            forward: layers.py:affine_forward
            backward: layers.py:affine_backward
        checks: [affine]
        """)
    with pytest.raises(ConfigError, match=r"gradcheck.yaml:3: functions\.affine: expected a mapping of the forward's "
                                          r"array arguments"):
        load_config(path)
