"""nestlearn: Nested Learning in PyTorch (Behrouz et al., NeurIPS 2025)."""

__version__ = "0.1.0"
