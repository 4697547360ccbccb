"""Sample points: seeded random inputs from a domain, targets of a kind, explicit input.

Arrays are always batched ``(B, K)`` float64; an explicit ``--input 2,4,2,1`` is one row.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gradcheck_cli.errors import UsageError

Array = NDArray[np.float64]

DOMAIN_TEXT = {"real": "any real number", "positive": "x > 0", "unit": "0 < x < 1"}
# Random inputs keep at least this far (relative to max(1, |kink|)) from a known kink, so
# that no finite-difference stencil straddles it.
KINK_MARGIN = 0.02
MAX_ELEMENTS = 50_000_000
# ASCII digits only: int() also reads '٤' (Arabic-Indic four), '４' and '4_0', which no
# user means as a size and which would come back in reports spelt differently.
_DIGITS = re.compile(r"[0-9]+")


# A number as a user types it, in ASCII: float() also reads '٣' (Arabic-Indic three), '３',
# '1_000' and surrounding whitespace of any script.
_NUMBER = re.compile(r"[-+]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE)


def ascii_float(value: object) -> float | None:
    """``value`` as a float when it is a number (not a bool) or ASCII text of one, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip(" \t")):
        return float(value)
    return None


def parse_matrix(text: str, option: str = "--input") -> Array:
    """Parse ``"2,4,2,1"`` (one row) or ``"1,2;3,4"`` (rows split by ``;``) into (B, K)."""
    rows = [r.strip() for r in text.strip().strip(";").split(";")]
    if not text.strip() or not all(rows):
        raise UsageError(
            f"{option} expects comma-separated numbers, rows separated by ';' "
            f"(e.g. {option} 2,4,2,1 or {option} '1,2;3,4'); got {text!r}, which has an "
            f"empty row."
        )
    parsed: list[list[float]] = []
    for number, row in enumerate(rows):
        values: list[float] = []
        for item in row.split(","):
            value = ascii_float(item)
            if value is not None:
                values.append(value)
            else:
                raise UsageError(
                    f"{option} expects comma-separated numbers, rows separated by ';'; "
                    f"row {number} has {item.strip()!r}, which is not a number. Write "
                    f"e.g. {option} 2,4,2,1 in ASCII digits, with '-' for minus (quote the value when it "
                    f"has ';' or spaces)."
                )
        parsed.append(values)
    lengths = {len(r) for r in parsed}
    if len(lengths) > 1:
        sizes = ", ".join(str(len(r)) for r in parsed)
        raise UsageError(
            f"{option} rows must all have the same length, but the rows have {sizes} values. "
            f"Give every row (separated by ';') the same number of entries."
        )
    return np.asarray(parsed, dtype=np.float64)


def _dimension(part: object) -> int | None:
    """One entry of a shape: an int (not a bool) or ASCII digits; None for anything else."""
    if isinstance(part, int) and not isinstance(part, bool):
        return part
    if isinstance(part, str) and _DIGITS.fullmatch(part.strip()):
        return int(part)
    return None


def parse_shape(text: str | tuple[Any, ...] | list[Any], option: str = "--shape") -> tuple[int, ...]:
    """Parse ``"B,K"`` (any rank: ``"2,3,8,8"``; ``"K"`` is one row) or a list ``[B, K]``.

    The one check of a shape, for ``--shape`` and a config's ``shape:`` alike (``option``
    names where it came from): ASCII digits, positive, at most MAX_ELEMENTS elements. The
    rank is kept as written; activations and losses read a single ``K`` as one row (1, K).
    """
    parts: list[Any] | None = text.split(",") if isinstance(text, str) else (
        list(text) if isinstance(text, list | tuple) else None)
    dims = [_dimension(p) for p in parts] if parts is not None else []
    sizes = [d for d in dims if d is not None and d >= 1]
    if len(sizes) != len(dims) or not sizes:
        example = f"{option} 4,10" if option.startswith("--") else f"{option}: [4, 10]"
        got = repr(text) if isinstance(text, str) else f"{type(text).__name__} {text!r}"
        raise UsageError(
            f"{option} expects positive integers separated by commas, B,K (batch rows, features) for "
            f"activations and losses or any rank for layers (2,3,8,8), written in ASCII "
            f"digits 0-9, e.g. {example}; got {got}."
        )
    count = math.prod(sizes)
    if count > MAX_ELEMENTS:
        raise UsageError(
            f"{option} {','.join(map(str, sizes))} has {count:,} elements, more than the "
            f"{MAX_ELEMENTS:,} a check can hold. Use a smaller shape."
        )
    return tuple(sizes)


