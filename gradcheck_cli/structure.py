"""The shape of a Jacobian: elementwise, row-wise (block diagonal over the batch), general.

Structure decides how many evaluations the numerical Jacobian needs: an elementwise
function needs a handful (every coordinate perturbed at once), a row-wise function on
(B, K) needs O(K) (column j perturbed in every row at once), a general one O(B*K). It is
never assumed: :func:`detect` perturbs single rows and columns and requires every other
output to stay bit-for-bit the same, and the runner then checks one random directional
derivative against the structured estimate before trusting it.

A :class:`Pattern` names which coordinates move together (a *group*) and which input
coordinate each output's difference quotient belongs to.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
Index = NDArray[np.intp]

# Structure probes move a row or column by at least this much (times the step scale).
PROBE_STEP = 5e-4
# Probes evaluated per call: about this many input plus output elements (~4 MB), so that
# the probes of a million-input function stay small, reused allocations.
PROBE_ELEMENTS = 1 << 19
ELEMENTWISE = "elementwise"
ROWWISE = "rowwise"
GENERAL = "general"


@dataclass(frozen=True)
class Pattern:
    """Groups of input coordinates perturbed together.

    ``kind`` is elementwise (one group: all coordinates), rowwise (group j: column j of
    every row) or general (group j: coordinate j). ``shape`` is the input (B, K) and
    ``m`` the number of outputs.
    """

    kind: str
    shape: tuple[int, int]
    m: int

    @property
    def n_groups(self) -> int:
        b, k = self.shape
        return {ELEMENTWISE: 1, ROWWISE: k}.get(self.kind, b * k)

    def shifted(self, flat: Array, h: Array, groups: Index, offsets: tuple[float, ...]) -> Array:
        """Inputs ``x + o * delta_g`` (len(offsets), len(groups), N) for each offset o and group g.

        Built as copies of x with only each group's coordinates moved: the same numbers
        as adding a dense perturbation matrix, at the cost of one copy.
        """
        b, k = self.shape
        stack = np.empty((len(offsets), groups.size, flat.size))
        stack[:] = flat
        local = np.arange(groups.size)[:, None]
        if self.kind == ELEMENTWISE:
            coords = np.broadcast_to(np.arange(flat.size), (groups.size, flat.size))
        elif self.kind == ROWWISE:
            coords = np.arange(b)[None, :] * k + groups[:, None]  # (g, B)
        else:
            coords = groups[:, None]
        for o, offset in enumerate(offsets):
            stack[o, local, coords] += offset * h.ravel()[coords]
        return stack

    def out_steps(self, h: Array, groups: Index) -> Array:
        """The step of the coordinate whose quotient each output gives, broadcastable to (len(groups), M)."""
        b, k = self.shape
        flat = h.ravel()
        if self.kind == ELEMENTWISE:
            return flat[None, :]
        if self.kind == ROWWISE and b > 1:
            steps: Array = np.repeat(flat.reshape(b, k)[:, groups].T, self.m // b, axis=1)
            return steps
        column: Array = flat[groups][:, None]
        return column

    def all_members(self, mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """Per group: is ``mask`` (over the N input coordinates) true for all its members?"""
        b, k = self.shape
        if self.kind == ELEMENTWISE:
            return np.array([bool(mask.all())])
        if self.kind == ROWWISE:
            out: NDArray[np.bool_] = np.all(mask.reshape(b, k), axis=0)
            return out
        return mask

    def members(self, groups: Index) -> Index:
        """Flat input coordinates moved by ``groups``."""
        b, k = self.shape
        if self.kind == ELEMENTWISE:
            return np.arange(b * k)
        if self.kind == ROWWISE:
            return (np.arange(b)[None, :] * k + groups[:, None]).ravel()
        return groups


def diagonal_to_blocks(diag: Array) -> Array:
    """(B, K) diagonal entries -> (B * K, K) blocks with zeros off the diagonal."""
    b, k = diag.shape
    blocks = np.zeros((b, k, k))
    blocks[:, np.arange(k), np.arange(k)] = diag
    return blocks.reshape(b * k, k)


def blocks_to_dense(blocks: Array, batch: int) -> Array:
    """(B * K_out, K) blocks -> the (B * K_out, B * K) block-diagonal matrix."""
    k_out = blocks.shape[0] // batch
    k = blocks.shape[1]
    dense = np.zeros((batch * k_out, batch * k))
    for b in range(batch):
        dense[b * k_out:(b + 1) * k_out, b * k:(b + 1) * k] = blocks[b * k_out:(b + 1) * k_out]
    return dense


@functools.lru_cache(maxsize=8)
def separating_sets(n: int) -> NDArray[np.bool_]:
    """Subsets of ``range(n)`` (rows of a boolean matrix) such that for every i != j some
    subset holds j but not i.

    Index j is given the j-th m-bit word with exactly m // 2 ones (combinatorial number
    system), and subset t holds the indices whose word has bit t. Distinct words of equal
    weight are never contained in one another, so bit sets separate every ordered pair;
    m is the least with C(m, m // 2) >= n (Sperner): 23 subsets for a million indices, 13
    for a thousand. Moving each subset once shows every dependence of one index on another
    that moving each index alone (n moves) would show.
    """
    m = 1
    while math.comb(m, m // 2) < n:
        m += 1
    members = np.zeros((m, n), dtype=bool)
    # C(bit, w) by [bit, w]; weight 0 looks up n, which no rank reaches.
    table = np.array([[math.comb(bit, w) if w else n for w in range(m // 2 + 1)] for bit in range(m)])
    for start in range(0, n, 1 << 16):  # blocks that stay in cache
        rank = np.arange(start, min(n, start + (1 << 16)))
        weight = np.full(rank.size, m // 2)
        for bit in range(m - 1, -1, -1):  # greedy unranking, highest position first
            below = table[bit].take(weight)
            take = members[bit, start:start + rank.size]
            np.less_equal(below, rank, out=take)
            rank -= below * take
            weight -= take
    members.flags.writeable = False
    return members


def detect(evaluate: object, x: Array, y0: Array, scale: Array) -> str:
    """Elementwise, rowwise or general, from perturbations of sets of rows and columns.

    ``evaluate`` maps a stack of inputs to flattened outputs (n, M). Moving a set of rows
    must leave every other row's outputs bit-for-bit unchanged (rowwise); moving a set of
    columns (in every row) must also leave every other column unchanged (elementwise).
    The sets separate every pair of indices (:func:`separating_sets`), so an output that
    depends on any other row or column is seen with O(log) evaluations, not one per index.
    """
    if y0.ndim != 2 or x.ndim != 2 or y0.shape[0] != x.shape[0]:
        return GENERAL
    b, k = x.shape
    k_out = y0.shape[1]
    rng = np.random.default_rng(7)
    bump = PROBE_STEP * scale * rng.uniform(1.0, 2.0, x.shape)
    moved = x + bump
    base = y0.reshape(b, -1)

    def moved_rows(sets: NDArray[np.bool_]) -> bool:
        """Does moving each set of rows change any row outside it?"""
        stack = np.where(sets[:, :, None], moved[None], x[None])  # the others bit for bit as they were
        ys = evaluate(stack).reshape(len(sets), b, k_out)  # type: ignore[operator]
        changed = ys != base[None]
        changed[sets] = False
        return bool(changed.any())

    def moved_cols(sets: NDArray[np.bool_]) -> bool:
        """Does moving each set of columns change any output column outside it?"""
        stack = np.where(sets[:, None, :], moved[None], x[None])
        ys = evaluate(stack).reshape(len(sets), b, k)  # type: ignore[operator]
        changed = ys != base[None]
        changed &= ~sets[:, None, :]
        return bool(changed.any())

    # One set first: most functions that are not row-wise (or not elementwise) show it at
    # once, and the remaining sets are only paid for by functions that pass.
    per_call = max(1, PROBE_ELEMENTS // (x.size + y0.size))

    def any_moved(moved: Callable[[NDArray[np.bool_]], bool], sets: NDArray[np.bool_]) -> bool:
        return moved(sets[:1]) or any(moved(sets[i:i + per_call]) for i in range(1, len(sets), per_call))

    if b > 1 and any_moved(moved_rows, separating_sets(b)):
        return GENERAL
    if k_out != k:
        return ROWWISE
    if k > 1 and any_moved(moved_cols, separating_sets(k)):
        return ROWWISE
    return ELEMENTWISE


FORMS = ("diagonal", "blocks", "dense")


def convert(form: str, target: str, array: Array, batch: int) -> Array:
    """Re-express a Jacobian given in ``form`` in the (no coarser) ``target`` form."""
    if form == target:
        return array
    if form == "diagonal":
        array, form = diagonal_to_blocks(array), "blocks"
    if form == target:
        return array
    return blocks_to_dense(array, batch)


def common_form(*forms: str) -> str:
    """The finest form that can hold all of ``forms`` (diagonal < blocks < dense)."""
    return max(forms, key=FORMS.index)


def convert_error(form: str, target: str, error: Array, batch: int, y: Array, scale: Array,
                  eps: float, tiny: float) -> Array:
    """Like :func:`convert`, for error bounds: entries that structure made zero get the bound
    of the probe that found them zero, not 0.

    An output that did not change, bit for bit, when an input moved by PROBE_STEP * scale can
    still depend on it by up to a few ulps of the output over that move (a softmax output
    of 4e-322 hides its dependence below the subnormal spacing).
    """
    if form == target:
        return error
    floor = 4.0 * np.maximum(eps * np.abs(y.ravel()), tiny)  # (M,)
    inverse = 1.0 / (PROBE_STEP * scale)  # (B, K)
    b, k = scale.shape
    k_out = floor.size // b
    if target == "blocks" or form == "diagonal":
        implied = (floor.reshape(b, k_out, 1) * inverse.reshape(b, 1, k)).reshape(b * k_out, k)
        blocks = convert(form, "blocks", error, batch)
        blocks = np.where(implied_mask(form, b, k_out, k), implied, blocks)
        if target == "blocks":
            return blocks
        error, form = blocks, "blocks"
    dense = floor[:, None] * inverse.ravel()[None, :]
    for r in range(b):
        dense[r * k_out:(r + 1) * k_out, r * k:(r + 1) * k] = error[r * k_out:(r + 1) * k_out]
    return dense


def implied_mask(form: str, b: int, k_out: int, k: int) -> NDArray[np.bool_]:
    """Entries of the (B*K_out, K) blocks that the structure of ``form`` leaves implicit."""
    if form != "diagonal":
        return np.zeros((b * k_out, k), dtype=bool)
    return np.tile(~np.eye(k_out, k, dtype=bool), (b, 1))
