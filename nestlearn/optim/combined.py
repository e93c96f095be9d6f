"""Several optimizers over disjoint parameter sets, stepped, scheduled and saved as one."""

from __future__ import annotations

import torch


class Optimizers:
    """E.g. a matrix optimizer (Muon, M3) plus AdamW for the remaining parameters."""

    def __init__(self, *opts: torch.optim.Optimizer):
        self.opts = opts
        for o in opts:
            for g in o.param_groups:
                g.setdefault("base_lr", g["lr"])

    def set_lr_factor(self, factor: float) -> None:
        for o in self.opts:
            for g in o.param_groups:
                g["lr"] = g["base_lr"] * factor

    def step(self) -> None:
        for o in self.opts:
            o.step()

    def zero_grad(self) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=True)

    def state_dict(self) -> list:
        return [o.state_dict() for o in self.opts]

    def load_state_dict(self, states: list) -> None:
        for o, s in zip(self.opts, states, strict=True):
            o.load_state_dict(s)
