"""The 2-layer residual MLP memory ``M(x) = x + W1 σ(W2 x)`` (NL eq. 89 / 91).

Stored in the row convention as ``A = W2ᵀ`` ``[H, D, Dh]`` and ``Bm = W1ᵀ`` ``[H, Dh, D]``, so that
``M(x) = x + σ(x A) Bm`` for row vectors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import Memory

_SQRT_2PI = math.sqrt(2 * math.pi)


def _gelu_grad(z: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * torch.exp(-0.5 * z * z) / _SQRT_2PI


def _silu_grad(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


# σ and σ′, written out so that the chunk path needs no autograd inside the write.
ACTIVATIONS = {
    "gelu": (torch.nn.functional.gelu, _gelu_grad),
    "silu": (torch.nn.functional.silu, _silu_grad),
    "tanh": (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2),
}


class MLPMemory(Memory):
    """A residual 2-layer MLP written in context (self-modifying Titans memories, NL §8).

    Per token, gradients at the chunk-start weights (NL eq. 90):
      gd:    W2 ← α W2 − η ∇W2,              W1 ← α W1 − η ∇W1
      dgd:   W2 ← W2 (α I − η k kᵀ) − η ∇W2,  W1 ← α W1 − η ∇W1      (NL eq. 88; deviation D2)
      delta: eq. 56 layer by layer (deviation D3): W1 regresses h = σ(W2₀ k) onto v − k, W2
             regresses k onto z₀ − ∂ℓ/∂z with ℓ = ½‖M₀(k) − v‖²; each W ← α W (I − η′ x xᵀ) + η′ u xᵀ.
    """

    kind = "mlp"

    def __init__(self, heads: int, dim: int, hidden: int, rule: str = "dgd", chunk_size: int = 64,
                 objective: str = "l2", momentum: bool = False, activation: str = "gelu",
                 init_std: float | None = None):
        super().__init__(heads, dim, dim, rule, chunk_size, objective, momentum)
        if hidden < 1:
            raise ValueError(f"hidden must be positive (got {hidden})")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} (got {activation!r})")
        self.hidden, self.activation = hidden, activation
        self.act, self.act_grad = ACTIVATIONS[activation]
        std_a = 1 / math.sqrt(dim) if init_std is None else init_std
        std_b = 1 / math.sqrt(hidden) if init_std is None else init_std
        self.init = nn.ParameterList([
            nn.Parameter(torch.randn(heads, dim, hidden) * std_a),
            nn.Parameter(torch.randn(heads, hidden, dim) * std_b),
        ])

    def _map(self, weights, x: Tensor) -> Tensor:
        A, Bm = weights
        return x + self.act(x @ A) @ Bm

    def _static_keys(self, k, eta, alpha):
        if self.rule == "delta":
            b = alpha * eta / (1 + eta * (k * k).sum(-1))
        else:
            b = eta if self.rule == "dgd" else None
        return [(k, b), None]  # the output side's keys are the hidden units: they depend on the state

    def _plan(self, anchor, k, v, eta, alpha):
        A0, B0 = anchor
        z = k @ A0
        h = self.act(z)
        y = k + h @ B0
        if self.rule == "delta":  # deviation D3
            gz = self.act_grad(z) * ((y - v) @ B0.mT)
            eta_k = eta / (1 + eta * (k * k).sum(-1))
            eta_h = eta / (1 + eta * (h * h).sum(-1))
            return [(k, eta_k.unsqueeze(-1) * (z - gz), alpha * eta_k, z),
                    (h, eta_h.unsqueeze(-1) * (v - k), alpha * eta_h, h @ B0)]
        e = 2 * (y - v) if self.objective == "l2" else -v  # ∂L/∂y
        gz = self.act_grad(z) * (e @ B0.mT)  # ∂L/∂z; ∇A = kᵀ gz, ∇Bm = hᵀ e (rank one per token)
        step = -eta.unsqueeze(-1)
        return [(k, step * gz, eta if self.rule == "dgd" else None, z),  # deviation D2: preconditioner on W2
                (h, step * e, None, None)]
