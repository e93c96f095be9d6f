from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def swiglu(x: Tensor, w_gate: Tensor, w_up: Tensor, w_down: Tensor) -> Tensor:
    """``(silu(x W_gate) ⊙ x W_up) W_down``; weights ``[.., D, Dh]``, ``[.., D, Dh]``, ``[.., Dh, D]``.

    Leading weight dims broadcast against ``x``'s batch (per-sample fast weights are ``[B, D, Dh]``).
    """
    return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down


class SwiGLU(nn.Module):
    """The Transformer++ MLP; weights stored input-major so that ``swiglu`` applies them directly."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_gate = nn.Parameter(nn.init.normal_(torch.empty(dim, hidden), std=dim ** -0.5))
        self.w_up = nn.Parameter(nn.init.normal_(torch.empty(dim, hidden), std=dim ** -0.5))
        self.w_down = nn.Parameter(nn.init.normal_(torch.empty(hidden, dim), std=hidden ** -0.5))

    def forward(self, x: Tensor) -> Tensor:
        return swiglu(x, self.w_gate, self.w_up, self.w_down)

