"""The false-alarm sweep: every built-in activation, loss and ACT+LOSS pair over many seeds.

A row is a *surprise* when its verdict is not what the registry promises:

* a component that involves a deliberately wrong variant (``NAME@VARIANT``) must FAIL:
  ``jacobian`` and ``second_derivative`` when the activation is a variant, ``gradient``
  when the loss is, ``chain`` when either is (the fused formula is the registry's own and
  never wrong);
* every other row must PASS, or be KINK (a valid subgradient at a kink);
* an ERROR row is expected only where a pair's domains do not fit (the activation's
  outputs leave the loss's prediction domain: ``tanh+cross_entropy``), and then only on the
  rows that need the loss (``gradient``, ``chain``, ``fused``), with the message saying so.

Used by tests/oracle/test_sweep.py (a fast sample in the default suite, the whole sweep
behind ``-m slow``) and runnable as a script: ``python tests/oracle/false_alarms.py [SEEDS [STRIDE]]``
(STRIDE: run the pairs holding a wrong variant for every STRIDE-th seed only; default 1).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from gradcheck_cli.plugins import default_registry
from gradcheck_cli.registry import Registry
from gradcheck_cli.results import CheckResult, Verdict
from gradcheck_cli.runner import CheckOptions, run

DOMAIN_MISMATCH = "prediction domain"
LOSS_COMPONENTS = ("gradient", "chain", "fused")


@dataclass(frozen=True)
class Surprise:
    """One row whose verdict is not the expected one."""

    seed: int
    dtype: str
    edges: bool
    check: str
    component: str
    verdict: str
    expected: str
    diagnosis: str

    def __str__(self) -> str:
        flags = f"--seed {self.seed} --dtype {self.dtype}" + (" --edges" if self.edges else "")
        return (f"{self.check} {flags}: {self.component} is {self.verdict}, expected {self.expected}: "
                f"{self.diagnosis[:160]}")


def all_specs(registry: Registry) -> list[str]:
    """Every activation, every loss and every ACT+LOSS pair, variants included."""
    acts = [e.name for e in registry if e.kind == "activation"]
    losses = [e.name for e in registry if e.kind == "loss"]
    return acts + losses + [f"{a}+{loss}" for a in acts for loss in losses]


def expected_verdicts(row: CheckResult, registry: Registry) -> tuple[Verdict, ...]:
    """The verdicts this row may have, from which of its parts are wrong variants."""
    parts = row.check.split("+")
    kinds = {registry.get(p).kind: "@" in p for p in parts}
    wrong_act, wrong_loss = kinds.get("activation", False), kinds.get("loss", False)
    wrong = {"jacobian": wrong_act, "second_derivative": wrong_act, "gradient": wrong_loss,
             "chain": wrong_act or wrong_loss, "fused": False}[row.component]
    allowed = (Verdict.FAIL,) if wrong else (Verdict.PASS, Verdict.KINK)
    if len(parts) == 2 and row.component in LOSS_COMPONENTS and DOMAIN_MISMATCH in row.diagnosis:
        allowed += (Verdict.ERROR,)
    return allowed


def surprises(seed: int, dtype: str, edges: bool, specs: Sequence[str] | None = None,
              registry: Registry | None = None) -> list[Surprise]:
    """The surprising rows of one run of ``specs`` (default: all) at default shape and trials."""
    registry = registry or default_registry()
    specs = all_specs(registry) if specs is None else specs
    result = run(specs, CheckOptions(seed=seed, dtype=dtype, edges=edges), registry=registry)
    found = []
    for row in result.results:
        allowed = expected_verdicts(row, registry)
        if row.verdict not in allowed:
            found.append(Surprise(seed, dtype, edges, row.check, row.component, row.verdict.value,
                                  "/".join(v.value for v in allowed), row.diagnosis))
    return found


def _job(args: tuple[int, str, bool, tuple[str, ...] | None]) -> list[Surprise]:
    seed, dtype, edges, specs = args
    return surprises(seed, dtype, edges, specs)


def _is_variant_pair(spec: str) -> bool:
    return "+" in spec and "@" in spec


def sweep(seeds: Iterable[int], dtypes: Sequence[str] = ("float64", "float32"),
          edges: Sequence[bool] = (False, True), specs: Sequence[str] | None = None,
          processes: int = 1, variant_pair_stride: int = 1) -> list[Surprise]:
    """Every surprise over ``seeds`` x ``dtypes`` x ``edges``, split over ``processes``.

    Pairs holding a wrong variant run only for every ``variant_pair_stride``-th seed. They
    are more than half of the work (their rows fail, so every column is recomputed in
    full), and their correct rows (``softmax@diagonal+mae``'s gradient and fused rows) are
    bit for bit those of the correct pair (``softmax+mae``: same forward, same points),
    which runs for every seed: the stride thins only the check that variants still FAIL.
    """
    chosen = all_specs(default_registry()) if specs is None else list(specs)
    thinned = tuple(s for s in chosen if not _is_variant_pair(s))
    jobs = [(seed, dtype, edge, tuple(chosen) if seed % variant_pair_stride == 0 else thinned)
            for seed in seeds for dtype in dtypes for edge in edges]
    if processes <= 1:
        return [s for job in jobs for s in _job(job)]
    with ProcessPoolExecutor(processes) as pool:
        return [s for found in pool.map(_job, jobs, chunksize=4) for s in found]


def report(found: Sequence[Surprise]) -> str:
    """Every surprise, one per line (seed, spec, component, verdict, diagnosis head)."""
    return f"{len(found)} surprising rows:\n" + "\n".join(str(s) for s in found)


if __name__ == "__main__":
    os.environ.setdefault("GRADCHECK_DISABLE_PLUGIN_AUTOLOAD", "1")
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    stride = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    print(report(sweep(range(count), processes=2, variant_pair_stride=stride)))
