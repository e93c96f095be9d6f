"""experiments/synthetic/probes/recall_errors.py sorts HOPE's in-context recall answers by what each query needed:
its descriptors must be right, its "as trained" score must be the suite's, and its test-time changes undone."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from nestlearn.experiments import synthetic as S
from nestlearn.models import CausalLM

from .conftest import load_script

PROBE = Path(__file__).resolve().parents[2] / "experiments" / "synthetic" / "probes" / "recall_errors.py"


@pytest.fixture(scope="module")
def probe():
    yield load_script(PROBE)
    sys.path.remove(str(PROBE.parent))  # the probe puts its folder on the path to import length_failure


def test_query_table_by_hand(probe):
    # keys (0-based) 3 5 3 3 1 5: pairs 0..5, ids interleave key+1 and a value token
    keys = torch.tensor([[3, 5, 3, 3, 1, 5]])
    ids = torch.stack([keys + 1, torch.full_like(keys, 12)], 2).flatten(1)
    q = probe.query_table(ids, n_keys=8)
    assert q["scored"].tolist() == [[False, False, True, True, False, True]]
    assert q["dist"].tolist() == [[0, 0, 2, 1, 0, 4]]
    assert q["occ"].tolist() == [[0, 0, 1, 2, 0, 1]]
    # pair 2 (token 4) needs pair 0's value (token 1): chunk 0 both; pair 5 (token 10) needs token 3: chunks 1 and 0
    assert q["same_chunk"][0, [2, 3, 5]].tolist() == [True, True, False]


def test_as_trained_equals_the_suite_and_changes_are_undone(probe):
    recipe = dataclasses.replace(S.load_recipe(str(probe.RECIPE)), eval_batch_size=2)
    torch.manual_seed(0)
    model = CausalLM(S.model_config(recipe, probe.TASK, probe.MODEL, None, None))
    res = probe.score(model, recipe, batches=1)
    with torch.no_grad():
        acc, _, _ = S._score(model, recipe, probe.TASK, "eval", [S._eval_seed(i) for i in range(1)])
    assert 100.0 * int(res["right"].sum()) / res["right"].numel() == pytest.approx(acc, abs=1e-9)
    chunk = probe.score(model, recipe, batches=1, read="chunk_start", cms_frozen=True, memories_frozen=True)
    assert chunk["right"].shape == res["right"].shape
    assert all(block.mixer.cfg.read == "token" for block in model.blocks)
    again = probe.score(model, recipe, batches=1)
    assert torch.equal(again["right"], res["right"])
    lines = probe.breakdown(res)
    assert lines[0].startswith(f"{res['right'].numel()} scored queries")


def test_baselines_are_scored_alike_and_only_their_own_reads_change(probe):
    """``--model titans``: the same query table for Titans' memory, its read switched to the chunk start and back;
    the Transformer has no read to switch, and asking for it is refused."""
    recipe = dataclasses.replace(S.load_recipe(str(probe.RECIPE)), eval_batch_size=2)
    for block in ("titans", "transformer"):
        torch.manual_seed(0)
        model = CausalLM(S.model_config(recipe, probe.TASK, block, None, None))
        res = probe.score(model, recipe, batches=1)
        with torch.no_grad():
            acc, _, _ = S._score(model, recipe, probe.TASK, "eval", [S._eval_seed(0)])
        assert 100.0 * int(res["right"].sum()) / res["right"].numel() == pytest.approx(acc, abs=1e-9)
        if block == "titans":
            probe.score(model, recipe, batches=1, read="chunk_start")
            assert all(b.mixer.cfg.read == "token" for b in model.blocks)
        else:
            with pytest.raises(ValueError, match="no read to change"):
                probe.score(model, recipe, batches=1, read="chunk_start")


def test_trained_model_returns_the_weights_its_row_scored(probe):
    """``trained_model`` stops the suite's run after ``until`` steps and returns the weights the run scored (kept
    and read back with ``load_weights``): scoring them again gives the row's accuracy."""
    recipe = dataclasses.replace(S.load_recipe(str(probe.RECIPE)), steps=4, warmup=1, batch_size=2, eval_batches=1,
                                 eval_batch_size=2, val_batches=1, eval_every=2, patience=0, min_steps=0)
    model, row = probe.trained_model(recipe, 1e-3, 0, until=2, block="transformer")
    assert row["steps_run"] == 2
    with torch.no_grad():
        acc, _, _ = S._score(model, recipe, probe.TASK, "eval", [S._eval_seed(0)])
    assert acc == pytest.approx(row["acc"], abs=1e-9)
