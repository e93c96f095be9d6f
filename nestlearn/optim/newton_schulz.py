"""Newton–Schulz orthogonalisation: ``G = U S Vᵀ ↦ ≈ U Vᵀ`` (NL eq. 42–44; Muon).

    X₀ = G / ‖G‖_F,   X_{k+1} = a X_k + (b A + c A²) X_k,   A = X_k X_kᵀ

``quintic`` uses Muon's coefficients (3.4445, −4.7750, 2.0315), which push singular values into
about [0.7, 1.2] in 5 steps; ``cubic`` is ``(1.5, −0.5, 0)``, the iteration NL eq. 44 derives from
one gradient step on ``‖XᵀX − I‖²``, which converges to exactly ``U Vᵀ`` (slowly for small singular
values). Leading dims are a batch of matrices. ``polar_svd`` is the reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

QUINTIC = (3.4445, -4.7750, 2.0315)
CUBIC = (1.5, -0.5, 0.0)
COEFFICIENTS = {"quintic": QUINTIC, "cubic": CUBIC}


def working_dtype(dtype: torch.dtype | str | None, G: Tensor) -> torch.dtype:
    """``"auto"``: bfloat16 on an accelerator (as in Muon), float32 on any CPU; ``None``: ``G``'s own dtype.

    On a CPU bfloat16's speed depends on the CPU and the size: with native bfloat16 products (an AMD EPYC
    with avx512_bf16, ``benchmarks/results/optimizer_step.md``) five steps took 0.27–0.33× float32's time at
    192 × 192 to 768 × 192 and 1.9× at 64 × 64. ``"auto"`` keeps float32 on every CPU, so that a run's
    numbers do not depend on which CPU ran it; pass ``torch.bfloat16`` for speed on large matrices."""
    if dtype == "auto":
        return torch.float32 if G.device.type == "cpu" else torch.bfloat16
    if dtype is None:
        return G.dtype
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype, 'auto' or None (got {dtype!r})")
    return dtype


def newton_schulz(G: Tensor, steps: int = 5, kind: str = "quintic", dtype: torch.dtype | str | None = "auto",
                  eps: float = 1e-7) -> Tensor:
    """Approximate orthogonal polar factor of ``G`` ``[..., m, n]``, returned in ``G``'s dtype.

    ``dtype`` is the working precision: ``"auto"`` (default) is bfloat16 on an accelerator, as in Muon,
    and float32 on a CPU (:func:`working_dtype`); ``None`` keeps ``G``'s. For one matrix in bfloat16 with
    the quintic coefficients this is the same sequence of operations as ``torch.optim.Muon``.
    """
    if G.dim() < 2:
        raise ValueError(f"newton_schulz needs a matrix or a batch of matrices (got shape {list(G.shape)})")
    if kind not in COEFFICIENTS:
        raise ValueError(f"kind must be one of {sorted(COEFFICIENTS)} (got {kind!r})")
    if steps < 0:
        raise ValueError(f"steps must be ≥ 0 (got {steps})")
    a, b, c = COEFFICIENTS[kind]
    X = G.to(working_dtype(dtype, G))
    tall = G.shape[-2] > G.shape[-1]
    if tall:
        X = X.mT
    if X.dim() == 2:
        X = X / X.norm().clamp(min=eps)
        for _ in range(steps):
            A = X @ X.T
            B = torch.addmm(A, A, A, beta=b, alpha=c)
            X = torch.addmm(X, B, X, beta=a)
    else:
        X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
        for _ in range(steps):
            A = X @ X.mT
            B = b * A + c * (A @ A)
            X = a * X + B @ X
    if tall:
        X = X.mT
    return X.to(G.dtype)


def polar_svd(G: Tensor) -> Tensor:
    """The exact orthogonal polar factor ``U Vᵀ`` (float64 SVD), the reference for the tests."""
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    return (U @ Vh).to(G.dtype)
