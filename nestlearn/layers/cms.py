"""Continuum Memory System (NL §7.1, eqs. 70–74): a chain of MLP levels, each a fast weight that
steps along the gradient of the task loss every ``chunk_size`` tokens.

The layer itself only applies its current fast weights; the model drives the learning (it owns the
loss): after each segment it takes the gradient of the segment's next-token loss with respect to
``fast_weights(state)``, hands it to ``accumulate``, and calls ``step`` at each absolute position
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
from torch import Tensor, nn

from ..modules import RMSNorm, SwiGLU, swiglu

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
    """Per in-context level: fast weights ``(w_gate, w_up, w_down)`` ``[B, ...]`` and the gradient
    accumulated since its last step; ``None`` for frozen levels (they use the parameters)."""

    weights: tuple
    grads: tuple


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
        with torch.no_grad():  # a chain starts as the first level: later levels add nothing yet
            for lvl in self.levels[1:] if cfg.variant != "independent" else []:
                lvl.w_down.mul_(0.1)

    @staticmethod
    def learns(lv: LevelConfig) -> bool:
        """A level learns in context iff it has a chunk and a learning rate; otherwise it is a plain
        MLP on its (meta-learned) parameters."""
        return lv.chunk_size > 0 and lv.lr > 0

    def init_state(self, batch_size: int) -> CMSState:
        ws, gs = [], []
        for i, (lv, mlp) in enumerate(zip(self.cfg.levels, self.levels, strict=True)):
            if not self.learns(lv):
                ws.append(None)
                gs.append(None)
                continue
            w = tuple(p.unsqueeze(0).expand(batch_size, *p.shape) for p in (mlp.w_gate, mlp.w_up, mlp.w_down))
            ws.append(w)
            gs.append(tuple(torch.zeros(t.shape, dtype=t.dtype, device=t.device) for t in w))
            del i
        return CMSState(tuple(ws), tuple(gs))

    def _level(self, i: int, x: Tensor, state: CMSState) -> Tensor:
        w = state.weights[i]
        if w is None:
            return self.levels[i](x)
        return swiglu(x, *w)  # per-sample fast weights [B, D, Dh] broadcast over T

    def forward(self, x: Tensor, state: CMSState | None = None) -> tuple[Tensor, CMSState]:
        if state is None:
            state = self.init_state(x.shape[0])
        if self.cfg.variant == "independent":
            y = sum(self.mix[i] * self._level(i, x, state) for i in range(len(self.levels)))
            return y, state
        z = self._level(0, x, state)
        for i in range(1, len(self.levels)):
            z = z + self._level(i, self.norms[i - 1](z), state)
        return z, state

    # ---- driven by the model ---------------------------------------------------------------
    def fast_weights(self, state: CMSState) -> list[Tensor]:
        return [t for w in state.weights if w is not None for t in w]

    def with_weights(self, state: CMSState, flat: list[Tensor]) -> CMSState:
        """The same state with its fast weights replaced by ``flat`` (as ``fast_weights`` orders them)."""
        it = iter(flat)
        ws = tuple(None if w is None else tuple(next(it) for _ in w) for w in state.weights)
        return CMSState(ws, state.grads)

    def accumulate(self, state: CMSState, grads: list[Tensor | None]) -> CMSState:
        it = iter(grads)
        gs = []
        for g in state.grads:
            if g is None:
                gs.append(None)
                continue
            gs.append(tuple(a if d is None else a + d.detach() for a, d in zip(g, [next(it) for _ in g], strict=True)))
        return CMSState(state.weights, tuple(gs))

    def step(self, state: CMSState, pos: int) -> CMSState:
        """Apply every level whose chunk ends at ``pos`` (eq. 71); nested: reset faster levels."""
        ws, gs = list(state.weights), list(state.grads)
        stepped = []
        for i, lv in enumerate(self.cfg.levels):
            if ws[i] is None or not level_steps(pos, lv.chunk_size):
                continue
            ws[i] = tuple(w - lv.lr * g for w, g in zip(ws[i], gs[i], strict=True))
            gs[i] = tuple(torch.zeros_like(g) for g in gs[i])
            stepped.append(i)
        if self.cfg.variant == "nested":
            fresh = self.init_state(ws[stepped[0]][0].shape[0]) if stepped else None
            for i in stepped:  # the faster levels before i start again from θ₀ (eq. 72)
                for j in range(i):
                    if ws[j] is not None:
                        ws[j], gs[j] = fresh.weights[j], fresh.grads[j]
        return CMSState(tuple(ws), tuple(gs))

    def reset_for_new_sequence(self, state: CMSState) -> CMSState:
        """Levels with ``reset="sequence"`` go back to θ₀; persistent ones keep what they learned
        (detached from the previous sequence's graph) and drop partial gradients."""
        fresh = self.init_state(next(t for w in state.weights if w is not None for t in w).shape[0]) \
            if any(w is not None for w in state.weights) else state
        ws, gs = [], []
        for i, lv in enumerate(self.cfg.levels):
            if state.weights[i] is None or lv.reset == "sequence":
                ws.append(fresh.weights[i])
            else:
                ws.append(tuple(t.detach() for t in state.weights[i]))
            gs.append(fresh.grads[i])
        return CMSState(tuple(ws), tuple(gs))

    @classmethod
    def from_mlps(cls, mlps: list[SwiGLU], cfg: CMSConfig) -> CMS:
        """Ad-hoc level stacking (NL §7.3): levels start from existing MLPs' weights.

        ``mlps[i]`` initialises level ``i``; levels beyond ``len(mlps)`` start with a zero output
        projection, so with every level's learning rate 0 the CMS computes exactly ``mlps[0]``
        (sequential and nested variants; deviation D8).
        """
        if cfg.variant == "independent":
            raise ValueError("ad-hoc level stacking needs cms.variant 'sequential' or 'nested'")
        if not mlps:
            raise ValueError("from_mlps needs at least one MLP")
        dim, hidden = mlps[0].w_gate.shape
        cfg = CMSConfig(levels=list(cfg.levels), variant=cfg.variant, hidden_mult=hidden / dim)
        cms = cls(dim, cfg)
        with torch.no_grad():
            for i, lvl in enumerate(cms.levels):
                if i < len(mlps):
                    for name in ("w_gate", "w_up", "w_down"):
                        getattr(lvl, name).copy_(getattr(mlps[i], name))
                else:
                    lvl.w_down.zero_()
        return cms
