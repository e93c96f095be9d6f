"""experiments/synthetic/probes/write_strength.py measures how much a chunk's own writes move each output memory's
per-token read: it must not change the model's forward, must undo its instrumentation, must leave out Titans'
persistent tokens, and must read zero change when the memories write nothing."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from nestlearn.experiments import synthetic as S
from nestlearn.models import CausalLM

from .conftest import load_script

PROBE = Path(__file__).resolve().parents[2] / "experiments" / "synthetic" / "probes" / "write_strength.py"


@pytest.fixture(scope="module")
def probe():
    yield load_script(PROBE)
    sys.path.remove(str(PROBE.parent))


@pytest.mark.parametrize("block", ["hope", "titans"])
def test_measure_leaves_the_model_as_it_was(probe, block):
    recipe = dataclasses.replace(S.load_recipe(str(probe.RECIPE)), eval_batch_size=2)
    torch.manual_seed(0)
    model = CausalLM(S.model_config(recipe, probe.TASK, block, None, None))
    ids = S.make_batch(recipe, probe.TASK, 2, S._eval_seed(0), "eval")[0]
    with torch.no_grad():
        before = model(ids)[0]
        with probe._Recorder(model) as rec:
            during = model(ids)[0]
        after = model(ids)[0]
    assert torch.equal(before, during) and torch.equal(before, after)
    assert all("read_write" not in vars(b.mixer.memory) and "init_state" not in vars(b.mixer) for b in model.blocks)
    T = ids.shape[1]
    assert rec.tokens() == [T] * len(model.blocks)  # the sequence's tokens only: no persistent ones
    rows = probe.measure(model, recipe, batches=1)
    assert len(rows) == len(model.blocks)
    for row in rows:
        assert len(row["rel"]) == 8 and all(r > 0 for r in row["rel"]) and row["lr"] > 0


def test_no_write_no_change(probe):
    """With every write's learning rate zero and no forgetting (α = 1) the dual-form read is the chunk-start read:
    a relative change of 0."""
    recipe = dataclasses.replace(S.load_recipe(str(probe.RECIPE)), eval_batch_size=2)
    torch.manual_seed(0)
    model = CausalLM(S.model_config(recipe, probe.TASK, "titans", None, None))
    with torch.no_grad():
        for b in model.blocks:
            b.mixer.gates.bias[: 2 * b.mixer.heads] = -1e4  # θ = max_lr · sigmoid(−1e4) = 0; α = 1 − sigmoid(−1e4)
    rows = probe.measure(model, recipe, batches=1)
    assert all(max(row["rel"]) < 1e-6 for row in rows)


@pytest.mark.parametrize("block", ["hope", "titans"])
def test_a_chunk_start_reader_is_refused(probe, block):
    """A model whose memories read at the chunk start has no per-token read to compare: refused, not zeros."""
    recipe = dataclasses.replace(S.load_recipe(str(probe.RECIPE)), eval_batch_size=2)
    torch.manual_seed(0)
    model = CausalLM(S.model_config(recipe, probe.TASK, block, None, None))
    for b in model.blocks:
        b.mixer.cfg = dataclasses.replace(b.mixer.cfg, read="chunk_start")
    with pytest.raises(ValueError, match="recorded no token"):
        probe.measure(model, recipe, batches=1)
