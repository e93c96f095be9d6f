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


STEPS = ("proximal", "plain")

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

    ``groups = G > 1``: G independent memories per head that are always read and written with the same
    keys and gates (self-modifying Titans' M_k, M_v, M_η, M_α all read x, all read v for their targets,
    and all write key k). Their first layers sit side by side, ``A`` ``[H, D, G·Dh]``, so that one
    product serves all G (and the DGD preconditioner, which depends only on k and the gates, is solved
    once); their second layers are ``Bm`` ``[H·G, Dh, D]`` (index ``h·G + g``). Values and reads are
    ``[..., G·D]``: memory g owns the slice ``[g·D, (g+1)·D)``. The result equals G separate memories.

    ``step="proximal"`` (gd / dgd with the ℓ2 objective; deviation D27): the gradient step of each token
    is taken with ``η̃ = η / (1 + 2 η λ)``, λ = ‖h‖² + ‖k‖² Σ_j σ′(z_j)² ‖W1[:, j]‖² ≥ the largest
    eigenvalue of the memory's tangent kernel at the chunk-start weights, so the step along the
    dominant direction equals the proximal (implicit) step, as eq. 56–57 make it for a matrix
    (η′ = η / (1 + η‖k‖²)). ``step="plain"``: η as it is (eq. 88 as printed). The DGD preconditioner
    keeps η.
    """

    kind = "mlp"

    def __init__(self, heads: int, dim: int, hidden: int, rule: str = "dgd", chunk_size: int = 64,
                 objective: str = "l2", momentum: bool = False, activation: str = "gelu",
                 init_std: float | None = None, groups: int = 1, step: str = "proximal"):
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be a positive int (got {groups!r})")
        if step not in STEPS:
            raise ValueError(f"step must be one of {STEPS} (got {step!r})")
        self.step = step
        super().__init__(heads, dim, groups * dim, rule, chunk_size, objective, momentum)
        if hidden < 1:
            raise ValueError(f"hidden must be positive (got {hidden})")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} (got {activation!r})")
        self.hidden, self.activation, self.groups = hidden, activation, groups
        self.act, self.act_grad = ACTIVATIONS[activation]
        std_a = 1 / math.sqrt(dim) if init_std is None else init_std
        std_b = 1 / math.sqrt(hidden) if init_std is None else init_std
        self.init = nn.ParameterList([
            nn.Parameter(torch.randn(heads, dim, groups * hidden) * std_a),
            nn.Parameter(torch.randn(heads * groups, hidden, dim) * std_b),
        ])

    def extra_repr(self) -> str:
        return super().extra_repr() + f", hidden={self.hidden}, groups={self.groups}, step={self.step!r}"

    def _proximal(self) -> bool:
        return self.step == "proximal" and self.objective == "l2" and self.rule != "delta"

    # ---- the group layout: [B, H, T, G·d] (side by side) ⇄ [B, H·G, T, d] (one batch entry per memory)
    def _per_memory(self, x: Tensor) -> Tensor:
        G = self.groups
        if G == 1:
            return x
        B, H, T, GD = x.shape
        return x.view(B, H, T, G, GD // G).transpose(2, 3).reshape(B, H * G, T, GD // G)

    def _side_by_side(self, x: Tensor) -> Tensor:
        G = self.groups
        if G == 1:
            return x
        B, HG, T, d = x.shape
        return x.view(B, HG // G, G, T, d).transpose(2, 3).reshape(B, HG // G, T, G * d)

    def _residual(self, x: Tensor, y: Tensor) -> Tensor:
        """``x + y_g`` for every memory g: x ``[B, H, T, D]``, y ``[B, H·G, T, D]`` → ``[B, H, T, G·D]``."""
        G = self.groups
        if G == 1:
            return x + y
        B, H, T, D = x.shape
        return (y.view(B, H, G, T, D) + x.unsqueeze(2)).transpose(2, 3).reshape(B, H, T, G * D)

    def _map(self, weights, x: Tensor) -> Tensor:
        A, Bm = weights
        return self._residual(x, self._per_memory(self.act(x @ A)) @ Bm)

    def _token_read(self, q, step):
        # the hidden layer is read per token, then σ, then the output layer per token (queries σ(q A_t))
        z = step(0, q)
        return self._residual(q, step(1, self._per_memory(self.act(z))))

    def _plan(self, anchor, k, v, eta, alpha):
        A0, B0 = anchor
        G = self.groups
        z = k @ A0  # [B, H, n, G·Dh]
        h = self._per_memory(self.act(z))  # [B, H·G, n, Dh]: the keys of each memory's W1
        hB = h @ B0
        y = self._residual(k, hB)
        rep = (lambda t: t) if G == 1 else (lambda t: t.repeat_interleave(G, dim=1))  # [B, H, ·] → [B, H·G, ·]
        if self.rule == "delta":  # deviation D3
            gz = self.act_grad(z) * self._side_by_side(self._per_memory(y - v) @ B0.mT)
            eta_k = eta / (1 + eta * (k * k).sum(-1))
            eta_h = rep(eta) / (1 + rep(eta) * (h * h).sum(-1))
            k_g = k if G == 1 else k.unsqueeze(2).expand(-1, -1, G, -1, -1).flatten(1, 2)
            return [(k, eta_k.unsqueeze(-1) * (z - gz), alpha * eta_k, z),
                    (h, eta_h.unsqueeze(-1) * (self._per_memory(v) - k_g), rep(alpha) * eta_h, hB)]
        e = self._per_memory(2 * (y - v) if self.objective == "l2" else -v)  # ∂L/∂y, per memory
        sz = self.act_grad(z)
        gz = sz * self._side_by_side(e @ B0.mT)  # ∂L/∂z; ∇A = kᵀ gz, ∇Bm = hᵀ e (rank one per token)
        step = rep(eta)  # [B, H·G, n]: one step size per memory
        if self._proximal():  # deviation D27: λ ≥ the tangent kernel's top eigenvalue, at the anchor
            lam = (h * h).sum(-1) + rep((k * k).sum(-1)) * (self._per_memory(sz * sz) @ (B0 * B0).sum(-1, keepdim=True)
                                                            ).squeeze(-1)
            step = step / (1 + 2 * step * lam)
        step_z = step.unsqueeze(-1) if G == 1 else step.unflatten(1, (-1, G)).transpose(2, 3).repeat_interleave(
            self.hidden, dim=-1)  # [B, H, n, G·Dh]: memory g's step on its columns of A
        # deviation D2: the DGD preconditioner acts on W2 only
        return [(k, -step_z * gz, eta if self.rule == "dgd" else None, z),
                (h, -step.unsqueeze(-1) * e, None, None)]
