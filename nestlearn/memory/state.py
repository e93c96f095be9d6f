"""The in-context state of a memory (its own module: the memory core and the write kernels both use it)."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class MemoryState(NamedTuple):
    """The in-context state of one memory, one copy per batch element.

    weights:  the fast weights after every token written so far.
    anchor:   the weights at the start of the current chunk; gradients of the inner objective are
              taken here (NL eq. 90). The same tensors as ``weights`` when ``offset == 0``.
    momentum: one momentum buffer per weight (Titans eq. 13–14), or ``None`` without momentum.
    offset:   tokens already written into the current chunk (0 ≤ offset < chunk_size).
    """

    weights: tuple[Tensor, ...]
    anchor: tuple[Tensor, ...]
    momentum: tuple[Tensor, ...] | None
    offset: int = 0

