"""A run's configuration: nested dataclasses; YAML files; dotted command-line overrides.

Precedence: dataclass defaults < the YAML file < ``key=value`` overrides. Unknown keys are an error.
The resolved configuration is written into the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import config
from ..config import build, override, parse_override, read_yaml
from ..models.config import ModelConfig, expand
from ..optim import OPTIMIZERS

STOP_REFS = ("last_gain", "best")  # what early stopping measures a gain against (TrainSettings.patience_from)


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
    name: str = "adamw"  # nestlearn.optim.OPTIMIZERS: adamw, muon, m3 (Algorithm 1 as printed), m3-ema (D15), dgd
    lr: float = 3e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    schedule: str = "cosine"  # cosine, wsd, constant
    warmup: int = 0
    min_lr_ratio: float = 0.1
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays
    clip: float = 1.0
    matrix_lr: float | None = None  # muon / m3 / dgd: their own lr (default: lr)
    momentum: float = 0.95  # muon
    alpha: float = 0.1  # m3: the slow momentum's weight
    slow_every: int = 100  # m3: the slow momentum's period (steps)


@dataclass
class TrainSettings:
    steps: int = 200
    batch_size: int = 16
    grad_accum: int = 1
    seed: int = 0
    out_dir: str = "runs/debug"  # "": write nothing (no config, metrics or checkpoints)
    log_every: int = 10
    eval_every: int = 50
    eval_batches: int = 4
    ckpt_every: int = 100
    max_bad_steps: int = 5  # consecutive non-finite losses before the run stops
    on_nonfinite: str = "raise"  # after max_bad_steps: "raise" (an error naming the last checkpoint) or "stop"
    patience: int = 0  # stop after this many evaluations without a min_delta gain, or at accuracy 1 (0: never)
    min_delta: float = 0.01  # a gain is a validation loss below (1 − min_delta) × the loss of the last gain
    patience_from: str = "last_gain"  # or "best": gains measured against the lowest loss so far (loop.early_stop)
    solved_patience: int = 0  # stop after this many evaluations in a row at accuracy 1 (0: they count as patience)
    min_steps: int = 0  # a flat validation loss (patience) stops no run before this step; solved_patience still does
    keep_best: bool = False  # end the run with the weights of the best validation loss
    device: str = "cpu"
    parallel: str = "ddp"  # under torchrun: "ddp" or "fsdp" (fully_shard per block)
    compile: bool = False
    activation_checkpointing: bool = False  # recompute in the backward (CausalLM.activation_checkpointing): less memory
    progress: bool = True


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSettings = field(default_factory=TrainSettings)


def from_dict(data: dict) -> RunConfig:
    """A ``RunConfig`` from nested dicts; unknown keys are named. The model section may start from a
    ``preset`` (``nestlearn/presets``)."""
    if isinstance(data, dict) and "model" in data:
        data = {**data, "model": expand(data["model"] or {})}
    cfg = build(RunConfig, data)
    validate(cfg)
    return cfg


def to_dict(cfg: RunConfig) -> dict:
    return config.to_dict(cfg)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Defaults < YAML file < ``key=value`` overrides (``model.dim=128``, ``train.steps=20``)."""
    cfg = from_dict({} if path is None else read_yaml(path))
    for item in overrides:
        cfg = override(cfg, *parse_override(item))
    validate(cfg)
    return cfg


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be trained on here (not a device name, or an accelerator this machine lacks), or
    None: said before a run starts instead of as a traceback from its first tensor."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        return f"{device!r} is not a device name (cpu, cuda, cuda:1, mps, …)"
    if d.type == "cuda" and (not torch.cuda.is_available() or (d.index or 0) >= torch.cuda.device_count()):
        return f"{device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    if d.type == "mps" and not torch.backends.mps.is_available():
        return f"{device!r}: MPS is not available on this machine"
    return None


def validate(cfg: RunConfig) -> None:
    d, o, t = cfg.data, cfg.optim, cfg.train
    if d.source not in ("recall", "text"):
        raise ValueError(f"data.source must be 'recall' or 'text' (got {d.source!r})")
    if d.source == "text" and not d.train:
        raise ValueError("data.train must name a text file or folder when data.source='text'")
    if d.tokenizer not in ("byte", "bpe"):
        raise ValueError(f"data.tokenizer must be 'byte' or 'bpe' (got {d.tokenizer!r})")
    if o.name not in OPTIMIZERS:
        raise ValueError(f"optim.name must be one of {OPTIMIZERS} (got {o.name!r})")
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
    if t.on_nonfinite not in ("raise", "stop"):
        raise ValueError(f"train.on_nonfinite must be 'raise' or 'stop' (got {t.on_nonfinite!r})")
    if not isinstance(t.solved_patience, int) or t.solved_patience < 0:
        raise ValueError(f"train.solved_patience must be an int ≥ 0 (got {t.solved_patience!r})")
    if not isinstance(t.patience, int) or t.patience < 0:
        raise ValueError(f"train.patience must be an int ≥ 0 (got {t.patience!r})")
    if not isinstance(t.min_steps, int) or not 0 <= t.min_steps <= t.steps:
        raise ValueError(f"train.min_steps must be an int in [0, train.steps = {t.steps}] (got {t.min_steps!r})")
    if not 0 <= t.min_delta < 1:
        raise ValueError(f"train.min_delta must be in [0, 1) (got {t.min_delta!r})")
    if t.patience_from not in STOP_REFS:
        raise ValueError(f"train.patience_from must be one of {STOP_REFS} (got {t.patience_from!r})")
    if device_problem(t.device):
        raise ValueError(f"train.device: {device_problem(t.device)}")
    if not isinstance(d.seq_len, int) or d.seq_len < 2:
        raise ValueError(f"data.seq_len must be an int ≥ 2 (got {d.seq_len!r})")
    cfg.model.validate()
