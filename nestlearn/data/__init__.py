"""Data: synthetic tasks, formal languages, tokenizers, packed text streams, image sets; ``registry`` names them all."""

from .formal import LANGUAGES, formal_batch, length_bins, longest_length, next_symbols, sample_string
from .registry import LOADERS, TASKS, task_batch, task_vocab
from .synthetic import (
                        associative_recall,
                        compression,
                        compression_lm,
                        fuzzy_in_context_recall,
                        in_context_recall,
                        memorization,
                        mqar,
                        noisy_in_context_recall,
                        selective_copying,
)

__all__ = ["LANGUAGES", "LOADERS", "TASKS", "task_batch", "task_vocab", "associative_recall", "compression",
           "compression_lm",
           "formal_batch", "fuzzy_in_context_recall", "in_context_recall", "length_bins", "longest_length",
           "memorization", "mqar",
           "next_symbols", "noisy_in_context_recall", "sample_string", "selective_copying"]
