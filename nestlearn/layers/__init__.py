"""Sequence mixers and MLP systems, each ``forward(x, state=None) -> (y, state)``."""

from .attention import Attention, KVCache
from .cms import CMS, CMSConfig, CMSState, LevelConfig, level_steps
from .delta import DeltaConfig, DeltaRule, DeltaState
from .selfmod import SelfModConfig, SelfModifyingTitans, SelfModState
from .titans import HybridState, MACState, TitansConfig, TitansLMM, TitansMAC, TitansMAG, TitansMAL, TitansState

__all__ = ["CMS", "Attention", "CMSConfig", "CMSState", "DeltaConfig", "DeltaRule", "DeltaState", "HybridState",
           "KVCache", "LevelConfig", "MACState", "SelfModConfig", "SelfModState", "SelfModifyingTitans",
           "TitansConfig", "TitansLMM", "TitansMAC", "TitansMAG", "TitansMAL", "TitansState", "level_steps"]
