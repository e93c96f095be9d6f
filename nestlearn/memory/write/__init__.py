"""The write kernel of every memory: chunk-parallel (``chunk.py``) and its token-loop reference
(``naive.py``), with the derivation in ``README.md``."""

from __future__ import annotations

from torch import Tensor

from ..base import Memory, MemoryState
from . import fused
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
    On a CPU each chunk step (gate products included) runs the fused kernel of ``fused.py`` when
    it is available; ``ChunkGates``, ``ChunkCoefficients`` and ``chunk_step`` are its reference.
    """
    C, T = mem.chunk_size, k.shape[-2]
    weights, anchor, mom, offset = state
    use_fused = fused.applies(weights[0])
    pos = 0
    while pos < T:
        n = min(C - offset, T - pos)
        span = slice(pos, pos + n)
        a = alpha[..., span]
        bt = None if beta is None else beta[..., span]
        plans = mem._plan(anchor, k[..., span, :], v[..., span, :], eta[..., span], a)
        heads = a.shape[1]
        # shared by every matrix of the memory, per head count; the kernel forms the products itself
        gates = {heads: (fused.RawGates if use_fused else ChunkGates)(a, bt)}
        new_w, new_m = [], []
        for i, (K, W, b, KS) in enumerate(plans):
            if K.shape[1] not in gates:  # a grouped memory's per-memory weights: [B, H·G, …]
                gates[K.shape[1]] = gates[heads].repeat_heads(K.shape[1] // heads)
            m_i = None if mom is None else mom[i]
            KS = KS if offset == 0 else None  # K @ anchor equals K @ weights only at a chunk start
            if use_fused:
                S, m = fused.chunk_step_fused(weights[i], m_i, W, K, gates[K.shape[1]], b, KS)
            else:
                S, m = chunk_step(weights[i], m_i, W, ChunkCoefficients(K, gates[K.shape[1]], b), KS)
            new_w.append(S)
            new_m.append(m)
        weights = tuple(new_w)
        mom = None if mom is None else tuple(new_m)
        offset = (offset + n) % C
        if offset == 0:
            anchor = weights
        pos += n
    return MemoryState(weights, anchor, mom, offset)
