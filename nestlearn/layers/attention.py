"""Causal softmax attention with RoPE (or with no position signal, ``rope=False``); the KV cache is explicit state."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..modules import apply_rotary, rotary_tables


class KVCache(NamedTuple):
    """Keys and values of the tokens seen so far (the last ``window`` of them with a sliding window),
    rotated already, ``[B, L, H, D]``; ``pos`` is the absolute position of the next token."""

    k: Tensor
    v: Tensor
    pos: int


class Attention(nn.Module):
    """Multi-head causal attention (SDPA), optional sliding window; ``forward(x, state) -> (y, state)``.
    ``rope=False`` leaves queries and keys unrotated: the attention has no position signal but its causal mask
    (NoPE)."""

    def __init__(self, dim: int, heads: int, max_seq_len: int, window: int | None = None,
                 rope_base: float = 10000.0, rope: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim must be divisible by heads (got dim={dim}, heads={heads})")
        if window is not None and window < 1:
            raise ValueError(f"window must be a positive int or None (got {window})")
        self.heads, self.head_dim = heads, dim // heads
        self.max_seq_len, self.window, self.rope_base, self.rope = max_seq_len, window, rope_base, rope
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def init_state(self, batch_size: int, ref: Tensor) -> KVCache:
        empty = ref.new_zeros(batch_size, 0, self.heads, self.head_dim)
        return KVCache(empty, empty, 0)

    def forward(self, x: Tensor, state: KVCache | None = None, prefix: Tensor | None = None
                ) -> tuple[Tensor, KVCache]:
        """``prefix`` ``[P, dim]``: tokens every position attends to, outside the window and without
        rotation (Titans' persistent memory, eq. 19); they are parameters, not state."""
        B, T, _ = x.shape
        pos = 0 if state is None else state.pos
        if pos + T > self.max_seq_len:
            raise ValueError(f"sequence reaches position {pos + T}, past the attention's positional limit "
                             f"max_seq_len={self.max_seq_len}; raise model.max_seq_len or use a shorter input")
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).unbind(2)
        if self.rope:
            cos, sin = rotary_tables(torch.arange(pos, pos + T, device=x.device), self.head_dim, self.rope_base)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if state is not None:
            k = torch.cat([state.k, k], dim=1)
            v = torch.cat([state.v, v], dim=1)
        L = k.shape[1]
        qpos = torch.arange(pos, pos + T, device=x.device)[:, None]
        kpos = torch.arange(pos + T - L, pos + T, device=x.device)[None, :]
        allowed = kpos <= qpos
        if self.window is not None:
            allowed = allowed & (qpos - kpos < self.window)
        k_all, v_all = k, v
        if prefix is not None and prefix.shape[0]:
            _, kp, vp = self.qkv(prefix).view(1, -1, 3, self.heads, self.head_dim).expand(B, -1, -1, -1, -1).unbind(2)
            k_all, v_all = torch.cat([kp, k], dim=1), torch.cat([vp, v], dim=1)
            allowed = torch.cat([allowed.new_ones(T, prefix.shape[0]), allowed], dim=1)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k_all.transpose(1, 2), v_all.transpose(1, 2),
                                           attn_mask=allowed)
        y = self.proj(y.transpose(1, 2).reshape(B, T, -1))
        if self.window is not None:
            k, v = k[:, -self.window:], v[:, -self.window:]
        return y, KVCache(k, v, pos + T)
