"""Blocks by composition (nestlearn/models/blocks.py): a new mixer is one module and one registry line."""

import torch
from torch import nn

from nestlearn.layers import KVCache
from nestlearn.models import BLOCKS, MIXERS, Block, BlockState, CausalLM, preset
from nestlearn.models.blocks import Part


class CumulativeMean(nn.Module):
    """A toy mixer with state: the running mean of its inputs."""

    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)

    def init_state(self, batch_size, ref):
        return (ref.new_zeros(batch_size, self.proj.in_features), 0)

    def forward(self, x, state):
        total, n = state
        sums = total[:, None] + x.cumsum(1)
        count = n + torch.arange(1, x.shape[1] + 1, dtype=x.dtype)[:, None]
        return self.proj(sums / count), (sums[:, -1], n + x.shape[1])


def test_a_new_block_kind_is_one_module_and_two_registry_lines(monkeypatch):
    monkeypatch.setitem(MIXERS, "mean", Part(lambda c: CumulativeMean(c.dim)))
    monkeypatch.setitem(BLOCKS, "mean_cms", ("mean", "cms"))
    torch.manual_seed(0)
    model = CausalLM(preset("debug", block="mean_cms")).double()
    ids = torch.randint(0, 256, (2, 13))
    with torch.no_grad():
        full, _, _ = model(ids)
        a, _, s = model(ids[:, :6])
        b, _, _ = model(ids[:, 6:], state=s)
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-10)  # streaming equals one call, CMS learning on
    # committed up to the last whole CMS segment (4 tokens); tokens 4–5 are pending, replayed next call
    assert isinstance(s.blocks[0], BlockState) and s.blocks[0].mixer[1] == 4 and s.pending.shape[1] == 2


def test_block_state_is_named():
    model = CausalLM(preset("debug", block="hope_attention"))
    state = model.init_state(2)
    blk = state.blocks[0]
    assert isinstance(blk, BlockState) and isinstance(blk.mixer, KVCache) and blk.mlp is not None
    assert isinstance(model.blocks[0], Block) and model.blocks[0].learns_in_context
    assert CausalLM(preset("debug", block="transformer")).init_state(1).blocks[0].mlp is None
