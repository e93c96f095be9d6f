"""DeltaNet / Gated DeltaNet as a sequence mixer: the memory core's ``LinearMemory`` with
``rule="delta"`` and DeltaNet's write strength (``delta_lr="direct"``), the linear-recurrent baseline of
the synthetic experiments.

    q, k, v = conv(silu(x W_q)), conv(silu(x W_k)), conv(silu(x W_v));  q, k ℓ2-normalised
    M_t = α_t M_{t−1}(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ,   β_t = β_max · σ(·), α_t = 1 − σ(·)
    y_t = M_t(q_t)   (read="token"; "chunk_start" reads the memory at the start of the chunk, D21)

then a per-head RMSNorm, an output gate and a projection. ``gated=False`` fixes α = 1 (DeltaNet).
``beta_max = 1`` is DeltaNet's range; ``beta_max = 2`` lets the factor I − β k kᵀ reach negative
eigenvalues along k (state tracking: Grazzi et al., ICLR 2025).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..memory import LR_BOUND, READS, LinearMemory
from ..modules import RMSNorm
from .titans import ConvQKV, TitansState


@dataclass
class DeltaConfig:
    heads: int = 4
    chunk_size: int = 16
    conv_width: int = 4
    gated: bool = True  # data-dependent retention α_t (gated delta rule); False: α = 1
    beta_max: float = 1.0  # β = beta_max · σ(·): 1 as DeltaNet, up to 2 for negative eigenvalues
    read: str = "token"  # "token" (y_t = M_t(q_t)) or "chunk_start" (D21)

    def validate(self, dim: int) -> None:
        if dim % self.heads:
            raise ValueError(f"delta.heads must divide model.dim (got dim={dim}, heads={self.heads})")
        if not 0 < self.beta_max <= LR_BOUND:
            raise ValueError(f"delta.beta_max must be in (0, {LR_BOUND:g}] (got {self.beta_max}): past {LR_BOUND:g} "
                             f"the factor I − β k kᵀ has an eigenvalue below −1 along a unit key and the memory "
                             f"expands")
        if self.read not in READS:
            raise ValueError(f"delta.read must be one of {READS} (got {self.read!r})")
        for name in ("chunk_size", "conv_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"delta.{name} must be a positive int (got {getattr(self, name)})")


DeltaState = TitansState  # (conv, memory)


class DeltaRule(ConvQKV):
    def __init__(self, dim: int, cfg: DeltaConfig):
        super().__init__(dim, cfg)
        H, Dh = self.heads, self.head_dim
        self.gates = nn.Linear(dim, 2 * H)  # β (write strength), forget (1 − α)
        with torch.no_grad():
            self.gates.bias.copy_(torch.cat([torch.zeros(H), torch.full((H,), -4.0)]))
        self.memory = LinearMemory(H, Dh, Dh, rule="delta", chunk_size=cfg.chunk_size, delta_lr="direct")  # D25
        self.out_norm = RMSNorm(Dh)
        self.gate = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def init_state(self, batch_size: int, ref: Tensor) -> DeltaState:
        return DeltaState(self.blank_conv(batch_size, ref), self.memory.init_state(batch_size))

    def forward(self, x: Tensor, state: DeltaState | None = None) -> tuple[Tensor, DeltaState]:
        B, T, _ = x.shape
        H = self.heads
        if state is None:
            state = self.init_state(B, x)
        q, k, v, conv = self.project(x, state.conv)
        g_lr, g_forget = self.gates(x).view(B, T, 2, H).unbind(2)
        beta = self.cfg.beta_max * torch.sigmoid(g_lr)
        alpha = 1 - torch.sigmoid(g_forget) if self.cfg.gated else 1.0
        o, ms = self.memory.read_write(state.memory, q, k, v, beta, alpha, read=self.cfg.read, validate=False)
        return self.output(o, x), DeltaState(conv, ms)
