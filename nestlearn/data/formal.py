"""Formal-language recognition (NL Table 5; the construction of Irie et al. 2023, after Bhattamishra
et al. 2020): character prediction.

A string ``w`` of the language is fed one symbol at a time after a start symbol; at every position the
target is the *set* of symbols that may come next (end-of-string ``$`` included when the prefix is
itself in the language). A model recognises a string when, at every position, its per-symbol
predictions (sigmoid > 0.5) equal that set; accuracy is the fraction of strings recognised.

Length bins (written here, used by the experiments): training and Bin0 draw lengths in
``[1, max_len]`` (for aⁿbⁿ-style languages, n in ``[1, max_len // k]``); Bin1 draws lengths in
``(max_len, 2·max_len]``. Default ``max_len = 50``.

Languages: ``parity`` (strings over {a, b} with an even number of b), ``aa_star`` ((aa)*),
``abab_star`` ((abab)*), ``anbn`` (aⁿbⁿ), ``anbncn`` (aⁿbⁿcⁿ), ``shuffle2`` (the shuffle of two Dyck-1
languages over ``()`` and ``[]``).
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

SYMBOLS = "^$ab()[]c"  # ^ start, $ end; index = token id
TOKEN = {s: i for i, s in enumerate(SYMBOLS)}
LANGUAGES = ("parity", "aa_star", "abab_star", "anbn", "anbncn", "shuffle2")


def next_symbols(lang: str, prefix: str) -> set[str]:
    """The symbols that may follow ``prefix`` in some string of ``lang`` (``$``: the prefix is in it)."""
    if lang == "parity":
        return {"a", "b"} | ({"$"} if prefix.count("b") % 2 == 0 else set())
    if lang == "aa_star":
        return {"a"} | ({"$"} if len(prefix) % 2 == 0 else set())
    if lang == "abab_star":
        return {"abab"[len(prefix) % 4]} | ({"$"} if len(prefix) % 4 == 0 else set())
    if lang in ("anbn", "anbncn"):
        letters = "ab" if lang == "anbn" else "abc"
        counts = [prefix.count(x) for x in letters]
        n, out = counts[0], set()
        if n == 0:
            return {"a"}
        later = sum(counts[1:])
        if later == 0:
            out.add("a")
        for i in range(1, len(letters)):  # the next letter block, while the previous block is complete
            if counts[i] < n and all(counts[j] == n for j in range(1, i)) and all(counts[j] == 0 for j in
                                                                                  range(i + 1, len(letters))):
                out.add(letters[i])
        if all(c == n for c in counts):
            out.add("$")
        return out
    if lang == "shuffle2":
        out = {"(", "["}
        if prefix.count("(") > prefix.count(")"):
            out.add(")")
        if prefix.count("[") > prefix.count("]"):
            out.add("]")
        if prefix.count("(") == prefix.count(")") and prefix.count("[") == prefix.count("]"):
            out.add("$")
        return out
    raise ValueError(f"unknown language {lang!r}; choose one of {LANGUAGES}")


# A string's length is a multiple of its language's unit (aⁿbⁿcⁿ: 3n); parity takes any length ≥ 2.
_UNIT = {"parity": 1, "aa_star": 2, "abab_star": 4, "anbn": 2, "anbncn": 3, "shuffle2": 2}


def _counts(lang: str, length_range: tuple[int, int]) -> tuple[int, int]:
    """The counts ``[a, b]`` the sampler draws from for ``length_range`` (a string's length is ``unit·count``;
    for parity the count is the length, at least 2). A range shorter than the shortest string is lifted to it,
    as training's ``[1, max_len]`` needs; a range that holds no length of the language is refused."""
    if lang not in _UNIT:
        raise ValueError(f"unknown language {lang!r}; choose one of {LANGUAGES}")
    lo, hi = length_range
    if lo > hi:
        raise ValueError(f"length range [{lo}, {hi}] is empty: lo must be at most hi")
    k = _UNIT[lang]
    a, b = (max(lo, 2), hi) if lang == "parity" else (max(1, -(-lo // k)), max(1, hi // k))
    if a > b:  # a range between two lengths of the language (aⁿbⁿcⁿ: [199, 200]), or parity below 2
        shortest = 2 if lang == "parity" else k
        nearest = ([k * b] if k * b >= shortest else []) + [k * a]
        raise ValueError(f"{lang} has no string of a length in [{lo}, {hi}] (its lengths here: multiples of {k}, "
                         f"at least {shortest}); the nearest lengths are {' and '.join(map(str, nearest))}")
    return a, b


def longest_length(lang: str, at_most: int) -> int:
    """The longest length at or below ``at_most`` that ``lang`` has a string of (aⁿbⁿcⁿ, 200: 198)."""
    if lang not in _UNIT:
        raise ValueError(f"unknown language {lang!r}; choose one of {LANGUAGES}")
    k, shortest = _UNIT[lang], 2 if lang == "parity" else _UNIT[lang]
    if at_most < shortest:
        raise ValueError(f"{lang} has no string of a length at most {at_most} (its shortest: {shortest})")
    return at_most // k * k


def sample_string(lang: str, length_range: tuple[int, int], rng: random.Random) -> str:
    """A uniformly random count (see :func:`_counts`: a range below the shortest string gives the shortest),
    then a random member of that length. Raises ``ValueError`` naming the nearest lengths when the range holds
    no string of the language (aⁿbⁿcⁿ in [200, 200])."""
    a, b = _counts(lang, length_range)
    if lang in ("anbn", "anbncn"):
        n = rng.randint(a, b)
        return "".join(x * n for x in ("ab" if lang == "anbn" else "abc"))
    if lang == "aa_star":
        return "a" * (2 * rng.randint(a, b))
    if lang == "abab_star":
        return "abab" * rng.randint(a, b)
    if lang == "parity":
        n = rng.randint(a, b)
        s = [rng.choice("ab") for _ in range(n - 1)]
        s.append("b" if s.count("b") % 2 else "a")  # make the count of b even
        return "".join(s)
    if lang == "shuffle2":
        n = rng.randint(a, b)  # n pairs, length 2n
        s, open_ = [], {"(": 0, "[": 0}
        remaining = {"(": 0, "[": 0}
        for _ in range(n):
            remaining[rng.choice("([")] += 1
        while len(s) < 2 * n:
            moves = [o for o in "([" if remaining[o] > 0] + [c for o, c in (("(", ")"), ("[", "]")) if open_[o] > 0]
            m = rng.choice(moves)
            if m in "([":
                remaining[m] -= 1
                open_[m] += 1
            else:
                open_["(" if m == ")" else "["] -= 1
            s.append(m)
        return "".join(s)
    raise ValueError(f"unknown language {lang!r}; choose one of {LANGUAGES}")


def length_bins(max_len: int = 50) -> dict[str, tuple[int, int]]:
    """Bin0 is the training range; Bin1 and Bin2 (up to 2× and 4× the longest training string) test
    length generalisation."""
    return {"train": (1, max_len), "bin0": (1, max_len), "bin1": (max_len + 1, 2 * max_len),
            "bin2": (2 * max_len + 1, 4 * max_len)}


def formal_batch(lang: str, batch: int, bin_range: tuple[int, int], seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``ids [B, L]`` (``^`` then the string, right-padded with ``$``), ``targets [B, L, |SYMBOLS|]``
    (multi-hot next-symbol sets) and ``mask [B, L]`` (positions up to the end of each string).

    Built in Python lists and turned into tensors once (about 10× faster than writing the tensors entry by
    entry, which cost a Titans step at the formal shape ~10% of its time); the same tensors as
    ``formal_batch_reference`` (tested)."""
    rng = random.Random(seed)
    strings = [sample_string(lang, bin_range, rng) for _ in range(batch)]
    L = max(len(s) for s in strings) + 1
    pad, n_sym = TOKEN["$"], len(SYMBOLS)
    ids = [[TOKEN["^"]] + [TOKEN[ch] for ch in s] + [pad] * (L - 1 - len(s)) for s in strings]
    ones = [b * L * n_sym + i * n_sym + TOKEN[ch]  # flat index of every 1 of targets
            for b, s in enumerate(strings) for i in range(len(s) + 1) for ch in next_symbols(lang, s[:i])]
    targets = torch.zeros(batch * L * n_sym)
    targets[torch.tensor(ones, dtype=torch.long)] = 1.0
    mask = torch.arange(L) < torch.tensor([len(s) + 1 for s in strings])[:, None]
    return torch.tensor(ids, dtype=torch.long), targets.view(batch, L, n_sym), mask


def formal_batch_reference(lang: str, batch: int, bin_range: tuple[int, int],
                           seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``formal_batch`` written entry by entry: the reference its tests compare against."""
    rng = random.Random(seed)
    strings = [sample_string(lang, bin_range, rng) for _ in range(batch)]
    L = max(len(s) for s in strings) + 1
    ids = torch.full((batch, L), TOKEN["$"], dtype=torch.long)
    targets = torch.zeros(batch, L, len(SYMBOLS))
    mask = torch.zeros(batch, L, dtype=torch.bool)
    for b, s in enumerate(strings):
        ids[b, 0] = TOKEN["^"]
        for i, ch in enumerate(s):
            ids[b, i + 1] = TOKEN[ch]
        for i in range(len(s) + 1):
            for ch in next_symbols(lang, s[:i]):
                targets[b, i, TOKEN[ch]] = 1.0
            mask[b, i] = True
    return ids, targets, mask
