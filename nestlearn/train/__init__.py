"""The training loop, its configuration and checkpoints."""

from .config import DataConfig, OptimConfig, RunConfig, TrainSettings, from_dict, load_config, to_dict
from .loop import Batches, Trainer, build_optimizer, every, lr_factor, train

__all__ = ["Batches", "DataConfig", "OptimConfig", "RunConfig", "TrainSettings", "Trainer", "build_optimizer",
           "every", "from_dict", "load_config", "lr_factor", "to_dict", "train"]
