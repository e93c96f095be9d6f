"""experiments/synthetic/probes/length_failure.py changes a trained HOPE at test time by patching the library
(CMS steps, memory writes, the in-context driver's segments): those patches must do what they say and leave the
library as it was; on Shuffle-2 its counters, open stretches and per-string tables must be right."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from nestlearn.data.formal import SYMBOLS, formal_batch, next_symbols
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
    bins = probe.score(model, recipe, "abab_star", probe.CAPS["as trained"])["bins"]
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


def test_counters_and_open_stretches_by_hand(probe):
    s = "(([])[]"
    assert probe.depths(s) == [(0, 0), (1, 0), (2, 0), (2, 1), (2, 0), (1, 0), (1, 1), (1, 0)]
    # "(" stays open from the first symbol on; "[" is open for one symbol twice
    assert probe.open_stretches(s) == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 0), (5, 0), (6, 1), (7, 0)]
    assert probe.open_stretches("()()") == [(0, 0), (1, 0), (0, 0), (1, 0), (0, 0)]


class Oracle(torch.nn.Module):
    """Logits +1 on the symbols that may come next and −1 elsewhere; with ``no_close`` never a close bracket."""

    def __init__(self, no_close: bool = False):
        super().__init__()
        self.no_close = no_close

    def forward(self, ids):
        out = torch.full((*ids.shape, len(SYMBOLS)), -1.0)
        for b in range(ids.shape[0]):
            s = "".join(SYMBOLS[t] for t in ids[b, 1:].tolist())
            for i in range(ids.shape[1]):
                for ch in next_symbols("shuffle2", s[:i]):
                    if not (self.no_close and ch in ")]"):
                        out[b, i, SYMBOLS.index(ch)] = 1.0
        return (out,)


def test_by_depth_tables(probe):
    recipe = dataclasses.replace(S.load_recipe(str(probe.RECIPE)), eval_batches=1, eval_batch_size=4)
    right = "\n".join(probe.by_depth(Oracle(), recipe, "shuffle2", 0, 2))
    assert "The run's 64 training strings (steps 0–1)" in right
    cells = [float(x) for x in re.findall(r"(\d+\.\d)% \(", right)]
    assert cells and set(cells) == {100.0}  # every band of every bin, in both tables
    assert "| wrong symbols |" in right and "| missed" not in right and "| extra" not in right
    wrong = probe.by_depth(Oracle(no_close=True), recipe, "shuffle2", 0, 2)
    assert {float(x) for x in re.findall(r"(\d+\.\d)% \(", "\n".join(wrong))} == {0.0}
    # every string opens a bracket first, and its close is denied right after: one symbol open, no counter deep
    rows = [line.split(" | ") for line in wrong if line.startswith(("| missed", "| extra"))]
    assert {r[0] for r in rows} <= {"| missed )", "| missed ]"}
    assert sum(int(r[1]) for r in rows) == 12  # 4 strings in each of 3 bins
    assert all(r[2] == "0" and r[3] == "0" and r[4] == "1 |" for r in rows)


@torch.no_grad()
def test_no_decay_column_equals_a_model_without_retention(probe):
    """The "no decay" column drops only the retention: on a model trained without it (α = 1 already) it changes
    nothing, on one with it it does, and the library's write is itself again afterwards."""
    recipe = S.load_recipe(str(probe.RECIPE))
    ids = formal_batch("shuffle2", 2, (30, 40), 0)[0]
    write = Memory.write
    for weight_decay in (False, True):
        torch.manual_seed(0)
        model = CausalLM(S.model_config(recipe, "shuffle2", "hope", None,
                                        {"selfmod.eta_max": 2.0, "selfmod.weight_decay": weight_decay})).eval()
        ref = model(ids)[0]
        with probe._Frozen(0, "no decay"):
            out = model(ids)[0]
        assert torch.equal(out, ref) == (not weight_decay)
        assert Memory.write is write


def test_train_resumed_from_a_copied_checkpoint_ends_as_the_whole_run(probe, tmp_path, monkeypatch):
    """``--resume``: the probe continues a copy of the suite's run folder from its latest checkpoint and ends
    with the weights the uninterrupted run ends with (here a 4-step run, checkpointed every 2 steps)."""
    monkeypatch.setattr(S, "CHECKPOINT_EVERY", 2)
    recipe = dataclasses.replace(S.load_recipe(str(probe.RECIPE)), steps=4, warmup=2, batch_size=4, eval_batches=1,
                                 eval_batch_size=4, val_batches=1, eval_every=2, patience=0, min_steps=0)
    row = probe.train(recipe, probe.MODEL, "abab_star", 0, 3e-3, tmp_path / "whole.pt", tmp_path / "whole")
    part = tmp_path / "part" / "checkpoints"
    part.mkdir(parents=True)
    first = sorted((tmp_path / "whole" / "checkpoints").glob("step_*"))[0]  # the latest two are kept: 2 and 4
    assert first.name.endswith("0002")
    (part / first.name).mkdir()
    for f in first.iterdir():
        (part / first.name / f.name).write_bytes(f.read_bytes())
    (part / "latest").write_text(first.name)
    again = probe.train(recipe, probe.MODEL, "abab_star", 0, 3e-3, tmp_path / "resumed.pt", part.parent)
    assert again["resumed_at"] == [2] and again["steps_run"] == row["steps_run"] == 4
    (whole, _, ident), (resumed, _, _) = S.load_weights(tmp_path / "whole.pt"), S.load_weights(tmp_path / "resumed.pt")
    assert ident["steps_run"] == 4 and ident["task"] == "abab_star" and ident["lr"] == 3e-3
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_kept_weights_prefers_the_suites_file(probe, tmp_path):
    """A row whose suite kept its weights (``weights``, a file that exists) is read from there; otherwise from this
    probe's own file at this code version, which a call that trains it writes."""
    suite_file = tmp_path / "suite.pt"
    store = tmp_path / "formal.jsonl"
    rows = [{"task": "shuffle2", "model": "m", "seed": 0, "lr": 1e-3, "weights": str(suite_file)},
            {"task": "shuffle2", "model": "m", "seed": 1, "lr": 1e-3}]
    store.write_text("".join(json.dumps(r) + "\n" for r in rows))
    own = probe.kept_file(tmp_path / "own", "formal.yaml", "m", "shuffle2", 0, 1e-3)
    assert probe.kept_weights(store, tmp_path / "own", "formal.yaml", "m", "shuffle2", 0) == (own, False)  # no file yet
    suite_file.write_bytes(b"")
    assert probe.kept_weights(store, tmp_path / "own", "formal.yaml", "m", "shuffle2", 0) == (suite_file, True)
    assert probe.kept_weights(store, tmp_path / "own", "formal.yaml", "m", "shuffle2", 1)[1] is False
