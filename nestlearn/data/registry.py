"""Every data source by name, in one table: the generated tasks (associative recall, MQAR, the MAD tasks,
the formal languages) and the loaders of files (text, images).

    ids, targets = task_batch("mqar", 32, seed=7, n_pairs=16, seq_len=128)
    vocab = task_vocab("mqar", {"n_pairs": 16, "seq_len": 128})
    x_train, y_train, x_test, y_test = LOADERS["fashion_mnist"](root)

A generated batch is a pure function of its seed. Formal languages return ``(ids, multi-hot targets,
mask)`` and take ``lengths=(lo, hi)``; every other task returns ``(ids, targets)`` with −100 where
nothing is scored. A new task is a generator in ``synthetic.py`` (or its own file) and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import formal, synthetic
from .images import load_cifar10_subset, load_fashion_mnist
from .text import read_texts


@dataclass(frozen=True)
class Task:
    make: Callable[..., tuple]  # make(batch, generator=…, **args) (formal: make(batch, lengths, seed))
    vocab: Callable[[dict], int]  # the vocabulary size the task's arguments imply
    family: str  # "recall", "mqar", "mad" or "formal"
    readout: str = "lm"  # "lm": the causal LM's logits; "last": decoded from the last position (MAD compression)


def _formal(lang: str) -> Task:
    return Task(lambda batch, lengths, seed: formal.formal_batch(lang, batch, lengths, seed),
                lambda a: len(formal.SYMBOLS), "formal")


TASKS: dict[str, Task] = {
    "recall": Task(synthetic.associative_recall, lambda a: 1 + a.get("n_keys", 16) + a.get("n_values", 16), "recall"),
    "mqar": Task(synthetic.mqar, lambda a: 1 + a.get("n_keys", 64) + a.get("n_values", 64), "mqar"),
    # MAD (Poli et al. 2024)
    "compression": Task(synthetic.compression, lambda a: a.get("vocab", 15) + 2, "mad", readout="last"),
    "compression_lm": Task(synthetic.compression_lm, lambda a: a.get("vocab", 16) + 2, "mad"),  # D19
    "in_context_recall": Task(synthetic.in_context_recall, lambda a: 1 + a.get("n_keys", 16) + a.get("n_values", 16),
                              "mad"),
    "noisy_in_context_recall": Task(synthetic.noisy_in_context_recall,
                                    lambda a: 1 + a.get("n_keys", 8) + a.get("n_values", 8) + a.get("noise_vocab", 16),
                                    "mad"),
    "fuzzy_in_context_recall": Task(synthetic.fuzzy_in_context_recall, lambda a: 1 + 2 * a.get("vocab", 16), "mad"),
    "selective_copying": Task(synthetic.selective_copying, lambda a: a.get("vocab", 16) + 3, "mad"),
    "memorization": Task(synthetic.memorization, lambda a: 1 + a.get("n_keys", 64) + a.get("n_values", 64), "mad"),
    # formal languages (NL Table 5)
    **{lang: _formal(lang) for lang in formal.LANGUAGES},
}

LOADERS: dict[str, Callable[..., Any]] = {
    "text": read_texts,  # a file or folder (txt, gz, jsonl) or hf:<dataset> → an iterator of documents
    "cifar10_subset": load_cifar10_subset,  # a folder → (x_train, y_train, x_test, y_test)
    "fashion_mnist": load_fashion_mnist,
}


def _task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {tuple(TASKS)}")
    return TASKS[name]


def task_batch(name: str, batch: int, seed: int, lengths: tuple[int, int] | None = None, **args) -> tuple:
    """One batch of task ``name`` drawn from ``seed`` (formal languages: strings of ``lengths``)."""
    task = _task(name)
    if task.family == "formal":
        if lengths is None:
            raise ValueError(f"the formal language {name!r} needs lengths=(lo, hi)")
        return task.make(batch, lengths, seed)
    return task.make(batch, generator=torch.Generator().manual_seed(seed), **args)


def task_vocab(name: str, args: dict) -> int:
    return _task(name).vocab(args)


__all__ = ["LOADERS", "TASKS", "Task", "task_batch", "task_vocab"]
