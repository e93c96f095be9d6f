"""experiments/synthetic/probes/ablate.py scores kept HOPE weights with one in-context part off at test time: as
trained it must score what the suite scores, each change must change HOPE's answers and be undone after, and a model
without self-modifying memories is refused."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from nestlearn.experiments import synthetic as S
from nestlearn.models import CausalLM

from .conftest import probe_script

PROBE = Path(__file__).resolve().parents[2] / "experiments" / "synthetic" / "probes" / "ablate.py"


@pytest.fixture(scope="module")
def probe():
    yield from probe_script(PROBE)


def test_changes_score_apart_and_are_undone(probe, tmp_path):
    recipe = dataclasses.replace(S.load_recipe(str(PROBE.parents[1] / "mad.yaml")), eval_batch_size=4)
    task = "in_context_recall"
    torch.manual_seed(0)
    model = CausalLM(S.model_config(recipe, task, "hope", None, None))
    with torch.no_grad():
        suite_acc = S._score(model, recipe, task, "eval", [S._eval_seed(0)])[0]
        ids = S.make_batch(recipe, task, 4, S._eval_seed(0), "eval")[0]
        before = model.eval()(ids)[0]
    assert probe.accuracy(model, recipe, task, 1) == pytest.approx(suite_acc, abs=1e-9)
    for name, change in probe.CHANGES.items():
        if not change:
            continue
        with probe.changed(model, **change), torch.no_grad():
            assert not torch.allclose(model(ids)[0], before), f"{name} left HOPE's outputs unchanged"
        with torch.no_grad():
            assert torch.equal(model(ids)[0], before), f"{name} was not undone"
    transformer = CausalLM(S.model_config(recipe, task, "transformer", None, None))
    with pytest.raises(ValueError, match="no read to change"), probe.changed(transformer, read="chunk_start"):
        pass


def test_write_strength_per_layer_for_the_lm_and_for_compressions_wrapper(probe):
    recipe = dataclasses.replace(S.load_recipe(str(PROBE.parents[1] / "mad.yaml")), eval_batch_size=2)
    for task in ("in_context_recall", "compression"):
        torch.manual_seed(0)
        model = S._build(recipe, task, S.model_config(recipe, task, "hope", None, None))
        rows = probe.measure(model, recipe, 1, task)
        assert len(rows) == recipe.model["layers"]
        for row in rows:
            assert len(row["rel"]) == recipe.model["selfmod"]["chunk_size"] and row["lr"] > 0
            assert all(r >= 0 for r in row["rel"]) and max(row["rel"]) > 0  # the chunk's writes move the read


def test_memories_stop_in_a_model_whose_cms_does_not_learn_in_context(probe):
    """With its CMS frozen in context a HOPE runs no in-context segments; "memories write nothing" must still stop
    its memories (it once changed nothing there), and stopping them from a later position is refused."""
    recipe = dataclasses.replace(S.load_recipe(str(PROBE.parents[1] / "mad.yaml")), eval_batch_size=4)
    task = "in_context_recall"
    static = {"cms.levels": [{"chunk_size": 0, "lr": 0.01}, {"chunk_size": 0, "lr": 0.001}]}
    torch.manual_seed(0)
    model = CausalLM(S.model_config(recipe, task, "hope", None, static)).eval()
    assert model.segment == 0
    ids = S.make_batch(recipe, task, 4, S._eval_seed(0), "eval")[0]
    with torch.no_grad():
        before = model(ids)[0]
        with probe.changed(model, memories_frozen=True):
            assert not torch.allclose(model(ids)[0], before)
        assert torch.equal(model(ids)[0], before)
        lf = sys.modules["length_failure"]
        with pytest.raises(ValueError, match="does not learn in context"), lf._Frozen(16):
            model(ids)
