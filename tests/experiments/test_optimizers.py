"""The optimizer experiment's quick mode (`nestlearn optimizers`, nestlearn/experiments/optimizers.py): the
protocol's selection on a validation split, every optimizer, resumable runs."""

import json
from pathlib import Path

import pytest

from nestlearn.cli import main

from .conftest import Killed, kill_once_after, load_script, record_trainer_devices

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"


def _vit():
    from nestlearn.experiments import optimizers

    return optimizers


@pytest.mark.skipif(not (DATA / "fashion_mnist").is_dir(), reason="../shared/data/fashion_mnist is not here")
def test_quick_mode_selects_on_validation_and_resumes(tmp_path, capsys):
    vit = _vit()
    args = ["--quick", "--dataset", "fashion_mnist", "--out", str(tmp_path), "--data-root", str(DATA)]
    assert vit.main(args) == 0
    rows = [json.loads(x) for x in (tmp_path / "runs-quick.jsonl").read_text().splitlines()]
    assert {r["optimizer"] for r in rows} == set(vit.OPTIMIZERS)
    select = [r for r in rows if r["seed"] == vit.SELECT_SEED]
    assert len(select) == 3 * len(vit.OPTIMIZERS) and len(rows) == 4 * len(vit.OPTIMIZERS)  # 3 rates + seed 0
    assert all("val_loss" in r and r["commit"] for r in rows)
    assert all(r["val_curve"] and r["val_acc"] > 0 for r in rows)  # every class is in the validation split
    result = json.loads((tmp_path / "results-quick.json").read_text())["fashion_mnist"]
    for name, v in result.items():  # the rate of the lowest validation loss at the selection seed
        scores = {r["lr"]: r["val_loss"] for r in select if r["optimizer"] == name}
        assert v["lr"] == min(scores, key=scores.get) and v["runs"][0]["lr"] == v["lr"]
    text = (tmp_path / "RESULTS-quick.md").read_text()
    assert all(f"| {n} |" in text for n in vit.OPTIMIZERS)
    # rows of different sessions and loads: the table gives each run's CPU time, never a speed ratio between them
    assert "CPU min / run" in text and "time/step vs Muon" not in text
    assert "benchmarks/results/optimizer_step.md" in text
    assert main(["optimizers", *args]) == 0  # resumes (through the CLI verb): nothing is run again
    assert len((tmp_path / "runs-quick.jsonl").read_text().splitlines()) == len(rows)
    # rows of another code version count when their fingerprint equals this code's; a row whose
    # fingerprint differs is run again
    rows[0]["fingerprint"] = [x + 1.0 for x in rows[0]["fingerprint"]]
    (tmp_path / "runs-quick.jsonl").write_text("".join(json.dumps({**r, "code": "another"}) + "\n" for r in rows))
    assert vit.main(args) == 0
    again = [json.loads(x) for x in (tmp_path / "runs-quick.jsonl").read_text().splitlines()]
    assert len(again) == len(rows) + 1 and again[-1]["optimizer"] == rows[0]["optimizer"]
    assert again[-1]["lr"] == rows[0]["lr"] and again[-1]["seed"] == rows[0]["seed"]


def test_a_run_trains_and_scores_on_the_device_it_is_given(monkeypatch):
    """--device reaches the Trainer and the scoring (shown on the CPU: no accelerator here)."""
    import argparse

    import torch

    vit = _vit()
    seen = record_trainer_devices(monkeypatch, vit)
    g = torch.Generator().manual_seed(0)
    data = [torch.rand(16, 1, 8, 8, generator=g) if i % 2 == 0 else torch.randint(0, 10, (16,), generator=g)
            for i in range(6)]
    args = argparse.Namespace(dim=16, depth=1, steps=2, batch=4, eval_every=1, rest_lr=1e-3, weight_decay=0.0,
                              device="cpu:0")
    r = vit.run("adamw", 1e-3, {}, 0, data, args, 8, 1)
    assert seen == ["cpu:0"] and 0.0 <= r["test_acc"] <= 1.0 and r["test_loss"] > 0


