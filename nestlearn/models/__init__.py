"""The causal LM skeleton, its configuration and presets.

    cfg = preset("debug", block="hope")          # a ModelConfig; every field overridable
    model = CausalLM(cfg)
    logits, loss, state = model(ids, targets=None, state=None)
"""

from .config import BLOCKS, PRESETS, ModelConfig, apply_overrides, from_dict, preset, to_dict
from .lm import Block, CausalLM, ModelState
from .stacking import stack_levels

__all__ = ["BLOCKS", "PRESETS", "Block", "CausalLM", "ModelConfig", "ModelState", "apply_overrides",
           "from_dict", "preset", "stack_levels", "to_dict"]
