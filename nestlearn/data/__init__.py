"""Data: synthetic tasks (and, with issue 5, tokenizers and packed text streams)."""

from .synthetic import associative_recall

__all__ = ["associative_recall"]
