"""One optimizer builder for every training loop (the LM trainer, the synthetic suite, the ViT experiment).

    opt = build_optimizer(model, "m3", lr=3e-3, matrix_lr=1e-2, weight_decay=0.1, alpha=0.1)

``adamw`` updates everything. ``muon``, ``m3``, ``m3-ema`` and ``dgd`` update the model's matrices
(``split_params``: 2-D and larger weights outside embeddings and heads) and AdamW at ``lr`` the rest.
Weight decay applies to parameters of two or more dimensions only (not to norms, biases and gates).
"""

from __future__ import annotations

import torch
from torch import nn

from .combined import Optimizers
from .dgd import DGD
from .m3 import M3
from .param_groups import split_params

OPTIMIZERS = ("adamw", "muon", "m3", "m3-ema", "dgd")


def _adamw(params: list, lr: float, betas: tuple[float, float], weight_decay: float) -> torch.optim.AdamW:
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0})
              if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def build_optimizer(model: nn.Module, name: str = "adamw", lr: float = 1e-3, matrix_lr: float | None = None,
                    weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.95), momentum: float = 0.95,
                    alpha: float = 0.1, slow_every: int = 100) -> Optimizers:
    """``name`` in ``OPTIMIZERS``; ``matrix_lr`` (default ``lr``) is the matrix optimizer's rate;
    ``momentum`` is Muon's; ``alpha`` and ``slow_every`` are M3's slow momentum weight and frequency
    (``m3``: Algorithm 1 as printed, plain sums; ``m3-ema``: moving averages, deviation D15)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS} (got {name!r})")
    mlr = lr if matrix_lr is None else matrix_lr
    params = list(model.parameters())
    if name == "adamw":
        return Optimizers(_adamw(params, lr, betas, weight_decay))
    if name == "dgd":
        return Optimizers(DGD(model, lr=mlr, fallback="adamw", fallback_lr=lr, betas=betas))
    mats, others = split_params(model)
    # torch.optim.Muon takes 2-D parameters only: larger kernels (a ViT's patch embedding) go to AdamW
    others += [p for p in mats if p.dim() != 2]
    mats = [p for p in mats if p.dim() == 2]
    if name == "muon":  # "match_rms_adamw" puts Muon's update on AdamW's scale
        main = torch.optim.Muon(mats, lr=mlr, momentum=momentum, weight_decay=weight_decay,
                                adjust_lr_fn="match_rms_adamw")
    else:  # the rate as Algorithm 1 prints it (adjust_lr_fn="none")
        main = M3(mats, lr=mlr, alpha=alpha, slow_every=slow_every, weight_decay=weight_decay,
                  accumulate="sum" if name == "m3" else "ema")
    return Optimizers(main, _adamw(others, lr, betas, weight_decay))


__all__ = ["OPTIMIZERS", "build_optimizer"]
