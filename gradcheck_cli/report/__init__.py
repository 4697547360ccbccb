"""Reports: terminal (Rich), JSON and JUnit renderings of plain result data.

This module also owns how reports reach their destination. A report file is written
atomically (a temporary file in the same folder, flushed, fsynced, then renamed over the
path), so a reader, an interrupt or a full disk never leaves a 0-byte or partial report:
the path holds the old report or the new one. Paths are checked before any check runs
(:func:`check_paths`); a write that still fails afterwards is a :class:`ReportError`, and
:class:`Delivery` turns it, and a closed or full standard output, into the run's exit code.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

from gradcheck_cli.errors import ExitCode, UsageError

T = TypeVar("T")


class ReportError(UsageError):
    """A report that cannot be written: before the checks a usage error, after them a lost delivery."""


def write_text(text: str, path: str, what: str) -> None:
    """Write a report to ``path`` atomically; ``-`` means standard output (whose errors propagate).

    A path that is this process's standard output or error (``/dev/stdout``, ``/dev/fd/2``)
    is written through that stream: it is not a file to replace.
    """
    stream = standard_stream(path)
    if stream is not None:
        stream.write(text)
        stream.flush()
        return
    data = text.encode("utf-8")
    write_atomic(path, lambda f: f.write(data), f"the {what} report")


def _default_mode() -> int:
    # What open() would have given a new file: 0o666 minus the umask (read without changing it
    # for long: umask has no getter).
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], object], what: str) -> None:
    """Write a file through ``write(f)`` so that ``path`` is never seen partly written.

    The bytes go to a hidden temporary file in the same folder (same filesystem, so the
    rename is atomic), which is flushed and fsynced, then renamed over ``path``. On any
    failure, KeyboardInterrupt included, the temporary file is removed and ``path`` is left
    as it was. A path that exists but is not a regular file (``/dev/null``, ``/dev/full``,
    a FIFO) is written in place: it is a stream, not a file to replace.

    Raises
    ------
    ReportError
        Naming ``what``, the path and the system's reason, when the file cannot be written.
    """
    try:
        found = os.stat(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # a link loop, a file name too long...
            raise _report_error(what, path, exc) from exc
        found = None
    if found is not None and not stat.S_ISREG(found.st_mode) and not stat.S_ISDIR(found.st_mode):
        _write_stream(path, write, what)
        return
    # A link is followed, so the file it points to is replaced (not the link by a file).
    target = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    try:
        mode = target.stat().st_mode & 0o777 if target.is_file() else _default_mode()
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name[:100]}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _report_error(what, path, exc) from exc
    try:
        with _signals_raise(), os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise _report_error(what, path, exc) from exc
        raise
    # Make the rename itself durable; a filesystem that cannot fsync a folder loses nothing here.
    with contextlib.suppress(OSError):
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _write_stream(path: str | Path, write: Callable[[IO[bytes]], object], what: str) -> None:
    """Write to a device or FIFO in place (it is a stream, not a file to replace).

    Opened without blocking: a FIFO that nobody reads would otherwise block the open, and the
    run with it, for ever. Writes then block as usual, while the reader reads.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise ReportError(f"Cannot write {what} to '{path}': it is a FIFO (named pipe) that no process "
                              f"is reading. Start its reader first (e.g. 'cat {path} &'), or give a file "
                              f"path.") from exc
        raise _report_error(what, path, exc) from exc
    try:
        os.set_blocking(fd, True)
        with os.fdopen(fd, "wb") as stream:
            write(stream)
    except OSError as exc:
        raise _report_error(what, path, exc) from exc


