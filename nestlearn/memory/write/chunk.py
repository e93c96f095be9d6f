"""Chunk-parallel write of one fast-weight matrix (DESIGN contract 2; derivation in README.md here).

Row convention: a state ``S`` of shape ``[..., Dk, Dv]`` maps a key row ``k`` to ``k @ S``; the
paper's matrix is ``M = Sᵀ``. Within a chunk of ``n`` tokens the recurrence

    S_t = a_t S_{t-1} - b_t k_t (k_tᵀ S_{t-1}) + m_t
    m_t = β_t m_{t-1} + k_t w_tᵀ            (without momentum: m_t = k_t w_tᵀ)

is solved exactly with matrix products. In the paper's symbols ``M_t = M_{t-1}(α_t I − η_t k_t k_tᵀ)
− η_t ∇L(M_0; k_t, v_t)`` (NL eq. 88 / 90) is ``a = α``, ``b = η``, ``w_t = −η_t e_t``, where the
gradient error ``e_t`` was taken at the chunk-start state. Nothing here knows about rules: callers
turn a rule into ``(K, W, a, b)`` and this module solves the linear recurrence.
"""

from __future__ import annotations

import torch
from torch import Tensor


def decay_matrix(a: Tensor) -> Tensor:
    """Products of gates over spans: ``G[..., t, s] = Π_{j=s+1}^{t} a_j`` for ``s ≤ t``, else 0.

    ``a`` is ``[..., n]`` with token ``j`` at index ``j-1``; the result is ``[..., n+1, n+1]`` where
    index 0 is the chunk start. A cumulative product (not exp of summed logs), so a gate of exactly 0
    is handled and gradients stay finite.
    """
    n = a.shape[-1]
    a1 = torch.cat([torch.ones_like(a[..., :1]), a], dim=-1)  # [..., n+1], slot 0 unused
    rows = a1.unsqueeze(-1).expand(*a1.shape, n + 1)  # rows[t, s] = a_t
    below = torch.ones(n + 1, n + 1, dtype=torch.bool, device=a.device).tril(-1)
    g = torch.cumprod(torch.where(below, rows, torch.ones_like(rows)), dim=-2)
    return g * below.logical_or(torch.eye(n + 1, dtype=torch.bool, device=a.device)).to(a.dtype)


class ChunkCoefficients:
    """Everything of a chunk that depends only on the gates and keys, not on the state.

    Shapes: ``a, b, beta`` ``[..., n]``; ``K`` ``[..., n, Dk]``. Computed once per chunk and reusable by
    every matrix that shares the keys and gates.
    """

    def __init__(self, K: Tensor, a: Tensor, b: Tensor | None, beta: Tensor | None):
        self.K = K
        gam = decay_matrix(a)  # [..., n+1, n+1]
        self.gamma_prev = gam[..., :-1, 0]  # γ_{t-1} = Π_{j<t} a_j
        self.gamma_last = gam[..., -1, 0]  # γ_n
        gshift = gam[..., :-1, 1:]  # [t, i] = Π_{j=i+1}^{t-1} a_j for i < t (strictly lower)
        self.glast = gam[..., -1, 1:]  # [i] = Π_{j=i+1}^{n} a_j
        self.beta = beta
        if beta is not None:
            dl = decay_matrix(beta)
            self.delta_last = dl[..., -1, 0]  # Π_{j≤n} β_j
            self.dlast = dl[..., -1, 1:]  # [i] = Π_{j=i+1}^{n} β_j
            # G[t, i] = Σ_s Γ[t, s] Δ[s, i]: how much of write i reaches S_t through momentum.
            gm = gam[..., :, 1:] @ dl[..., 1:, 1:]  # [..., n+1, n]
            rho = (gam[..., :, 1:] @ dl[..., 1:, :1]).squeeze(-1)  # [..., n+1]: reach of m_0
            self.wshift, self.wlast = gm[..., :-1, :], gm[..., -1, :]
            self.rho_prev, self.rho_last = rho[..., :-1], rho[..., -1]
        else:
            self.wshift, self.wlast = gshift, self.glast
        self.b = b
        if b is not None:
            kk = K @ K.mT
            self.bkk_w = b.unsqueeze(-1) * (kk * self.wshift)
            lower = b.unsqueeze(-1) * (kk * gshift)
            eye = torch.eye(K.shape[-2], dtype=K.dtype, device=K.device)
            # (I + lower) is unit lower triangular; its inverse turns the chunk into plain matmuls.
            self.tinv = torch.linalg.solve_triangular(
                eye + lower, eye.expand_as(lower), upper=False, unitriangular=True
            )


def chunk_step(
    S: Tensor, m: Tensor | None, W: Tensor, co: ChunkCoefficients
) -> tuple[Tensor, Tensor | None]:
    """Advance ``S`` (and momentum ``m``) over one chunk of writes ``W`` ``[..., n, Dv]``.

    Returns the state after the last token. The per-token states are never formed; the state-driven
    part of each write is recovered through the unit-triangular system of the UT transform.
    """
    K = co.K
    write = co.wlast.unsqueeze(-1) * W  # the direct contribution of each write to S_n
    if co.b is not None:
        rhs = (co.b * co.gamma_prev).unsqueeze(-1) * (K @ S) + co.bkk_w @ W
        if m is not None:
            rhs = rhs + (co.b * co.rho_prev).unsqueeze(-1) * (K @ m)
        U = -(co.tinv @ rhs)  # U[t] = −b_t S_{t−1}ᵀ k_t, the preconditioner's part of each update
        write = write + co.glast.unsqueeze(-1) * U
    S_new = co.gamma_last[..., None, None] * S + K.mT @ write
    if m is None:
        return S_new, None
    S_new = S_new + co.rho_last[..., None, None] * m
    m_new = co.delta_last[..., None, None] * m + K.mT @ (co.dlast.unsqueeze(-1) * W)
    return S_new, m_new
