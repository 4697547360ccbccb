"""The gate cannot be fooled or wedged by plugin code, and leaves no process behind.

Each test runs the real ``gradcheck`` command on a plugin that misbehaves the way a
hostile or broken plugin would: it ends, crashes, interrupts or hangs its process at
import, forks helpers that escape into sessions of their own, ignores SIGTERM, or is
still running when gradcheck receives SIGTERM, SIGHUP or SIGINT. Every process a plugin
starts writes its pid to a folder, and the tests require all of them gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "GRADCHECK_DISABLE_PLUGIN_AUTOLOAD": "1"}
ENV.pop("FORCE_COLOR", None)
ENV.pop("GRADCHECK_START_METHOD", None)

LOAD_FAULTS = {
    "exit0": "import os\nos._exit(0)\n",
    "exit7": "import os\nos._exit(7)\n",
    "segfault": "import ctypes\nctypes.string_at(0)\n",
    "interrupt": "raise KeyboardInterrupt\n",
    "hang": "while True:\n    pass\n",
}
LOAD_MESSAGES = {
    "exit0": "(exit code 0)",
    "exit7": "(exit code 7)",
    "segfault": "(killed by SIGSEGV)",
    "interrupt": "raised KeyboardInterrupt",
    "hang": "did not finish within 2 s",
}

# Entries that start helpers, record every pid in $GRADCHECK_TEST_PIDS and hang.
HANGING = '''\
import os
import signal
import subprocess
import time

import numpy as np

from gradcheck_cli import register_activation


def _record(pid):
    folder = os.environ["GRADCHECK_TEST_PIDS"]
    with open(os.path.join(folder, str(pid)), "w"):
        pass


def hang(x):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a check that ignores SIGTERM
    _record(os.getpid())
    helper = subprocess.Popen(["sleep", "1000"])  # stays in the check's process group
    _record(helper.pid)
    escaped = subprocess.Popen(["sleep", "1001"], start_new_session=True)  # a session of its own
    _record(escaped.pid)
    if os.fork() == 0:  # a forked copy whose parent goes away: an orphan in a new session
        os.setsid()
        _record(os.getpid())
        time.sleep(1000)
        os._exit(0)
    time.sleep(1000)
    return 1 - np.tanh(x) ** 2


register_activation("hang_a", forward=np.tanh, derivative=hang)
register_activation("hang_b", forward=np.tanh, derivative=hang)
register_activation("fine", forward=np.tanh, derivative=lambda x: 1 - np.tanh(x) ** 2)
'''

HANGING_CONFIG = """\
version: 1
plugins: [hanging.py]
defaults: {trials: 1, shape: [2, 3]}
checks: [hang_a, hang_b, fine]
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _survivors(folder: Path, wait: float = 5.0) -> list[int]:
    pids = [int(p.name) for p in folder.iterdir()]
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.fixture
def pids(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "pids"
    folder.mkdir()
    yield folder
    for p in folder.iterdir():  # never leave a test's own helpers behind, even when it fails
        if _alive(int(p.name)):
            os.kill(int(p.name), signal.SIGKILL)


def _gradcheck(folder: Path, *args: str, env: dict[str, str] | None = None,
               **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gradcheck_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or ENV, cwd=folder, **kwargs)  # type: ignore[call-overload]


def _wait_for_files(folder: Path, count: int, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while len(list(folder.iterdir())) < count:
        assert time.monotonic() < deadline, "the hanging checks never started"
        time.sleep(0.05)


@pytest.mark.parametrize("fault", list(LOAD_FAULTS))
def test_a_plugin_that_ends_crashes_or_hangs_at_import_is_a_load_error(tmp_path: Path, fault: str) -> None:
    (tmp_path / "bad.py").write_text(LOAD_FAULTS[fault])
    proc = _gradcheck(tmp_path, "run", "softmax@diagonal", "--plugin", "bad.py", "--timeout", "2")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert "plugin 'bad.py'" in err and LOAD_MESSAGES[fault] in err, err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("command", [["check", "bad.py"], ["list", "--plugin", "bad.py"], ["ci", "suite.yaml"],
                                     ["explain", "softmax", "--plugin", "bad.py"]])
def test_every_command_loads_plugins_out_of_process(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "bad.py").write_text(LOAD_FAULTS["exit0"])
    (tmp_path / "suite.yaml").write_text("version: 1\nplugins: [bad.py]\nchecks: [softmax]\n")
    proc = _gradcheck(tmp_path, *command)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert "bad.py" in err and "(exit code 0)" in err, err


def test_a_plugin_thread_that_ends_the_loader_later_cannot_make_the_run_pass(tmp_path: Path) -> None:
    (tmp_path / "sneaky.py").write_text(
        "import os, threading, time\nimport numpy as np\nfrom gradcheck_cli import register_activation\n"
        "def later():\n    time.sleep(0.5)\n    os._exit(0)\n"
        "threading.Thread(target=later, daemon=True).start()\n"
        "def slow(x):\n    time.sleep(3)\n    return np.tanh(x)\n"
        "register_activation('slow_tanh', forward=slow, derivative=lambda x: 1 - np.tanh(x) ** 2)\n")
    proc = _gradcheck(tmp_path, "run", "slow_tanh", "softmax", "--plugin", "sneaky.py", "--trials", "1")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (out, err)
    assert "loader process ended (exit code 0)" in out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_to_gradcheck_kills_every_check_and_what_it_started(tmp_path: Path, pids: Path,
                                                                      signum: int) -> None:
    (tmp_path / "hanging.py").write_text(HANGING)
    (tmp_path / "suite.yaml").write_text(HANGING_CONFIG)
    proc = _gradcheck(tmp_path, "ci", "suite.yaml", "--jobs", "2", "--json", "out.json",
                      env={**ENV, "GRADCHECK_TEST_PIDS": str(pids)})
    _wait_for_files(pids, 8)  # both checks and their three helpers each
    time.sleep(0.2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signum, (out, err)
    assert f"interrupted by {signal.Signals(signum).name}" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out.json").exists()
    assert _survivors(pids) == []


def test_a_timed_out_check_leaves_nothing_behind_and_releases_the_pipe(tmp_path: Path, pids: Path) -> None:
    (tmp_path / "hanging.py").write_text(HANGING)
    start = time.monotonic()
    # The helpers inherit stdout: were one left alive, reading stdout to its end would hang.
    proc = _gradcheck(tmp_path, "run", "hang_a", "fine", "--plugin", "hanging.py", "--timeout", "2",
                      "--trials", "1", env={**ENV, "GRADCHECK_TEST_PIDS": str(pids)})
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - start < 20
    assert proc.returncode == 3, (out, err)
    assert "timed out after 2 s" in out
    assert len(list(pids.iterdir())) == 4
    assert _survivors(pids, wait=2.0) == []


def test_checks_die_with_a_killed_gradcheck(tmp_path: Path, pids: Path) -> None:
    (tmp_path / "hanging.py").write_text(HANGING)
    # Output to /dev/null: helpers that escaped into sessions of their own hold inherited pipes.
    proc = subprocess.Popen([sys.executable, "-m", "gradcheck_cli", "run", "hang_a", "--plugin", "hanging.py"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
                            env={**ENV, "GRADCHECK_TEST_PIDS": str(pids)})
    _wait_for_files(pids, 4)
    proc.kill()  # SIGKILL: nothing of gradcheck's own runs; the kernel ends the chain
    proc.wait(timeout=20)
    # The check's pid was recorded first (helpers in sessions of their own can outlive a
    # SIGKILL of gradcheck; the fixture removes them).
    check = min((p.stat().st_mtime_ns, int(p.name)) for p in pids.iterdir())[1]
    deadline = time.monotonic() + 5
    while _alive(check) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(check)


def test_more_jobs_than_file_descriptors_allow(tmp_path: Path) -> None:
    import resource

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    proc = _gradcheck(tmp_path, "run", "softmax+mse", "sigmoid", "tanh", "--jobs", "600", "--trials", "1",
                      preexec_fn=few_descriptors)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert "Traceback" not in err


SPAWN_PLUGIN = '''\
import os
import time

import numpy as np

from gradcheck_cli import register_activation


def crash(x):
    os._exit(9)


def hang(x):
    time.sleep(1000)


register_activation("fine", forward=np.tanh, derivative=lambda x: 1 - np.tanh(x) ** 2)
register_activation("wrong", forward=np.tanh, derivative=lambda x: 1 - np.tanh(x))
register_activation("crash", forward=np.tanh, derivative=crash)
register_activation("hang", forward=np.tanh, derivative=hang)
'''

SPAWN_CONFIG = """\
version: 1
plugins: [spawned.py]
defaults: {trials: 1, shape: [2, 3]}
functions:
  lib_tanh: {kind: activation, forward: "numpy:tanh", derivative: "spawned.py:crash"}
checks:
  - fine
  - {spec: wrong, expect: fail}
  - crash
  - {spec: hang, timeout: 2}
  - lib_tanh
"""


def test_spawned_workers_load_the_same_plugins_and_config_and_stay_bounded(tmp_path: Path) -> None:
    (tmp_path / "spawned.py").write_text(SPAWN_PLUGIN)
    (tmp_path / "suite.yaml").write_text(SPAWN_CONFIG)
    env = {**ENV, "GRADCHECK_START_METHOD": "spawn"}
    proc = _gradcheck(tmp_path, "ci", "suite.yaml", "--jobs", "2", "--json", "out.json", env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, (out, err)
    import json

    rows = {r["check"]: r for r in json.loads((tmp_path / "out.json").read_text())["results"]}
    assert rows["fine"]["verdict"] == "PASS"
    assert rows["wrong"]["verdict"] == "XFAIL"
    assert rows["crash"]["verdict"] == "ERROR" and "exited with code 9" in rows["crash"]["diagnosis"]
    assert rows["hang"]["verdict"] == "ERROR" and "timed out after 2 s" in rows["hang"]["diagnosis"]
    assert rows["lib_tanh"]["verdict"] == "ERROR" and "exited with code 9" in rows["lib_tanh"]["diagnosis"]


def test_spawned_loading_reports_a_plugin_that_exits(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(LOAD_FAULTS["exit7"])
    env = {**ENV, "GRADCHECK_START_METHOD": "spawn"}
    proc = _gradcheck(tmp_path, "run", "softmax", "--plugin", "bad.py", env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert "plugin 'bad.py'" in err and "(exit code 7)" in err


def test_a_start_method_the_machine_lacks_is_a_usage_error(tmp_path: Path) -> None:
    proc = _gradcheck(tmp_path, "run", "softmax", env={**ENV, "GRADCHECK_START_METHOD": "teleport"})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "GRADCHECK_START_METHOD='teleport'" in err
