"""A short CPU training run on in-context associative recall lowers the loss clearly, every block kind."""

import pytest
import torch

from nestlearn.data import associative_recall
from nestlearn.models import BLOCKS, CausalLM, preset


@pytest.mark.parametrize("block", BLOCKS)
def test_short_training_lowers_the_loss(block):
    torch.manual_seed(0)
    model = CausalLM(preset("debug", block=block, vocab_size=40))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        ids, targets = associative_recall(16, 6, 4, generator=g)
        _, loss, _ = model(ids, targets=targets)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.75 * first, (first, last)
    ids, targets = associative_recall(64, 6, 4, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        _, held_out, _ = model(ids, targets=targets)
    assert held_out.item() < 0.8 * first
