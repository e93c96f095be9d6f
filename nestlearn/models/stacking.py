"""Ad-hoc level stacking (NL §7.3): turn a trained Transformer into a Hope-Attention model whose
CMS levels start from the Transformer's MLPs.

§7.3 initialises level i from "pre-trained MLP i" and says that learning rates → 0 recover the
pre-trained model, but not which MLPs or how the levels then add up (deviation D29). Three
initialisations, each exact at learning rate 0 (the stacked model computes the source's logits):

- ``"split"``: the independent variant (eq. 74, ``Σₗ wₗ MLPₗ(u)``, ``wₗ = 1``); the source MLP's hidden
  units are dealt out to the levels in order, so every level holds a part of the pre-trained MLP, learns
  in context from the first segment on, and the parameters stay those of the source;
- ``"copy"``: the independent variant, every level a copy of the whole source MLP with ``wₗ = 1/k``;
- ``"zero"``: the sequential or nested variant, level 0 the source MLP and further levels starting with a
  zero output projection (deviation D8).
"""

from __future__ import annotations

import torch

from ..layers import CMS, CMSConfig, LevelConfig
from ..modules import SwiGLU
from .config import apply_overrides
from .lm import CausalLM

INITS = ("split", "copy", "zero")


def _section(mlp: SwiGLU, levels: list[LevelConfig], variant: str, init: str) -> CMSConfig:
    """The CMS section a block gets: its levels, and each level's width as the initialisation needs it."""
    dim, hidden = mlp.w_gate.shape
    if init == "zero":
        if variant == "independent":
            raise ValueError("init='zero' stacks sequential or nested levels (D8); init='split' or 'copy' sum "
                             "independent ones")
    elif variant != "independent":
        raise ValueError(f"init={init!r} sums the levels, so it needs cms variant 'independent' (eq. 74); "
                         f"got {variant!r} (init='zero' stacks sequential or nested levels)")
    elif init == "split" and hidden % len(levels):
        raise ValueError(f"init='split' deals the MLP's {hidden} hidden units out to {len(levels)} levels: "
                         f"{hidden} is not divisible by {len(levels)}")
    width = hidden // len(levels) if init == "split" else hidden
    return CMSConfig(levels=list(levels), variant=variant, hidden_mult=width / dim)


@torch.no_grad()
def _start_levels(cms: CMS, mlp: SwiGLU, init: str) -> None:
    """Level weights from the pre-trained MLP (see the module's docstring); ``zero`` leaves later levels'
    input weights at their initialisation and zeroes their output projection."""
    width = cms.levels[0].w_gate.shape[1]
    for i, lvl in enumerate(cms.levels):
        if init == "zero" and i > 0:
            lvl.w_down.zero_()
            continue
        cols = slice(i * width, (i + 1) * width) if init == "split" else slice(None)
        lvl.w_gate.copy_(mlp.w_gate[:, cols])
        lvl.w_up.copy_(mlp.w_up[:, cols])
        lvl.w_down.copy_(mlp.w_down[cols])
    if init != "zero":
        cms.mix.fill_(1.0 if init == "split" else 1.0 / len(cms.levels))


def stack_levels(source: CausalLM, levels: list, variant: str | None = None, init: str = "zero") -> CausalLM:
    """A ``hope_attention`` copy of a ``transformer`` model: every block keeps its attention and
    norms; its MLP becomes a CMS initialised by ``init`` (``"split"``, ``"copy"`` or ``"zero"``).

    ``levels``: one list of ``LevelConfig`` for every layer, or one such list per layer (per-layer
    frequencies). ``variant`` defaults to ``"independent"`` for split and copy, ``"sequential"`` for zero.
    With every level's learning rate 0 the logits equal the source model's.
    """
    if source.cfg.block != "transformer":
        raise ValueError(f"ad-hoc level stacking starts from a 'transformer' model (got {source.cfg.block!r})")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS} (got {init!r})")
    variant = variant or ("sequential" if init == "zero" else "independent")
    per_layer = [list(lv) for lv in levels] if levels and not isinstance(levels[0], LevelConfig) else None
    if per_layer is not None and len(per_layer) != source.cfg.layers:
        raise ValueError(f"levels lists {len(per_layer)} layers; the source model has {source.cfg.layers}")
    sections = [_section(b.mlp, lv, variant, init)
                for b, lv in zip(source.blocks, per_layer or [list(levels)] * source.cfg.layers, strict=True)]
    cfg = apply_overrides(source.cfg, {"block": "hope_attention", "cms": sections[0],
                                       "layer_cms": sections if per_layer is not None else []})
    target = CausalLM(cfg).to(dtype=source.embed.weight.dtype, device=source.embed.weight.device)
    state = {k: v for k, v in source.state_dict().items() if ".mlp." not in k}
    missing, unexpected = target.load_state_dict(state, strict=False)
    assert not unexpected and all(".mlp." in k for k in missing), (missing, unexpected)
    for src, dst in zip(source.blocks, target.blocks, strict=True):
        _start_levels(dst.mlp, src.mlp, init)
    return target
