"""Token-by-token reference of the memory write, in the paper's symbols (float64-capable).

Column convention as in the paper: a linear memory is ``M ∈ R^{Dout×Din}`` with ``M(k) = M k``; the
residual MLP is ``M(x) = x + W1 σ(W2 x)`` with ``W2 ∈ R^{Dh×D}``, ``W1 ∈ R^{D×Dh}``. States are stored
transposed (row convention, see ``base.py``), so this module transposes on the way in and out.

Gradients of the inner objective are taken at the chunk-start weights ``M₀`` (NL eq. 90); for the MLP
they come from ``torch.autograd`` rather than the hand-derived chunk formulas, so the two paths are
independent. Slow by design: the tests compare the chunk kernel against it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..state import MemoryState

if TYPE_CHECKING:
    from ..base import Memory


def _outer(x: Tensor, y: Tensor) -> Tensor:
    return x.unsqueeze(-1) * y.unsqueeze(-2)


def _precond(M: Tensor, alpha: Tensor, P: Tensor, x: Tensor) -> Tensor:
    """``M (α I − P x xᵀ)`` for batched ``M [.., R, Din]``, scalars ``α, P [..]`` and ``x [.., Din]``."""
    Mx = (M @ x.unsqueeze(-1)).squeeze(-1)
    return alpha[..., None, None] * M - P[..., None, None] * _outer(Mx, x)


def _linear_token(mem: Memory, M0: list[Tensor], k, v, eta, alpha):
    """One token for the matrix memory: ``[(step, P, key)]`` with ``M ← M(αI − P kkᵀ) + step``."""
    (M0,) = M0
    if mem.rule == "delta":  # NL eq. 56 solved exactly (Sherman–Morrison), retention α; or DeltaNet's β (D25)
        eta_p = eta if mem.delta_lr == "direct" else eta / (1 + eta * (k * k).sum(-1))
        return [(eta_p[..., None, None] * _outer(v, k), alpha * eta_p, k)]
    if mem.objective == "l2":  # ∇_M ‖M k − v‖² = 2 (M k − v) kᵀ
        grad = 2 * _outer((M0 @ k.unsqueeze(-1)).squeeze(-1) - v, k)
    else:  # ∇_M (−⟨M k, v⟩) = −v kᵀ
        grad = -_outer(v, k)
    P = eta if mem.rule == "dgd" else torch.zeros_like(eta)  # NL eq. 88: DGD adds −η k kᵀ
    return [(-eta[..., None, None] * grad, P, k)]


def _mlp_token(mem: Memory, W0: list[Tensor], k, v, eta, alpha):
    """One token for the residual MLP. Order of weights: (W2, W1), matching the stored (A, B)."""
    # Keep the graph when the caller records one (so gradients flow through the write); otherwise
    # differentiate fresh leaves, which also works under torch.no_grad().
    keep = torch.is_grad_enabled()
    W2, W1 = (w if keep and w.requires_grad else w.detach().requires_grad_(True) for w in W0)
    with torch.enable_grad():
        z = (W2 @ k.unsqueeze(-1)).squeeze(-1)
        h = mem.act(z)
        y = k + (W1 @ h.unsqueeze(-1)).squeeze(-1)
        if mem.rule == "delta":  # deviation D3: eq. 56 layer by layer, ℓ = ½‖M(k) − v‖²
            loss = 0.5 * ((y - v) ** 2).sum()
            (gz,) = torch.autograd.grad(loss, z, create_graph=keep)
            eta_k = eta / (1 + eta * (k * k).sum(-1))
            eta_h = eta / (1 + eta * (h * h).sum(-1))
            return [(eta_k[..., None, None] * _outer(z - gz, k), alpha * eta_k, k),  # target z₀ − ∂ℓ/∂z
                    (eta_h[..., None, None] * _outer(v - k, h), alpha * eta_h, h)]  # target v − k
        loss = ((y - v) ** 2).sum() if mem.objective == "l2" else -(y * v).sum()
        g2, g1 = torch.autograd.grad(loss, (W2, W1), create_graph=keep)
    P = eta if mem.rule == "dgd" else torch.zeros_like(eta)  # deviation D2: DGD on the input side only
    zero = torch.zeros_like(eta)
    step = eta
    if mem._proximal():  # deviation D27: the proximal step along the tangent kernel's top direction
        s2 = mem.act_grad(z) ** 2  # σ′(z_j)², with W1's column norms at the anchor
        lam = (h * h).sum(-1) + (k * k).sum(-1) * (s2 * (W1 * W1).sum(-2)).sum(-1)
        step = eta / (1 + 2 * eta * lam)
    return [(-step[..., None, None] * g2, P, k), (-step[..., None, None] * g1, zero, h)]


def _read(mem: Memory, M: list[Tensor], q: Tensor) -> Tensor:
    """``M(q)`` in the paper's symbols: ``M q`` or ``q + W1 σ(W2 q)``; q ``[.., Din]``."""
    if mem.kind == "linear":
        return (M[0] @ q.unsqueeze(-1)).squeeze(-1)
    W2, W1 = M
    return q + (W1 @ mem.act((W2 @ q.unsqueeze(-1)).squeeze(-1)).unsqueeze(-1)).squeeze(-1)


