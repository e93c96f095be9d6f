"""The chunk schedule: where a run of tokens is cut so that every piece lies inside one chunk of every
clock that reads it. A pure function of positions and chunk sizes, used by the memory core, the
layers (two memories with their own chunks) and the model (the CMS driver's segments)."""

from __future__ import annotations

from collections.abc import Sequence


def spans(length: int, chunk_sizes: Sequence[int], offsets: Sequence[int]) -> list[int]:
    """The sizes of the pieces of ``length`` tokens, cut at every chunk boundary of every clock.

    Clock j has chunks of ``chunk_sizes[j]`` tokens and is ``offsets[j]`` tokens into its current one
    (0 ≤ offset < chunk size). Each piece ends at the first boundary of any clock, or at the end of
    the run; the sizes sum to ``length``."""
    if length < 0:
        raise ValueError(f"length must be ≥ 0 (got {length})")
    if len(chunk_sizes) != len(offsets) or not chunk_sizes:
        raise ValueError(f"one offset per chunk size (got {list(chunk_sizes)} and {list(offsets)})")
    for c, o in zip(chunk_sizes, offsets, strict=True):
        if c < 1 or not 0 <= o < c:
            raise ValueError(f"chunk size {c} with offset {o}: need chunk size ≥ 1 and 0 ≤ offset < chunk size")
    out, offs, p = [], list(offsets), 0
    while p < length:
        n = min(min(c - o for c, o in zip(chunk_sizes, offs, strict=True)), length - p)
        out.append(n)
        offs = [(o + n) % c for c, o in zip(chunk_sizes, offs, strict=True)]
        p += n
    return out


def spans_at(pos: int, length: int, *chunk_sizes: int) -> list[int]:
    """:func:`spans` for clocks whose chunks start at absolute positions 0, C, 2C, …: the run starts at
    absolute position ``pos``."""
    return spans(length, chunk_sizes, [pos % c for c in chunk_sizes])


def slices(sizes: Sequence[int]) -> list[slice]:
    """Consecutive slices of the given sizes, from 0."""
    out, p = [], 0
    for n in sizes:
        out.append(slice(p, p + n))
        p += n
    return out


__all__ = ["slices", "spans", "spans_at"]
