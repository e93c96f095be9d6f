"""experiments/synthetic/probes/readout.py reads HOPE's hidden states at every position and fits linear probes on
them: the states must be the ones the output head reads, position for position, the counters' bits and stretches
those of the strings, and a probe must recover a bit that is linearly in its features."""

from pathlib import Path

import torch

from nestlearn.data.formal import SYMBOLS, formal_batch
from nestlearn.experiments import synthetic as S

from .conftest import load_script

PROBE = Path(__file__).resolve().parents[2] / "experiments" / "synthetic" / "probes" / "readout.py"


def _model(probe):
    recipe = S.load_recipe(probe.RUNS[0][0])
    spec = recipe.variants[probe.RUNS[0][1]]
    torch.manual_seed(0)
    return S.CausalLM(S.model_config(recipe, "shuffle2", spec["block"], None, spec.get("model"))).eval()


def test_states_are_what_the_head_reads_at_every_position():
    probe = load_script(PROBE)
    model = _model(probe)
    ids = formal_batch("shuffle2", 3, (20, 40), 0)[0]  # longer than one in-context segment (8)
    layers, logits = probe.states(model, ids)
    assert len(layers) == len(model.blocks)
    assert all(h.shape == (*ids.shape, model.cfg.dim) for h in layers)
    torch.testing.assert_close(model.head(layers[-1]), logits)


def test_positions_carry_the_strings_counters():
    probe = load_script(PROBE)
    model = _model(probe)
    got = probe.positions(model, 5, (10, 30), 7, batch=2)
    ids, _, mask = formal_batch("shuffle2", 2, (10, 30), 7)  # the first batch of the same draw
    first = "".join(SYMBOLS[t] for t in ids[0, 1:int(mask[0].sum())].tolist())
    n = len(first) + 1
    assert got["bit"][:n].tolist() == [[c > 0 for c in pair] for pair in probe.depths(first)]
    assert got["stretch"][:n].tolist() == [list(pair) for pair in probe.open_stretches(first)]
    rows = got["bit"].shape[0]
    assert got["own"].shape == (rows, 2) and all(x.shape[0] == rows for x in got["x"])


def test_a_linear_bit_is_recovered_and_scored_by_band():
    probe = load_script(PROBE)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 8, generator=g)
    y = torch.stack([x[:, 0] > 0.3, x[:, 1] + x[:, 2] < 0], dim=1)
    new = torch.randn(500, 8, generator=g)
    pred = probe.fit(x, y)(new)
    truth = torch.stack([new[:, 0] > 0.3, new[:, 1] + new[:, 2] < 0], dim=1)
    assert (pred == truth).float().mean() > 0.98
    test = {"bit": truth, "stretch": torch.randint(1, 90, truth.shape, generator=g) * truth}
    lines = probe.table(test, {"right": truth, "never open": torch.zeros_like(truth)})
    rows = [line.rstrip(" |").split(" | ") for line in lines[2:]]
    assert all(r[2] == "100.0%" for r in rows)  # the right bits, in every band
    assert rows[0][3] == "100.0%" and all(r[3].startswith("0.0%") for r in rows[1:])  # only the closed ones
