"""Where a memory is read decides what a position can see (docs/PAPER.md, D21).

With ``read="chunk_start"`` (NL eq. 90 as printed) every memory is read at the start of its chunk: on a
constant input, the positions of one chunk beyond the stacked convolutions' receptive field
((w − 1)(L − 1) positions) get identical outputs, so a chunked HOPE cannot tell an even position from an
odd one inside a chunk ((aa)*, parity). With per-token reads (the default, the dual form) it can."""

import torch

from nestlearn.models import CausalLM, preset


def _logits(chunk: int, read: str) -> torch.Tensor:
    torch.manual_seed(0)
    cfg = preset("debug", block="hope", **{"selfmod.chunk_size": chunk, "selfmod.chunk_size_other": chunk,
                                           "selfmod.read": read, "cms.levels.0.chunk_size": 16,
                                           "cms.levels.1.chunk_size": 32})
    model = CausalLM(cfg).double()
    with torch.no_grad():
        logits, _, _ = model(torch.full((1, 32), 3, dtype=torch.long))
    return logits[0]


def test_chunk_start_reads_make_positions_in_a_chunk_indistinguishable():
    logits = _logits(8, "chunk_start")
    # the second chunk, from where the second layer's conv window (width 4) lies inside it
    block = logits[11:16]
    assert torch.allclose(block, block[:1].expand_as(block), atol=1e-12)
    assert not torch.allclose(logits[8], logits[16])  # the next chunk reads a memory written since


def test_token_reads_tell_positions_in_a_chunk_apart():
    logits = _logits(8, "token")
    for t in range(11, 15):
        assert not torch.allclose(logits[t], logits[t + 1], atol=1e-9)


def test_one_token_chunks_tell_positions_apart():
    logits = _logits(1, "chunk_start")
    assert not torch.allclose(logits[12], logits[13], atol=1e-6)
