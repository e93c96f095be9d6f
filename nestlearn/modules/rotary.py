from __future__ import annotations

import torch
from torch import Tensor


def rotary_tables(positions: Tensor, dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos/sin tables ``[T, dim/2]`` for absolute ``positions`` ``[T]`` (RoPE)."""
    inv = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
    ang = positions.to(torch.float64)[:, None] * inv[None]
    return ang.cos(), ang.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs of features of x ``[B, T, H, D]`` by the angles of their positions."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)
