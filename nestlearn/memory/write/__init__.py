"""The write kernel of every memory: chunk-parallel (``chunk.py``) and its token-loop reference
(``naive.py``), with the derivation in ``README.md``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..schedule import slices, spans
from ..state import MemoryState
from . import fused
from .chunk import ChunkCoefficients, ChunkGates, chunk_step, decay_matrix
from .naive import write_reference

if TYPE_CHECKING:
    from ..base import Memory

__all__ = ["ChunkCoefficients", "ChunkGates", "chunk_step", "decay_matrix", "write_chunked", "write_reference"]


def write_chunked(mem: Memory, state: MemoryState, k: Tensor, v: Tensor, eta: Tensor, alpha: Tensor,
                  beta: Tensor | None, q: Tensor | None = None) -> tuple[MemoryState, Tensor | None]:
    """Write ``k, v`` ``[B, H, T, D]`` with gates ``[B, H, T]``, one chunk at a time; with queries ``q``
    ``[B, H, T, Din]`` also read ``y_t = M_t(q_t)`` at every token (the state after writing tokens ≤ t).

    Returns ``(state, y)`` (``y`` ``[B, H, T, Dout]``, or ``None`` without queries).
    Chunks are fixed by absolute position: a state that stopped ``offset`` tokens into a chunk
    first finishes that chunk (gradients still at its anchor), so any split of a sequence into
    pieces gives the same state and reads as one call. The loop runs over chunks, never over tokens.
    Coefficients are built chunk by chunk on purpose: on a CPU the per-chunk tensors stay in
    cache, while building all chunks at once is bound by memory bandwidth (measured slower).
    On a CPU each chunk step (gate products and reads included) runs the fused kernel of ``fused.py``
    when it is available; ``ChunkGates``, ``ChunkCoefficients`` and ``chunk_step`` are its reference.
    """
    C, T = mem.chunk_size, k.shape[-2]
    weights, anchor, mom, offset = state
    use_fused = fused.applies(weights[0])
    reads = []
    for span in slices(spans(T, [C], [offset])):
        n = span.stop - span.start
        a = alpha[..., span]
        bt = None if beta is None else beta[..., span]
        plans = mem._plan(anchor, k[..., span, :], v[..., span, :], eta[..., span], a)
        chunk = _Chunk(plans, weights, mom, (fused.RawGates if use_fused else ChunkGates)(a, bt), a.shape[1],
                       use_fused, at_anchor=offset == 0)
        if q is None:
            for i in range(len(plans)):
                chunk.step(i, None)
        else:
            reads.append(mem._token_read(q[..., span, :], chunk.step))
        weights = tuple(chunk.weights)
        mom = None if mom is None else tuple(chunk.momentum)
        offset = (offset + n) % C
        if offset == 0:
            anchor = weights
    y = None if q is None else (reads[0] if len(reads) == 1 else torch.cat(reads, dim=-2))
    return MemoryState(weights, anchor, mom, offset), y


class _Chunk:
    """One chunk of one memory: ``step(i, Q)`` advances weight matrix i over it (and, with queries
    ``Q``, returns its per-token reads). The gates are shared by every matrix of the memory, per head
    count; the fused kernel forms their products itself."""

    def __init__(self, plans, weights, mom, gates, heads: int, use_fused: bool, at_anchor: bool):
        self.plans, self.old_w, self.old_m, self.use_fused, self.at_anchor = plans, weights, mom, use_fused, at_anchor
        self.heads, self.gates = heads, {heads: gates}
        self.weights: list = [None] * len(plans)
        self.momentum: list = [None] * len(plans)

    def step(self, i: int, Q: Tensor | None) -> Tensor | None:
        K, W, b, KS = self.plans[i]
        h = K.shape[1]
        if h not in self.gates:  # a grouped memory's per-memory weights: [B, H·G, …]
            self.gates[h] = self.gates[self.heads].repeat_heads(h // self.heads)
        m = None if self.old_m is None else self.old_m[i]
        KS = KS if self.at_anchor else None  # K @ anchor equals K @ weights only at a chunk start
        if self.use_fused:
            S, m, Y = fused.chunk_step_fused(self.old_w[i], m, W, K, self.gates[h], b, KS, Q)
        else:
            S, m, Y = chunk_step(self.old_w[i], m, W, ChunkCoefficients(K, self.gates[h], b), KS, Q)
        self.weights[i], self.momentum[i] = S, m
        return Y
