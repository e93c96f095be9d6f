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


@pytest.mark.parametrize("block", ["titans", "titans_mag", "titans_mal", "titans_mac"])
def test_without_weight_decay_the_memory_never_forgets(block):
    """``titans.weight_decay: False`` (Titans Table 5's "w/o Weight Decay") is the same model with its forget gate
    shut (α = 1 at every token); it changes the computation, and a sequence in pieces still equals one call."""
    torch.manual_seed(0)
    ids = torch.randint(0, 256, (2, 20))
    plain = CausalLM(preset("debug", block=block)).double()
    no_decay = CausalLM(preset("debug", block=block, **{"titans.weight_decay": False})).double()
    no_decay.load_state_dict(plain.state_dict())
    with torch.no_grad():
        a, _, _ = plain(ids)
        b, _, _ = no_decay(ids)
        assert (a - b).abs().max() > 1e-6  # the switch matters
        for m in plain.modules():  # shut the forget gate: rows H … 2H of the three gates (lr, forget, momentum)
            if hasattr(m, "gates") and hasattr(m, "memory"):
                h = m.gates.out_features // 3
                m.gates.weight[h:2 * h] = 0.0
                m.gates.bias[h:2 * h] = -1e4  # σ(−1e4) = 0 in float64: α = 1 exactly
        shut, _, _ = plain(ids)
        assert torch.equal(shut, b)
        first, _, state = no_decay(ids[:, :7])
        rest, _, _ = no_decay(ids[:, 7:], state=state)
        assert torch.allclose(torch.cat([first, rest], 1), b, atol=1e-10, rtol=1e-9)
