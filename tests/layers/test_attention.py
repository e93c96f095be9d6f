"""Causal attention: an always-visible prefix (Titans' persistent tokens, for MAG and MAL) outside the window."""

import torch

from nestlearn.layers import Attention


def test_prefix_is_seen_by_every_position_outside_the_window():
    torch.manual_seed(0)
    attn = Attention(16, 2, 64, window=3).double()
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    prefix = torch.randn(4, 16, dtype=torch.float64)
    plain, _ = attn(x)
    with_prefix, cache = attn(x, prefix=prefix)
    assert not torch.allclose(plain[:, -1], with_prefix[:, -1])  # the last position, far past the window
    assert torch.equal(attn(x, prefix=prefix[:0])[0], plain)
    assert cache.k.shape[1] == 3  # the prefix is not state: the cache holds the window only
    # streaming with the prefix equals one call
    a, s = attn(x[:, :6], prefix=prefix)
    b, _ = attn(x[:, 6:], s, prefix=prefix)
    assert torch.allclose(torch.cat([a, b], 1), with_prefix, atol=1e-12)
