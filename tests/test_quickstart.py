"""The quickstart (the README's main job) at a tiny budget: every model gets the same steps, a solved
task ends a run early, and the table and plot are written."""

from nestlearn import quickstart as Q
from nestlearn.train import Trainer


def test_quickstart_writes_its_table_and_plot(tmp_path):
    results = Q.main(max_steps=50, out=str(tmp_path))
    assert list(results) == ["hope", "hope (CMS frozen in context)", "transformer"]
    assert all(r["steps"] == 50 and r["curve"][-1][0] == 50 for r in results.values())  # the ablation: HOPE's
    counts = [r["params"] for r in results.values()]
    assert max(counts) / min(counts) < 1.01  # same-size models
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| hope (CMS frozen in context) |" in text and "steps to 90%" in text
    assert (tmp_path / "accuracy.png").is_file()


def test_the_ablation_trains_as_long_as_hope(tmp_path, monkeypatch):
    solved = {"calls": 0}

    def evaluate(self):  # HOPE solves the task at its second evaluation; nothing else ever does
        solved["calls"] += 1
        learns = self.cfg.model.cms.levels[0].lr > 0  # HOPE, not the ablation
        return {"val_loss": 0.0, "val_acc": 1.0 if learns and solved["calls"] > 1 else 0.5}

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    results = Q.main(max_steps=300, out=str(tmp_path), blocks=("hope", "hope (CMS frozen in context)"))
    assert results["hope"]["steps"] == 150  # solved at its 2nd and 3rd evaluations
    assert results["hope (CMS frozen in context)"]["steps"] == 150


def test_a_solved_task_ends_the_run_early(tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "evaluate", lambda self: {"val_loss": 0.0, "val_acc": 1.0})
    results = Q.main(max_steps=1000, out=str(tmp_path), blocks=("transformer",))
    assert results["transformer"]["steps"] == 100  # two evaluations at 100%
    assert results["transformer"]["curve"] == [(50, 1.0), (100, 1.0)]
