import pytest
import torch

from nestlearn.models import CausalLM, preset


def make_model(block, seed=0, **overrides):
    """The debug preset in float64, with in-context learning rates large enough to matter."""
    torch.manual_seed(seed)
    over = {"cms.levels.0.lr": 0.05, "cms.levels.1.lr": 0.02, "cms.levels.0.chunk_size": 4,
            "cms.levels.1.chunk_size": 8, "selfmod.chunk_size": 8, "selfmod.chunk_size_other": 4,
            "titans.chunk_size": 4, "titans.window": 6, "delta.chunk_size": 4, "window": None}
    over.update(overrides)
    return CausalLM(preset("debug", block=block, **over)).double()


# the config key of each block kind's read mode (the blocks without one have a single mode)
READ_KEYS = {"hope": "selfmod.read", "titans": "titans.read", "titans_mag": "titans.read",
             "titans_mal": "titans.read", "delta": "delta.read"}


def read_cases(blocks):
    """``(block, overrides)`` for every block kind in each of its read modes."""
    out = []
    for block in blocks:
        modes = ("token", "chunk_start") if block in READ_KEYS else ("token",)
        out += [pytest.param(block, {READ_KEYS[block]: m} if block in READ_KEYS else {}, id=f"{block}-{m}")
                for m in modes]
    return out


@pytest.fixture
def ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (2, 21), generator=g)
