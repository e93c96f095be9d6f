"""The causal LM skeleton, its configuration and presets.

    cfg = preset("debug", block="hope")          # a ModelConfig; every field overridable
    model = CausalLM(cfg)
    logits, loss, state = model(ids, targets=None, state=None)
"""

from .blocks import BLOCKS, MIXERS, MLPS, Block, BlockState
from .config import PRESETS, ModelConfig, apply_overrides, from_dict, preset, to_dict
from .lm import CausalLM, ModelState
from .stacking import stack_levels

__all__ = ["BLOCKS", "MIXERS", "MLPS", "PRESETS", "Block", "BlockState", "CausalLM", "ModelConfig", "ModelState",
           "apply_overrides", "from_dict", "preset", "stack_levels", "to_dict"]
