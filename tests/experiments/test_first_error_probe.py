"""experiments/synthetic/probes/first_error.py scores the suite's kept weights again: its bins must be the stored
row's, its failing strings those the bins count, and rows without kept weights are listed, not scored."""

import json
import sys
from pathlib import Path

from nestlearn.experiments import synthetic as S

from .conftest import load_script

PROBE = Path(__file__).resolve().parents[2] / "experiments" / "synthetic" / "probes" / "first_error.py"


def test_kept_runs_score_as_stored_and_first_errors_count_the_failures(tmp_path, monkeypatch):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("family: formal\ntasks: {abab_star: {}}\nmax_len: 12\nmodels: [transformer, delta]\n"
                      "seeds: [0]\nsteps: 6\nwarmup: 1\neval_batches: 1\neval_batch_size: 8\nbatch_size: 4\n"
                      "model: {dim: 16, layers: 1, heads: 2, delta: {heads: 2}}\n")
    out = tmp_path / "out"
    S.run_suite(S.load_recipe(recipe), out, log=None, only_models=["transformer"], keep_weights=tmp_path / "w")
    S.run_suite(S.load_recipe(recipe), out, log=None, only_models=["delta"])  # no weights kept
    probe = load_script(PROBE)
    table = tmp_path / "first.md"
    monkeypatch.setattr(sys, "argv", ["first_error.py", "--recipe", str(recipe), "--store", str(out / "formal.jsonl"),
                                      "--out", str(table)])
    assert probe.main() == 0
    text = table.read_text()
    row = next(json.loads(line) for line in (out / "formal.jsonl").read_text().splitlines()
               if json.loads(line)["model"] == "transformer")
    line = next(x for x in text.splitlines() if x.startswith("| abab_star | transformer |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[4] == " / ".join(f"{row[b]:.1f}" for b in S.FORMAL_BINS) and cells[5] == "the same"
    failing = round(sum((100 - row[b]) * 8 / 100 for b in S.FORMAL_BINS))  # 8 strings per bin
    assert int(cells[6]) == failing
    assert "No kept weights here for 1 reported rows" in text and "abab_star delta seed 0" in text

    model, rec, _ = S.load_weights(row["weights"])
    got = probe.first_errors(model, rec, "abab_star", rec.max_len)
    assert got["failed"] == len(got["first_wrong"]) == failing
    assert all(1 <= p <= 200 for p in got["first_wrong"]) and got["inside"] <= failing