def standard_stream(path: str) -> IO[str] | None:
    """``sys.stdout`` for ``-``, and ``sys.stdout`` or ``sys.stderr`` when ``path`` names the same open
    file (``/dev/stdout``); else None."""
    if path == "-":
        return sys.stdout
    if path == "":
        return None
    try:
        found = os.stat(path)
    except (OSError, ValueError):
        return None
    for stream in (sys.stdout, sys.stderr):
        try:
            mine = os.fstat(stream.fileno())
        except (OSError, ValueError, AttributeError):
            continue
        if (mine.st_dev, mine.st_ino) == (found.st_dev, found.st_ino):
            return stream
    return None


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """While a report is written, SIGTERM, SIGHUP and the other stop signals (SIGQUIT, ...) end the
    process by an exception, so that the temporary file is removed on the way out (their
    default action would leave it). SIGINT already raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    from gradcheck_cli.processes import STOP_SIGNALS

    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) == signal.SIG_DFL:  # an ignored or handled signal stays as it is
            previous[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _report_error(what: str, path: str | Path, exc: OSError) -> ReportError:
    reason = exc.strerror or str(exc)
    return ReportError(f"Cannot write {what} to '{path}': {reason}. Give a writable file path"
                       f"{', or - for standard output' if 'report' in what else ''}.")


def check_paths(reports: dict[str, str | None], folders: dict[str, str | None] | None = None) -> None:
    """Refuse report destinations that cannot work, before anything runs.

    ``reports`` maps an option (``--json``) to its path (``-`` for standard output);
    ``folders`` maps an option naming a folder to create (``--save-failures``) to its path.
    Refused: a file path whose folder is missing or not writable, a path that is a folder,
    a read-only file, two reports on standard output or on one file (compared after
    resolving links and ``..``), and a folder path that is a file or cannot be created.

    Raises
    ------
    UsageError
        Naming the option, the path and what to give instead.
    """
    given = {option: path for option, path in reports.items() if path is not None}
    on_stdout = [option for option, path in given.items() if path == "-"]
    if len(on_stdout) > 1:
        raise UsageError(f"{' and '.join(on_stdout)} both write to standard output ('-'), where they would "
                         f"interleave. Send at most one report to '-' and the others to files.")
    seen: dict[object, str] = {}
    for option, path in given.items():
        if path != "-":
            _check_file(option, path)
        key = _identity(path)
        if key in seen:
            if path == "-" or seen[key] in on_stdout:
                raise UsageError(f"{seen[key]} and {option} both write to standard output ('{path}' is standard "
                                 f"output), where they would interleave. Give each report its own path.")
            raise UsageError(f"{seen[key]} and {option} both write to '{path}' (the same file), so one would "
                             f"overwrite the other. Give each report its own path.")
        seen[key] = option
    for option, folder in (folders or {}).items():
        if folder is None:
            continue
        _check_folder(option, folder)
        if _identity(folder) in seen:
            raise UsageError(f"{option} names '{folder}', the path of the {seen[_identity(folder)]} report. Give the "
                             f"failing inputs their own folder.")


def _identity(path: str) -> object:
    """What a destination really is: the same for two spellings of one file, and for ``-`` and /dev/stdout."""
    try:
        found = os.fstat(sys.stdout.fileno()) if path == "-" else os.stat(path)
    except (OSError, ValueError):
        return os.path.realpath(path)
    return (found.st_dev, found.st_ino)


REPORT_NAMES = {"--json": "JSON", "--junit-xml": "JUnit"}


def _check_file(option: str, path: str) -> None:
    target = Path(path)
    option = f"{REPORT_NAMES.get(option, option)} report ({option})"
    if not path.strip():
        raise UsageError(f"The {option} needs a file path, or - for standard output; got {path!r}.")
    _check_stat(option, path)
    if target.is_dir():
        raise UsageError(f"Cannot write the {option} to '{path}': it is a folder. Give a file path, "
                         f"e.g. '{path.rstrip('/')}/report', or - for standard output.")
    if target.exists() and not target.is_file():
        # A device or FIFO (/dev/null, /dev/stderr) is written in place: it must itself be writable.
        if not os.access(target, os.W_OK):
            raise UsageError(f"Cannot write the {option} to '{path}': it is not writable. Give a "
                             f"writable file path, or - for standard output.")
        return
    folder = target.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        state = "does not exist" if not folder.exists() else ("is not a folder" if not folder.is_dir()
                                                              else "is not writable")
        raise UsageError(f"Cannot write the {option} to '{path}': the folder '{folder}' {state}. "
                         f"Give a file path in a writable folder, or - for standard output.")
    if target.is_file() and not os.access(target, os.W_OK):
        raise UsageError(f"Cannot write the {option} to '{path}': the file is read-only. Make it "
                         f"writable (chmod u+w) or give another path.")


def _check_stat(what: str, path: str) -> None:
    """Refuse a path that cannot even be looked up: a link loop, a name too long, a component that is a file."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise UsageError(f"Cannot write the {what} to '{path}': {exc.strerror}. Give another path.") from None
    except ValueError as exc:  # an embedded NUL
        raise UsageError(f"Cannot write the {what} to {path!r}: {exc}. Give another path.") from None


