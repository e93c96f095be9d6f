"""Seeded, pure generators of synthetic tasks."""

from __future__ import annotations

import torch
from torch import Tensor


def associative_recall(batch: int, n_pairs: int, n_queries: int, n_keys: int = 16, n_values: int = 16,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """In-context associative recall: ``k₁ v₁ … kₙ vₙ q₁ a₁ … q_m a_m`` with each query a key seen
    before and its answer the value it was paired with.

    Tokens: keys ``1 … n_keys``, values ``n_keys+1 … n_keys+n_values`` (0 unused). Returns
    ``ids`` and ``targets`` ``[batch, 2(n + m)]``; targets are −100 except at each query, whose
    target is its answer. Keys within a sequence are distinct.
    """
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs ({n_pairs}) must be ≤ n_keys ({n_keys}): keys within a sequence are distinct")
    keys = torch.argsort(torch.rand(batch, n_keys, generator=generator), dim=1)[:, :n_pairs] + 1
    values = torch.randint(0, n_values, (batch, n_pairs), generator=generator) + n_keys + 1
    pick = torch.randint(0, n_pairs, (batch, n_queries), generator=generator)
    q, a = keys.gather(1, pick), values.gather(1, pick)
    ids = torch.cat([torch.stack([keys, values], 2).flatten(1), torch.stack([q, a], 2).flatten(1)], dim=1)
    targets = torch.full_like(ids, -100)
    first_query = 2 * n_pairs
    targets[:, first_query::2] = a
    return ids, targets
