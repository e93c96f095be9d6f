"""Optimizers from the nested view: M3, DGD, delta and deep momentum, Newton–Schulz."""

from .build import OPTIMIZERS, build_optimizer
from .combined import Optimizers
from .dgd import DGD
from .m3 import M3, adjust_lr
from .momentum import DeepMomentum, DeltaMomentum
from .newton_schulz import CUBIC, QUINTIC, newton_schulz, polar_svd
from .param_groups import assert_partition, split_params

__all__ = ["CUBIC", "DGD", "M3", "OPTIMIZERS", "QUINTIC", "DeepMomentum", "DeltaMomentum", "Optimizers", "adjust_lr",
           "assert_partition", "build_optimizer", "newton_schulz", "polar_svd", "split_params"]
