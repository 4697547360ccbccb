"""What a user types or writes that looks right and is not: YAML 1.1 numbers, merge keys, a
second document, FIFOs and folders where files belong, digits of other scripts, bad plugin
names, explain on a large input. Each is a clear error naming where, or works as it looks.

All in process: :func:`load_config`, :func:`load_plugin`, the report writers and the Python
API. The real command runs these paths in tests/cli/test_input_paths.py.
"""

from __future__ import annotations

import os
import textwrap
import threading
from pathlib import Path

import pytest

from gradcheck_cli import CheckOptions
from gradcheck_cli.config import load_config
from gradcheck_cli.errors import ConfigError, PluginError, UsageError
from gradcheck_cli.explanation import explain
from gradcheck_cli.inputs import ascii_float, parse_matrix, parse_timeout
from gradcheck_cli.plugins import load_plugin
from gradcheck_cli.registry import Registry
from gradcheck_cli.report import ReportError, check_paths, write_text
from gradcheck_cli.runner import CheckOptions as RunnerOptions


def write(tmp_path: Path, text: str, name: str = "gradcheck.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --- YAML 1.1 numbers that are not what they look like -----------------------------------------

@pytest.mark.parametrize(("value", "pattern"), [
    ("010", r"reads '010' as an octal number, 8, .*\(8, or 10 if you meant that\)"),
    ("0x1F", r"reads '0x1F' as a hexadecimal number, 31"),
    ("1:20", r"reads '1:20' as a base-60 number, 80"),
    ("1_000", r"reads '1_000' as a number with '_' separators, 1000"),
    ("0b11", r"reads '0b11' as a binary number, 3"),
])
def test_yaml_11_number_spellings_are_refused_at_their_key(tmp_path: Path, value: str, pattern: str) -> None:
    path = write(tmp_path, f"version: 1\ndefaults: {{seed: {value}}}\nchecks: [softmax]\n")
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert info.value.message.startswith(f"{path}:2: defaults.seed: YAML 1.1 reads"), info.value.message


def test_sexagesimal_floats_are_refused_and_plain_numbers_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"checks\[0\]\.rtol: YAML 1.1 reads '1:30.5' as a base-60 number, 90.5"):
        load_config(write(tmp_path, "version: 1\nchecks: [{spec: softmax, rtol: 1:30.5}]\n"))
    config = load_config(write(tmp_path, "version: 1\ndefaults: {seed: +3, rtol: 1.5e-3, atol: .5}\n"
                                         "checks: [{spec: softmax, shape: [10, 3], rtol: '1e-6'}]\n"))
    assert config.defaults == {"seed": 3, "rtol": 1.5e-3, "atol": 0.5}
    assert config.checks[0].options == {"shape": (10, 3), "rtol": 1e-6}


@pytest.mark.parametrize(("text", "key", "pattern"), [
    ("defaults: {rtol: '٣'}", "defaults.rtol", r"expected a finite number >= 0; got str '٣'"),
    ("defaults: {timeout: '٣'}", "defaults.timeout", r"expected a number of seconds > 0.*got str '٣'"),
    ("checks: [{spec: softmax, input: [[true, 2]]}]", "checks[0].input", r"expected numbers as .*\[\[True, 2\]\]"),
    ("checks: [{spec: softmax, input: [['1', '2']]}]", "checks[0].input", r"expected numbers as"),
    ("checks: [{spec: softmax, expect: no}]", "checks[0].expect",
     r"got bool False \(YAML 1.1 reads yes/no/on/off/y/n as true/false: quote the text"),
])
def test_numbers_and_strings_are_what_they_look_like(tmp_path: Path, text: str, key: str, pattern: str) -> None:
    body = f"version: 1\n{text}\n" + ("" if text.startswith("checks") else "checks: [softmax]\n")
    path = write(tmp_path, body)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert info.value.message.startswith(f"{path}:2: {key}: "), info.value.message


