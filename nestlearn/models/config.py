"""Model configuration: nested dataclasses (read by ``nestlearn.config``), presets, dotted overrides."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import config
from ..config import build, override, read_yaml
from ..layers import CMS, CMSConfig, DeltaConfig, SelfModConfig, TitansConfig
from . import blocks


@dataclass
class ModelConfig:
    block: str = "hope"
    vocab_size: int = 256
    dim: int = 64
    layers: int = 2
    heads: int = 4  # attention heads (transformer, hope_attention, titans_mag/mal)
    max_seq_len: int = 2048  # positional limit of attention blocks
    mlp_mult: float = 8 / 3  # SwiGLU hidden = mlp_mult · dim (transformer, titans)
    window: int | None = None  # sliding-window attention for transformer / hope_attention
    tie_embeddings: bool = True
    rope_base: float = 10000.0  # rotary base of the attention mixer (a Llama's rope_theta)
    rope: bool = True  # rotary positions in the attention mixer; false: no position signal but the mask (NoPE)
    norm_eps: float = 1e-6  # the blocks' and the final RMSNorm's epsilon
    selfmod: SelfModConfig = field(default_factory=SelfModConfig)
    cms: CMSConfig = field(default_factory=lambda: CMSConfig(hidden_mult=8 / 3))
    titans: TitansConfig = field(default_factory=TitansConfig)
    delta: DeltaConfig = field(default_factory=DeltaConfig)
    layer_cms: list[CMSConfig] = field(default_factory=list)  # one CMS section per layer ([]: every layer uses cms)

    def validate(self) -> None:
        if self.block not in blocks.BLOCKS:
            raise ValueError(f"model.block must be one of {tuple(blocks.BLOCKS)} (got {self.block!r})")
        for name in ("vocab_size", "dim", "layers", "heads", "max_seq_len"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be a positive int (got {getattr(self, name)!r})")
        if self.dim % self.heads:
            raise ValueError(f"model.heads must divide model.dim (got dim={self.dim}, heads={self.heads})")
        if self.layer_cms and len(self.layer_cms) != self.layers:
            raise ValueError(f"model.layer_cms must list one CMS section per layer ({self.layers}) or none "
                             f"(got {len(self.layer_cms)})")
        for i in range(len(self.layer_cms) or 1):
            try:
                blocks.validate(self.for_layer(i))
            except ValueError as e:
                if not self.layer_cms:
                    raise
                raise ValueError(f"model.layer_cms[{i}]: {e}") from e
        chunks = sorted({lv.chunk_size for c in (self.layer_cms or [self.cms]) for lv in c.levels if CMS.learns(lv)})
        if any(c % chunks[0] for c in chunks):
            raise ValueError(f"every learning CMS chunk_size must be a multiple of the model's smallest one "
                             f"({chunks[0]}), which sets the in-context segment (got {chunks})")

    def for_layer(self, i: int) -> ModelConfig:
        """The configuration layer ``i`` is built from (its own CMS section when ``layer_cms`` is set)."""
        return replace(self, cms=self.layer_cms[i], layer_cms=[]) if self.layer_cms else self


def from_dict(data: dict) -> ModelConfig:
    """A ``ModelConfig`` from nested dicts (as read from YAML); unknown keys are an error. A ``preset``
    key starts from that preset's values (``nestlearn/presets/<name>.yaml``); the other keys override them."""
    return build(ModelConfig, expand(data), "model.")


def expand(data: dict) -> dict:
    """A model section with its ``preset`` key (if any) replaced by the preset's values, the section's
    other keys on top."""
    if not isinstance(data, dict) or "preset" not in data:
        return data
    return _merge(_preset_data(data["preset"]), {k: v for k, v in data.items() if k != "preset"})


def to_dict(cfg: ModelConfig) -> dict:
    return config.to_dict(cfg)


def apply_overrides(cfg: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    """Set dotted keys (``"selfmod.rule": "gd"``, ``"cms.levels.1.lr": 0``) on a copy of ``cfg``."""
    for dotted, value in overrides.items():
        cfg = override(cfg, dotted, value, "model.")
    return cfg


PRESET_DIR = Path(__file__).resolve().parents[1] / "presets"
PRESETS = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))


def _preset_data(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    return read_yaml(PRESET_DIR / f"{name}.yaml", "preset")


def _merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, mappings merged key by key (lists are replaced whole)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def preset(name: str, block: str = "hope", **overrides: Any) -> ModelConfig:
    """A named configuration (``nestlearn/presets/<name>.yaml``) for any block kind; ``overrides`` may use
    dotted keys."""
    cfg = from_dict({**_preset_data(name), "block": block})
    cfg = apply_overrides(cfg, overrides) if overrides else cfg
    cfg.validate()
    return cfg
