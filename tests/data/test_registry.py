"""Every data source by name (nestlearn/data/registry.py)."""

import pytest
import torch

from nestlearn.data import formal, synthetic
from nestlearn.data.registry import LOADERS, TASKS, task_batch, task_vocab


def test_a_task_batch_is_its_generator_at_that_seed():
    ids, targets = task_batch("mqar", 4, seed=7, n_pairs=4, seq_len=32, n_keys=8, n_values=8)
    ref = synthetic.mqar(4, 4, 32, n_keys=8, n_values=8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(ids, ref[0]) and torch.equal(targets, ref[1])
    assert int(ids.max()) < task_vocab("mqar", {"n_keys": 8, "n_values": 8}) == 17
    ids, t, mask = task_batch("parity", 3, seed=1, lengths=(1, 10))
    ref = formal.formal_batch("parity", 3, (1, 10), 1)
    assert torch.equal(ids, ref[0]) and torch.equal(mask, ref[2])


def test_every_generated_task_fits_its_vocabulary():
    args = {"recall": {"n_pairs": 4, "n_queries": 2}, "mqar": {"n_pairs": 4, "seq_len": 32},
            "compression": {"seq_len": 16}, "compression_lm": {"seq_len": 8}, "in_context_recall": {"seq_len": 32},
            "noisy_in_context_recall": {"seq_len": 32}, "fuzzy_in_context_recall": {"seq_len": 32},
            "selective_copying": {"seq_len": 32, "n_tokens": 8}, "memorization": {"seq_len": 16}}
    for name, task in TASKS.items():
        batch = task_batch(name, 2, 0, lengths=(1, 8)) if task.family == "formal" else task_batch(name, 2, 0,
                                                                                                   **args[name])
        assert int(batch[0].max()) < task_vocab(name, args.get(name, {})), name
    assert set(LOADERS) == {"text", "cifar10_subset", "fashion_mnist"}


def test_unknown_tasks_and_missing_lengths_are_named():
    with pytest.raises(ValueError, match="unknown task 'recal'"):
        task_batch("recal", 2, 0)
    with pytest.raises(ValueError, match="needs lengths"):
        task_batch("anbn", 2, 0)
