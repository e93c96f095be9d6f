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

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        B, T, D = x.shape
        if state is None:
            state = x.new_zeros(B, self.width - 1, D)
        xx = torch.cat([state, x], dim=1)  # [B, w − 1 + T, D]
        y = F.conv1d(xx.transpose(1, 2), self.weight.unsqueeze(1), groups=D).transpose(1, 2)
        return y, xx[:, xx.shape[1] - (self.width - 1):]
