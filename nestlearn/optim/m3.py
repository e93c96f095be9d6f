"""M3: Multi-scale Momentum Muon (NL §7.2, Algorithm 1).

For a matrix parameter Θ with gradient g_t, fast momentum M¹, slow momentum M², second moment V:

    M¹_t = M¹_{t−1} + β₁ g_t                     (fast memory, every step)
    V_t  = V_{t−1}  + β₂ g_t²                    (Adam's second moment)
    O¹_t = NewtonSchulz_T(M¹_t)
    Θ_t  = Θ_{t−1} − η (O¹_t + α O²) / (√V_t + ε)
    every f steps:  M² ← M² + β₃ Σ_{last f steps} g,   O² ← NewtonSchulz_T(M²)   (slow memory)

``accumulate="sum"`` is this paper-literal form (plain accumulators). ``accumulate="ema"``
(deviation D15) uses exponential moving averages, ``M¹ ← β₁M¹ + (1−β₁)g``,
``V ← β₂V + (1−β₂)g²`` with Adam's bias correction, ``M² ← β₃M² + (1−β₃)Σg``; with α = 0 and
``second_moment=False`` it is Muon without Nesterov. O² computed at the end of block k is used
throughout block k + 1, as in Algorithm 1. Matrices of 3 dims are a batch of matrices (leading dim);
4-dim convolution kernels are flattened to ``[out, in·kh·kw]``. Decoupled weight decay follows
``torch.optim.Muon``. The step is η as Algorithm 1 prints it (``adjust_lr_fn="none"``, the default):
the division by √V already sets each entry's scale, so Muon's shape-based rate adjustments
(``"original"``, ``"match_rms_adamw"``) are options, not the default. Newton–Schulz runs in float32 on
a CPU and in bfloat16 on an accelerator (``ns_dtype="auto"``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.optim import Optimizer

from .newton_schulz import newton_schulz
from .param_groups import run_closure


def adjust_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """``"none"``: ``lr`` as given (Algorithm 1); Muon's conventions: ``"original"`` (and ``None``)
    √max(1, A/B), ``"match_rms_adamw"`` 0.2·√max(A, B)."""
    A, B = shape[-2], shape[-1]
    if adjust_lr_fn == "none":
        return lr
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1.0, A / B))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(A, B))
    raise ValueError(f"adjust_lr_fn must be 'none', None, 'original' or 'match_rms_adamw' (got {adjust_lr_fn!r})")


def as_matrices(t: Tensor) -> Tensor:
    """A parameter (or gradient) as a matrix or a batch of matrices."""
    if t.dim() < 2:
        raise ValueError(f"M3 needs parameters with ≥ 2 dims (got shape {list(t.shape)}); "
                         "send 1-D parameters to AdamW (nestlearn.optim.split_params)")
    return t.flatten(1) if t.dim() == 4 else t


class M3(Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float, float] = (0.95, 0.999, 0.9),
                 alpha: float = 0.1, eps: float = 1e-8, ns_steps: int = 5, slow_every: int = 100,
                 accumulate: str = "ema", second_moment: bool = True, weight_decay: float = 0.0,
                 adjust_lr_fn: str | None = "none", ns_dtype: torch.dtype | str | None = "auto"):
        if not lr >= 0:
            raise ValueError(f"lr must be ≥ 0 (got {lr})")
        for i, b in enumerate(betas):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"betas[{i}] must be in [0, 1) (got {b})")
        if len(betas) != 3:
            raise ValueError(f"betas must be (β1, β2, β3) (got {betas})")
        if not alpha >= 0:
            raise ValueError(f"alpha must be ≥ 0 (got {alpha})")
        if not eps >= 0:
            raise ValueError(f"eps must be ≥ 0 (got {eps})")
        if not isinstance(slow_every, int) or slow_every < 1:
            raise ValueError(f"slow_every must be an int ≥ 1 (got {slow_every!r})")
        if not isinstance(ns_steps, int) or ns_steps < 0:
            raise ValueError(f"ns_steps must be an int ≥ 0 (got {ns_steps!r})")
        if accumulate not in ("sum", "ema"):
            raise ValueError(f"accumulate must be 'sum' or 'ema' (got {accumulate!r})")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be ≥ 0 (got {weight_decay})")
        adjust_lr(1.0, adjust_lr_fn, torch.Size([1, 1]))
        defaults = dict(lr=lr, betas=tuple(betas), alpha=alpha, eps=eps, ns_steps=ns_steps, slow_every=slow_every,
                        accumulate=accumulate, second_moment=second_moment, weight_decay=weight_decay,
                        adjust_lr_fn=adjust_lr_fn, ns_dtype=ns_dtype)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        for group in self.param_groups:
            b1, b2, b3 = group["betas"]
            ema = group["accumulate"] == "ema"
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = as_matrices(p.grad)
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["m1"] = torch.zeros_like(g)
                    st["m2"] = torch.zeros_like(g)
                    st["o2"] = torch.zeros_like(g)
                    st["gsum"] = torch.zeros_like(g)
                    if group["second_moment"]:
                        st["v"] = torch.zeros_like(g)
                st["step"] += 1
                t = st["step"]
                m1 = st["m1"]
                if ema:
                    m1.lerp_(g, 1 - b1)
                else:
                    m1.add_(g, alpha=b1)
                st["gsum"].add_(g)
                o1 = newton_schulz(m1, group["ns_steps"], dtype=group["ns_dtype"])
                update = o1 + group["alpha"] * st["o2"] if group["alpha"] else o1
                if group["second_moment"]:
                    v = st["v"]
                    if ema:
                        v.mul_(b2).addcmul_(g, g, value=1 - b2)
                        denom = (v / (1 - b2 ** t)).sqrt_().add_(group["eps"])
                    else:
                        v.addcmul_(g, g, value=b2)
                        denom = v.sqrt().add_(group["eps"])
                    update = update / denom
                lr = adjust_lr(group["lr"], group["adjust_lr_fn"], g.shape)
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update.view_as(p), alpha=-lr)
                if t % group["slow_every"] == 0:  # the slow memory takes the block's gradients
                    m2 = st["m2"]
                    if ema:
                        m2.mul_(b3).add_(st["gsum"], alpha=1 - b3)
                    else:
                        m2.add_(st["gsum"], alpha=b3)
                    st["o2"] = newton_schulz(m2, group["ns_steps"], dtype=group["ns_dtype"])
                    st["gsum"].zero_()
        return loss
