"""Synthetic tasks: every sample is correct by construction, checked by code written independently."""

import random
import re

import pytest
import torch

from nestlearn.data import synthetic
from nestlearn.data.formal import (
    LANGUAGES,
    SYMBOLS,
    formal_batch,
    formal_batch_reference,
    length_bins,
    longest_length,
    next_symbols,
    sample_string,
)
from nestlearn.data.synthetic import (
    compression,
    compression_lm,
    fuzzy_in_context_recall,
    in_context_recall,
    memorization,
    mqar,
    noisy_in_context_recall,
    selective_copying,
)


def in_language(lang: str, s: str) -> bool:
    """Membership, written without the generator's next-symbol logic."""
    if lang == "parity":
        return re.fullmatch(r"[ab]*", s) is not None and s.count("b") % 2 == 0
    if lang == "aa_star":
        return re.fullmatch(r"(aa)*", s) is not None
    if lang == "abab_star":
        return re.fullmatch(r"(abab)*", s) is not None
    if lang == "anbn":
        m = re.fullmatch(r"(a+)(b+)", s)
        return m is not None and len(m.group(1)) == len(m.group(2))
    if lang == "anbncn":
        m = re.fullmatch(r"(a+)(b+)(c+)", s)
        return m is not None and len(m.group(1)) == len(m.group(2)) == len(m.group(3))
    if lang == "shuffle2":
        depth = {"(": 0, "[": 0}
        for ch in s:
            if ch in "([":
                depth[ch] += 1
            elif ch in ")]":
                depth["(" if ch == ")" else "["] -= 1
                if min(depth.values()) < 0:
                    return False
            else:
                return False
        return depth == {"(": 0, "[": 0}
    raise AssertionError(lang)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_samples_are_in_the_language_and_respect_the_bins(lang):
    rng = random.Random(0)
    bins = length_bins(20)
    for name in ("bin0", "bin1"):
        lo, hi = bins[name]
        for _ in range(200):
            s = sample_string(lang, bins[name], rng)
            assert in_language(lang, s), (lang, s)
            assert lo <= len(s) <= hi, (lang, name, len(s))


def test_a_range_without_a_string_of_the_language_is_refused_by_name():
    """aⁿbⁿcⁿ has lengths 198 and 201 around [199, 200]: the error names the language, the range and both."""
    for lang, rng_, nearest in (("anbncn", (199, 200), "198 and 201"), ("abab_star", (49, 50), "48 and 52")):
        with pytest.raises(ValueError, match=re.escape(f"{lang} has no string of a length in [{rng_[0]}, {rng_[1]}]")
                           + ".*" + nearest):
            sample_string(lang, rng_, random.Random(0))
    with pytest.raises(ValueError, match="empty"):
        sample_string("parity", (5, 3), random.Random(0))
    with pytest.raises(ValueError, match="unknown language"):
        sample_string("dyck", (1, 4), random.Random(0))


def test_longest_length_is_the_longest_string_at_or_below():
    for lang in LANGUAGES:
        for at_most in range(4, 60):
            n = longest_length(lang, at_most)
            assert n <= at_most and len(sample_string(lang, (n, n), random.Random(0))) == n
            if n < at_most:  # nothing longer fits
                with pytest.raises(ValueError, match="has no string"):
                    sample_string(lang, (n + 1, at_most), random.Random(0))
    assert longest_length("anbncn", 200) == 198
    with pytest.raises(ValueError, match="shortest: 3"):
        longest_length("anbncn", 2)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_next_symbol_sets_agree_with_membership(lang):
    """``$`` is allowed exactly after members; every actual next symbol of a member is allowed; and no
    symbol outside the set can extend the prefix to a member of bounded length (checked by brute force)."""
    rng = random.Random(1)
    alphabet = {"parity": "ab", "aa_star": "a", "abab_star": "ab", "anbn": "ab", "anbncn": "abc",
                "shuffle2": "()[]"}[lang]
    for _ in range(30):
        s = sample_string(lang, (1, 12), rng)
        for i in range(len(s) + 1):
            allowed = next_symbols(lang, s[:i])
            assert ("$" in allowed) == in_language(lang, s[:i])
            if i < len(s):
                assert s[i] in allowed
    completes = lambda w: any(in_language(lang, w + "".join(t)) for n in range(0, 7)  # noqa: E731
                              for t in _words(alphabet, n))
    for prefix in ["", "a", "ab", "aab", "(", "([", "abab", "aa"]:
        if any(ch not in alphabet for ch in prefix) or not completes(prefix):
            continue  # next-symbol sets are defined on prefixes of members only
        allowed = next_symbols(lang, prefix)
        for ch in alphabet:
            assert (ch in allowed) == completes(prefix + ch), (lang, prefix, ch)


