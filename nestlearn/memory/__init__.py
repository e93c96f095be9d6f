"""Associative memories written in context (the core of nestlearn; imports no other package folder).

    mem = LinearMemory(heads=H, dim_in=D, dim_out=D, rule="dgd", chunk_size=C)
    state = mem.init_state(batch_size=B)
    y = mem.read(state, q)                                  # [B, T, H, Din] -> [B, T, H, Dout]
    state = mem.write(state, k, v, lr=eta, decay=alpha)     # chunk-parallel
    state = mem.write(state, k, v, lr=eta, impl="reference")  # token loop, same semantics
"""

from .base import OBJECTIVES, READS, RULES, Memory
from .bounds import LR_BOUND, stable_eta_max
from .linear import LinearMemory
from .mlp import ACTIVATIONS, MLPMemory
from .schedule import spans, spans_at
from .state import MemoryState

__all__ = ["ACTIVATIONS", "LR_BOUND", "OBJECTIVES", "READS", "RULES", "LinearMemory", "MLPMemory", "Memory",
           "MemoryState", "spans", "spans_at", "stable_eta_max"]
