"""Where results go when the way out is broken: atomic reports, paths refused up front, a lost
report or a closed/full stdout after the checks ran, --timeout values, and plugin prints kept
out of a report on stdout.

Every case is one run of the real entry point; a module fixture starts them all at once (they
are small: --shape 2,3 --trials 1) and each test reads the ones it needs.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from procs import Proc

ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1"}
ENV.pop("FORCE_COLOR", None)
CLI = [sys.executable, "-m", "gradcheck_cli"]
SMALL = ["--shape", "2,3", "--trials", "1"]
HAS_DEV_FULL = os.path.exists("/dev/full")
# A run interrupted (Ctrl-C, or SIGTERM from outside) when a report's bytes are written but
# not yet renamed into place.
STOPPED_WHILE_WRITING = ("import os, signal, sys, time\n"
                         "how, sys.argv = sys.argv[1], ['gradcheck', *sys.argv[2:]]\n"
                         "def fsync(fd):\n"
                         "    if how == 'int': raise KeyboardInterrupt\n"
                         "    sig = signal.SIGQUIT if how == 'quit' else signal.SIGTERM\n"
                         "    os.kill(os.getpid(), sig); time.sleep(5)\n"
                         "os.fsync = fsync\n"
                         "from gradcheck_cli.cli import entry; entry()")

PLUGIN = """\
import pathlib
import time

import numpy as np
from gradcheck_cli import register_activation

pathlib.Path("plugin-loaded").write_text("yes")  # how a test sees that loading started
print("noise from the plugin's import")
register_activation("x" * 300, forward=np.tanh, derivative=lambda x: 1 + np.tanh(x) ** 2)
register_activation("x" * 299 + "y", forward=np.tanh, derivative=lambda x: 1 + np.tanh(x) ** 2)
"""
SLOW_PLUGIN = """\
import time

import numpy as np
from gradcheck_cli import register_activation


def slow_tanh(x):
    time.sleep(1.5)
    return np.tanh(x)


register_activation("slow_tanh", forward=slow_tanh, derivative=lambda x: 1 - np.tanh(x) ** 2)
"""
CONFIG = """\
version: 1
plugins: [slow.py]
defaults: {shape: [2, 3], trials: 1, timeout: 0.5}
checks:
  - slow_tanh
"""
BAD_TIMEOUT_CONFIG = """\
version: 1
checks:
  - softmax
  - {spec: tanh, timeout: -1}
