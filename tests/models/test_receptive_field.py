"""Per-token reads: perturbing token s changes the output at every position t ≥ s of the same chunk, and
nothing before s, for every block kind; chunk-start reads (D21) leave the chunk's later positions past
the convolutions' reach untouched."""

import pytest
import torch

from nestlearn.models import BLOCKS

from .conftest import READ_KEYS, make_model

CHUNK = 16  # every memory's chunk: longer than what the width-4 convolutions of 2 layers reach (6)
LONG = {"selfmod.chunk_size": CHUNK, "selfmod.chunk_size_other": CHUNK, "titans.chunk_size": CHUNK,
        "delta.chunk_size": CHUNK, "cms.levels.0.chunk_size": 32, "cms.levels.1.chunk_size": 64}


def _change(block, s, **over):
    model = make_model(block, **LONG, **over)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 256, (1, 2 * CHUNK), generator=g)
    with torch.no_grad():
        base, _, _ = model(ids)
        bumped = ids.clone()
        bumped[:, s] = (bumped[:, s] + 17) % 256
        out, _, _ = model(bumped)
    return (out - base).abs().amax(dim=(0, 2))  # per position


@pytest.mark.parametrize("block", BLOCKS)
def test_token_s_reaches_every_later_position_of_its_chunk(block):
    s = CHUNK + 2  # inside the second chunk [16, 32)
    diff = _change(block, s)
    assert diff[:s].max() == 0, "a later token changed an earlier output"
    assert (diff[s:] > 1e-9).all(), f"positions not reached: {(diff[s:] <= 1e-9).nonzero().flatten().add(s).tolist()}"


@pytest.mark.parametrize("block", ["hope", "titans", "delta"])  # MAG / MAL reach later positions by attention
def test_chunk_start_reads_leave_the_rest_of_the_chunk_blind(block):
    s = CHUNK + 2
    # no persistent tokens: they are written first and would shift Titans' chunk boundaries by their number
    diff = _change(block, s, **{READ_KEYS[block]: "chunk_start", "titans.persistent_tokens": 0})
    assert diff[:s].max() == 0
    assert diff[s + 8:2 * CHUNK].max() < 1e-12  # past the convolutions' reach, until the chunk ends
