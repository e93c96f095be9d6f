"""A run's configuration: nested dataclasses; YAML files; dotted command-line overrides.

Precedence: dataclass defaults < the YAML file < ``key=value`` overrides. Unknown keys are an error.
The resolved configuration is written into the run folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..models.config import ModelConfig, apply_overrides
from ..models.config import from_dict as model_from_dict
from ..models.config import to_dict as model_to_dict


@dataclass
class DataConfig:
    source: str = "recall"  # "recall" (generated associative recall) or "text"
    train: str = ""  # text: a file or folder (txt, gz, jsonl)
    val: str = ""  # text: held-out file or folder; empty = the last 5% of the training stream
    tokenizer: str = "byte"  # "byte" or "bpe" (trained on the training text, saved with the run)
    vocab_size: int = 1024  # BPE only
    seq_len: int = 128
    cache_dir: str = ".cache/nestlearn"
    recall_pairs: int = 8  # recall: key–value pairs per sequence
    recall_queries: int = 4
    recall_keys: int = 32
    recall_values: int = 32


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw, muon, m3, dgd
    lr: float = 3e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    schedule: str = "cosine"  # cosine, wsd, constant
    warmup: int = 0
    min_lr_ratio: float = 0.1
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays
    clip: float = 1.0
    matrix_lr: float | None = None  # muon / m3 / dgd: their own lr (default: lr)


@dataclass
class TrainSettings:
    steps: int = 200
    batch_size: int = 16
    grad_accum: int = 1
    seed: int = 0
    out_dir: str = "runs/debug"
    log_every: int = 10
    eval_every: int = 50
    eval_batches: int = 4
    ckpt_every: int = 100
    max_bad_steps: int = 5  # consecutive non-finite losses before the run stops
    device: str = "cpu"
    parallel: str = "ddp"  # under torchrun: "ddp" or "fsdp" (fully_shard per block)
    compile: bool = False
    progress: bool = True


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSettings = field(default_factory=TrainSettings)


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "train": TrainSettings}


def _number(key: str, value: Any, annotation: str) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string: turn numeric strings of float fields into floats."""
    if isinstance(value, str) and annotation.startswith("float"):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{key} must be a number (got {value!r})") from None
    if isinstance(value, int) and not isinstance(value, bool) and annotation.startswith("float"):
        return float(value)
    return value


def _section(cls, data: dict, name: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ValueError(f"unknown config key '{name}.{key}'; valid keys: {sorted(known)}")
    data = {k: _number(f"{name}.{k}", v, str(known[k].type)) for k, v in data.items()}
    obj = cls(**data)
    if cls is OptimConfig:
        obj.betas = tuple(obj.betas)
    return obj


def from_dict(data: dict) -> RunConfig:
    for key in data:
        if key not in ("model", *_SECTIONS):
            raise ValueError(f"unknown config section '{key}'; valid: model, data, optim, train")
    cfg = RunConfig(model=model_from_dict(data.get("model", {})),
                    **{k: _section(c, data.get(k, {}) or {}, k) for k, c in _SECTIONS.items()})
    validate(cfg)
    return cfg


def to_dict(cfg: RunConfig) -> dict:
    out = {"model": model_to_dict(cfg.model)}
    out.update({k: dataclasses.asdict(getattr(cfg, k)) for k in _SECTIONS})
    out["optim"]["betas"] = list(out["optim"]["betas"])
    return out


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key=value (e.g. model.dim=128)")
    key, raw = item.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Defaults < YAML file < ``key=value`` overrides (``model.dim=128``, ``train.steps=20``)."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config is a mapping of sections (model, data, optim, train)")
    cfg = from_dict(data)
    model_over = {}
    for item in overrides:
        key, value = parse_override(item)
        section, _, rest = key.partition(".")
        if section == "model":
            model_over[rest] = value
            continue
        if section not in _SECTIONS or not rest:
            raise ValueError(f"unknown config key '{key}'; keys start with model., data., optim. or train.")
        obj = getattr(cfg, section)
        if rest not in {f.name for f in dataclasses.fields(obj)}:
            raise ValueError(f"unknown config key '{key}'; valid keys: "
                             f"{sorted(f.name for f in dataclasses.fields(obj))}")
        field_type = str(next(f.type for f in dataclasses.fields(obj) if f.name == rest))
        setattr(obj, rest, tuple(value) if rest == "betas" else _number(key, value, field_type))
    if model_over:
        cfg.model = apply_overrides(cfg.model, model_over)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    d, o, t = cfg.data, cfg.optim, cfg.train
    if d.source not in ("recall", "text"):
        raise ValueError(f"data.source must be 'recall' or 'text' (got {d.source!r})")
    if d.source == "text" and not d.train:
        raise ValueError("data.train must name a text file or folder when data.source='text'")
    if d.tokenizer not in ("byte", "bpe"):
        raise ValueError(f"data.tokenizer must be 'byte' or 'bpe' (got {d.tokenizer!r})")
    if o.name not in ("adamw", "muon", "m3", "dgd"):
        raise ValueError(f"optim.name must be one of adamw, muon, m3, dgd (got {o.name!r})")
    if o.schedule not in ("cosine", "wsd", "constant"):
        raise ValueError(f"optim.schedule must be cosine, wsd or constant (got {o.schedule!r})")
    for name, value in (("optim.lr", o.lr), ("optim.weight_decay", o.weight_decay), ("optim.clip", o.clip),
                        ("optim.matrix_lr", 0.0 if o.matrix_lr is None else o.matrix_lr)):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number ≥ 0 (got {value!r})")
    for name in ("steps", "batch_size", "grad_accum", "log_every", "eval_every", "ckpt_every", "max_bad_steps"):
        value = getattr(t, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"train.{name} must be a positive int (got {value!r})")
    if not isinstance(d.seq_len, int) or d.seq_len < 2:
        raise ValueError(f"data.seq_len must be an int ≥ 2 (got {d.seq_len!r})")
    cfg.model.validate()
