"""MAG / MAL: the attention branch sees Titans' persistent tokens as an always-visible prefix."""

import torch

from nestlearn.layers import Attention
from nestlearn.models import CausalLM, preset


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


def test_mag_and_mal_attention_depend_on_the_persistent_tokens():
    for block in ("titans_mag", "titans_mal"):
        torch.manual_seed(0)
        model = CausalLM(preset("debug", block=block, **{"titans.window": 4})).double()
        ids = torch.randint(0, 256, (1, 12))
        blk = model.blocks[0]
        n = torch.randn(1, 12, model.cfg.dim, dtype=torch.float64)
        a, _ = blk.mixer.attn(n, None, prefix=blk.mixer.memory.persistent)
        with torch.no_grad():
            blk.mixer.memory.persistent.add_(1.0)
        b, _ = blk.mixer.attn(n, None, prefix=blk.mixer.memory.persistent)
        assert not torch.allclose(a[:, -1], b[:, -1]), block
        assert torch.isfinite(model(ids)[0]).all()