@pytest.mark.parametrize(("function", "key", "pattern"), [
    ("{kind: activation, forward: 'numpy:tanh', derivative: 'numpy:cos', target: real}", "target",
     r"an activation has none"),
    ("{kind: loss, forward: 'numpy:tanh', gradient: 'numpy:cos', grad_attr: dx}", "grad_attr",
     r"this function has no 'backward'"),
    ("{kind: activation, forward: 'numpy:tanh', derivative: 'numpy:cos', formula: {a: 1}}", "formula",
     r"expected the formula as text"),
])
def test_function_keys_that_mean_nothing_for_the_entry_are_errors(tmp_path: Path, function: str, key: str,
                                                                  pattern: str) -> None:
    path = write(tmp_path, f"version: 1\nfunctions:\n  f: {function}\nchecks: [softmax]\n")
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert info.value.message.startswith(f"{path}:3: functions.f.{key}: "), info.value.message


# --- merge keys, documents, structure -----------------------------------------------------------

def test_merge_keys_merge_and_own_keys_win(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """\
        version: 1
        defaults:
          <<: {seed: 1, trials: 2}
          trials: 5
        checks:
          - &base {spec: softmax, shape: [2, 3], rtol: 0.5}
          - {<<: *base, spec: tanh, rtol: 0.25}
          - {<<: [{seed: 7}, {seed: 8, trials: 1}], spec: sigmoid}
        """))
    assert config.defaults == {"seed": 1, "trials": 5}
    assert [(c.spec, dict(c.options)) for c in config.checks] == [
        ("softmax", {"shape": (2, 3), "rtol": 0.5}),
        ("tanh", {"shape": (2, 3), "rtol": 0.25}),
        ("sigmoid", {"seed": 7, "trials": 1}),
    ]


@pytest.mark.parametrize(("text", "line", "pattern"), [
    ("version: 1\nchecks:\n  - {<<: 5, spec: tanh}\n", 3, r"checks\[0\]\.<<: '<<' merges mappings"),
    ("version: 1\na: &a {<<: *a}\nchecks: [softmax]\n", 2, r"an alias \(\*name\) is used inside the value"),
    ("version: 1\nchecks: [softmax]\n---\nversion: 1\n", 3, r"holds a second YAML document \(after '---'\)"),
    ("version: 1\nchecks:\n\t- softmax\n", 3, r"a tab character; YAML indents with spaces only"),
    ("version: 1\nchecks: [soft\x00max]\n", 2, r"malformed YAML: unacceptable character"),
    ("version: 1\n? [a, b]\n: 1\nchecks: [softmax]\n", 2, r"mapping keys must be plain names"),
    ("- softmax\n", 1, r"^\S+:1: expected a mapping \(the config's top level\)"),
    ("version: 1\nchecks: {a: softmax}\n", 2, r"expected a non-empty list of checks.*; got dict"),
])
def test_malformed_structure_names_the_line(tmp_path: Path, text: str, line: int, pattern: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert info.value.message.startswith(f"{path}:{line}: "), info.value.message


# --- the config file itself ---------------------------------------------------------------------

def test_a_fifo_nobody_writes_reads_as_empty_instead_of_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "gradcheck.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r":1: the config is empty"):
        load_config(fifo)


def test_a_pipe_is_read_like_a_file() -> None:
    # What 'gradcheck ci <(make-config)' passes: /dev/fd/N, a pipe.
    read, write_end = os.pipe()
    os.write(write_end, b"version: 1\nchecks: [softmax]\n")
    os.close(write_end)
    try:
        assert [c.spec for c in load_config(f"/dev/fd/{read}").checks] == ["softmax"]
    finally:
        os.close(read)


@pytest.mark.parametrize(("make", "pattern"), [
    (lambda p: p.mkdir(), r"Config file '.*' is a folder\. Give the path to a YAML file in it"),
    (lambda p: p.write_text("version: 1\nchecks: [softmax]\n" + "#" * (5 * 2**20)), r"larger than 4 MB"),
])
def test_a_folder_or_a_huge_file_is_refused_quickly(tmp_path: Path, make: object, pattern: str) -> None:
    path = tmp_path / "gradcheck.yaml"
    make(path)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=pattern):
        load_config(path)


def test_an_empty_config_path_says_so() -> None:
    with pytest.raises(ConfigError, match=r"needs the path to a YAML config file; got ''"):
        load_config("")


# --- numbers on the command line ----------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("1", 1.0), (" -2.5e-3 ", -2.5e-3), ("+.5", 0.5), ("inf", float("inf")), ("1E400", float("inf")),
    ("٣", None), ("３", None), ("1_0", None), ("−2", None), ("", None), ("0x10", None), ("1e", None),
])
def test_ascii_float_reads_ascii_numbers_only(text: str, value: float | None) -> None:
    assert ascii_float(text) == value