@pytest.mark.parametrize("name", ["adamw", "muon", "m3", "m3-ema"])
def test_a_run_killed_midway_resumes_to_the_uninterrupted_row(tmp_path, monkeypatch, name):
    """Each optimizer's state (M3's slow momentum and its block of summed gradients included) travels with the
    run's checkpoint: a run killed after its checkpoint at step 4 continues from there to the same losses,
    validation curve, kept weights and scores as the run that was not killed. (The ViT's classifier is named
    ``head``: the trainer once took it for a language model's tied head and did not save it.)"""
    import argparse

    import torch

    vit = _vit()
    monkeypatch.setattr(vit, "CHECKPOINT_EVERY", 2)
    g = torch.Generator().manual_seed(0)
    data = [torch.rand(24, 1, 8, 8, generator=g) if i % 2 == 0 else torch.randint(0, 10, (24,), generator=g)
            for i in range(6)]
    args = argparse.Namespace(dim=16, depth=1, steps=9, batch=4, eval_every=2, rest_lr=1e-3, weight_decay=0.0,
                              device="cpu")
    hp = {"alpha": 0.3, "slow_every": 3} if name.startswith("m3") else {}
    clean = vit.run(name, 1e-3, hp, 0, data, args, 8, 1)
    kill_once_after(monkeypatch, 4)
    with pytest.raises(Killed):
        vit.run(name, 1e-3, hp, 0, data, args, 8, 1, resume_dir=tmp_path / "run")
    again = vit.run(name, 1e-3, hp, 0, data, args, 8, 1, resume_dir=tmp_path / "run")
    assert again["resumed_at"] == [4]
    timing = {"wall_s", "train_s", "cpu_s", "step_time", "resumed_at"}
    assert {k: v for k, v in again.items() if k not in timing} == {k: v for k, v in clean.items() if k not in timing}


@pytest.mark.skipif(not (DATA / "fashion_mnist").is_dir(), reason="../shared/data/fashion_mnist is not here")
def test_tables_appear_with_the_first_finished_optimizer_and_report_trains_nothing(tmp_path, capsys):
    vit = _vit()
    base = ["--quick", "--dataset", "fashion_mnist", "--out", str(tmp_path), "--data-root", str(DATA)]
    assert vit.main([*base, "--optimizers", "adamw"]) == 0  # AdamW finished, the others not started
    store = tmp_path / "runs-quick.jsonl"
    n_rows = len(store.read_text().splitlines())
    tables = {p.name: p.read_text() for p in tmp_path.glob("*.md")}
    capsys.readouterr()
    assert vit.main([*base, "--left"]) == 0 and capsys.readouterr().out == "left: fashion_mnist muon\n"
    assert vit.main([*base, "--optimizers", "adamw", "--left"]) == 0 and capsys.readouterr().out == "nothing left\n"
    assert {p.name: p.read_text() for p in tmp_path.glob("*.md")} == tables  # --left wrote nothing
    assert len(store.read_text().splitlines()) == n_rows
    assert vit.main([*base, "--report"]) == 0  # every optimizer asked for; only AdamW's runs exist
    assert len(store.read_text().splitlines()) == n_rows  # nothing trained
    text = (tmp_path / "RESULTS-quick.md").read_text()
    assert "| adamw |" in text and "| muon |" not in text
    assert "No finished run yet: muon, m3, m3-ema." in text
    assert "--report" not in text  # the recorded command is the one that trains
    assert set(json.loads((tmp_path / "results-quick.json").read_text())["fashion_mnist"]) == {"adamw"}


