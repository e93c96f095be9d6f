"""Continuum Memory System (NL §7.1, eqs. 70–74): a chain of MLP levels, each a fast weight that
steps along the gradient of the task loss every ``chunk_size`` tokens.

The layer itself only applies its current fast weights; the in-context learning driver
(``nestlearn.models.icl``) drives the learning (the model owns the loss): a forward with ``trace=[]``
hands back the level activations, the driver takes the gradient of the segment's next-token loss with
respect to ``trace_tensors(trace)``, hands it to ``accumulate``, and calls ``step`` at each position
``b``. A level whose chunk ends at ``b`` then moves (eq. 71, summed over the chunk's positions)

    θ ← θ − η^(ℓ) Σ_{t ∈ [b − C, b)} ∇_θ ℓ_t,

first-order: the step is detached, so the outer optimizer trains the initial weights θ₀ through
every use of θ = θ₀ + Δ. ``chunk_size = 0`` or ``lr = 0`` is frozen in context (a plain MLP).

Variants: ``sequential`` (eq. 73, default): ``z = MLP₁(u)``, then ``z ← z + MLPₗ(norm(z))``;
``nested`` (eq. 72): sequential, and a level is reset to θ₀ when the next slower level steps;
``independent`` (eq. 74): ``Σₗ wₗ MLPₗ(u)`` with learnable weights. The residual on levels ≥ 2 is
deviation D7 (eq. 70 chains MLPs without residuals).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..modules import RMSNorm, SwiGLU

VARIANTS = ("sequential", "nested", "independent")
RESETS = ("sequence", "persistent")


@dataclass
class LevelConfig:
    chunk_size: int = 16  # tokens between two steps; 0 = frozen in context
    lr: float = 1e-3  # η^(ℓ); 0 keeps the level at its initial weights
    reset: str = "sequence"  # "sequence": back to θ₀ for each new sequence; "persistent": keep learning


@dataclass
class CMSConfig:
    levels: list[LevelConfig] = field(default_factory=lambda: [LevelConfig(16), LevelConfig(64)])
    variant: str = "sequential"
    hidden_mult: float = 4.0  # MLP hidden = hidden_mult · dim (rounded)

    def validate(self) -> None:
        if not self.levels:
            raise ValueError("cms.levels must list at least one level")
        if self.variant not in VARIANTS:
            raise ValueError(f"cms.variant must be one of {VARIANTS} (got {self.variant!r})")
        prev = None
        for i, lv in enumerate(self.levels):
            if not isinstance(lv.chunk_size, int) or lv.chunk_size < 0:
                raise ValueError(f"cms.levels[{i}].chunk_size must be an int ≥ 0 (got {lv.chunk_size!r})")
            if lv.lr < 0:
                raise ValueError(f"cms.levels[{i}].lr must be ≥ 0 (got {lv.lr})")
            if lv.reset not in RESETS:
                raise ValueError(f"cms.levels[{i}].reset must be one of {RESETS} (got {lv.reset!r})")
            if lv.chunk_size:
                if prev is not None and lv.chunk_size % self.levels[prev].chunk_size:
                    raise ValueError(f"cms.levels[{i}].chunk_size must be a positive multiple of "
                                     f"cms.levels[{prev}].chunk_size (got {lv.chunk_size} after "
                                     f"{self.levels[prev].chunk_size})")
                prev = i


def level_steps(pos: int, chunk_size: int) -> bool:
    """Does a level with this chunk size step just before absolute position ``pos``?"""
    return chunk_size > 0 and pos > 0 and pos % chunk_size == 0


class CMSState(NamedTuple):
    """Per level (``None`` for frozen levels, which use the parameters):

    weights: fast weights ``(w_gate, w_up, w_down)`` ``[B, D, Dh], [B, D, Dh], [B, Dh, D]``.
    acc:     the task-loss gradient since the level's last step, as low-rank factors over the tokens
             seen: ``(x, ∂a, ∂b, h, ∂y)`` ``[B, n, ·]`` with ``∇w_gate = xᵀ∂a``, ``∇w_up = xᵀ∂b``,
             ``∇w_down = hᵀ∂y`` (a linear layer's gradient over n tokens has rank ≤ n).

    The activations a segment's loss is differentiated against are not state: a forward hands them to
    the caller's ``trace`` list when asked (``forward(x, state, trace=[])``).
    """

    weights: tuple
    acc: tuple


class CMS(nn.Module):
    def __init__(self, dim: int, cfg: CMSConfig):
        super().__init__()
        cfg.validate()
        self.cfg, self.dim = cfg, dim
        hidden = max(1, int(round(cfg.hidden_mult * dim)))
        self.levels = nn.ModuleList(SwiGLU(dim, hidden) for _ in cfg.levels)
        self.norms = nn.ModuleList(RMSNorm(dim) for _ in cfg.levels[1:])
        if cfg.variant == "independent":
            self.mix = nn.Parameter(torch.ones(len(cfg.levels)))
        with torch.no_grad():  # a chain starts as the first level: later levels add little yet
            for lvl in self.levels[1:] if cfg.variant != "independent" else []:
                lvl.w_down.mul_(0.1)

    @staticmethod
    def learns(lv: LevelConfig) -> bool:  # deviation D11
        """A level learns in context iff it has a chunk and a learning rate; otherwise it is a plain
        MLP on its (meta-learned) parameters."""
        return lv.chunk_size > 0 and lv.lr > 0

    def _empty_acc(self, w: tuple) -> tuple:
        wg, _, wd = w
        B, D, Dh = wg.shape
        z = lambda d: wg.new_zeros(B, 0, d)  # noqa: E731
        return (z(D), z(Dh), z(Dh), z(Dh), z(wd.shape[-1]))

    def init_state(self, batch_size: int) -> CMSState:
        ws, accs = [], []
        for lv, mlp in zip(self.cfg.levels, self.levels, strict=True):
            if not self.learns(lv):
                ws.append(None)
                accs.append(None)
                continue
            w = tuple(p.unsqueeze(0).expand(batch_size, *p.shape) for p in (mlp.w_gate, mlp.w_up, mlp.w_down))
            ws.append(w)
            accs.append(self._empty_acc(w))
        return CMSState(tuple(ws), tuple(accs))

    def _level(self, i: int, x: Tensor, state: CMSState, trace: list) -> Tensor:
        w = state.weights[i]
        if w is None:
            return self.levels[i](x)
        a, b = x @ w[0], x @ w[1]
        if torch.is_grad_enabled():  # graph handles for the inner gradient (leaves under no_grad)
            a = a if a.requires_grad else a.requires_grad_(True)
            b = b if b.requires_grad else b.requires_grad_(True)
        h = F.silu(a) * b
        y = h @ w[2]
        trace[i] = (x, a, b, h, y)
        return y

    def forward(self, x: Tensor, state: CMSState | None = None,
                trace: list | None = None) -> tuple[Tensor, CMSState]:
        """``trace``: a list that receives, per level, the activations ``(x, a, b, h, y)`` of this forward
        (``None`` for frozen levels), for the in-context learning step (``nestlearn.models.icl``)."""
        if state is None:
            state = self.init_state(x.shape[0])
        acts = [None] * len(self.levels)
        if self.cfg.variant == "independent":
            y = sum(self.mix[i] * self._level(i, x, state, acts) for i in range(len(self.levels)))
        else:
            y = self._level(0, x, state, acts)
            for i in range(1, len(self.levels)):
                y = y + self._level(i, self.norms[i - 1](y), state, acts)
        if trace is not None:
            trace[:] = acts
        return y, state

    # ---- driven by the in-context learning driver (nestlearn.models.icl) ----------------------
    @staticmethod
    def trace_tensors(trace: list) -> list[Tensor]:
        """What a segment's loss is differentiated against: ``(a, b, y)`` per learning level."""
        return [t for tr in trace if tr is not None for t in (tr[1], tr[2], tr[4])]

    def accumulate(self, state: CMSState, trace: list, grads: list[Tensor | None]) -> CMSState:
        """Append a segment's gradient factors (``grads`` aligned with ``trace_tensors(trace)``)."""
        it = iter(grads)
        accs = list(state.acc)
        for i, tr in enumerate(trace):
            if tr is None:
                continue
            x, a, b, h, y = tr
            da, db, dy = (torch.zeros_like(t) if g is None else g.detach() for t, g in zip((a, b, y), (next(it),
                          next(it), next(it)), strict=True))
            new = (x.detach(), da, db, h.detach(), dy)  # in the fast weights' dtype (autocast computes lower)
            accs[i] = tuple(torch.cat([old, n.to(old.dtype)], dim=1) for old, n in zip(accs[i], new, strict=True))
        return CMSState(state.weights, tuple(accs))

    def step(self, state: CMSState, pos: int) -> CMSState:
        """Apply every level whose chunk ends at ``pos`` (eq. 71); nested: reset faster levels."""
        ws, accs = list(state.weights), list(state.acc)
        stepped = []
        for i, lv in enumerate(self.cfg.levels):
            if ws[i] is None or not level_steps(pos, lv.chunk_size):
                continue
            x, da, db, h, dy = accs[i]
            wg, wu, wd = ws[i]
            # θ ← θ − η Σ_t ∇θ ℓ_t, the sum as one product of the factors, in the fast weights' precision
            # (under autocast too: the level's weights stay in their dtype)
            with torch.autocast(wg.device.type, enabled=False):
                ws[i] = (torch.baddbmm(wg, x.mT, da, alpha=-lv.lr), torch.baddbmm(wu, x.mT, db, alpha=-lv.lr),
                         torch.baddbmm(wd, h.mT, dy, alpha=-lv.lr))
            accs[i] = self._empty_acc(ws[i])
            stepped.append(i)
        if self.cfg.variant == "nested" and stepped:
            fresh = self.init_state(ws[stepped[0]][0].shape[0])
            for i in stepped:  # the faster levels before i start again from θ₀ (eq. 72)
                for j in range(i):
                    if ws[j] is not None:
                        ws[j], accs[j] = fresh.weights[j], fresh.acc[j]
        return CMSState(tuple(ws), tuple(accs))

    def reset_for_new_sequence(self, state: CMSState) -> CMSState:
        """Levels with ``reset="sequence"`` go back to θ₀; persistent ones keep what they learned
        (detached from the previous sequence's graph) and drop partial gradients."""
        learning = [w for w in state.weights if w is not None]
        if not learning:
            return state
        fresh = self.init_state(learning[0][0].shape[0])
        ws = [fresh.weights[i] if state.weights[i] is None or lv.reset == "sequence"
              else tuple(t.detach() for t in state.weights[i]) for i, lv in enumerate(self.cfg.levels)]
        return CMSState(tuple(ws), fresh.acc)
