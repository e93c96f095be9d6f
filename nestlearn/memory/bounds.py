"""Bounds on an inner learning rate, shared by every layer that writes a memory (docs/PAPER.md D20, D26)."""

from __future__ import annotations

LR_BOUND = 2.0  # past it a unit-key write's factor (αI − ηkkᵀ, or I − βkkᵀ) has an eigenvalue below −1 for every α ≤ 1


def stable_eta_max(chunk: int) -> float:
    """The default η bound for chunks of C tokens (deviation D20; docs/PAPER.md has the measurements
    that keep it the default after per-token reads).

    With the ℓ2 objective, DGD writes ``M ← M(αI − η k kᵀ) − 2η(M₀k − v̂)kᵀ`` with the gradient at the
    chunk start M₀ (NL eq. 90). For one repeated unit key and a fixed target, C such writes map m₀ (the
    component along k) to ``m₀((1−η)^C − 2(1 − (1−η)^C)) + …`` (α = 1): a contraction iff
    ``(1 − η)^C ≥ 1/3``. Self-generated targets ``v̂ = M₀(v)`` double the worst-case gradient eigenvalue
    (``2(1 − kᵀv) ≤ 4``) and momentum near its initial β ≈ ½ doubles the step again, so the bound
    is a quarter of that η (measured: half of it still diverged on formal-language training).
    """
    return (1.0 - 3.0 ** (-1.0 / chunk)) / 4
