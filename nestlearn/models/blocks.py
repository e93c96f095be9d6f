"""Blocks by composition (pre-norm, residual): a block kind is a sequence mixer and an MLP,

    x = x + mixer(norm₁ x);   x = x + mlp(norm₂ x)

each taken from a registry below and built from its own typed section of the ``ModelConfig``
(``selfmod``, ``titans``, ``delta``, ``cms``). HOPE, Hope-Attention and the baselines are named
compositions (``BLOCKS``). A new mixer is one file in ``nestlearn/layers`` and one ``MIXERS`` line; a
new block kind is one ``BLOCKS`` line.

A mixer is a module with ``init_state(batch_size, ref)`` and ``forward(x, state) -> (y, state)``.
A mixer whose own structure spans the residual stream (Titans MAG and MAL: the attention branch sees
the persistent tokens under the block's norm) sets ``takes_residual = True`` and is called as
``mixer(x, state, norm=norm₁)`` instead, returning what is added to ``x``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree
from torch.utils.checkpoint import checkpoint

from ..layers import CMS, Attention, DeltaRule, SelfModifyingTitans, TitansLMM, TitansMAC, TitansMAG, TitansMAL
from ..modules import RMSNorm, SwiGLU


@dataclass(frozen=True)
class Part:
    """A registry entry: how to build the part from a ``ModelConfig`` and how to check its section."""

    build: Callable[[Any], nn.Module]
    validate: Callable[[Any], None] = lambda cfg: None


def _titans(c) -> None:
    c.titans.validate(c.dim)


MIXERS: dict[str, Part] = {
    "attention": Part(lambda c: Attention(c.dim, c.heads, c.max_seq_len, c.window, c.rope_base, c.rope)),
    "selfmod": Part(lambda c: SelfModifyingTitans(c.dim, c.selfmod), lambda c: c.selfmod.validate(c.dim)),
    "titans_lmm": Part(lambda c: TitansLMM(c.dim, c.titans), _titans),
    "titans_mac": Part(lambda c: TitansMAC(c.dim, c.heads, c.titans), _titans),
    "titans_mag": Part(lambda c: TitansMAG(c.dim, c.heads, c.max_seq_len, c.titans), _titans),
    "titans_mal": Part(lambda c: TitansMAL(c.dim, c.heads, c.max_seq_len, c.titans), _titans),
    "delta": Part(lambda c: DeltaRule(c.dim, c.delta), lambda c: c.delta.validate(c.dim)),
}

MLPS: dict[str, Part] = {
    "swiglu": Part(lambda c: SwiGLU(c.dim, max(1, int(round(c.mlp_mult * c.dim))))),
    "cms": Part(lambda c: CMS(c.dim, c.cms), lambda c: c.cms.validate()),
}

BLOCKS: dict[str, tuple[str, str]] = {  # block kind: (mixer, mlp)
    "hope": ("selfmod", "cms"),  # NL eqs. 94–97
    "hope_attention": ("attention", "cms"),  # NL §8.3
    "transformer": ("attention", "swiglu"),  # Transformer++
    "titans": ("titans_lmm", "swiglu"),  # Titans (LMM)
    "titans_mac": ("titans_mac", "swiglu"),  # Titans eqs. 21–25
    "titans_mag": ("titans_mag", "swiglu"),  # Titans eqs. 26–28
    "titans_mal": ("titans_mal", "swiglu"),  # Titans eqs. 29–31
    "delta": ("delta", "swiglu"),  # linear delta rule, NL eq. 56
}


def validate(cfg) -> None:
    """Check the config sections that the block kind's mixer and MLP read."""
    mixer, mlp = BLOCKS[cfg.block]
    MIXERS[mixer].validate(cfg)
    MLPS[mlp].validate(cfg)


class BlockState(NamedTuple):
    """A block's state: its mixer's (``KVCache``, ``SelfModState``, …) and its MLP's (``CMSState``, or
    ``None`` for a SwiGLU)."""

    mixer: Any
    mlp: Any


class Block(nn.Module):
    """``x + mixer(norm x)``, then ``x + mlp(norm x)``.

    ``recompute = True`` (``CausalLM.activation_checkpointing(unit="block")``, the ``"auto"`` choice for a model
    whose CMS does not learn in context; a model that learns in context recomputes whole segments instead)
    recomputes the block in the backward instead of keeping its activations: the whole block for a SwiGLU block,
    the mixer alone for a CMS block (the CMS hands its activations to the in-context learning driver, which
    differentiates them inside the forward). The gradients are the same; the mixer's state at each call's start
    is still kept (docs/PERFORMANCE.md)."""

    recompute = False
    _checkpoint = staticmethod(functools.partial(checkpoint, use_reentrant=False))

    def __init__(self, cfg):
        super().__init__()
        mixer, mlp = BLOCKS[cfg.block]
        self.kind = cfg.block
        self.norm1, self.norm2 = RMSNorm(cfg.dim, cfg.norm_eps), RMSNorm(cfg.dim, cfg.norm_eps)
        self.mixer = MIXERS[mixer].build(cfg)
        self.mlp = MLPS[mlp].build(cfg)
        self.learns_in_context = isinstance(self.mlp, CMS)

    def init_state(self, batch_size: int, ref: Tensor) -> BlockState:
        return BlockState(self.mixer.init_state(batch_size, ref),
                          self.mlp.init_state(batch_size) if self.learns_in_context else None)

    def own_state(self, batch_size: int, ref: Tensor) -> BlockState:
        """``init_state`` built inside this block's forward, with every tensor owning its storage.

        Fast weights start as views of parameters; under FSDP2 the unsharded parameters exist only
        inside the block's forward (and backward), so the state is built here and copied (a copy is
        differentiable: gradients still reach the parameters). Tensors shared within the state stay shared.
        """
        copies: dict[int, Tensor] = {}

        def own(t):
            if not isinstance(t, Tensor):
                return t
            if id(t) not in copies:
                copies[id(t)] = t.clone()
            return copies[id(t)]

        return pytree.tree_map(own, self.init_state(batch_size, ref))

    def forward(self, x: Tensor, state: BlockState | None, trace: list | None = None) -> tuple[Tensor, BlockState]:
        """``trace``: with a CMS, a list that receives its level activations (``CMS.forward``)."""
        if state is None:  # a fresh sequence (see ``own_state``)
            state = self.own_state(x.shape[0], x)
        if self.recompute and torch.is_grad_enabled():
            if not self.learns_in_context:
                return self._checkpoint(self._forward, x, state)
            return self._forward(x, state, trace, recompute_mixer=True)
        return self._forward(x, state, trace)

    def _forward(self, x: Tensor, state: BlockState, trace: list | None = None,
                 recompute_mixer: bool = False) -> tuple[Tensor, BlockState]:
        mix = functools.partial(self._checkpoint, self._mix) if recompute_mixer else self._mix
        h, s_mix = mix(x, state.mixer)
        x = x + h
        if self.learns_in_context:
            h, s_mlp = self.mlp(self.norm2(x), state.mlp, trace=trace)
        else:
            h, s_mlp = self.mlp(self.norm2(x)), None
        return x + h, BlockState(s_mix, s_mlp)

    def _mix(self, x: Tensor, state):
        if getattr(self.mixer, "takes_residual", False):
            return self.mixer(x, state, norm=self.norm1)
        return self.mixer(self.norm1(x), state)


__all__ = ["BLOCKS", "MIXERS", "MLPS", "Block", "BlockState", "Part", "validate"]
