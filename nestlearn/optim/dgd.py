"""Delta Gradient Descent as an outer optimizer for ``nn.Linear`` layers (NL eqs. 56–57).

For a linear layer ``y = W x`` with input x and gradient ∇W = ∇_y L xᵀ, one step is the exact
solution of NL eq. 56, ``argmin_W ½‖W x − u‖² + 1/(2η)‖W − W_t‖²`` with ``u = −∇_y L``:

    W ← W (I − η′ x xᵀ) − η′ ∇W,        η′ = η / (1 + η ‖x‖²).

Batch generalisation (this class): x xᵀ becomes the input second moment of the batch,
``X̄ = (1/N) Σ_n x_n x_nᵀ`` over every row the layer saw since the last step (forward hooks collect
it), and ``η′ = η / (1 + η tr X̄)``; ∇W is the usual (mean) batch gradient. For N = 1 it is exactly
eq. 57. Every other parameter (biases, norms, embeddings, non-Linear weights) is updated by a
fallback optimizer (``"sgd"`` or ``"adamw"``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim import Optimizer

from .param_groups import run_closure, with_grads


class DGD(Optimizer):
    def __init__(self, model: nn.Module, lr: float = 1e-2, weight_decay: float = 0.0, fallback: str = "adamw",
                 fallback_lr: float | None = None, **fallback_kwargs):
        if not lr >= 0:
            raise ValueError(f"lr must be ≥ 0 (got {lr})")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be ≥ 0 (got {weight_decay})")
        if fallback not in ("sgd", "adamw"):
            raise ValueError(f"fallback must be 'sgd' or 'adamw' (got {fallback!r})")
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        weights = {id(m.weight) for m in linears}
        if not linears:
            raise ValueError("DGD found no nn.Linear layer in the model")
        super().__init__([m.weight for m in linears], dict(lr=lr, weight_decay=weight_decay))
        self._module_of = {id(m.weight): m for m in linears}
        self._stats: dict[int, list] = {}
        self._hooks = [m.register_forward_hook(self._capture) for m in linears]
        others = [p for p in model.parameters() if id(p) not in weights]
        self.fallback = None
        if others:
            cls = torch.optim.AdamW if fallback == "adamw" else torch.optim.SGD
            self.fallback = cls(others, lr=lr if fallback_lr is None else fallback_lr, **fallback_kwargs)

    def _capture(self, module: nn.Linear, inputs, output) -> None:
        if not torch.is_grad_enabled():
            return  # evaluation passes do not count
        x = inputs[0].detach().reshape(-1, inputs[0].shape[-1])
        s = self._stats.setdefault(id(module.weight), [x.new_zeros(x.shape[-1], x.shape[-1]), 0])
        s[0].add_(x.T.to(s[0].dtype) @ x.to(s[0].dtype))
        s[1] += x.shape[0]

    def __setstate__(self, state):  # copies and unpickling: statistics are per step, start empty
        super().__setstate__(state)
        self.__dict__.setdefault("_stats", {})

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        for group, W in with_grads(self.param_groups):
            stats = self._stats.pop(id(W), None)
            if stats is None or stats[1] == 0:
                raise RuntimeError("DGD has no input statistics for a layer with a gradient: run the "
                                   "forward pass with gradients enabled before step()")
            xbar = stats[0] / stats[1]  # deviation D18: the batch second moment
            eta = group["lr"]
            eta_p = eta / (1 + eta * float(xbar.diagonal().sum()))
            if group["weight_decay"]:
                W.mul_(1 - eta * group["weight_decay"])
            W.sub_(eta_p * (W @ xbar) + eta_p * W.grad)  # W (I − η′ X̄) − η′ ∇W
        if self.fallback is not None:
            self.fallback.step()
        self._stats.clear()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        if self.fallback is not None:
            self.fallback.zero_grad(set_to_none)

    def state_dict(self):
        sd = super().state_dict()
        sd["fallback"] = None if self.fallback is None else self.fallback.state_dict()
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        fb = state_dict.pop("fallback", None)
        super().load_state_dict(state_dict)
        if self.fallback is not None and fb is not None:
            self.fallback.load_state_dict(fb)
