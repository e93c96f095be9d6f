"""experiments/synthetic/probes/compression_positions.py scores kept compression weights by position: over the
sequence's positions its accuracies average to what the suite scores, and its report names every run."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from nestlearn.experiments import synthetic as S
from nestlearn.models.config import to_dict

from .conftest import probe_script

PROBE = Path(__file__).resolve().parents[2] / "experiments" / "synthetic" / "probes" / "compression_positions.py"


@pytest.fixture(scope="module")
def probe():
    yield from probe_script(PROBE)


def test_positions_average_to_the_suites_accuracy_and_the_report_names_each_run(probe, tmp_path, monkeypatch):
    recipe = dataclasses.replace(S.load_recipe(str(PROBE.parents[1] / "mad.yaml")), eval_batch_size=4)
    task = "compression"
    paths = []
    for block in ("hope", "transformer"):
        torch.manual_seed(0)
        cfg = S.model_config(recipe, task, block, None, None)
        model = S._build(recipe, task, cfg).eval()
        acc, n = probe.by_position(model, recipe, 2)
        assert n == 8 and acc.shape == (recipe.tasks[task]["seq_len"],)
        with torch.no_grad():
            suite_acc = S._score(model, recipe, task, "eval", [S._eval_seed(0), S._eval_seed(1)])[0]
        assert 100 * float(acc.mean()) == pytest.approx(suite_acc, abs=1e-9)
        assert [span for span, _ in probe.blocks(acc)] == ["1–8", "9–16", "17–24", "25–31"]
        path = tmp_path / f"compression-{block}.pt"
        S.save_weights(path, model, recipe, {"task": task, "model": block, "seed": 0, "lr": 1e-3,
                                             "config": to_dict(cfg)})
        paths.append(str(path))
    out = tmp_path / "report.md"
    monkeypatch.setattr(sys, "argv", ["compression_positions.py", *paths, "--batches", "1", "--out", str(out)])
    assert probe.main() == 0
    text = out.read_text()
    assert "hope seed 0, lr 0.001" in text and "transformer seed 0, lr 0.001" in text
    assert "| 17–24 |" in text and "| 31 |" in text and "| 32 |" not in text
    assert f"--batches 1 --out {out}`" in text  # the command as run, its report's place included
