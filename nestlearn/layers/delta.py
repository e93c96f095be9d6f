"""A linear delta-rule sequence mixer (DeltaNet-style): the memory core's ``LinearMemory`` with
``rule="delta"`` (NL eq. 56–57), used as the linear-recurrent baseline of the synthetic experiments.

    q, k, v = conv(silu(x W_q)), conv(silu(x W_k)), conv(silu(x W_v));  q, k ℓ2-normalised
    M_t = α_t M_{t−1}(I − η′_t k_t k_tᵀ) + η′_t v_t k_tᵀ,   η_t = σ(·), α_t = 1 − σ(·)
    y_t = M₀(q_t)   (the memory at the start of the chunk, as every chunked memory here reads)

then a per-head RMSNorm, an output gate and a projection. ``gated=False`` fixes α = 1 (plain delta rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..memory import LinearMemory, MemoryState
from ..modules import RMSNorm, ShortConv


@dataclass
class DeltaConfig:
    heads: int = 4
    chunk_size: int = 16
    conv_width: int = 4
    gated: bool = True  # data-dependent retention α_t (gated delta rule); False: α = 1

    def validate(self, dim: int) -> None:
        if dim % self.heads:
            raise ValueError(f"delta.heads must divide model.dim (got dim={dim}, heads={self.heads})")
        for name in ("chunk_size", "conv_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"delta.{name} must be a positive int (got {getattr(self, name)})")


class DeltaState(NamedTuple):
    conv: Tensor
    memory: MemoryState


class DeltaRule(nn.Module):
    def __init__(self, dim: int, cfg: DeltaConfig):
        super().__init__()
        cfg.validate(dim)
        self.cfg, self.dim = cfg, dim
        H, Dh = cfg.heads, dim // cfg.heads
        self.heads, self.head_dim = H, Dh
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.conv = ShortConv(3 * dim, cfg.conv_width)
        self.gates = nn.Linear(dim, 2 * H)  # η (learning rate), forget (1 − α)
        with torch.no_grad():
            self.gates.bias.copy_(torch.cat([torch.zeros(H), torch.full((H,), -4.0)]))
        self.memory = LinearMemory(H, Dh, Dh, rule="delta", chunk_size=cfg.chunk_size)
        self.out_norm = RMSNorm(Dh)
        self.gate = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def init_state(self, batch_size: int, ref: Tensor) -> DeltaState:
        return DeltaState(ref.new_zeros(batch_size, self.cfg.conv_width - 1, 3 * self.dim),
                          self.memory.init_state(batch_size))

    def forward(self, x: Tensor, state: DeltaState | None = None) -> tuple[Tensor, DeltaState]:
        B, T, _ = x.shape
        H, Dh = self.heads, self.head_dim
        if state is None:
            state = self.init_state(B, x)
        qkv, conv = self.conv(F.silu(self.qkv(x)), state.conv)
        q, k, v = qkv.view(B, T, 3, H, Dh).unbind(2)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        g_lr, g_forget = self.gates(x).view(B, T, 2, H).unbind(2)
        lr = torch.sigmoid(g_lr)
        alpha = 1 - torch.sigmoid(g_forget) if self.cfg.gated else 1.0
        ms, outs, p = state.memory, [], 0
        while p < T:
            n = min(self.memory.chunk_size - ms.offset, T - p)
            span = slice(p, p + n)
            outs.append(self.memory.read(ms, q[:, span], at="chunk_start"))
            a = alpha[:, span] if isinstance(alpha, Tensor) else alpha
            ms = self.memory.write(ms, k[:, span], v[:, span], lr[:, span], a, validate=False)
            p += n
        o = self.out_norm(torch.cat(outs, dim=1)).reshape(B, T, self.dim)
        y = self.proj(o * F.silu(self.gate(x)))
        return y, DeltaState(conv, ms)
