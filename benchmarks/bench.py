"""Time gradcheck against torch.autograd.gradcheck and a naive per-coordinate loop.

    python benchmarks/bench.py            # torch columns appear when torch is installed
    python benchmarks/bench.py --quick    # fewer repeats

Every row checks every Jacobian entry (torch default mode, gradcheck, naive loop) except
the "torch fast" column (torch's fast_mode: one random projection). gradcheck is timed
in process through its Python API, on an entry registered with only a VJP, which is
what torch checks, with glibc's allocator tuned as the ``gradcheck`` command does
(``keep_freed_memory``; torch shares the process and the tuning); "process" rows time
whole commands, imports included.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from gradcheck_cli.allocator import keep_freed_memory
from gradcheck_cli.plugins import load_builtins
from gradcheck_cli.registry import Registry, register_activation, register_loss, registering
from gradcheck_cli.registry.activations import sigmoid, softmax, softmax_vjp
from gradcheck_cli.registry.losses import mse, mse_gradient
from gradcheck_cli.runner import CheckOptions, run

try:
    import torch
except ImportError:  # torch is an optional comparison, never a dependency
    torch = None


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def registry() -> Registry:
    reg = Registry()
    load_builtins(reg)
    with registering(reg, "benchmark"):
        register_activation("softmax_vjp", forward=softmax, vjp=softmax_vjp)
        register_activation("sigmoid_d", forward=sigmoid, derivative_of_output=lambda y: y * (1.0 - y))
        register_loss("mse_g", forward=mse, gradient=mse_gradient)
    return reg


def naive(f: Callable[[np.ndarray], np.ndarray], jac: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> bool:
    """The CS231n-style check: one coordinate at a time, then allclose."""
    flat = x.ravel()
    y0 = f(x)
    numeric = np.empty((y0.size, flat.size))
    for j in range(flat.size):
        h = 1e-6 * max(1.0, abs(flat[j]))
        plus, minus = flat.copy(), flat.copy()
        plus[j] += h
        minus[j] -= h
        numeric[:, j] = (f(plus.reshape(x.shape)) - f(minus.reshape(x.shape))).ravel() / (2 * h)
    return bool(np.allclose(jac(x), numeric, rtol=1e-5, atol=1e-8))


def dense_softmax_jacobian(x: np.ndarray) -> np.ndarray:
    s = softmax(x)[0]
    return np.diag(s) - np.outer(s, s)


def torch_case(name: str, shape: tuple[int, int]) -> tuple[Callable[[], object], Callable[[], object]] | None:
    if torch is None:
        return None
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    if name == "softmax":
        fn: Callable[..., object] = lambda v: torch.softmax(v, dim=-1)  # noqa: E731
    elif name == "sigmoid":
        fn = torch.sigmoid
    else:
        target = torch.randn(*shape, dtype=torch.float64)
        fn = lambda v: torch.mean((torch.softmax(v, dim=-1) - target) ** 2)  # noqa: E731
    return (lambda: torch.autograd.gradcheck(fn, (x,)),
            lambda: torch.autograd.gradcheck(fn, (x,), fast_mode=True))


def process_time(cmd: list[str], repeats: int) -> float:
    return best_of(lambda: subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False), repeats)


TORCH_SCRIPT = """
import torch
x = torch.randn(1, 1000, dtype=torch.float64, requires_grad=True)
assert torch.autograd.gradcheck(lambda v: torch.softmax(v, dim=-1), (x,))
"""


def _ms(t: float | None) -> str:
    return "-" if t is None else f"{t * 1000:.1f} ms"


def _ratio(theirs: float | None, ours: float) -> str:
    return "-" if theirs is None else f"{theirs / ours:.1f}x"


def main() -> None:
    # The gradcheck command tunes glibc's allocator this way (gradcheck_cli/allocator.py); the
    # in-process timings below get the same, for gradcheck and torch alike.
    keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repeat per timing")
    args = parser.parse_args()
    repeats = 1 if args.quick else 5
    if torch is not None:
        torch.set_num_threads(2)
    reg = registry()
    cases = [("softmax", "softmax_vjp", (1, n)) for n in (10, 100, 1000, 3000)]
    cases += [("softmax+mse", "softmax_vjp+mse_g", (4, 10))]
    cases += [("sigmoid", "sigmoid_d", (32, n)) for n in (10, 100)]
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()}, Python "
          f"{platform.python_version()}, numpy {np.__version__}" + (f", torch {torch.__version__}" if torch else ""))
    print()
    print("| check | shape | gradcheck | torch default | torch fast | naive loop | vs torch default | vs naive |")
    print("|---|---|---|---|---|---|---|---|")
    for label, spec, shape in cases:
        options = CheckOptions(seed=0, trials=1, shape=shape)
        ours = best_of(lambda spec=spec, options=options: run([spec], options, registry=reg), repeats)
        torch_default = torch_fast = None
        pair = torch_case("softmax+mse" if "+" in label else label, shape)
        if pair is not None and shape[0] * shape[1] <= 3200:
            torch_default = best_of(pair[0], repeats)
            torch_fast = best_of(pair[1], repeats)
        naive_time = None
        if label == "softmax" and shape[1] <= 1000:
            x = np.random.default_rng(0).normal(size=shape)
            naive_time = best_of(lambda x=x: naive(softmax, dense_softmax_jacobian, x), repeats)

        print(f"| {label} | {shape[0]}x{shape[1]} | {_ms(ours)} | {_ms(torch_default)} | {_ms(torch_fast)} | "
              f"{_ms(naive_time)} | {_ratio(torch_default, ours)} | {_ratio(naive_time, ours)} |")
    print()
    # Layers (issue 11): every argument's Jacobian, one trial, at each built-in layer's own shapes.
    print("| layer | arguments | gradcheck |")
    print("|---|---|---|")
    for name in ("dense", "conv2d", "maxpool2d", "batchnorm", "layernorm", "dense+mse"):
        took = best_of(lambda name=name: run([name], CheckOptions(seed=0, trials=1), registry=reg), repeats)
        layer = reg.get(name.split("+")[0]).layer
        shapes = ", ".join(f"{a.name} {'x'.join(map(str, a.shape))}" for a in layer.signature.args) if layer else ""
        print(f"| {name} | {shapes} | {_ms(took)} |")
    print()
    ours_process = process_time([sys.executable, "-m", "gradcheck_cli", "run", "softmax", "--shape", "1,1000",
                                 "--trials", "1"], repeats)
    print(f"whole process, `gradcheck run softmax --shape 1,1000` (jacobian and vjp rows): {ours_process:.2f} s")
    main_cmd = [sys.executable, "-m", "gradcheck_cli", "run", "softmax+mse"]
    runs = sorted(process_time(main_cmd, 1) for _ in range(3 * repeats + 1))
    print(f"whole process, `gradcheck run softmax+mse`: best {runs[0]:.2f} s, median {runs[len(runs) // 2]:.2f} s")
    fast = process_time([sys.executable, "-m", "gradcheck_cli", "run", "softmax", "--shape", "1,1000000",
                         "--fast"], repeats)
    print(f"whole process, `gradcheck run softmax --shape 1,1000000 --fast` (3 trials): {fast:.2f} s")
    fast_one = process_time([sys.executable, "-m", "gradcheck_cli", "run", "softmax", "--shape", "1,1000000",
                             "--fast", "--trials", "1"], repeats)
    print(f"whole process, the same with --trials 1: {fast_one:.2f} s")
    bare = process_time([sys.executable, "-c", "import numpy"], repeats)
    print(f"whole process, `python -c 'import numpy'` (this machine's floor): {bare:.2f} s")
    if torch is not None:
        theirs = process_time([sys.executable, "-c", TORCH_SCRIPT], repeats)
        print(f"whole process, a torch script doing the same softmax n=1000 check: {theirs:.2f} s "
              f"({theirs / ours_process:.1f}x gradcheck)")


if __name__ == "__main__":
    main()