def write_reference(mem: Memory, state: MemoryState, k: Tensor, v: Tensor, eta: Tensor, alpha: Tensor,
                    beta: Tensor | None, q: Tensor | None = None) -> tuple[MemoryState, Tensor | None]:
    """Same contract as ``write_chunked``: ``k, v`` (and queries ``q``) ``[B, H, T, D]``, gates ``[B, H, T]``;
    returns ``(state, y)`` with ``y_t = M_t(q_t)`` read right after token t is written.

    A grouped MLP memory (``groups = G``) is written as what it stands for: G separate memories, one
    token loop each, on its slice of the weights and of the values.
    """
    G = getattr(mem, "groups", 1)
    if G == 1:
        return _token_loop(mem, state, k, v, eta, alpha, beta, q)
    B, H, Dh, D = state.weights[0].shape[0], mem.heads, mem.hidden, mem.dim_in

    def part(ts, g):
        A, Bm = ts
        return A[..., g * Dh:(g + 1) * Dh], Bm.view(B, H, G, Dh, D)[:, :, g]

    outs, reads = [], []
    for g in range(G):
        sub = MemoryState(part(state.weights, g), part(state.anchor, g),
                          None if state.momentum is None else part(state.momentum, g), state.offset)
        out, y = _token_loop(mem, sub, k, v[..., g * D:(g + 1) * D], eta, alpha, beta, q)
        outs.append(out)
        reads.append(y)

    def join(ts):
        return (torch.cat([t[0] for t in ts], dim=-1),
                torch.stack([t[1] for t in ts], dim=2).reshape(B, H * G, Dh, D))

    new = MemoryState(join([o.weights for o in outs]), join([o.anchor for o in outs]),
                      None if state.momentum is None else join([o.momentum for o in outs]), outs[0].offset)
    return new, None if q is None else torch.cat(reads, dim=-1)  # memory g reads into [g·D, (g+1)·D)


def _token_loop(mem: Memory, state: MemoryState, k: Tensor, v: Tensor, eta: Tensor, alpha: Tensor,
                beta: Tensor | None, q: Tensor | None) -> tuple[MemoryState, Tensor | None]:
    token = {"linear": _linear_token, "mlp": _mlp_token}[mem.kind]
    M = [w.mT for w in state.weights]
    M0 = [w.mT for w in state.anchor]
    mom = None if state.momentum is None else [m.mT for m in state.momentum]
    offset, ys = state.offset, []
    for t in range(k.shape[-2]):
        if offset == 0:
            M0 = M
        updates = token(mem, M0, k[..., t, :], v[..., t, :], eta[..., t], alpha[..., t])
        new = []
        for i, (step, P, x) in enumerate(updates):
            if mom is not None:  # Titans eq. 13–14, deviation D4: the step feeds a momentum that is then applied
                mom[i] = beta[..., t, None, None] * mom[i] + step
                step = mom[i]
            new.append(_precond(M[i], alpha[..., t], P, x) + step)
        M = new
        if q is not None:  # the dual form: token t reads the memory it has just written
            ys.append(_read(mem, M, q[..., t, :]))
        offset = (offset + 1) % mem.chunk_size
    if offset == 0:
        M0 = M
    tr = lambda ms: tuple(m.mT for m in ms)  # noqa: E731
    y = None if q is None else torch.stack(ys, dim=-2)
    return MemoryState(tr(M), tr(M0), None if mom is None else tr(mom), offset), y
