"""The write kernel of every memory: chunk-parallel (``chunk.py``) and its token-loop reference
(``naive.py``), with the derivation in ``README.md``."""

from __future__ import annotations

from torch import Tensor

from ..base import Memory, MemoryState
from .chunk import ChunkCoefficients, ChunkGates, chunk_step, decay_matrix
from .naive import write_reference

__all__ = ["ChunkCoefficients", "ChunkGates", "chunk_step", "decay_matrix", "write_chunked", "write_reference"]


def write_chunked(mem: Memory, state: MemoryState, k: Tensor, v: Tensor, eta: Tensor, alpha: Tensor,
                  beta: Tensor | None) -> MemoryState:
    """Write ``k, v`` ``[B, H, T, D]`` with gates ``[B, H, T]``, one chunk at a time.

    Chunks are fixed by absolute position: a state that stopped ``offset`` tokens into a chunk
    first finishes that chunk (gradients still at its anchor), so any split of a sequence into
    pieces gives the same state as one call. The loop runs over chunks, never over tokens.
    Coefficients are built chunk by chunk on purpose: on a CPU the per-chunk tensors stay in
    cache, while building all chunks at once is bound by memory bandwidth (measured slower).
    """
    C, T = mem.chunk_size, k.shape[-2]
    weights, anchor, mom, offset = state
    pos = 0
    while pos < T:
        n = min(C - offset, T - pos)
        span = slice(pos, pos + n)
        a = alpha[..., span]
        bt = None if beta is None else beta[..., span]
        plans = mem._plan(anchor, k[..., span, :], v[..., span, :], eta[..., span], a)
        gates = {a.shape[1]: ChunkGates(a, bt)}  # shared by every matrix of the memory, per head count
        new_w, new_m = [], []
        for i, (K, W, b, KS) in enumerate(plans):
            if K.shape[1] not in gates:  # a grouped memory's per-memory weights: [B, H·G, …]
                gates[K.shape[1]] = gates[a.shape[1]].repeat_heads(K.shape[1] // a.shape[1])
            # K @ anchor equals K @ weights only at a chunk start
            S, m = chunk_step(weights[i], None if mom is None else mom[i], W,
                              ChunkCoefficients(K, gates[K.shape[1]], b), KS if offset == 0 else None)
            new_w.append(S)
            new_m.append(m)
        weights = tuple(new_w)
        mom = None if mom is None else tuple(new_m)
        offset = (offset + n) % C
        if offset == 0:
            anchor = weights
        pos += n
    return MemoryState(weights, anchor, mom, offset)
