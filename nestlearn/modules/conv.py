from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ShortConv(nn.Module):
    """Causal depthwise convolution of width ``w`` over time (NL §8.3: local convolutions, width 4).

    ``forward(x, state) -> (y, state)`` with x ``[B, T, D]``; the state holds the last ``w − 1``
    inputs (zeros at the start of a sequence), so pieces with the carried state equal one call.
    """

    def __init__(self, dim: int, width: int = 4):
        super().__init__()
        self.width = width
        self.weight = nn.Parameter(torch.zeros(dim, width))
        with torch.no_grad():
            self.weight[:, -1] = 1.0  # starts as the identity: the current token passes through
            self.weight.add_(torch.randn_like(self.weight) * 0.02)

    def forward(self, x: Tensor, state: Tensor | None = None, impl: str = "shift") -> tuple[Tensor, Tensor]:
        B, T, D = x.shape
        if state is None:
            state = x.new_zeros(B, self.width - 1, D)
        xx = torch.cat([state, x], dim=1)  # [B, w − 1 + T, D]
        return causal_conv(xx, self.weight, impl), xx[:, xx.shape[1] - (self.width - 1):]


def causal_conv(xx: Tensor, weight: Tensor, impl: str = "shift") -> Tensor:
    """``y[:, t] = Σ_i weight[:, i] · xx[:, t + i]`` for ``xx [B, w − 1 + T, D]``, ``weight [D, w]``: the
    depthwise convolution over time. ``impl="shift"`` sums ``w`` shifted products (elementwise: on a CPU 2–7×
    faster forward and backward than a grouped ``conv1d`` at the shapes of the models here);
    ``impl="reference"`` is ``F.conv1d`` with ``groups = D``. The same numbers (tested)."""
    D, w = weight.shape
    T = xx.shape[1] - (w - 1)
    if impl == "reference":
        return F.conv1d(xx.transpose(1, 2), weight.unsqueeze(1), groups=D).transpose(1, 2)
    if impl != "shift":
        raise ValueError(f"impl must be 'shift' or 'reference' (got {impl!r})")
    y = xx[:, :T] * weight[:, 0]
    for i in range(1, w):
        y = y + xx[:, i:i + T] * weight[:, i]
    return y
