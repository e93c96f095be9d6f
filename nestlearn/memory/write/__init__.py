"""The write kernel of every memory: chunk-parallel (``chunk.py``) and its token-loop reference
(``naive.py``), with the derivation in ``README.md``."""

from __future__ import annotations

import torch
from torch import Tensor

from ..base import Memory, MemoryState
from . import fused
from .chunk import ChunkCoefficients, ChunkGates, chunk_step, decay_matrix
from .naive import write_reference

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
    pos, reads = 0, []
    while pos < T:
        n = min(C - offset, T - pos)
        span = slice(pos, pos + n)
        a = alpha[..., span]
        bt = None if beta is None else beta[..., span]
        plans = mem._plan(anchor, k[..., span, :], v[..., span, :], eta[..., span], a)
        heads = a.shape[1]
        # shared by every matrix of the memory, per head count; the kernel forms the products itself
        gates = {heads: (fused.RawGates if use_fused else ChunkGates)(a, bt)}
        new_w: list = [None] * len(plans)
        new_m: list = [None] * len(plans)

        def step(i: int, Q: Tensor | None, plans=plans, gates=gates, new_w=new_w, new_m=new_m, offset=offset):
            """Matrix i over this chunk; with queries, its per-token reads."""
            K, W, b, KS = plans[i]
            if K.shape[1] not in gates:  # a grouped memory's per-memory weights: [B, H·G, …]
                gates[K.shape[1]] = gates[heads].repeat_heads(K.shape[1] // heads)
            m_i = None if mom is None else mom[i]
            KS = KS if offset == 0 else None  # K @ anchor equals K @ weights only at a chunk start
            if use_fused:
                new_w[i], new_m[i], Y = fused.chunk_step_fused(weights[i], m_i, W, K, gates[K.shape[1]], b, KS, Q)
            else:
                co = ChunkCoefficients(K, gates[K.shape[1]], b)
                new_w[i], new_m[i], Y = chunk_step(weights[i], m_i, W, co, KS, Q)
            return Y

        if q is None:
            for i in range(len(plans)):
                step(i, None)
        else:
            reads.append(mem._token_read(q[..., span, :], step))
        weights = tuple(new_w)
        mom = None if mom is None else tuple(new_m)
        offset = (offset + n) % C
        if offset == 0:
            anchor = weights
        pos += n
    y = None if q is None else (reads[0] if len(reads) == 1 else torch.cat(reads, dim=-2))
    return MemoryState(weights, anchor, mom, offset), y
