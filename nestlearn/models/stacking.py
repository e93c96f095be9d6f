"""Ad-hoc level stacking (NL §7.3): turn a trained Transformer into a Hope-Attention model whose
CMS levels start from the Transformer's MLPs."""

from __future__ import annotations

from ..layers import CMS, CMSConfig, LevelConfig
from .config import apply_overrides
from .lm import CausalLM


def stack_levels(source: CausalLM, levels: list[LevelConfig], variant: str = "sequential") -> CausalLM:
    """A ``hope_attention`` copy of a ``transformer`` model: every block keeps its attention and
    norms; its MLP becomes CMS level 0, and further levels start with a zero output projection
    (deviation D8). With every level's learning rate 0 the logits equal the source model's.
    """
    if source.cfg.block != "transformer":
        raise ValueError(f"ad-hoc level stacking starts from a 'transformer' model (got {source.cfg.block!r})")
    cms_cfg = CMSConfig(levels=list(levels), variant=variant, hidden_mult=source.cfg.mlp_mult)
    cfg = apply_overrides(source.cfg, {"block": "hope_attention", "cms": cms_cfg})
    target = CausalLM(cfg).to(dtype=source.embed.weight.dtype, device=source.embed.weight.device)
    state = {k: v for k, v in source.state_dict().items() if ".mlp." not in k}
    missing, unexpected = target.load_state_dict(state, strict=False)
    assert not unexpected and all(".mlp." in k for k in missing), (missing, unexpected)
    for src, dst in zip(source.blocks, target.blocks, strict=True):
        dst.mlp.load_state_dict(CMS.from_mlps([src.mlp], cms_cfg).to(src.mlp.w_gate).state_dict())
    return target
