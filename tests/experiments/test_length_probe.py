"""experiments/synthetic/probes/length_failure.py changes a trained HOPE at test time by patching the library
(CMS steps, memory writes, the in-context driver's segments): those patches must do what they say and leave the
library as it was."""

import dataclasses
from pathlib import Path

import pytest
import torch

from nestlearn.experiments import synthetic as S
from nestlearn.layers.cms import CMS
from nestlearn.memory import Memory
from nestlearn.models import CausalLM, icl

from .conftest import load_script

PROBE = Path(__file__).resolve().parents[2] / "experiments" / "synthetic" / "probes" / "length_failure.py"


@pytest.fixture(scope="module")
def probe():
    return load_script(PROBE)


@pytest.fixture(scope="module")
def setup(probe):
    recipe = dataclasses.replace(S.load_recipe(probe.RECIPE), eval_batches=1, eval_batch_size=4)
    torch.manual_seed(0)
    model = CausalLM(S.model_config(recipe, "abab_star", "hope", None, recipe.variants[probe.MODEL]["model"]))
    return recipe, model


def test_scoring_as_trained_equals_the_suite(probe, setup):
    recipe, model = setup
    bins = probe.score(model, recipe, "abab_star", (None, None))["bins"]
    assert bins == {k: v for k, v in S.evaluate(model, recipe, "abab_star").items() if k in S.FORMAL_BINS}


def test_patches_freeze_what_they_name_and_are_undone(probe, setup):
    recipe, model = setup
    originals = (CMS.step, icl._segment, Memory.read_write, Memory.write)
    ids = torch.full((1, 30), 2)
    fresh = model.init_state(1)
    with torch.no_grad(), probe._Capped(0), probe._Frozen(0):
        _, _, state = model(ids)
    for new, old in zip(state.blocks, fresh.blocks, strict=True):
        for a, b in zip(new.mixer.memory.weights + new.mixer.group.weights,
                        old.mixer.memory.weights + old.mixer.group.weights, strict=True):
            assert torch.equal(a, b)  # no memory wrote
        for a, b in zip(new.mlp.weights[0], old.mlp.weights[0], strict=True):
            assert torch.equal(a, b)  # no CMS level stepped
    with torch.no_grad():
        _, _, moved = model(ids)
    assert not torch.equal(moved.blocks[0].mixer.memory.weights[0], fresh.blocks[0].mixer.memory.weights[0])
    assert (CMS.step, icl._segment, Memory.read_write, Memory.write) == originals


def test_trajectory_covers_every_position_once(probe, setup):
    _, model = setup
    length, rows = probe.trajectory(model, "abab_star", length=20)  # 21 tokens: segments of 8, 8 and 5
    assert length == 20
    assert [(r[0], r[1]) for r in rows] == [(0, 7), (8, 15), (16, 20)]
    assert all(len(r) == 3 + 3 * len(model.blocks) for r in rows)


def test_trajectory_takes_the_longest_string_the_language_has(probe, setup):
    _, model = setup
    length, rows = probe.trajectory(model, "anbncn", length=20)  # aⁿbⁿcⁿ has no string of 19 or 20 symbols
    assert length == 18 and rows[-1][1] == 18
