"""Memory: what a check will need, what the machine has, and a hard cap as a safety net.

A check's arrays grow with its shape (an every-entry Jacobian of a row-wise function has
B*K*K entries; each finite-difference stencil evaluates stacks of perturbed copies of the
input), so a large ``--shape`` can ask for more memory than the machine has, and the
kernel's OOM killer then takes whatever process it likes. Three defences:

- :func:`estimate_bytes`, from what is known before running (shape, ``--fast``, method,
  the kind of spec and its conventions), measured at several sizes and kept above the
  measured peaks (``python benchmarks/memory.py sizes`` prints both);
- :func:`check_fits`, called by ``CheckOptions.validate`` with the spec: a check whose
  estimate exceeds :func:`available_memory` is refused up front, exit 2;
- :func:`cap_memory`, for a check's own process: allocations past the cap raise
  ``MemoryError``, which becomes an ERROR row (:func:`out_of_memory`), not a killed machine.

``GRADCHECK_MEMORY_LIMIT`` (bytes, or a number with K/M/G/T, e.g. ``4G``) replaces the
measured available memory: for a CI machine shared with other jobs, and for tests.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

from gradcheck_cli.errors import UsageError
from gradcheck_cli.registry import table

if TYPE_CHECKING:
    from gradcheck_cli.runner import CheckOptions, Spec

ENV_LIMIT = "GRADCHECK_MEMORY_LIMIT"
GB = 1e9
# Bytes of a float64 entry: the checker's own arrays are float64 whatever --dtype is.
ENTRY = 8
# The interpreter, numpy and gradcheck themselves (measured: ~60 MB; rounded up).
BASE_BYTES = 150_000_000
# Per input element (B*K), in float64 entries, about 1.4x the largest peak measured for
# each path at 1-4 million elements (50,000 for losses, whose every-entry check is
# quadratic in time), see benchmarks/memory.py sizes: perturbed stacks of the input, their
# outputs, noise probes, the estimate with its error bound, the analytic side. Measured:
# --fast 24-29, elementwise every-entry 51-75 (75 with a second derivative), loss 23,
# streamed row-wise at K = 1e6-4e6 125-220 (early in the run: it cannot finish at that size).
PER_ELEMENT = {"fast": 40, "elementwise": 100, "loss": 40, "streamed": 250}
# Per Jacobian entry held in memory (B*K_out*K for a row-wise activation): value, error
# bound, the analytic side, their conversions, the comparison's temporaries. Measured 4.4-8.
PER_ENTRY = 12
# Row-wise Jacobians above this many entries are compared in column chunks
# (gradcheck_cli.stream.STREAM_LIMIT, repeated here so that validating options does not
# import the numerical modules), in memory bounded by the chunk size plus the per-element term.
STREAM_LIMIT = 40_000_000
STREAM_CHUNKS_BYTES = 1_000_000_000
_ELEMENTWISE = table.ELEMENTWISE


def estimate_bytes(spec: Spec, options: CheckOptions) -> int:
    """A conservative estimate of the peak memory of checking ``spec`` with ``options``.

    The components of a spec run trial by trial and share one trial's arrays, so the peak
    does not depend on ``--trials``; it is the interpreter plus what the components of one
    trial hold together. An activation whose conventions are not elementwise is assumed
    row-wise with as many outputs as inputs (softmax): its Jacobian is B*K*K entries, in
    memory up to the streaming limit, compared in column chunks above it.
    """
    b, k = options.point_shape
    n = b * k
    total = 0
    if options.fast:  # a pair's components run one after another: measured no more than one
        return BASE_BYTES + PER_ELEMENT["fast"] * n * ENTRY
    if spec.activation is not None:
        conventions = spec.activation.conventions
        if all(c in _ELEMENTWISE for c in conventions):
            total += PER_ELEMENT["elementwise"] * n * ENTRY
        else:
            entries = n * k
            if entries <= STREAM_LIMIT or "jacobian" in conventions and len(conventions) == 1:
                total += PER_ENTRY * entries * ENTRY + PER_ELEMENT["elementwise"] * n * ENTRY
            else:
                total += STREAM_CHUNKS_BYTES + PER_ELEMENT["streamed"] * n * ENTRY
    if spec.loss is not None:
        # The loss gradient, and for a pair the composite L(A(z)) beside it: each a 1 x n Jacobian.
        total += PER_ELEMENT["loss"] * n * ENTRY * (2 if spec.activation is not None else 1)
    if options.method == "richardson":
        total = total * 3 // 2  # more stencil points per column, held together
    return BASE_BYTES + total


def available_memory() -> int:
    """Bytes this process may still allocate before the machine (or its cgroup) runs out.

    ``GRADCHECK_MEMORY_LIMIT`` when set; on Linux, MemAvailable from /proc/meminfo, or the
    room left under a cgroup's memory limit when that is lower; elsewhere physical memory.
    """
    return _available()[0]


def _available() -> tuple[int, str]:
    """Available bytes, and where the figure comes from (for messages)."""
    configured = os.environ.get(ENV_LIMIT, "").strip()
    if configured:
        return parse_size(configured), ENV_LIMIT
    found: list[tuple[int, str]] = []
    meminfo = _meminfo_available()
    if meminfo is not None:
        found.append((meminfo, "MemAvailable in /proc/meminfo"))
    room = _cgroup_room()
    if room is not None:
        found.append((room, "room under the cgroup's memory limit"))
    if found:
        return min(found)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"
    except (ValueError, OSError, AttributeError):  # Windows: no sysconf
        return sys.maxsize, "unknown (no limit assumed)"


def parse_size(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"1.5GB"`` or a number of bytes -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*", text, re.IGNORECASE)
    if match is None:
        raise UsageError(f"{ENV_LIMIT} must be a number of bytes, optionally with K, M, G or T (e.g. 4G); "
                         f"got {text!r}. Set it to the memory gradcheck may use, or unset it.")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2 or v1), if it has a limit."""
    rooms = []
    for folder in _cgroup_folders():
        for limit_file, usage_file in (("memory.max", "memory.current"),
                                       ("memory.limit_in_bytes", "memory.usage_in_bytes")):
            limit, usage = _read_int(os.path.join(folder, limit_file)), _read_int(os.path.join(folder, usage_file))
            if limit is not None and usage is not None and limit < 1 << 60:
                rooms.append(max(0, limit - usage))
    return min(rooms) if rooms else None


