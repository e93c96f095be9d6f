"""The matrix memory ``M(k) = M k`` (stored as ``S = Mᵀ``, ``[H, Din, Dout]`` per head)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Memory

DELTA_LRS = ("implicit", "direct")


class LinearMemory(Memory):
    """A matrix written in context: linear attention / DeltaNet / DGD memories.

    Rules (per token t, gradient at the chunk-start state M₀, NL eq. 90):
      gd:    M_t = α_t M_{t−1} − η_t ∇L(M₀; k_t, v_t)
      dgd:   M_t = M_{t−1}(α_t I − η_t k_t k_tᵀ) − η_t ∇L(M₀; k_t, v_t)          (NL eq. 88 / 93)
      delta: M_t = α_t M_{t−1}(I − η′_t k_t k_tᵀ) + η′_t v_t k_tᵀ, η′ = η/(1 + η‖k‖²)   (NL eq. 56–57)
             (``delta_lr="direct"``: η′ = η, DeltaNet's β; with unit keys η ∈ (0, 2) keeps |1 − η| < 1)
    with L = ‖M k − v‖² (``objective="l2"``) or −⟨M k, v⟩ (``"dot"``), and optional momentum
    (Titans eq. 13–14): the write term feeds m_t = β_t m_{t−1} + step_t, and m_t replaces it.
    """

    kind = "linear"

    def __init__(self, heads: int, dim_in: int, dim_out: int, rule: str = "dgd", chunk_size: int = 64,
                 objective: str = "l2", momentum: bool = False, init_std: float = 0.0, delta_lr: str = "implicit"):
        super().__init__(heads, dim_in, dim_out, rule, chunk_size, objective, momentum)
        if delta_lr not in DELTA_LRS:
            raise ValueError(f"delta_lr must be one of {DELTA_LRS} (got {delta_lr!r})")
        if delta_lr == "direct" and rule != "delta":
            raise ValueError("delta_lr='direct' sets the delta rule's write strength; it needs rule='delta'")
        self.delta_lr = delta_lr
        w = torch.randn(heads, dim_in, dim_out) * init_std
        self.init = nn.ParameterList([nn.Parameter(w)])

    def _map(self, weights, x: Tensor) -> Tensor:
        return x @ weights[0]

    def _token_read(self, q, step):
        return step(0, q)

    def _delta_strength(self, k, eta):
        """η′ of the delta rule: NL eq. 56's exact step η/(1 + η‖k‖²) (deviation D1), or η itself (D25)."""
        return eta if self.delta_lr == "direct" else eta / (1 + eta * (k * k).sum(-1))

    def _plan(self, anchor, k, v, eta, alpha):
        if self.rule == "delta":  # b = α η′, write η′ v
            eta_p = self._delta_strength(k, eta)
            return [(k, eta_p.unsqueeze(-1) * v, alpha * eta_p, None)]
        b = eta if self.rule == "dgd" else None  # NL eq. 88: DGD adds −η k kᵀ
        if self.objective == "dot":
            return [(k, eta.unsqueeze(-1) * v, b, None)]  # ∇(−⟨M k, v⟩) = −v kᵀ
        ks = k @ anchor[0]
        return [(k, -2 * eta.unsqueeze(-1) * (ks - v), b, ks)]  # ∇‖M k − v‖² = 2 (M k − v) kᵀ (deviation D5)
