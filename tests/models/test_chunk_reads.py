"""A consequence of reading every memory at the start of its chunk (NL eq. 90), documented in
docs/PAPER.md: on a constant input, the positions of one chunk beyond the stacked convolutions'
receptive field ((w − 1)(L − 1) positions) get identical outputs, so a chunked HOPE cannot tell an
even position from an odd one inside a chunk ((aa)*, parity). One-token chunks (exact recurrence) can."""

import torch

from nestlearn.models import CausalLM, preset


def _logits(chunk: int) -> torch.Tensor:
    torch.manual_seed(0)
    cfg = preset("debug", block="hope", **{"selfmod.chunk_size": chunk, "selfmod.chunk_size_other": chunk,
                                           "cms.levels.0.chunk_size": 16, "cms.levels.1.chunk_size": 32})
    model = CausalLM(cfg).double()
    with torch.no_grad():
        logits, _, _ = model(torch.full((1, 32), 3, dtype=torch.long))
    return logits[0]


def test_chunk_start_reads_make_positions_in_a_chunk_indistinguishable():
    logits = _logits(8)
    # the second chunk, from where the second layer's conv window (width 4) lies inside it
    block = logits[11:16]
    assert torch.allclose(block, block[:1].expand_as(block), atol=1e-12)
    assert not torch.allclose(logits[8], logits[16])  # the next chunk reads a memory written since


def test_one_token_chunks_tell_positions_apart():
    logits = _logits(1)
    assert not torch.allclose(logits[12], logits[13], atol=1e-6)
