"""The matrix memory ``M(k) = M k`` (stored as ``S = Mᵀ``, ``[H, Din, Dout]`` per head)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Memory


class LinearMemory(Memory):
    """A matrix written in context: linear attention / DeltaNet / DGD memories.

    Rules (per token t, gradient at the chunk-start state M₀, NL eq. 90):
      gd:    M_t = α_t M_{t−1} − η_t ∇L(M₀; k_t, v_t)
      dgd:   M_t = M_{t−1}(α_t I − η_t k_t k_tᵀ) − η_t ∇L(M₀; k_t, v_t)          (NL eq. 88 / 93)
      delta: M_t = α_t M_{t−1}(I − η′_t k_t k_tᵀ) + η′_t v_t k_tᵀ, η′ = η/(1 + η‖k‖²)   (NL eq. 56–57)
    with L = ‖M k − v‖² (``objective="l2"``) or −⟨M k, v⟩ (``"dot"``), and optional momentum
    (Titans eq. 13–14): the write term feeds m_t = β_t m_{t−1} + step_t, and m_t replaces it.
    """

    kind = "linear"

    def __init__(self, heads: int, dim_in: int, dim_out: int, rule: str = "dgd", chunk_size: int = 64,
                 objective: str = "l2", momentum: bool = False, init_std: float = 0.0):
        super().__init__(heads, dim_in, dim_out, rule, chunk_size, objective, momentum)
        w = torch.randn(heads, dim_in, dim_out) * init_std
        self.init = nn.ParameterList([nn.Parameter(w)])

    def _map(self, weights, x: Tensor) -> Tensor:
        return x @ weights[0]

    def _token_read(self, q, step):
        return step(0, q)

    def _precond(self, k, eta, alpha):
        if self.rule == "delta":  # NL eq. 56, deviation D1: b = α η′, η′ = η / (1 + η‖k‖²)
            return alpha * eta / (1 + eta * (k * k).sum(-1))
        return eta if self.rule == "dgd" else None  # NL eq. 88: DGD adds −η k kᵀ

    def _plan(self, anchor, k, v, eta, alpha):
        b = self._precond(k, eta, alpha)
        if self.rule == "delta":  # write η′ v
            return [(k, (eta / (1 + eta * (k * k).sum(-1))).unsqueeze(-1) * v, b, None)]
        if self.objective == "dot":
            return [(k, eta.unsqueeze(-1) * v, b, None)]  # ∇(−⟨M k, v⟩) = −v kᵀ
        ks = k @ anchor[0]
        return [(k, -2 * eta.unsqueeze(-1) * (ks - v), b, ks)]  # ∇‖M k − v‖² = 2 (M k − v) kᵀ (deviation D5)
