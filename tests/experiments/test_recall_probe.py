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


def test_current_token_convolutions_change_the_answers_and_are_restored(probe):
    """``conv_current``: the named layers' short convolutions pass the current token only while scoring (so the
    answers change), and their weights are the same tensors' values afterwards; a mixer without one is refused."""
    recipe = dataclasses.replace(S.load_recipe(str(probe.RECIPE)), eval_batch_size=2)
    for block in ("titans", "hope"):
        torch.manual_seed(0)
        model = CausalLM(S.model_config(recipe, probe.TASK, block, None, None))
        with torch.no_grad():
            for m in model.modules():  # taps on earlier tokens large enough to matter at initialization
                if isinstance(m, probe.ShortConv):
                    m.weight.normal_()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        ids = S.make_batch(recipe, probe.TASK, 2, S._eval_seed(0), "eval")[0]
        with torch.no_grad():
            logits = model(ids)[0]
            with probe._CurrentTokenConv(model, (0, 1)):
                changed = model(ids)[0]
                convs = [m for m in model.modules() if isinstance(m, probe.ShortConv)]
                assert convs and all(bool((m.weight[:, :-1] == 0).all()) for m in convs)
        assert not torch.allclose(logits, changed)
        res = probe.score(model, recipe, batches=1, read="chunk_start", conv_current=(1,))
        assert res["right"].numel() > 0
        seen = []  # the reads in force while scoring: only the named layer's changes
        hook = model.register_forward_pre_hook(
            lambda m, a, seen=seen: seen.append([b.mixer.cfg.read for b in m.blocks]))
        probe.score(model, recipe, batches=1, read="chunk_start", read_layers=(1,))
        hook.remove()
        assert seen == [["token", "chunk_start"]]
        assert all(b.mixer.cfg.read == "token" for b in model.blocks)
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    torch.manual_seed(0)
    plain = CausalLM(S.model_config(recipe, probe.TASK, "transformer", None, None))
    with pytest.raises(ValueError, match="no short convolution"):
        probe.score(plain, recipe, batches=1, conv_current=(0,))


def test_chunk_layout_follows_the_persistent_tokens(probe):
    """Titans writes its persistent tokens before the sequence, so its chunks start 4 tokens before the sequence's
    (mad.yaml); HOPE's start with it. The query table sorts in-chunk queries by that layout."""
    recipe = S.load_recipe(str(probe.RECIPE))
    layouts = {}
    for block in ("hope", "titans", "transformer"):
        torch.manual_seed(0)
        layouts[block] = probe.chunk_layout(CausalLM(S.model_config(recipe, probe.TASK, block, None, None)))
    assert layouts == {"hope": (8, 0), "titans": (8, 4), "transformer": (8, 0)}
    # pair 2 (token 4) needs pair 0's value (token 1): one chunk from position 0; with offset 4, token 1 sits in the
    # chunk of tokens −4…3 and token 4 in the next one
    keys = torch.tensor([[3, 5, 3, 1]])
    ids = torch.stack([keys + 1, torch.full_like(keys, 12)], 2).flatten(1)
    assert bool(probe.query_table(ids, 8)["same_chunk"][0, 2])
    assert not bool(probe.query_table(ids, 8, chunk=8, offset=4)["same_chunk"][0, 2])