@pytest.mark.parametrize("flag, message", [
    (["--steps", "0"], "--steps must be ≥ 1 (got 0)"),
    (["--batch", "0"], "--batch must be ≥ 1 (got 0)"),
    (["--dim", "6"], "--dim must be a multiple of the ViT's 4 heads (got 6)"),
    (["--extend", "-1"], "--extend ≥ 0"),
    (["--grid", "1e-3,1e-2,5e-2"], "--grid needs ≥ 3 positive, increasing rates with a constant ratio"),
    (["--optimizers", "sgd"], "--optimizers: unknown ['sgd']"),
])
def test_a_bad_command_line_is_refused_with_the_setting_named(flag, message, tmp_path):
    with pytest.raises(SystemExit, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        _vit().main(["--quick", "--out", str(tmp_path), *flag])


def test_quick_mode_keeps_a_budget_the_user_gives(monkeypatch, tmp_path):
    """--quick sets defaults only: --steps, --seeds and --extend given on the command line are kept."""
    vit = _vit()
    seen = {}

    def stop(args, names):
        seen.update(steps=args.steps, seeds=args.seeds, extend=args.extend)
        return "stop here"

    monkeypatch.setattr(vit, "_check", stop)
    with pytest.raises(SystemExit):
        vit.main(["--quick", "--out", str(tmp_path), "--steps", "12", "--seeds", "2"])
    assert seen == {"steps": 12, "seeds": 2, "extend": 0}


def test_the_papers_claim_is_checked_against_the_finished_optimizers():
    vit = _vit()

    def per(**losses):  # name -> (train, test): one run each
        return {n: {"runs": [{"train_loss": a, "test_loss": b}]} for n, (a, b) in losses.items()}

    both = per(adamw=(0.5, 1.5), muon=(0.3, 1.4), m3=(0.2, 1.3))
    assert "**holds**" in vit._claim(both, list(both), list(vit.OPTIMIZERS))
    assert "not finished: m3-ema" in vit._claim(both, list(both), list(vit.OPTIMIZERS))
    split = per(muon=(0.3, 1.2), m3=(0.2, 1.3), **{"m3-ema": (0.25, 1.25)})
    text = vit._claim(split, list(split), list(split))
    assert "**does not hold**" in text and "test loss muon's (1.200)" in text and "training loss is m3's" in text
    assert "no M3 run has finished yet" in vit._claim(per(adamw=(1, 2), muon=(1, 1)), ["adamw", "muon"], ["adamw"])


def _probe(name: str):
    return load_script(ROOT / "experiments" / "optimizers" / "probes" / f"{name}.py")


@pytest.mark.skipif(not (DATA / "fashion_mnist").is_dir(), reason="../shared/data/fashion_mnist is not here")
def test_a_stored_run_trained_again_is_identical_and_a_changed_row_is_caught(tmp_path, capsys):
    """experiments/optimizers/probes/reproduce.py trains a stored row again with its settings and data split and
    compares every number: a quick-mode run comes back as the same floats; a row whose numbers were changed
    is reported with the fields that differ; an ambiguous or missing run is refused by name."""
    import matplotlib.pyplot as plt

    vit, probe = _vit(), _probe("reproduce")
    figures = len(plt.get_fignums())
    assert vit.main(["--quick", "--dataset", "fashion_mnist", "--optimizers", "muon", "--out", str(tmp_path),
                     "--data-root", str(DATA)]) == 0
    assert len(plt.get_fignums()) == figures  # the plot is rewritten after every optimizer: no figure left open
    store = tmp_path / "runs-quick.jsonl"
    row = next(r for r in map(json.loads, store.read_text().splitlines()) if r["seed"] == 0)
    out = tmp_path / "checks"
    out.mkdir()
    c = probe.check(store, "fashion_mnist", "muon", row["lr"], 0, data_root=str(DATA), out=out)
    assert all(c["equal"].values()) and c["stored_code"] == row["code"]
    assert "| identical |" in (out / "reproduce.md").read_text()
    rows = [json.loads(x) for x in store.read_text().splitlines()]
    for r in rows:
        if r["seed"] == 0:
            r["test_loss"] += 1e-6
            r["curve"][-1] += 1e-6
    store.write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = probe.check(store, "fashion_mnist", "muon", row["lr"], 0, data_root=str(DATA), out=out)
    assert [f for f, same in c["equal"].items() if not same] == ["curve", "test_loss"]
    assert "differs: curve, test_loss" in (out / "reproduce.md").read_text()
    assert len((out / "reproduce.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="no stored row matches fashion_mnist muon lr 0.5 seed 0"):
        probe.find(rows, "fashion_mnist", "muon", 0.5, 0)
    twice = rows + [{**rows[0], "hp": {"momentum": 0.9}}]
    with pytest.raises(ValueError, match="give --hp to pick one"):
        probe.find(twice, rows[0]["dataset"], rows[0]["optimizer"], rows[0]["lr"], rows[0]["seed"])


def test_step_size_probe_measures_the_matrices_updates():
    """experiments/optimizers/probes/step_size.py: the update's size relative to the weights and its entries'
    spread, at the steps asked; Muon's entries are spread less than M3's (the √V division)."""
    import torch

    probe = _probe("step_size")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(256, 3, 32, 32, generator=g), torch.randint(0, 10, (256,), generator=g)
    muon = probe.probe("muon", 1e-3, {"momentum": 0.95}, x, y, steps=3, at=[1, 3])
    m3 = probe.probe("m3-ema", 1e-5, {"alpha": 0.1, "slow_every": 2}, x, y, steps=3, at=[3])
    assert [r["step"] for r in muon] == [1, 3] and [r["step"] for r in m3] == [3]
    for r in muon + m3:
        assert 0 < r["median"] <= r["p999"] <= r["max"] and r["rel"] > 0
    assert m3[0]["p999"] / m3[0]["median"] > muon[-1]["p999"] / muon[-1]["median"]


def test_cpu_fingerprint_probe_measures_one_step_and_leaves_the_model():
    """experiments/optimizers/probes/cpu_fingerprint.py: the largest relative difference of two fingerprints
    (inf when their lengths differ), and one step's size against what a rounding-sized change of the gradient
    moves: AdamW's step is its rate, M3's first step is far larger (√V of near-zero gradient entries), and the
    model given is not changed."""
    import argparse

    import torch

    from nestlearn.experiments.optimizers import ViT, ViTConfig

    probe = _probe("cpu_fingerprint")
    assert probe.largest_relative([1.0, 2.0], [1.0, 2.0]) == 0
    assert probe.largest_relative([1.0, 2.2], [1.0, 2.0]) == pytest.approx(0.1)
    assert probe.largest_relative([1.0], [1.0, 2.0]) == float("inf")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    torch.manual_seed(0)
    model = ViT(ViTConfig(image_size=32, channels=3, patch=4, dim=16, depth=1, heads=4, classes=10))
    before = [p.detach().clone() for p in model.parameters()]
    args = argparse.Namespace(rest_lr=1e-3, weight_decay=0.0)
    step, moved = probe.amplification(model, "adamw", 1e-3, {}, args, x, y)
    assert step == pytest.approx(1e-3, rel=1e-3) and 0 <= moved < 1e-6
    step_m3, moved_m3 = probe.amplification(model, "m3", 1e-3, {"alpha": 0.1, "slow_every": 25}, args, x, y)
    assert step_m3 > 10 * step and moved_m3 > moved
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_the_table_marks_hyperparameters_selected_on_an_edge_of_their_grids(tmp_path):
    """The rate grid grows past its edges and its † says so; the hyperparameter grids (Muon's momentum, M3's α
    and f) do not grow, so a value selected on their edge is named in the settings column."""
    from types import SimpleNamespace

    from nestlearn.experiments import optimizers as vit

    def row(name, lr, hp):
        return {"optimizer": name, "lr": lr, "hp": hp, "seed": 0, "train_loss": 1.0, "val_loss": 1.2,
                "test_loss": 1.3, "test_acc": 0.5, "cpu_s": 60.0, "commit": "abc", "curve": [1.0, 0.9]}

    def entry(name, lr, hp, sweep):
        return {"lr": lr, "hp": hp, "grid": [{"lr": x, "val_loss": 1.3} for x in (1e-4, lr, 1e-2)],
                "sweep": [{"key": k, "value": v, "val_loss": 1.2} for k, vals in sweep.items() for v in vals],
                "runs": [row(name, lr, hp)]}

    results = {"cifar10": {"muon": entry("muon", 1e-3, {"momentum": 0.95}, {"momentum": vit.MUON_MOMENTUM}),
                           "m3-ema": entry("m3-ema", 1e-3, {"alpha": 0.3, "slow_every": 25},
                                           {"alpha": vit.M3_ALPHA, "slow_every": vit.M3_SLOW_EVERY})}}
    args = SimpleNamespace(out=str(tmp_path), argv=[], dim=64, depth=4, batch=128, steps=2, val=0.1, grid=[1e-3],
                           extend=5, eval_every=100, seeds=1, rest_lr=1e-3, quick=True)
    vit.write_results(results, args, ["muon", "m3-ema"])
    text = (tmp_path / "RESULTS-quick.md").read_text()
    assert '| {"momentum": 0.95} |' in text  # inside its grid: no mark
    assert '| {"alpha": 0.3, "slow_every": 25} † alpha |' in text  # α = 0.3 is its grid's largest; f = 25 is inside