def _words(alphabet, n):
    if n == 0:
        yield ()
        return
    for w in _words(alphabet, n - 1):
        for ch in alphabet:
            yield (*w, ch)


def test_formal_batch_shapes_and_seeds():
    ids, targets, mask = formal_batch("anbn", 8, (1, 20), seed=3)
    again = formal_batch("anbn", 8, (1, 20), seed=3)
    assert torch.equal(ids, again[0]) and torch.equal(targets, again[1])
    assert ids.shape == mask.shape and targets.shape == (*ids.shape, len(SYMBOLS))
    assert (ids[:, 0] == SYMBOLS.index("^")).all()
    assert ((targets.sum(-1) > 0) == mask).all()  # a target set wherever a prediction is scored


@pytest.mark.parametrize("lang", LANGUAGES)
def test_formal_batch_equals_its_reference(lang):
    """The list-built batch is the entry-by-entry one exactly: ids, targets, mask, dtypes, every bin."""
    for bin_range in ((1, 50), (51, 100), (101, 200), (1, 3)):
        for seed in range(4):
            for batch in (1, 32):
                got = formal_batch(lang, batch, bin_range, seed)
                for a, b in zip(got, formal_batch_reference(lang, batch, bin_range, seed), strict=True):
                    assert a.dtype == b.dtype and torch.equal(a, b), (lang, bin_range, seed, batch)


@pytest.mark.parametrize("name,kwargs", [
    ("in_context_recall", dict(seq_len=128, n_keys=8, n_values=8)),
    ("in_context_recall", dict(seq_len=41, n_keys=16, n_values=16)),
    ("noisy_in_context_recall", dict(seq_len=128, n_keys=8, n_values=8, noise_vocab=16, frac_noise=0.2)),
    ("noisy_in_context_recall", dict(seq_len=65, n_keys=4, n_values=8, noise_vocab=3, frac_noise=0.6)),
    ("fuzzy_in_context_recall", dict(seq_len=128, n_keys=8, vocab=8, max_span=3)),
    ("fuzzy_in_context_recall", dict(seq_len=40, n_keys=16, vocab=16, max_span=5)),
])
def test_mad_generators_equal_their_references(name, kwargs):
    """The loop-free generators give the references' tensors and leave the generator where they leave it."""
    for seed in range(6):
        g, g_ref = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        got = getattr(synthetic, name)(16, **kwargs, generator=g)
        ref = getattr(synthetic, name + "_reference")(16, **kwargs, generator=g_ref)
        for a, b in zip(got, ref, strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b), (name, kwargs, seed)
        assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=g_ref))


def test_mqar_zero_fill_keeps_the_draws():
    """``random_fill=False`` (Zoology's Figure 2): token 0 in every slot no query takes, nothing else changed."""
    a_ids, a_t = mqar(8, 6, 48, n_keys=16, n_values=16, generator=torch.Generator().manual_seed(3))
    b_ids, b_t = mqar(8, 6, 48, n_keys=16, n_values=16, random_fill=False, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a_t, b_t)
    kept = torch.zeros_like(a_ids, dtype=torch.bool)
    kept[:, :12] = True  # the pairs
    q = (a_t != -100).nonzero()
    kept[q[:, 0], q[:, 1]] = True  # each query key ...
    kept[q[:, 0], q[:, 1] + 1] = True  # ... and its value after it
    assert torch.equal(b_ids[kept], a_ids[kept])
    assert (b_ids[~kept] == 0).all() and (a_ids[~kept] > 0).all()


