"""Model configuration: nested dataclasses, presets, dotted overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..layers import CMSConfig, DeltaConfig, LevelConfig, SelfModConfig, TitansConfig
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
    selfmod: SelfModConfig = field(default_factory=SelfModConfig)
    cms: CMSConfig = field(default_factory=lambda: CMSConfig(hidden_mult=8 / 3))
    titans: TitansConfig = field(default_factory=TitansConfig)
    delta: DeltaConfig = field(default_factory=DeltaConfig)

    def validate(self) -> None:
        if self.block not in blocks.BLOCKS:
            raise ValueError(f"model.block must be one of {tuple(blocks.BLOCKS)} (got {self.block!r})")
        for name in ("vocab_size", "dim", "layers", "heads", "max_seq_len"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be a positive int (got {getattr(self, name)!r})")
        if self.dim % self.heads:
            raise ValueError(f"model.heads must divide model.dim (got dim={self.dim}, heads={self.heads})")
        blocks.validate(self)


def _build(cls, data: dict, path: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ValueError(f"unknown config key {path}{key!r}; valid keys: {sorted(names)}")
        kwargs[key] = value
    obj = cls(**kwargs)
    for sub, sub_cls in (("selfmod", SelfModConfig), ("cms", CMSConfig), ("titans", TitansConfig),
                         ("delta", DeltaConfig)):
        if sub in kwargs and isinstance(kwargs[sub], dict):
            setattr(obj, sub, _build(sub_cls, kwargs[sub], f"{path}{sub}."))
    if cls is CMSConfig and isinstance(kwargs.get("levels"), list):
        obj.levels = [lv if isinstance(lv, LevelConfig) else _build(LevelConfig, lv, f"{path}levels[{i}].")
                      for i, lv in enumerate(kwargs["levels"])]
    return obj


def from_dict(data: dict) -> ModelConfig:
    """A ``ModelConfig`` from nested dicts (as read from YAML); unknown keys are an error."""
    return _build(ModelConfig, data, "model.")


def to_dict(cfg: ModelConfig) -> dict:
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    """Set dotted keys (``"selfmod.rule": "gd"``, ``"cms.levels.1.lr": 0``) on a copy of ``cfg``."""
    cfg = from_dict(to_dict(cfg))
    for dotted, value in overrides.items():
        obj, parts = cfg, dotted.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(obj, list):
                if not part.isdigit() or int(part) >= len(obj):
                    raise ValueError(f"config key {dotted!r}: {part!r} is not an index of a list of {len(obj)}")
                if last:
                    obj[int(part)] = value
                else:
                    obj = obj[int(part)]
                continue
            if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
                raise ValueError(f"unknown config key {dotted!r} (no field {part!r})")
            if last:
                setattr(obj, part, value)
            else:
                obj = getattr(obj, part)
    return from_dict(to_dict(cfg))


# CMS presets use two levels of half the Transformer's MLP width: equal MLP parameters.
_PRESETS: dict[str, dict] = {  # deviation D12
    # trains in seconds on a laptop CPU
    "debug": dict(vocab_size=256, dim=32, layers=2, heads=2, max_seq_len=1024,
                  selfmod=dict(heads=2, chunk_size=8, chunk_size_other=4),
                  cms=dict(levels=[dict(chunk_size=8, lr=1e-2), dict(chunk_size=32, lr=1e-3)], hidden_mult=4 / 3),
                  titans=dict(heads=2, chunk_size=8, persistent_tokens=2, window=32),
                  delta=dict(heads=2, chunk_size=8)),
    "tiny": dict(vocab_size=512, dim=64, layers=2, heads=4, max_seq_len=2048,
                 selfmod=dict(heads=4, chunk_size=16, chunk_size_other=8),
                 cms=dict(levels=[dict(chunk_size=16, lr=1e-2), dict(chunk_size=64, lr=1e-3)], hidden_mult=4 / 3),
                 titans=dict(heads=4, chunk_size=16, window=64), delta=dict(heads=4, chunk_size=16)),
    # ~10M parameters
    "small": dict(vocab_size=4096, dim=288, layers=8, heads=4, max_seq_len=4096,
                  selfmod=dict(heads=4, chunk_size=64, chunk_size_other=16),
                  cms=dict(levels=[dict(chunk_size=32, lr=1e-3), dict(chunk_size=256, lr=1e-4)], hidden_mult=4 / 3),
                  titans=dict(heads=4, chunk_size=32, window=256), delta=dict(heads=4, chunk_size=32)),
    # paper-shaped (NL Table 2: ~760M / ~1.3B; widths are not in the paper, these follow Titans-era shapes)
    "hope-760m": dict(vocab_size=32000, dim=1536, layers=24, heads=16, max_seq_len=4096,
                      selfmod=dict(heads=16, chunk_size=64, chunk_size_other=8),
                      cms=dict(levels=[dict(chunk_size=16, lr=1e-4), dict(chunk_size=512, lr=1e-5)],
                               hidden_mult=4 / 3),
                      titans=dict(heads=16, chunk_size=64, window=512), delta=dict(heads=16, chunk_size=64)),
    "hope-1.3b": dict(vocab_size=32000, dim=2048, layers=24, heads=16, max_seq_len=4096,
                      selfmod=dict(heads=16, chunk_size=64, chunk_size_other=8),
                      cms=dict(levels=[dict(chunk_size=16, lr=1e-4), dict(chunk_size=512, lr=1e-5)],
                               hidden_mult=4 / 3),
                      titans=dict(heads=16, chunk_size=64, window=512), delta=dict(heads=16, chunk_size=64)),
}
PRESETS = tuple(_PRESETS)


def preset(name: str, block: str = "hope", **overrides: Any) -> ModelConfig:
    """A named configuration for any block kind; ``overrides`` may use dotted keys."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    cfg = from_dict({**_PRESETS[name], "block": block})
    cfg = apply_overrides(cfg, overrides) if overrides else cfg
    cfg.validate()
    return cfg
