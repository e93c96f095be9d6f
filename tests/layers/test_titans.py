"""Titans: the LMM's bounded learning rate; MAG and MAL's attention sees the persistent tokens."""

import pytest
import torch

from nestlearn.layers import TitansConfig
from nestlearn.layers.selfmod import stable_eta_max
from nestlearn.models import CausalLM, preset


def test_titans_learning_rate_bound():
    assert TitansConfig(chunk_size=8).resolved_max_lr() == stable_eta_max(8)
    assert TitansConfig(max_lr=0.1).resolved_max_lr() == 0.1
    with pytest.raises(ValueError, match=r"titans.max_lr must be in \(0, 2\] or None \(got 3.0\)"):
        TitansConfig(max_lr=3.0).validate(16)


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
