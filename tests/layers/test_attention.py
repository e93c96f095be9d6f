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


def test_nope_attention_sees_no_order_but_the_mask_and_streams():
    """``rope=False`` (NoPE): the last position's output is a function of the set of earlier tokens (a permutation
    of them changes nothing), where RoPE's is not; streaming still equals one call; the model-level switch
    ``model.rope: false`` reaches the attention mixer."""
    from nestlearn.models import CausalLM, from_dict

    torch.manual_seed(0)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    perm = torch.cat([torch.randperm(8), torch.tensor([8])])
    nope, rope = Attention(16, 2, 64, rope=False).double(), Attention(16, 2, 64).double()
    rope.load_state_dict(nope.state_dict())
    assert torch.allclose(nope(x)[0][:, -1], nope(x[:, perm])[0][:, -1], atol=1e-12)
    assert not torch.allclose(rope(x)[0][:, -1], rope(x[:, perm])[0][:, -1], atol=1e-6)
    a, s = nope(x[:, :4])
    b, _ = nope(x[:, 4:], s)
    assert torch.allclose(torch.cat([a, b], 1), nope(x)[0], atol=1e-12)
    lm = CausalLM(from_dict({"block": "transformer", "vocab_size": 11, "dim": 16, "layers": 1, "heads": 2,
                             "rope": False}))
    assert all(m.rope is False for m in lm.modules() if isinstance(m, Attention))
