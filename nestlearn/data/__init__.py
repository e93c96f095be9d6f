"""Data: synthetic tasks, formal languages, tokenizers, packed text streams, image sets."""

from .formal import LANGUAGES, formal_batch, length_bins, next_symbols, sample_string
from .synthetic import (
                        associative_recall,
                        compression,
                        fuzzy_in_context_recall,
                        in_context_recall,
                        memorization,
                        mqar,
                        noisy_in_context_recall,
                        selective_copying,
)

__all__ = ["LANGUAGES", "associative_recall", "compression", "formal_batch", "fuzzy_in_context_recall",
           "in_context_recall", "length_bins", "memorization", "mqar", "next_symbols", "noisy_in_context_recall",
           "sample_string", "selective_copying"]