def test_recall_tasks_are_correct_by_construction():
    g = torch.Generator().manual_seed(0)
    ids, t = mqar(4, 5, 31, generator=g)
    assert ids.shape == (4, 31)
    for row, tr in zip(ids.tolist(), t.tolist(), strict=True):
        pairs = dict(zip(row[0:10:2], row[1:10:2], strict=True))
        asked = [j for j in range(31) if tr[j] != -100]
        # Zoology's MQAR: every key asked exactly once (no replacement), after the pairs, its value next
        assert sorted(row[j] for j in asked) == sorted(pairs) and all(j >= 10 and j % 2 == 0 for j in asked)
        assert all(tr[j] == pairs[row[j]] == row[j + 1] for j in asked)
    ids, t = in_context_recall(4, 40, generator=g)
    for row, tr in zip(ids.tolist(), t.tolist(), strict=True):
        seen = {}
        for j in range(0, 40, 2):
            k, v = row[j], row[j + 1]
            assert tr[j] == (v if k in seen else -100)
            assert seen.setdefault(k, v) == v  # one map per sequence
    ids, t = fuzzy_in_context_recall(4, 40, generator=g)
    for row, tr in zip(ids.tolist(), t.tolist(), strict=True):
        for j, target in enumerate(tr):
            if target != -100:
                assert row[j + 1] == target and target > 16  # a value token, predicted from the token before


def test_noisy_recall_targets_only_keys_seen_in_kept_pairs():
    g = torch.Generator().manual_seed(3)
    ids, t = noisy_in_context_recall(64, 64, n_keys=8, n_values=8, noise_vocab=16, frac_noise=0.4, generator=g)
    noise_slots = 0
    for row, tr in zip(ids.tolist(), t.tolist(), strict=True):
        seen = {}
        for j in range(0, 64, 2):
            k, v = row[j], row[j + 1]
            if k > 16:  # a noise slot: both tokens from the noise vocabulary, never a target
                assert 17 <= k <= 32 and 17 <= v <= 32 and tr[j] == tr[j + 1] == -100
                noise_slots += 1
                continue
            assert 1 <= k <= 8 and 9 <= v <= 16
            assert tr[j] == (v if k in seen else -100)
            assert seen.setdefault(k, v) == v
    assert abs(noise_slots / (64 * 32) - 0.4) < 0.03  # the share of noise asked for
    with pytest.raises(ValueError, match="frac_noise"):
        noisy_in_context_recall(2, 8, frac_noise=1.0)


def test_copy_and_memorization_tasks():
    g = torch.Generator().manual_seed(0)
    ids, t = selective_copying(3, 20, 5, generator=g)
    for row, tr in zip(ids.tolist(), t.tolist(), strict=True):
        content = [x for x in row[:20] if x != 1]
        assert len(content) == 5 and row[20] == 18 and row[21:] == content
        assert [x for x in tr if x != -100] == content
    ids, t = compression_lm(3, 6, generator=g)  # D19: read back after the marker
    assert torch.equal(ids[:, :6], ids[:, 7:]) and torch.equal(t[:, 6:12], ids[:, :6])
    ids, t = compression(3, 6, vocab=15, generator=g)  # MAD: 5 tokens and the compression token, all targets
    assert ids.shape == (3, 6) and torch.equal(t, ids) and (ids[:, -1] == 16).all()
    assert 1 <= int(ids[:, :-1].min()) and int(ids[:, :-1].max()) <= 15
    a, _ = memorization(2, 10, generator=torch.Generator().manual_seed(1))
    b, _ = memorization(2, 10, generator=torch.Generator().manual_seed(2))
    keys = torch.cat([a[:, 0::2], b[:, 0::2]]).flatten().tolist()
    vals = torch.cat([a[:, 1::2], b[:, 1::2]]).flatten().tolist()
    assert all(dict(zip(keys, vals, strict=True))[k] == v for k, v in zip(keys, vals, strict=True))  # one fixed map
    with pytest.raises(ValueError, match="leaves 0 query slots after 10 pairs, but MQAR queries every key once"):
        mqar(1, 10, 20)