"""
NO_LIMIT_CONFIG = """\
version: 1
defaults: {shape: [2, 3], trials: 1, timeout: .inf}
checks: [softmax, {spec: tanh, timeout: 0}]
"""


def _closed_pipe() -> int:
    """The write end of a pipe whose reader is gone: every write gets EPIPE."""
    read, write = os.pipe()
    os.close(read)
    return write


def _file_size_limit() -> None:
    # Regular files may not grow past 1000 bytes: a report write fails part-way (EFBIG).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proc]]:
    def folder(name: str) -> Path:
        path = tmp_path_factory.mktemp(name)
        (path / "plugin.py").write_text(PLUGIN)
        (path / "slow.py").write_text(SLOW_PLUGIN)
        (path / "gradcheck.yaml").write_text(CONFIG)
        (path / "bad_timeout.yaml").write_text(BAD_TIMEOUT_CONFIG)
        (path / "no_limit.yaml").write_text(NO_LIMIT_CONFIG)
        (path / "old.json").write_text('{"old": true}\n')
        (path / "a_file").write_text("")
        (path / "out").mkdir()
        return path

    started: dict[str, Proc] = {}

    def start(name: str, *args: str, stdout: int | None = None, preexec: Callable[[], None] | None = None,
              argv: list[str] | None = None) -> None:
        started[name] = Proc([*(argv or CLI), *args], folder(name), subprocess.PIPE if stdout is None else stdout,
                             preexec)
        if stdout is not None:
            os.close(stdout)  # the child has its own copy

    def closed_stdout() -> int:
        return _closed_pipe()

    def dev_full() -> int:
        return os.open("/dev/full", os.O_WRONLY)

    # Paths refused before anything runs (the plugin is not even imported).
    start("same_file", "run", "softmax", "--plugin", "plugin.py", "--json", "out/r.xml", "--junit-xml",
          "./out/../out/r.xml")
    start("both_stdout", "run", "softmax", "--plugin", "plugin.py", "--json", "-", "--junit-xml", "-")
    start("dev_stdout", "run", "softmax", "--plugin", "plugin.py", "--json", "/dev/stdout", "--junit-xml", "-")
    start("failures_on_report", "run", "softmax", "--plugin", "plugin.py", "--junit-xml", "out/r", "--save-failures",
          "out/./r")
    start("failures_on_file", "run", "softmax@diagonal", "--plugin", "plugin.py", "--save-failures", "a_file")
    start("failures_under_file", "ci", "gradcheck.yaml", "--save-failures", "a_file/sub")
    start("json_is_folder", "list", "--plugin", "plugin.py", "--json", "out")
    # Closed and full standard output.
    start("epipe_pass", "run", "softmax+mse", *SMALL, stdout=closed_stdout())
    start("epipe_flagged", "run", "softmax@diagonal", *SMALL, stdout=closed_stdout())
    start("epipe_json", "run", "softmax+mse", *SMALL, "--json", "-", stdout=closed_stdout())
    start("epipe_list", "list", "--json", "-", stdout=closed_stdout())
    if HAS_DEV_FULL:
        start("full_pass", "run", "softmax+mse", *SMALL, stdout=dev_full())
        start("full_flagged", "run", "softmax@diagonal", *SMALL, stdout=dev_full())
        start("json_full", "run", "softmax+mse", *SMALL, "--json", "/dev/full")
        start("junit_full_flagged", "run", "softmax@diagonal", *SMALL, "--junit-xml", "/dev/full")
    # Reports written atomically.
    start("too_large", "run", "softmax+mse", *SMALL, "--json", "old.json", preexec=_file_size_limit)
    start("interrupted", "int", "run", "softmax+mse", *SMALL, "--json", "old.json",
          argv=[sys.executable, "-c", STOPPED_WHILE_WRITING])
    start("terminated", "term", "run", "softmax+mse", *SMALL, "--json", "old.json",
          argv=[sys.executable, "-c", STOPPED_WHILE_WRITING])
    start("quit", "quit", "run", "softmax+mse", *SMALL, "--json", "old.json",
          argv=[sys.executable, "-c", STOPPED_WHILE_WRITING])
    start("replaced", "run", "softmax+mse", *SMALL, "--json", "old.json", "--junit-xml", "new.xml")
    # --save-failures: long names, a folder made only when needed.
    start("long_names", "check", "plugin.py", *SMALL, "--save-failures", "deep/er/saved", "--json", "r.json")
    start("nothing_to_save", "run", "softmax+mse", *SMALL, "--save-failures", "saved")
    # --timeout values; the config's timeout wins over ci --timeout.
    start("timeout_inf", "run", "softmax", *SMALL, "--timeout", "inf")
    start("timeout_zero", "ci", "no_limit.yaml", "--timeout", "0")
    start("timeout_nan", "run", "softmax", "--timeout", "nan")
    start("timeout_negative", "check", "plugin.py", "--timeout", "-1")
    start("ci_timeout_nan", "ci", "gradcheck.yaml", "--timeout", "nan")
    start("config_timeout_negative", "ci", "bad_timeout.yaml")
    start("config_timeout_wins", "ci", "gradcheck.yaml", "--timeout", "100", "--json", "r.json")
    # A plugin's prints stay out of a JSON list on stdout.
    start("noisy_list", "list", "--plugin", "plugin.py", "--json", "-")
    yield started
    for proc in started.values():
        proc.stop()


def _summary_code(text: str) -> int:
    line = [ln for ln in text.splitlines() if "; exit code " in ln][-1]
    return int(line.rsplit(" ", 1)[1])


# --- paths refused up front ------------------------------------------------------------------

@pytest.mark.parametrize(("name", "fragment"), [
    ("same_file", "--json and --junit-xml both write to './out/../out/r.xml' (the same file)"),
    ("both_stdout", "--json and --junit-xml both write to standard output ('-'), where they would interleave"),
    ("dev_stdout", "--json and --junit-xml both write to standard output ('-' is standard output)"),
    ("failures_on_report", "--save-failures names 'out/./r', the path of the --junit-xml report"),
    ("failures_on_file", "--save-failures expects a folder, but 'a_file' is a file"),
    ("failures_under_file", "Cannot create the --save-failures folder 'a_file/sub': 'a_file' is a file"),
    ("json_is_folder", "Cannot write the JSON report (--json) to 'out': it is a folder"),
])
def test_unusable_output_paths_exit_2_before_any_plugin_loads(runs: dict[str, Proc], name: str,
                                                             fragment: str) -> None:
    proc = runs[name]
    assert proc.done.returncode == 2, proc.done.stdout + proc.done.stderr
    assert fragment in proc.done.stderr
    assert proc.done.stdout == ""
    assert not (proc.cwd / "plugin-loaded").exists(), "refused before anything was loaded or checked"
    assert list((proc.cwd / "out").iterdir()) == []


# --- closed and full standard output -----------------------------------------------------------

@pytest.mark.parametrize(("name", "code"), [("epipe_pass", 0), ("epipe_flagged", 1), ("epipe_json", 0),
                                            ("epipe_list", 0)])
def test_a_reader_that_stops_reading_leaves_the_verdict_as_exit_code(runs: dict[str, Proc], name: str,
                                                                     code: int) -> None:
    proc = runs[name].done
    assert proc.returncode == code, proc.stderr
    assert "error" not in proc.stderr.lower() and "pipe" not in proc.stderr.lower(), proc.stderr


def test_with_the_json_on_a_closed_stdout_the_table_still_reaches_stderr(runs: dict[str, Proc]) -> None:
    assert "softmax+mse" in runs["epipe_json"].done.stderr
    assert _summary_code(runs["epipe_json"].done.stderr) == 0


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
@pytest.mark.parametrize(("name", "code"), [("full_pass", 3), ("full_flagged", 1)])
def test_stdout_on_a_full_disk_is_one_error_line_and_never_exit_0(runs: dict[str, Proc], name: str,
                                                                 code: int) -> None:
    proc = runs[name].done
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("gradcheck: error: Cannot write the results table to stdout: No space left on device")


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
@pytest.mark.parametrize(("name", "report", "code"), [("json_full", "JSON", 3), ("junit_full_flagged", "JUnit", 1)])
def test_a_report_lost_after_the_checks_keeps_the_table_and_never_exits_0_or_2(
        runs: dict[str, Proc], name: str, report: str, code: int) -> None:
    proc = runs[name].done
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "component" in proc.stdout and "softmax" in proc.stdout, "the table is printed"
    assert _summary_code(proc.stdout) == code, "the summary line states the real exit code"
    assert f"gradcheck: error: Cannot write the {report} report to '/dev/full': No space left on device" \
        in proc.stderr


# --- atomic reports ----------------------------------------------------------------------------

def test_a_report_write_that_fails_part_way_leaves_the_old_report_whole(runs: dict[str, Proc]) -> None:
    proc = runs["too_large"]
    assert proc.done.returncode == 3, proc.done.stdout + proc.done.stderr
    assert _summary_code(proc.done.stdout) == 3
    assert "Cannot write the JSON report to 'old.json': File too large" in proc.done.stderr
    assert (proc.cwd / "old.json").read_text() == '{"old": true}\n', "the old report, not a partial new one"
    assert sorted(p.name for p in proc.cwd.iterdir() if p.name.startswith(".")) == [], "no temporary file left"


@pytest.mark.parametrize(("name", "code"), [("interrupted", 130), ("terminated", 128 + signal.SIGTERM),
                                           ("quit", 128 + signal.SIGQUIT)])
def test_an_interrupt_while_writing_leaves_the_old_report_and_no_temporary_file(runs: dict[str, Proc], name: str,
                                                                                 code: int) -> None:
    proc = runs[name]
    assert proc.done.returncode == code, proc.done.stdout + proc.done.stderr
    assert (proc.cwd / "old.json").read_text() == '{"old": true}\n'
    assert sorted(p.name for p in proc.cwd.iterdir() if p.name.startswith(".")) == []


def test_reports_replace_an_old_one_whole_with_ordinary_permissions(runs: dict[str, Proc]) -> None:
    proc = runs["replaced"]
    assert proc.done.returncode == 0, proc.done.stderr
    report = json.loads((proc.cwd / "old.json").read_text())
    assert report["schema"] == 1 and report["exit_code"] == 0
    assert (proc.cwd / "new.xml").read_text().startswith("<?xml")
    umask = os.umask(0)
    os.umask(umask)
    assert (proc.cwd / "new.xml").stat().st_mode & 0o777 == 0o666 & ~umask, "not mkstemp's private 0600"
    assert sorted(p.name for p in proc.cwd.iterdir() if p.name.startswith(".")) == []


# --- --save-failures -------------------------------------------------------------------------------

def test_save_failures_caps_long_names_and_keeps_them_apart(runs: dict[str, Proc]) -> None:
    proc = runs["long_names"]
    assert proc.done.returncode == 1, proc.done.stdout + proc.done.stderr
    assert _summary_code(proc.done.stdout) == 1
    files = sorted((proc.cwd / "deep/er/saved").iterdir())
    assert len(files) == 2, files
    assert all(len(p.name.encode()) <= 110 and p.suffix == ".npz" for p in files), [p.name for p in files]
    checks = set()
    for path in files:
        with np.load(path) as data:
            checks.add(str(data["check"]))
            assert data["input"].shape == (2, 3)
    assert checks == {"x" * 300, "x" * 299 + "y"}


def test_save_failures_makes_no_folder_when_nothing_failed(runs: dict[str, Proc]) -> None:
    proc = runs["nothing_to_save"]
    assert proc.done.returncode == 0, proc.done.stderr
    assert "no failing inputs to save in saved/" in proc.done.stdout
    assert not (proc.cwd / "saved").exists()


# --- --timeout -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["timeout_inf", "timeout_zero"])
def test_timeout_inf_and_zero_mean_no_limit(runs: dict[str, Proc], name: str) -> None:
    proc = runs[name].done
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" in proc.stdout and "timed out" not in proc.stdout


@pytest.mark.parametrize(("name", "fragment"), [
    ("timeout_nan", "--timeout expects a number of seconds > 0, or 0 or inf for no limit; got nan"),
    ("timeout_negative", "--timeout expects a number of seconds > 0, or 0 or inf for no limit; got -1.0"),
    ("ci_timeout_nan", "--timeout expects a number of seconds > 0, or 0 or inf for no limit; got nan"),
    ("config_timeout_negative", "bad_timeout.yaml:4: checks[1].timeout: expected a number of seconds > 0, or 0 or "
                                ".inf for no limit; got int -1"),
])
def test_negative_or_nan_timeouts_are_usage_errors(runs: dict[str, Proc], name: str, fragment: str) -> None:
    proc = runs[name]
    assert proc.done.returncode == 2, proc.done.stdout + proc.done.stderr
    assert fragment in proc.done.stderr
    assert proc.done.stdout == ""
    assert not (proc.cwd / "plugin-loaded").exists()


def test_the_configs_timeout_wins_over_ci_timeout(runs: dict[str, Proc]) -> None:
    proc = runs["config_timeout_wins"]
    assert proc.done.returncode == 3, proc.done.stdout + proc.done.stderr
    (row,) = json.loads((proc.cwd / "r.json").read_text())["results"]
    assert row["verdict"] == "ERROR" and "timed out after 0.5 s" in row["diagnosis"]


# --- plugin prints and a report on stdout ------------------------------------------------------------

def test_list_json_on_stdout_keeps_plugin_prints_out(runs: dict[str, Proc]) -> None:
    proc = runs["noisy_list"].done
    assert proc.returncode == 0, proc.stderr
    names = {entry["name"] for entry in json.loads(proc.stdout)["entries"]}
    assert {"x" * 300, "softmax"} <= names
    assert "noise from the plugin's import" in proc.stderr
