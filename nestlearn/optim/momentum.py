"""Momentum as an associative memory (NL §4.2–4.4): delta momentum (eq. 49) and deep momentum
gradient descent (eq. 50)."""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from .param_groups import run_closure, with_grads


def _check(lr: float, alpha: float) -> None:
    if not lr >= 0:
        raise ValueError(f"lr must be ≥ 0 (got {lr})")
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1) (got {alpha})")


class DeltaMomentum(Optimizer):
    """Delta momentum (NL eq. 49): the momentum is a memory of gradients written with the delta rule,

        m ← m (α I − gᵀ g) − η g,        W ← W + m,

    with the parameter seen as a matrix ``[rows, cols]`` (a vector as one row), so ``gᵀg`` acts on
    the column space: before adding the new gradient, the momentum forgets its component along the
    current gradient direction. ``normalize=True`` (deviation D16) uses ``ĝ = g/‖g‖`` in the forget
    term, ``m ← m (αI − ĝᵀĝ) − η g``, which keeps the forget factor in [α − 1, α] for any gradient
    scale; the paper-literal form is the default.
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.9, normalize: bool = False):
        _check(lr, alpha)
        super().__init__(params, dict(lr=lr, alpha=alpha, normalize=normalize))

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        for group, p in with_grads(self.param_groups):
            g = p.grad.reshape(-1, p.shape[-1]) if p.dim() > 1 else p.grad.reshape(1, -1)
            st = self.state[p]
            if "m" not in st:
                st["m"] = torch.zeros_like(g)
            m = st["m"]
            k = g / g.norm().clamp(min=1e-12) if group["normalize"] else g
            m.copy_(group["alpha"] * m - (m @ k.T) @ k - group["lr"] * g)  # m (αI − kᵀk) − η g
            p.add_(m.view_as(p))
        return loss


class DeepMomentum(Optimizer):
    """Deep momentum gradient descent (NL eq. 50): the momentum is an MLP memory of gradients,

        m_{i+1} = α m_i − η_m ∇ L⁽²⁾(m_i; u_i),    W ← W − η m_{i+1}(u_i),    u_i = ∇L(W_i),

    with ``m(u) = u + W₁ σ(W₂ u)`` a residual MLP applied to each gradient entry (a map ℝ → ℝ with
    ``hidden`` units, one per parameter tensor) and the ℓ2 inner objective
    ``L⁽²⁾ = ½ mean((m(u) − u_avg)²)`` whose target is the running average of gradients — so the
    memory learns a non-linear momentum (deviation D17: the paper leaves the objective open, "e.g. a
    dot product"). With ``W₁ = 0`` it starts as plain gradient descent.
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.9, inner_lr: float = 0.1, hidden: int = 8,
                 beta: float = 0.9):
        _check(lr, alpha)
        if not inner_lr >= 0:
            raise ValueError(f"inner_lr must be ≥ 0 (got {inner_lr})")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1) (got {beta})")
        if hidden < 1:
            raise ValueError(f"hidden must be ≥ 1 (got {hidden})")
        super().__init__(params, dict(lr=lr, alpha=alpha, inner_lr=inner_lr, hidden=hidden, beta=beta))

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        for group, p in with_grads(self.param_groups):
            u = p.grad.reshape(-1, 1)
            st = self.state[p]
            if not st:
                gen = torch.Generator(device="cpu").manual_seed(p.numel())
                st["w2"] = (torch.randn(1, group["hidden"], generator=gen)).to(u)
                st["w1"] = torch.zeros(group["hidden"], 1).to(u)
                st["avg"] = torch.zeros_like(u)
            avg = st["avg"].mul_(group["beta"]).add_(u, alpha=1 - group["beta"])
            w1, w2 = st["w1"], st["w2"]
            z = u @ w2
            h = torch.tanh(z)
            err = (u + h @ w1 - avg) / u.shape[0]  # ∂L⁽²⁾/∂m(u)
            g1 = h.T @ err
            g2 = u.T @ ((err @ w1.T) * (1 - h * h))
            w1.mul_(group["alpha"]).sub_(group["inner_lr"] * g1)
            w2.mul_(group["alpha"]).sub_(group["inner_lr"] * g2)
            update = u + torch.tanh(u @ w2) @ w1
            p.sub_(group["lr"] * update.view_as(p))
        return loss
