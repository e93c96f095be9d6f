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


def mqar(batch: int, n_pairs: int, seq_len: int, n_keys: int = 64, n_values: int = 64, power_a: float = 0.01,
         random_fill: bool = True, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Multi-query associative recall as Zoology defines it (Arora et al. 2023): ``n_pairs`` key–value pairs
    with distinct keys, then every key queried once, in a random order (queries without replacement).
    The rest of the sequence is ``(seq_len − 2·n_pairs) // 2`` two-token slots; each query takes a slot
    drawn with probability ∝ d^(a − 1) for the slot's distance d from the pairs (a power law that favours
    near slots, ``power_a = a``), and the other slots hold random tokens (``random_fill``, Zoology's
    ``random_non_queries``) or the unused token 0 (``random_fill=False``, as in Zoology's Figure 2 runs; the
    same draws, so the pairs, queries and slots equal those of ``random_fill=True``). The target is −100
    except at each query, whose target is its value (the next token)."""
    space = (seq_len - 2 * n_pairs) // 2
    if space < n_pairs:
        raise ValueError(f"seq_len={seq_len} leaves {space} query slots after {n_pairs} pairs, but MQAR queries "
                         f"every key once: use seq_len ≥ {4 * n_pairs}")
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs ({n_pairs}) must be ≤ n_keys ({n_keys}): keys within a sequence are distinct")
    keys = torch.argsort(torch.rand(batch, n_keys, generator=generator), dim=1)[:, :n_pairs] + 1
    values = torch.randint(0, n_values, (batch, n_pairs), generator=generator) + n_keys + 1
    weights = power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (power_a - 1)
    slots = torch.multinomial(weights.expand(batch, space), n_pairs, replacement=False, generator=generator)
    order = torch.argsort(torch.rand(batch, n_pairs, generator=generator), dim=1)  # key asked in each slot
    rest = torch.randint(1, n_keys + n_values + 1, (batch, seq_len - 2 * n_pairs), generator=generator)
    if not random_fill:
        rest.zero_()
    slot_view = rest[:, :2 * space].reshape(batch, space, 2)
    slot_view.scatter_(1, slots.unsqueeze(-1).expand(-1, -1, 2),
                       torch.stack([keys.gather(1, order), values.gather(1, order)], dim=2))
    rest[:, :2 * space] = slot_view.flatten(1)
    ids = torch.cat([torch.stack([keys, values], 2).flatten(1), rest], dim=1)
    targets = torch.full_like(ids, -100)
    q_pos = 2 * n_pairs + 2 * slots  # [batch, n_pairs]
    targets.scatter_(1, q_pos, values.gather(1, order))
    return ids, targets


def in_context_recall(batch: int, seq_len: int, n_keys: int = 16, n_values: int = 16,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """MAD in-context recall: a stream of ``k v`` pairs with keys drawn with repetition and a
    per-sequence key→value map; the target is the value wherever its key has been seen before.
    The same tensors as ``in_context_recall_reference`` (tested), without its Python loop."""
    keys, values, ids = _recall_pairs(batch, seq_len, n_keys, n_values, generator)
    targets = torch.full_like(ids, -100)
    targets[:, 0:2 * keys.shape[1]:2] = torch.where(_seen_before(keys, n_keys), values, -100)
    return ids, targets


def _recall_pairs(batch, seq_len, n_keys, n_values, generator) -> tuple[Tensor, Tensor, Tensor]:
    """The recall stream's keys (``0 … n_keys − 1``), their values under a per-sequence map, and ``ids``."""
    mapping = torch.randint(0, n_values, (batch, n_keys), generator=generator) + n_keys + 1
    keys = torch.randint(0, n_keys, (batch, seq_len // 2), generator=generator)
    values = mapping.gather(1, keys)
    return keys, values, torch.stack([keys + 1, values], 2).flatten(1)


def _seen_before(keys: Tensor, n_keys: int, kept: Tensor | None = None) -> Tensor:
    """``[B, n]``: whether ``keys[b, i]`` (in ``0 … n_keys − 1``) occurs at an earlier kept position of row b
    (every position is kept when ``kept`` is None; a position not kept is never seen)."""
    hot = torch.nn.functional.one_hot(keys, n_keys)
    if kept is not None:
        hot = hot * kept.unsqueeze(-1)
    before = (hot.cumsum(1) - hot).gather(2, keys.unsqueeze(-1)).squeeze(-1) > 0
    return before if kept is None else before & kept


def in_context_recall_reference(batch: int, seq_len: int, n_keys: int = 16, n_values: int = 16,
                                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``in_context_recall`` with its targets found by a loop over each sequence: the reference."""
    keys, values, ids = _recall_pairs(batch, seq_len, n_keys, n_values, generator)
    targets = torch.full_like(ids, -100)
    for b in range(batch):
        seen = set()
        for i, k in enumerate(keys[b].tolist()):
            if k in seen:
                targets[b, 2 * i] = values[b, i]
            seen.add(k)
    return ids, targets


def noisy_in_context_recall(batch: int, seq_len: int, n_keys: int = 8, n_values: int = 8, noise_vocab: int = 16,
                            frac_noise: float = 0.2,
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """MAD noisy in-context recall: the in-context recall stream in which each two-token slot is, with
    probability ``frac_noise``, two noise tokens (a vocabulary of their own, ``n_keys + n_values + 1 …``)
    instead of a ``k v`` pair; noise is never a target and never a key. The same tensors as
    ``noisy_in_context_recall_reference`` (tested), without its Python loop."""
    ids, kept, n = _noisy_stream(batch, seq_len, n_keys, n_values, noise_vocab, frac_noise, generator)
    keys, values = ids[:, 0:2 * n:2], ids[:, 1:2 * n:2]
    targets = torch.full_like(ids, -100)
    # a key counts as seen only where its pair was kept
    seen = _seen_before(torch.where(kept, keys - 1, 0), n_keys, kept)
    targets[:, 0:2 * n:2] = torch.where(seen, values, -100)
    return ids, targets


def _noisy_stream(batch, seq_len, n_keys, n_values, noise_vocab, frac_noise, generator):
    """The noisy recall sequences ``ids``, which pairs were kept, and the number of pairs ``n``."""
    if not 0.0 <= frac_noise < 1.0:
        raise ValueError(f"frac_noise must be in [0, 1) (got {frac_noise})")
    ids, _ = in_context_recall(batch, seq_len, n_keys, n_values, generator=generator)
    n = seq_len // 2
    noisy = torch.rand(batch, n, generator=generator) < frac_noise
    noise = torch.randint(0, noise_vocab, (batch, n, 2), generator=generator) + n_keys + n_values + 1
    pairs = ids[:, :2 * n].reshape(batch, n, 2)
    pairs = torch.where(noisy.unsqueeze(-1), noise, pairs)
    return torch.cat([pairs.flatten(1), ids[:, 2 * n:]], dim=1), ~noisy, n


def noisy_in_context_recall_reference(batch: int, seq_len: int, n_keys: int = 8, n_values: int = 8,
                                      noise_vocab: int = 16, frac_noise: float = 0.2,
                                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``noisy_in_context_recall`` with its targets found by a loop over each sequence: the reference."""
    ids, kept, n = _noisy_stream(batch, seq_len, n_keys, n_values, noise_vocab, frac_noise, generator)
    targets = torch.full_like(ids, -100)
    for b in range(batch):
        seen: dict[int, int] = {}
        for i in range(n):
            if not kept[b, i]:
                continue
            k, v = int(ids[b, 2 * i]), int(ids[b, 2 * i + 1])
            if k in seen:
                targets[b, 2 * i] = v
            seen[k] = v
    return ids, targets


def fuzzy_in_context_recall(batch: int, seq_len: int, n_keys: int = 8, vocab: int = 16, max_span: int = 3,
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """MAD fuzzy in-context recall: keys and values are spans of 1…``max_span`` tokens (key tokens
    ``1…vocab``, value tokens ``vocab+1…2·vocab``); after a repeated key span, its value span is the target.
    Written into Python lists and turned into tensors once; the same tensors as
    ``fuzzy_in_context_recall_reference`` (tested), from the same draws in the same order."""
    ids = [[0] * seq_len for _ in range(batch)]
    targets = [[-100] * seq_len for _ in range(batch)]
    for b in range(batch):
        key_spans = _spans(n_keys, max_span, 1, vocab, generator)
        value_spans = _spans(n_keys, max_span, vocab + 1, vocab, generator)
        pos, seen, row, target = 0, set(), ids[b], targets[b]
        while True:
            k = int(torch.randint(0, n_keys, (1,), generator=generator))
            ks, vs = key_spans[k], value_spans[k]
            if pos + len(ks) + len(vs) > seq_len:
                break
            row[pos:pos + len(ks)] = ks
            row[pos + len(ks):pos + len(ks) + len(vs)] = vs
            if k in seen:  # predict each value token from the token before it
                target[pos + len(ks) - 1:pos + len(ks) + len(vs) - 1] = vs
            seen.add(k)
            pos += len(ks) + len(vs)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(targets, dtype=torch.long)


def _spans(n_keys: int, max_span: int, lo: int, vocab: int, generator: torch.Generator | None) -> list[list[int]]:
    """``n_keys`` spans of 1…``max_span`` tokens drawn from ``lo … lo + vocab − 1``."""
    sizes = torch.randint(1, max_span + 1, (n_keys,), generator=generator).tolist()
    return [torch.randint(lo, lo + vocab, (n,), generator=generator).tolist() for n in sizes]


def fuzzy_in_context_recall_reference(batch: int, seq_len: int, n_keys: int = 8, vocab: int = 16,
                                      max_span: int = 3,
                                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``fuzzy_in_context_recall`` written into the tensors span by span: the reference."""
    ids = torch.zeros(batch, seq_len, dtype=torch.long)
    targets = torch.full((batch, seq_len), -100, dtype=torch.long)
    for b in range(batch):
        key_spans = _spans(n_keys, max_span, 1, vocab, generator)
        value_spans = _spans(n_keys, max_span, vocab + 1, vocab, generator)
        pos, seen = 0, set()
        while True:
            k = int(torch.randint(0, n_keys, (1,), generator=generator))
            ks, vs = key_spans[k], value_spans[k]
            if pos + len(ks) + len(vs) > seq_len:
                break
            ids[b, pos:pos + len(ks)] = torch.tensor(ks)
            ids[b, pos + len(ks):pos + len(ks) + len(vs)] = torch.tensor(vs)
            if k in seen:
                targets[b, pos + len(ks) - 1:pos + len(ks) + len(vs) - 1] = torch.tensor(vs)
            seen.add(k)
            pos += len(ks) + len(vs)
    return ids, targets


def selective_copying(batch: int, seq_len: int, n_tokens: int, vocab: int = 16,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """MAD selective copying: ``n_tokens`` content tokens (``2…vocab+1``) at random positions among blanks
    (token 1) in ``seq_len`` tokens, a separator (``vocab+2``), then the content tokens in order."""
    blank, sep = 1, vocab + 2
    ids = torch.full((batch, seq_len + 1 + n_tokens), blank, dtype=torch.long)
    targets = torch.full_like(ids, -100)
    for b in range(batch):
        where = torch.randperm(seq_len, generator=generator)[:n_tokens].sort().values
        content = torch.randint(2, vocab + 2, (n_tokens,), generator=generator)
        ids[b, where] = content
        ids[b, seq_len] = sep
        ids[b, seq_len + 1:] = content
        targets[b, seq_len:seq_len + n_tokens] = content
    return ids, targets


def compression(batch: int, seq_len: int, vocab: int = 15,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """MAD compression: ``seq_len − 1`` random tokens (``1…vocab``, with repetition), then a compression token
    (``vocab+1``); the target is the whole sequence, compression token included. The model reads it and must
    reconstruct every position from the last position's hidden state alone (``LastTokenAutoencoder``: the
    task's ``readout="last"``). MAD's base setting: 32 tokens, a vocabulary of 16 with the compression token."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be ≥ 2: some tokens and the compression token (got {seq_len})")
    seq = torch.randint(1, vocab + 1, (batch, seq_len - 1), generator=generator)
    ids = torch.cat([seq, torch.full((batch, 1), vocab + 1)], dim=1)
    return ids, ids.clone()


def compression_lm(batch: int, seq_len: int, vocab: int = 16,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Compression posed as a language-model task (deviation D19, the earlier form of ``compression``): random
    tokens (``1…vocab``), a compression token (``vocab+1``), then the same tokens again; the target is the
    sequence, read back after the marker (attention can copy it; MAD's task forbids that)."""
    seq = torch.randint(1, vocab + 1, (batch, seq_len), generator=generator)
    ids = torch.cat([seq, torch.full((batch, 1), vocab + 1), seq], dim=1)
    targets = torch.full_like(ids, -100)
    targets[:, seq_len:2 * seq_len] = seq
    return ids, targets


def memorization(batch: int, seq_len: int, n_keys: int = 64, n_values: int = 64, mapping_seed: int = 0,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """MAD memorization: ``k v`` pairs under one key→value map fixed for the whole task (by
    ``mapping_seed``), so the model must store it in its weights; the target is every value."""
    mapping = torch.randint(0, n_values, (n_keys,), generator=torch.Generator().manual_seed(mapping_seed))
    keys = torch.randint(0, n_keys, (batch, seq_len // 2), generator=generator)
    ids = torch.stack([keys + 1, mapping[keys] + n_keys + 1], 2).flatten(1)
    targets = torch.full_like(ids, -100)
    targets[:, 0::2] = ids[:, 1::2]
    return ids, targets