def parse_shapes(values: list[str] | tuple[str, ...], option: str = "--shape"
                 ) -> tuple[tuple[int, ...] | None, tuple[tuple[str, tuple[int, ...]], ...]]:
    """``--shape`` given any number of times: a bare shape (the first input's) and
    ``NAME=shape`` for named arguments of a layer (``--shape w=4,3,3,3``)."""
    bare: tuple[int, ...] | None = None
    named: dict[str, tuple[int, ...]] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if sep:
            name = name.strip()
            if not name.isidentifier() or not name.isascii():
                raise UsageError(f"{option} {value!r}: '{name}' is not an argument name; write NAME=shape, "
                                 f"e.g. {option} w=4,3,3,3.")
            if name in named:
                raise UsageError(f"{option} gives the shape of '{name}' twice ({value!r}); give it once.")
            named[name] = parse_shape(rest, f"{option} {name}=")
        else:
            if bare is not None:
                raise UsageError(f"{option} is given twice without a name ({value!r}); name the argument of "
                                 f"the second, e.g. {option} w=4,3,3,3.")
            bare = parse_shape(value, option)
    return bare, tuple(named.items())


def _away_from_kinks(x: Array, kinks: tuple[float, ...], offset: Array | float = 0.0) -> Array:
    """Push entries of ``x - offset`` that lie within the margin of a kink to its edge."""
    r = x - offset
    for k in kinks:
        margin = KINK_MARGIN * max(1.0, abs(k))
        near = np.abs(r - k) < margin
        r = np.where(near, k + np.where(r >= k, margin, -margin), r)
    return r + offset


def sample_domain(domain: str, shape: tuple[int, int], rng: np.random.Generator,
                  kinks: tuple[float, ...] = ()) -> Array:
    """Draw inputs from ``domain`` ('real', 'positive', 'unit'), away from ``kinks``."""
    if domain == "positive":
        x = np.exp(rng.normal(0.0, 1.0, shape))
    elif domain == "unit":
        x = rng.uniform(0.05, 0.95, shape)
    else:
        x = rng.normal(0.0, 2.0, shape)
    return _away_from_kinks(x, kinks) if kinks else x


def sample_target(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> Array:
    """Draw a target of ``kind``: real, onehot, probabilities, binary or positive."""
    b, k = shape
    if kind == "onehot":
        return np.eye(k)[rng.integers(0, k, b)]
    if kind == "probabilities":
        return rng.dirichlet(np.ones(k), b)
    if kind == "binary":
        return rng.integers(0, 2, shape).astype(np.float64)
    if kind == "positive":
        return np.exp(rng.normal(0.0, 1.0, shape))
    return rng.normal(0.0, 1.0, shape)


def sample_prediction(domain: str, target: Array, rng: np.random.Generator,
                      kinks: tuple[float, ...] = ()) -> Array:
    """Draw predictions for a loss, keeping the residual ``pred - target`` off its kinks."""
    pred = sample_domain(domain, (target.shape[0], target.shape[1]), rng)
    return _away_from_kinks(pred, kinks, offset=target) if kinks else pred


def outside_domain(x: Array, domain: str) -> tuple[int, ...] | None:
    """The first index of ``x`` outside ``domain``, or None when all of it is inside."""
    if domain == "positive":
        bad = ~(x > 0)
    elif domain == "unit":
        bad = ~((x > 0) & (x < 1))
    else:
        bad = ~np.isfinite(x)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.argwhere(bad)[0])