def _cgroup_folders() -> list[str]:
    folders = ["/sys/fs/cgroup", "/sys/fs/cgroup/memory"]
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as handle:
            for line in handle:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == "":
                    folders.append("/sys/fs/cgroup" + path)
                elif "memory" in controllers.split(","):
                    folders.append("/sys/fs/cgroup/memory" + path)
    except (OSError, ValueError):
        pass
    return list(dict.fromkeys(os.path.normpath(f) for f in folders))


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def check_fits(spec: Spec, options: CheckOptions) -> None:
    """Refuse, before anything runs, a check whose estimated memory exceeds what is available."""
    needed = estimate_bytes(spec, options)
    available, source = _available()
    if needed <= available:
        return
    b, k = options.point_shape
    advice = "Give a smaller shape (--shape, or shape: in a config)"
    if not options.fast:
        from dataclasses import replace

        fast = estimate_bytes(spec, replace(options, fast=True))
        if fast <= available:
            advice += (f", or check random projections with --fast (fast: true in a config; about "
                       f"{fast / GB:.1f} GB here)")
    raise UsageError(
        f"Checking '{spec.text}' at shape {b}x{k}{' with --fast' if options.fast else ''} needs about "
        f"{needed / GB:.1f} GB of memory by gradcheck's estimate, but {available / GB:.1f} GB is available "
        f"({source}); nothing was checked. {advice}. Set {ENV_LIMIT} (e.g. {ENV_LIMIT}=64G) to "
        f"override the available figure.")


def cap_memory(limit_bytes: int) -> None:
    """Make allocations past ``limit_bytes`` fail with MemoryError in this process.

    Linux: the soft RLIMIT_DATA, which counts anonymous mmaps (numpy's large arrays) since
    Linux 4.7, so a check that outgrows its estimate gets a MemoryError instead of the
    kernel's OOM killer. Elsewhere nothing is capped. Never raises the hard limit.
    """
    if not sys.platform.startswith("linux"):
        return
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = limit_bytes if hard == resource.RLIM_INFINITY else min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def memory_cap() -> int | None:
    """The cap :func:`cap_memory` set in this process (None when there is none)."""
    if not sys.platform.startswith("linux"):
        return None
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def out_of_memory(exc: BaseException) -> str | None:
    """The ERROR row's message when ``exc`` is (or was caused by) running out of memory, else None."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, MemoryError):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    cap = memory_cap()
    limit = f"more than {cap / GB:.1f} GB" if cap is not None else "more memory than the machine had"
    detail = f" ({seen})" if str(seen) else ""
    return (f"ran out of memory: the check needed {limit}{detail}. Give a smaller --shape, or --fast "
            f"(random projections, memory linear in the input size)")
