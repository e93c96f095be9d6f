"""MAD's compression read-out: every position is decoded from the last position's hidden state alone."""

import pytest
import torch
import torch.nn.functional as F

from nestlearn.models import CausalLM, preset
from nestlearn.models.autoencoder import LastTokenAutoencoder, sincos


def _norm_output_of_last_token(lm: CausalLM, ids: torch.Tensor) -> torch.Tensor:
    """The LM's final norm at the last position, streamed: the prefix with its state, then the last token."""
    seen = []
    handle = lm.norm.register_forward_hook(lambda m, a, out: seen.append(out[:, -1]))
    _, _, state = lm(ids[:, :-1])
    lm(ids[:, -1:], state=state)
    handle.remove()
    return seen[-1]


@pytest.mark.parametrize("block", ["transformer", "hope"])
def test_decodes_every_position_from_the_last_hidden_state(block):
    torch.manual_seed(0)
    lm = CausalLM(preset("debug", block=block, vocab_size=20)).double()
    model = LastTokenAutoencoder(lm).double()
    ids = torch.randint(1, 20, (2, 24))
    with torch.no_grad():
        logits, loss, _ = model(ids, targets=ids)
        code = _norm_output_of_last_token(lm, ids)
        expected = model.unembed(model.decoder(code[:, None] + sincos(lm.cfg.max_seq_len, lm.cfg.dim)[:24].double()))
    assert logits.shape == (2, 24, 20)
    torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9)
    assert loss.item() == pytest.approx(F.cross_entropy(logits.flatten(0, 1), ids.flatten()).item(), rel=1e-9)


def test_trains_and_refuses_a_sequence_past_its_positions():
    torch.manual_seed(0)
    model = LastTokenAutoencoder(CausalLM(preset("debug", block="transformer", vocab_size=12)), max_len=8)
    ids = torch.randint(1, 12, (4, 8))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    first = None
    for _ in range(60):  # one fixed batch: the loss must fall well below its start
        _, loss, _ = model(ids, targets=ids)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    with pytest.raises(ValueError, match="longer than the decoder's 8 positions"):
        model(torch.randint(1, 12, (1, 9)))


def test_sincos_positions_are_distinct_and_bounded():
    p = sincos(64, 16)
    assert p.shape == (64, 16) and p.abs().max() <= 1.0
    assert torch.cdist(p, p).fill_diagonal_(1.0).min() > 1e-3
