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
    index 0 is the chunk start. A cumulative product (not exp of differences of summed logs): exact
    for a gate of 0, no cancellation in float32, finite gradients, and measured faster on CPU.
    """
    n = a.shape[-1]
    a1 = torch.cat([torch.ones_like(a[..., :1]), a], dim=-1)  # [..., n+1], slot 0 unused
    rows = a1.unsqueeze(-1).expand(*a1.shape, n + 1)  # rows[t, s] = a_t
    below = torch.ones(n + 1, n + 1, dtype=torch.bool, device=a.device).tril(-1)
    g = torch.cumprod(torch.where(below, rows, torch.ones_like(rows)), dim=-2)
    return g * below.logical_or(torch.eye(n + 1, dtype=torch.bool, device=a.device)).to(a.dtype)


class ChunkGates:
    """The part of a chunk that depends only on the gates ``a, beta`` ``[..., n]``: products of
    retention and momentum gates. Shared by every matrix of a memory written with the same gates."""

    def __init__(self, a: Tensor, beta: Tensor | None):
        gam = decay_matrix(a)  # [..., n+1, n+1]
        self.gamma_prev = gam[..., :-1, 0]  # γ_{t-1} = Π_{j<t} a_j
        self.gamma_last = gam[..., -1, 0]  # γ_n
        self.gshift = gam[..., :-1, 1:]  # [t, i] = Π_{j=i+1}^{t-1} a_j for i < t (strictly lower)
        self.glast = gam[..., -1, 1:]  # [i] = Π_{j=i+1}^{n} a_j
        self.gamma_in = gam[..., 1:, 0]  # γ_t for t = 1..n (per-token reads)
        self.gincl = gam[..., 1:, 1:]  # [t, i] = Π_{j=i+1}^{t} a_j for i ≤ t (lower, diagonal 1)
        self.rho_prev = self.rho_last = self.rho_in = self.delta_last = self.dlast = None
        if beta is not None:
            dl = decay_matrix(beta)
            self.delta_last = dl[..., -1, 0]  # Π_{j≤n} β_j
            self.dlast = dl[..., -1, 1:]  # [i] = Π_{j=i+1}^{n} β_j
            # G[t, i] = Σ_s Γ[t, s] Δ[s, i]: how much of write i reaches S_t through momentum.
            gm = gam[..., :, 1:] @ dl[..., 1:, 1:]  # [..., n+1, n]
            rho = (gam[..., :, 1:] @ dl[..., 1:, :1]).squeeze(-1)  # [..., n+1]: reach of m_0
            self.wshift, self.wlast, self.wincl = gm[..., :-1, :], gm[..., -1, :], gm[..., 1:, :]
            self.rho_prev, self.rho_last, self.rho_in = rho[..., :-1], rho[..., -1], rho[..., 1:]
        else:
            self.wshift, self.wlast, self.wincl = self.gshift, self.glast, self.gincl

    def repeat_heads(self, groups: int) -> ChunkGates:
        """The same gates for weights batched ``[B, H·G, …]`` (head h's gates for its G memories)."""
        out = ChunkGates.__new__(ChunkGates)
        for name, t in vars(self).items():
            setattr(out, name, None if t is None else t.repeat_interleave(groups, dim=1))
        return out


class ChunkCoefficients:
    """Everything of a chunk that depends only on the gates and keys, not on the state.

    Shapes: ``K`` ``[..., n, Dk]``; ``b`` ``[..., n]`` (``None``: no preconditioner); the gates as a
    ``ChunkGates`` (or ``a, beta`` tensors, from which one is built).
    """

    def __init__(self, K: Tensor, a: Tensor | ChunkGates, b: Tensor | None, beta: Tensor | None = None):
        self.g = a if isinstance(a, ChunkGates) else ChunkGates(a, beta)
        self.K, self.b = K, b
        self.bkk_w = self.T = None
        if b is not None:
            kk = K @ K.mT
            self.bkk_w = b.unsqueeze(-1) * (kk * self.g.wshift)
            # T = I + b ⊙ (KKᵀ ∘ Γshift) is unit lower triangular: only its strict lower part is
            # stored, and the solve treats the diagonal as ones.
            self.T = b.unsqueeze(-1) * (kk * self.g.gshift)


def _unit_lower_solve(T: Tensor, rhs: Tensor) -> Tensor:
    """``(I + strict lower T)⁻¹ rhs``; half-precision inputs are solved in float32 (no triangular solve
    for them in PyTorch) and the result returned in their dtype."""
    dtype = torch.promote_types(T.dtype, rhs.dtype)
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    return torch.linalg.solve_triangular(T.to(work), rhs.to(work), upper=False, unitriangular=True).to(dtype)


def chunk_step(S: Tensor, m: Tensor | None, W: Tensor, co: ChunkCoefficients, KS: Tensor | None = None,
               Q: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Advance ``S`` (and momentum ``m``) over one chunk of writes ``W`` ``[..., n, Dv]``.

    Returns ``(S_n, m_n, Y)``: the state after the last token, and with queries ``Q`` ``[..., n, Dk]``
    the per-token reads ``Y[t] = q_t S_t`` of the state after writing token t (the dual form; else
    ``None``). The per-token states are never formed; the state-driven part of each write is
    recovered through the unit-triangular system of the UT transform, and the reads through
    masked ``n × n`` products (README.md here). ``KS`` may pass ``K @ S`` when the caller has it
    already. PyTorch ops, any device; on a CPU the write runs ``fused.chunk_step_fused`` instead
    (same step, gate products included), tested against this.
    """
    K, g = co.K, co.g
    U = None
    write = g.wlast.unsqueeze(-1) * W  # the direct contribution of each write to S_n
    if co.b is not None:
        KS = K @ S if KS is None else KS
        rhs = (co.b * g.gamma_prev).unsqueeze(-1) * KS + co.bkk_w @ W
        if m is not None:
            rhs = rhs + (co.b * g.rho_prev).unsqueeze(-1) * (K @ m)
        # −U[t] = b_t S_{t−1}ᵀ k_t, the preconditioner's part of each update (UT transform)
        U = _unit_lower_solve(co.T, rhs)
        write = write - g.glast.unsqueeze(-1) * U
    Y = None
    if Q is not None:  # q_t S_t = γ_t q_t S₀ + ρ_t q_t m₀ + Σ_{i≤t} (q_t·k_i)(G[t,i] w_i − Γ[t,i] U_i)
        QK = Q @ K.mT
        Y = g.gamma_in.unsqueeze(-1) * (Q @ S) + (QK * g.wincl) @ W
        if m is not None:
            Y = Y + g.rho_in.unsqueeze(-1) * (Q @ m)
        if U is not None:
            Y = Y - (QK * g.gincl) @ U
    # The carried terms are fresh 3-D tensors, so the rank-n update accumulates into them in place:
    # no saved tensor is overwritten, no view is written through (autograd would copy the base), and
    # the state-sized copy that an out-of-place baddbmm makes is saved.
    shape = S.shape
    flat = lambda t: t.reshape(-1, *t.shape[-2:])  # noqa: E731
    coef = lambda c: c.reshape(-1, 1, 1)  # noqa: E731
    Kt = flat(K.mT)
    carry = flat(S) * coef(g.gamma_last)
    if m is not None:  # one pass for both carried terms: γ S + ρ m
        carry.addcmul_(coef(g.rho_last), flat(m))
    S_new = carry.baddbmm_(Kt, flat(write)).view(shape)
    if m is None:
        return S_new, None, Y
    m_new = (flat(m) * coef(g.delta_last)).baddbmm_(Kt, flat(g.dlast.unsqueeze(-1) * W))
    return S_new, m_new.view(shape), Y
