"""experiments/synthetic/probes/nonfinite_trace.py replays a run's training batches through kept weights: it
names the first batch whose loss is not finite, the sequences and positions where the logits are not, and the
magnitudes entering each mixer's output norm; with finite weights it says that no batch went non-finite."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from nestlearn.experiments import synthetic as S
from nestlearn.models.config import to_dict

from .conftest import probe_script

PROBE = Path(__file__).resolve().parents[2] / "experiments" / "synthetic" / "probes" / "nonfinite_trace.py"


@pytest.fixture(scope="module")
def probe():
    yield from probe_script(PROBE)


def test_the_trace_finds_the_first_non_finite_batch(probe, tmp_path, monkeypatch):
    recipe = dataclasses.replace(S.load_recipe(str(PROBE.parents[1] / "mad.yaml")), batch_size=2)
    task = "selective_copying"
    torch.manual_seed(0)
    cfg = S.model_config(recipe, task, "hope", None, None)
    model = S._build(recipe, task, cfg)
    path = tmp_path / "w.pt"
    S.save_weights(path, model, recipe, {"task": task, "model": "hope", "seed": 0, "lr": 1e-3, "config": to_dict(cfg)})
    lines = probe.trace(S.load_weights(path)[0], recipe, task, 0, range(0, 2))
    assert lines == ["- no non-finite loss on the batches of steps 0–1"]
    with torch.no_grad():  # the first layer's memory read made infinite from the start
        model.blocks[0].mixer.out_norm.weight.fill_(float("inf"))
    S.save_weights(path, model, recipe, {"task": task, "model": "hope", "seed": 0, "lr": 1e-3, "config": to_dict(cfg)})
    out = tmp_path / "report.md"
    monkeypatch.setattr(sys, "argv", ["nonfinite_trace.py", str(path), "--steps", "3-4", "--out", str(out)])
    assert probe.main() == 0
    text = out.read_text()
    assert "- step 3: non-finite loss; sequences with non-finite logits: [0, 1]" in text
    assert "largest |x| entering `blocks.0.mixer.out_norm` by position" in text
    assert "`blocks.0.mixer.memory beta (max)` by position" in text and "`blocks.1.mixer.memory eta" in text
    assert f"--steps 3-4 --out {out}`" in text
    monkeypatch.setattr(sys, "argv", ["nonfinite_trace.py", str(path), "--steps", "4-3"])
    with pytest.raises(SystemExit, match="--steps must be A-B"):
        probe.main()