def _check_folder(option: str, path: str) -> None:
    target = Path(path)
    if not path.strip():
        raise UsageError(f"{option} needs a folder path (it is created when a check fails); got {path!r}.")
    _check_stat(f"{option} folder", path)
    if target.exists() and not target.is_dir():
        raise UsageError(f"{option} expects a folder, but '{path}' is a file. Give a folder path (it is created "
                         f"when a check fails).")
    # The folder is created (with its missing parents) only when there is something to save;
    # here it is enough that the nearest existing ancestor is a writable folder.
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"Cannot create the {option} folder '{path}': '{existing}' is a file. Give a folder "
                         f"path under a writable folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"Cannot create the {option} folder '{path}': '{existing}' is not writable. Give a "
                         f"folder path under a writable folder.")


def silence(stream: IO[str]) -> None:
    """Point ``stream``'s file descriptor at /dev/null, after its reader went away or it failed.

    Python flushes stdout once more at exit; without this that flush fails again and prints
    "Exception ignored ... BrokenPipeError" (the advice in the signal module's documentation).
    """
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class Delivery:
    """What became of a run's outputs after the checks ran, and the exit code that leaves.

    The checks' verdict is known; a report that could not be written turns a 0 into 3 (the
    result could not be delivered) and never into 2 (something was checked). A reader that
    stopped reading standard output (EPIPE, ``| head``) is not an error: the verdict stands.
    """

    def __init__(self, verdict: int, ran: bool = True) -> None:
        self.verdict = verdict
        self.ran = ran
        self.problems: list[str] = []
        self.closed: set[str] = set()

    @property
    def exit_code(self) -> int:
        if not self.problems or self.verdict in (ExitCode.FLAGGED, ExitCode.NOT_RUN):
            return self.verdict
        return int(ExitCode.NOT_RUN)

    def attempt(self, action: Callable[[], T], stream: IO[str] | None = None, what: str = "") -> T | None:
        """Run ``action``; record a :class:`ReportError`, or an OSError on ``stream`` (stdout or stderr)."""
        if stream is not None and stream.name in self.closed:
            return None
        try:
            return action()
        except ReportError as exc:
            self.problems.append(exc.message)
        except OSError as exc:
            if stream is None:
                raise
            self.closed.add(stream.name)
            silence(stream)
            if exc.errno != errno.EPIPE:
                ran = "The checks ran, but their results were not delivered (exit code 3 unless flagged). " \
                    if self.ran else ""
                self.problems.append(f"Cannot write {what} to {stream.name.strip('<>')}: {exc.strerror or exc}. "
                                     f"{ran}Free some space, or send the output to another file.")
        return None

    def report_problems(self) -> None:
        """One line per problem on stderr (if stderr itself still works)."""
        for problem in self.problems:
            if sys.stderr.name in self.closed:
                return
            try:
                sys.stderr.write(f"gradcheck: error: {problem}\n")
                sys.stderr.flush()
            except OSError:
                self.closed.add(sys.stderr.name)
                silence(sys.stderr)
