"""Small neural pieces shared by the layers: RMSNorm, causal short convolution, SwiGLU, rotary."""

from .conv import ShortConv
from .mlp import SwiGLU, swiglu
from .norm import RMSNorm
from .rotary import apply_rotary, rotary_tables

__all__ = ["RMSNorm", "ShortConv", "SwiGLU", "apply_rotary", "rotary_tables", "swiglu"]
