"""runner and results: spec parsing, option validation, exit-code semantics."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_cli.errors import ExitCode, UsageError
from gradcheck_cli.registry import Registry
from gradcheck_cli.results import CheckResult, RunResult, Verdict
from gradcheck_cli.runner import CheckOptions, parse_spec, run


def test_parse_spec_forms(registry: Registry) -> None:
    pair = parse_spec("softmax+mse", registry)
    assert pair.activation is not None and pair.activation.name == "softmax"
    assert pair.loss is not None and pair.loss.name == "mse"
    act = parse_spec("tanh@sign_flip", registry)
    assert act.activation is not None and act.loss is None
    loss = parse_spec(" mse ", registry)
    assert loss.activation is None and loss.loss is not None and loss.loss.name == "mse"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", r"A check spec is ACTIVATION\+LOSS"),
        ("softmax+", r"A check spec is ACTIVATION\+LOSS"),
        ("a+b+c", r"A check spec is ACTIVATION\+LOSS"),
        ("mse+softmax", "'mse' is a loss, but an activation was expected"),
        ("softmax+tanh", "'tanh' is an? activation, but a loss was expected"),
        ("sofmax+mse", "Did you mean 'softmax'"),
    ],
)
def test_parse_spec_errors(registry: Registry, text: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        parse_spec(text, registry)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (CheckOptions(method="forward"), "Unknown --method 'forward'. Expected one of: central, richardson, complex"),
        (CheckOptions(trials=0), "--trials must be at least 1; got 0"),
        (CheckOptions(rtol=-1e-3), "--rtol must be a finite number >= 0"),
        (CheckOptions(atol=float("nan")), "--atol must be a finite number >= 0"),
        (CheckOptions(input=np.ones((2, 3)), target=np.ones((2, 2))), "--target must have the shape of --input"),
        (CheckOptions(seed=-1), "--seed"),
    ],
)
def test_bad_options_raise_before_anything_runs(registry: Registry, options: CheckOptions, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        run(["softmax+mse"], options, registry=registry)


def test_explicit_input_outside_the_domain_is_a_usage_error(registry: Registry) -> None:
    with pytest.raises(UsageError, match=r"--input value 1\.5 at \[0, 1\] is outside cross_entropy's domain"):
        run(["cross_entropy"], CheckOptions(input=np.array([[0.5, 1.5]])), registry=registry)


@pytest.mark.parametrize("spec", ["mse", "softmax+mse"])
def test_target_not_fitting_the_shape_is_a_usage_error(registry: Registry, spec: str) -> None:
    with pytest.raises(UsageError, match="--target"):
        run([spec], CheckOptions(shape=(4, 10), target=np.ones((1, 3))), registry=registry)


def test_rows_report_the_shape_actually_checked(registry: Registry) -> None:
    result = run(["softmax+cross_entropy"], CheckOptions(shape=(2, 7), trials=2), registry=registry)
    assert all(r.shape == (2, 7) and r.trials == 2 for r in result.results)
    explicit = run(["softmax"], CheckOptions(input=np.ones((3, 2)), trials=5), registry=registry)
    assert all(r.shape == (3, 2) and r.trials == 1 for r in explicit.results)


def test_reproduce_command_round_trips_explicit_input(registry: Registry) -> None:
    x = np.array([[0.1, 1 / 3], [2.0, -7.25]])
    (row,) = run(["tanh@sign_flip"], CheckOptions(input=x), registry=registry).results
    assert row.reproduce.startswith("gradcheck run tanh@sign_flip --seed 0 --input ")
    text = row.reproduce.split("--input ", 1)[1].strip("'").split()[0].strip("'")
    from gradcheck_cli.inputs import parse_matrix

    np.testing.assert_array_equal(parse_matrix(text), x)


def _rows(*verdicts: Verdict) -> RunResult:
    return RunResult(tuple(CheckResult(check="c", component="jacobian", verdict=v) for v in verdicts))


@pytest.mark.parametrize(
    ("verdicts", "code"),
    [
        ((), ExitCode.OK),
        ((Verdict.PASS, Verdict.KINK), ExitCode.OK),
        ((Verdict.PASS, Verdict.XFAIL), ExitCode.OK),
        ((Verdict.PASS, Verdict.FAIL), ExitCode.FLAGGED),
        ((Verdict.XPASS,), ExitCode.FLAGGED),
        ((Verdict.ERROR, Verdict.PASS), ExitCode.NOT_RUN),
        ((Verdict.ERROR, Verdict.FAIL), ExitCode.FLAGGED),
    ],
)
def test_exit_code_semantics(verdicts: tuple[Verdict, ...], code: ExitCode) -> None:
    result = _rows(*verdicts)
    assert result.exit_code is code
    assert result.passed == (code is ExitCode.OK)
    data = result.to_dict()
    assert data["exit_code"] == int(code)
    assert sum(data["summary"].values()) == len(verdicts)
    assert set(data["summary"]) == {v.value for v in Verdict}


def test_exit_codes_match_the_product_contract() -> None:
    assert [int(c) for c in (ExitCode.OK, ExitCode.FLAGGED, ExitCode.USAGE, ExitCode.NOT_RUN)] == [0, 1, 2, 3]


def test_result_dict_is_plain_data(registry: Registry) -> None:
    import json

    data = run(["softmax@diagonal+mse"], CheckOptions(seed=0), registry=registry).to_dict()
    text = json.dumps(data)  # no numpy types, no enums
    assert json.loads(text) == data
    row = data["results"][0]
    assert isinstance(row["worst_index"], list) and all(isinstance(i, int) for i in row["worst_index"])
