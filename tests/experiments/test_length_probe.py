"""experiments/synthetic/probes/length_failure.py on Shuffle-2: its counters and open stretches by hand, and its
per-string tables against a model that predicts every next-symbol set exactly, and one that never allows a close."""

import dataclasses
import re
import sys
from pathlib import Path

import pytest
import torch

from nestlearn.data.formal import SYMBOLS, next_symbols
from nestlearn.experiments import synthetic as S

from .conftest import load_script

PROBE = Path(__file__).resolve().parents[2] / "experiments" / "synthetic" / "probes" / "length_failure.py"


@pytest.fixture(scope="module")
def probe():
    yield load_script(PROBE)
    if str(PROBE.parent) in sys.path:
        sys.path.remove(str(PROBE.parent))


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
    from nestlearn.data.formal import formal_batch
    from nestlearn.memory import Memory
    from nestlearn.models import CausalLM

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
