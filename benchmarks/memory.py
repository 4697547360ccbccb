"""Peak memory (max RSS) of ``gradcheck run`` commands: against --trials, and against size.

    python benchmarks/memory.py trials    # peak vs --trials: must stay flat
    python benchmarks/memory.py sizes     # peak vs shape, beside gradcheck's own estimate

Each command runs in a fresh process; its peak resident memory comes from ``wait4``
(Linux, macOS). ``sizes`` prints :func:`gradcheck_cli.resources.estimate_bytes` beside
each measurement: the estimate must stay above the measurement (it refuses checks that
cannot fit, so it errs high).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

TRIALS = (5, 20, 80)
TRIAL_CASES = [
    ["sigmoid+mse", "--shape", "1000,1000", "--fast"],
    ["softmax+mse", "--shape", "32,200"],
    ["softmax+cross_entropy", "--shape", "32,200", "--edges"],
]


def peak(args: list[str]) -> tuple[float, float]:
    """Max RSS in MB and wall time in s of ``gradcheck ARGS`` in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gradcheck_cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KB on Linux
    return usage.ru_maxrss * scale / 1e6, time.perf_counter() - start


def trials_table() -> None:
    print("| command | " + " | ".join(f"--trials {t}" for t in TRIALS) + " |")
    print("|---|" + "---|" * len(TRIALS))
    for case in TRIAL_CASES:
        cells = []
        for t in TRIALS:
            mb, seconds = peak(["run", *case, "--trials", str(t)])
            cells.append(f"{mb:,.0f} MB ({seconds:.0f} s)")
        print(f"| `gradcheck run {' '.join(case)}` | " + " | ".join(cells) + " |", flush=True)


# Every-entry checks of a loss (and a pair's composite) are quadratic in time: measured at 50,000.
# Streamed row-wise checks (softmax above 40M Jacobian entries) are measured with --timeout.
SIZE_CASES = [
    ("sigmoid", ["1,1000000", "1,4000000"], []),
    ("relu", ["1,4000000"], []),
    ("sigmoid", ["1,1000000", "1,4000000"], ["--fast"]),
    ("softmax", ["64,300", "32,1000", "1,3000"], []),
    ("softmax", ["4,10000"], ["--timeout", "60"]),
    ("softmax", ["1,1000000", "1,4000000"], ["--fast"]),
    ("mse", ["1,20000", "1,50000"], []),
    ("softmax+mse", ["64,300"], []),
    ("sigmoid+mse", ["1,50000"], []),
    ("softmax+cross_entropy", ["1,1000000", "1,4000000"], ["--fast"]),
]


def sizes_table() -> None:
    from gradcheck_cli.plugins import default_registry
    from gradcheck_cli.resources import estimate_bytes
    from gradcheck_cli.runner import CheckOptions, parse_spec

    registry = default_registry()
    print("| spec | shape | options | peak RSS | estimate | estimate / peak |")
    print("|---|---|---|---|---|---|")
    for spec, shapes, extra in SIZE_CASES:
        for shape in shapes:
            b, k = (int(v) for v in shape.split(","))
            options = CheckOptions(trials=1, shape=(b, k), fast="--fast" in extra)
            estimate = estimate_bytes(parse_spec(spec, registry), options) / 1e6
            mb, seconds = peak(["run", spec, "--shape", shape, "--trials", "1", *extra])
            print(f"| {spec} | {shape} | {' '.join(extra)} | {mb:,.0f} MB ({seconds:.0f} s) | {estimate:,.0f} MB | "
                  f"{estimate / mb:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=("trials", "sizes"))
    args = parser.parse_args()
    trials_table() if args.table == "trials" else sizes_table()


if __name__ == "__main__":
    main()