def test_input_and_timeout_take_ascii_numbers_only() -> None:
    with pytest.raises(UsageError, match=r"row 0 has '٣', which is not a number.*ASCII digits, with '-' for minus"):
        parse_matrix("1,٣")
    with pytest.raises(UsageError, match=r"expects a number of seconds > 0"):
        parse_timeout("٣")
    assert parse_matrix(" 1 , -2 ; 3,4 ").tolist() == [[1.0, -2.0], [3.0, 4.0]]


# --- plugins named oddly ------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "pattern"), [
    ("", r"Plugin '' is neither a file here nor a module name"),
    ("..x", r"Plugin '\.\.x' is neither a file here nor a module name"),
    ("good:attr", r"neither a file here nor a module name"),
    ("./folder", r"Plugin './folder' is a folder\. Give the \.py file"),
    ("./fifo", r"Plugin file './fifo' is not a regular file"),
    ("/dev/null", r"Plugin file '/dev/null' is not a regular file"),
    ("./loop", r"Plugin file './loop' cannot be read: Too many levels of symbolic links"),
    ("folder", r"no module named 'folder' \('folder' is here, but 'gradcheck' imports modules from sys.path"),
])
def test_plugin_sources_that_are_not_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str,
                                             pattern: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(PluginError, match=pattern):
        load_plugin(source, Registry())


def test_a_compiled_plugin_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import py_compile

    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.py").write_text("import numpy as np\nfrom gradcheck_cli import register_activation\n"
                                   "register_activation('compiled_tanh', forward=np.tanh, "
                                   "derivative=lambda x: 1 - np.tanh(x) ** 2)\n")
    py_compile.compile("p.py", cfile="p.pyc")
    assert load_plugin("p.pyc", Registry()) == ["compiled_tanh"]


# --- report destinations ------------------------------------------------------------------------

def test_report_to_a_fifo_nobody_reads_fails_instead_of_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    with pytest.raises(ReportError, match=r"it is a FIFO \(named pipe\) that no process is reading"):
        write_text("{}", str(fifo), "JSON")


def test_report_to_a_fifo_with_a_reader(tmp_path: Path) -> None:
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    got: list[str] = []
    ready, written = threading.Event(), threading.Event()

    def read() -> None:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        ready.set()
        written.wait(5)  # reading before the writer opens would see end-of-file at once
        os.set_blocking(fd, True)
        with os.fdopen(fd) as stream:
            got.append(stream.read())

    reader = threading.Thread(target=read)
    reader.start()
    ready.wait(5)
    write_text('{"a": 1}\n', str(fifo), "JSON")
    written.set()
    reader.join(5)
    assert got == ['{"a": 1}\n']


@pytest.mark.parametrize(("reports", "folders", "pattern"), [
    ({"--json": ""}, {}, r"The JSON report \(--json\) needs a file path, or - for standard output; got ''"),
    ({"--json": "loop"}, {}, r"to 'loop': Too many levels of symbolic links"),
    ({}, {"--save-failures": ""}, r"--save-failures needs a folder path .*; got ''"),
])
def test_report_paths_that_cannot_be_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           reports: dict[str, str | None], folders: dict[str, str | None],
                                           pattern: str) -> None:
    monkeypatch.chdir(tmp_path)
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(UsageError, match=pattern):
        check_paths(reports, folders)


# --- explain takes small inputs -----------------------------------------------------------------

def test_explain_refuses_inputs_too_large_to_show() -> None:
    with pytest.raises(UsageError, match=r"at most 1,000 values; the --shape has 100x100 = 10,000.*"
                                         r"'gradcheck run softmax --shape 100,100 --verbose'"):
        explain("softmax", RunnerOptions(shape=(100, 100), trials=1))
    assert explain("softmax", CheckOptions(shape=(1, 1000), trials=1)).analytic is not None


def test_unknown_method_and_dtype_suggest_the_closest() -> None:
    with pytest.raises(UsageError, match=r"Unknown --method 'Centrl'.*Did you mean 'central'\?"):
        CheckOptions(method="Centrl").validate()
    with pytest.raises(UsageError, match=r"Unknown --dtype 'FLOAT32'.*Did you mean 'float32'"):
        CheckOptions(dtype="FLOAT32").validate()
