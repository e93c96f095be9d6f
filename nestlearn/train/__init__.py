"""The training loop, its configuration and checkpoints."""

from .config import DataConfig, OptimConfig, RunConfig, TrainSettings, from_dict, load_config, to_dict
from .loop import Batches, Trainer, every, lr_factor, optimizer_from_config, train

__all__ = ["Batches", "DataConfig", "OptimConfig", "RunConfig", "TrainSettings", "Trainer", "every",
           "from_dict", "load_config", "lr_factor", "optimizer_from_config", "to_dict", "train"]