def step_scale(x: Array, domain: str) -> Array:
    """Per-coordinate scale of the finite-difference step.

    ``max(1, |x|)``, as usual, but never more than the distance to the edge of the
    domain: near p = 1e-8 a probability's step must shrink with p or the stencil leaves
    the domain (and the truncation error of log p explodes).
    """
    scale = np.maximum(1.0, np.abs(x))
    if domain == "positive":
        scale = np.minimum(scale, x)
    elif domain == "unit":
        scale = np.minimum(scale, np.minimum(x, 1.0 - x))
    return scale


# --edges: inputs that break naive code. Each pattern is cycled along a row and rolled
# from row to row, so every batch row sees every value.
EDGE_PATTERNS: dict[str, tuple[tuple[str, tuple[float, ...]], ...]] = {
    "real": (("logits of +-1000", (1000.0, -1000.0, 999.5, -999.5, 0.25, 1000.0)),
             ("ties", (2.0, 2.0, 2.0, 2.0)),
             ("saturated", (40.0, -40.0, 20.0, -20.0, 12.0, -12.0))),
    "unit": (("probabilities near 0 and 1", (1e-12, 1.0 - 1e-12, 1e-8, 1.0 - 1e-8, 0.5)),
             ("ties", (0.3, 0.3, 0.3, 0.3)),
             ("probabilities of 1e-4", (1e-4, 1.0 - 1e-4, 1e-6, 1.0 - 1e-6, 0.25))),
    "positive": (("1e-12 and 1e12", (1e-12, 1e12, 1e-6, 1e6, 1.0)),
                 ("ties", (2.0, 2.0, 2.0, 2.0)),
                 ("1e-3 and 1e3", (1e-3, 1e3, 1e-2, 1e2, 0.5))),
}
N_EDGES = 3
EDGE_ROOM = 1024


def edge_input(domain: str, shape: tuple[int, int], index: int, kinks: tuple[float, ...] = (),
               dtype: str = "float64") -> tuple[str, Array]:
    """The ``index``-th edge probe for ``domain``: its label and a (B, K) array.

    Values are rounded to ``dtype`` and kept at least EDGE_ROOM ulps inside the domain, room
    for the difference stencil: in float32, 1 - 1e-12 would round to 1, so it becomes
    1 - 1024 ulps = 1 - 6.1e-5.
    """
    label, pattern = EDGE_PATTERNS.get(domain, EDGE_PATTERNS["real"])[index]
    b, k = shape
    row = np.resize(np.asarray(pattern), k)
    x = np.stack([np.roll(row, i) for i in range(b)])
    x = _away_from_kinks(x, kinks) if kinks else x
    if domain == "unit":
        room = EDGE_ROOM * float(np.finfo(np.dtype(dtype)).eps) / 2.0
        x = np.minimum(x, 1.0 - room)
    return label, x.astype(dtype).astype(np.float64)


# A limit beyond ~31 years is no limit; it also keeps deadline arithmetic and the wait
# calls (whose timeouts overflow near 2**63 ns) finite.
MAX_TIMEOUT = 1e9


def parse_timeout(value: float | str, source: str = "--timeout") -> float | None:
    """Seconds a check may take: a positive number; ``0`` and ``inf`` mean no limit (None).

    One meaning for ``--timeout`` (run, check, ci) and the config key ``timeout:``. Negative
    numbers and NaN are refused: neither is a length of time.
    """
    number = ascii_float(value)
    seconds = math.nan if number is None else number
    if math.isnan(seconds) or seconds < 0:
        raise UsageError(f"{source} expects a number of seconds > 0, or 0 or inf for no limit; got {value!r}.")
    if seconds == 0 or seconds > MAX_TIMEOUT:
        return None
    return seconds
