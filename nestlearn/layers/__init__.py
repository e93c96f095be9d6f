"""Sequence mixers and MLP systems, each ``forward(x, state=None) -> (y, state)``."""

from .attention import Attention, KVCache
from .cms import CMS, CMSConfig, CMSState, LevelConfig, level_steps
from .delta import DeltaConfig, DeltaRule, DeltaState
from .selfmod import SelfModConfig, SelfModifyingTitans, SelfModState
from .titans import MACState, TitansConfig, TitansLMM, TitansMAC, TitansState

__all__ = ["CMS", "Attention", "CMSConfig", "CMSState", "DeltaConfig", "DeltaRule", "DeltaState", "KVCache",
           "LevelConfig", "MACState", "SelfModConfig", "SelfModState", "SelfModifyingTitans", "TitansConfig",
           "TitansLMM", "TitansMAC", "TitansState", "level_steps"]
