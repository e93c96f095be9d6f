"""The synthetic-experiment suites: each recipe's --quick mode runs end to end from the CLI and writes
its tables; an interrupted suite resumes; bad recipes are named."""

import dataclasses
import json
import math
import os
import shutil
import statistics
import time
from pathlib import Path

import pytest
import torch

from nestlearn.cli import main
from nestlearn.experiments import synthetic as S

from .conftest import Killed, kill_once_after, load_script, record_trainer_devices

RECIPES = Path(__file__).resolve().parents[2] / "experiments" / "synthetic"


@pytest.mark.parametrize("name", ["formal", "mad", "mqar", "formal-sweep"])
def test_quick_mode_runs_every_model_and_writes_results(name, tmp_path):
    recipe = S.load_recipe(RECIPES / f"{name}.yaml", quick=True)
    family = recipe.family
    assert main(["synthetic", str(RECIPES / f"{name}.yaml"), "--quick", "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / f"{family}.jsonl").read_text().splitlines()]
    assert {(r["task"], r["model"]) for r in rows} == {(t, m) for t in recipe.tasks for m in recipe.models}
    keys = ("bin0", "bin1") if family == "formal" else ("acc",)
    assert all(0.0 <= r[k] <= 100.0 for r in rows for k in keys)
    # equal parameter budgets: every model within 2% of HOPE's count on the same task
    for t in recipe.tasks:
        counts = {r["model"]: r["params"] for r in rows if r["task"] == t and r["model"] in S.MODELS}
        assert all(abs(c - counts["hope"]) / counts["hope"] < 0.02 for c in counts.values()), counts
    text = (tmp_path / "RESULTS.md").read_text()
    assert "nestlearn synthetic" in text and all(f"| {m} |" in text for m in recipe.models)
    pairs = len(recipe.tasks) * len(recipe.models)
    assert f"Progress: {pairs} of {pairs} (task, model) pairs have all 1 reported seeds" in text
    if family == "mqar":
        assert (tmp_path / "mqar.png").is_file()


@pytest.mark.parametrize("order", ["task", "model"])
def test_suite_order_is_task_major_or_model_major(tmp_path, monkeypatch, order):
    path = tmp_path / "r.yaml"
    path.write_text("family: mqar\ntasks: {p2: {n_pairs: 2, seq_len: 16, n_keys: 8, n_values: 8}, "
                    "p3: {n_pairs: 3, seq_len: 16, n_keys: 8, n_values: 8}}\n"
                    f"models: [transformer, delta]\norder: {order}\nseeds: [0]\nsteps: 1\nwarmup: 1\n"
                    "eval_batches: 1\neval_batch_size: 4\nbatch_size: 4\n"
                    "model: {dim: 16, layers: 1, heads: 2, delta: {heads: 2}}\n")
    calls = []
    real = S.run_one

    def recording(*args, **kwargs):
        if kwargs.get("trace") is None:
            calls.append((args[1], args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(S, "run_one", recording)
    S.run_suite(S.load_recipe(path), tmp_path / "out", log=None)
    if order == "task":
        assert calls == [("p2", "transformer"), ("p2", "delta"), ("p3", "transformer"), ("p3", "delta")]
    else:
        assert calls == [("p2", "transformer"), ("p3", "transformer"), ("p2", "delta"), ("p3", "delta")]


def test_recipe_order_must_be_task_or_model(tmp_path):
    with pytest.raises(ValueError, match="order must be 'task' or 'model'"):
        S.Recipe(family="mqar", tasks={"p": {"n_pairs": 2}}, order="seed").validate()


def test_processes_share_a_suite_by_disjoint_parts(tmp_path):
    """Two processes run disjoint models of one recipe at the same time into one folder: every run is a
    row once, and the table holds both processes' rows."""
    import subprocess
    import sys

    path = tmp_path / "r.yaml"
    path.write_text("family: mqar\ntasks: {p2: {n_pairs: 2, seq_len: 16, n_keys: 8, n_values: 8}, "
                    "p3: {n_pairs: 3, seq_len: 16, n_keys: 8, n_values: 8}}\n"
                    "models: [transformer, delta]\nseeds: [0, 1]\nsteps: 2\nwarmup: 1\neval_batches: 1\n"
                    "eval_batch_size: 4\nbatch_size: 4\nmodel: {dim: 16, layers: 1, heads: 2, delta: {heads: 2}}\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "nestlearn", "synthetic", str(path), "--out", str(out), "--threads", "1", "--models"]
    procs = [subprocess.Popen([*cmd, m], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for m in ("transformer", "delta")]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stdout.read()
    rows = [json.loads(line) for line in (out / "mqar.jsonl").read_text().splitlines()]
    keys = sorted((r["task"], r["model"], r["seed"]) for r in rows)
    assert keys == sorted((t, m, s) for t in ("p2", "p3") for m in ("transformer", "delta") for s in (0, 1))
    S.run_suite(S.load_recipe(path), out, log=None, report_only=True)
    table = (out / "mqar.md").read_text()
    assert "| transformer |" in table and "| delta |" in table
    with pytest.raises(ValueError, match=r"--models \['hope'\] not in the recipe's models"):
        S.run_suite(S.load_recipe(path), out, log=None, only_models=["hope"])


def test_the_recorded_command_runs_the_whole_suite():
    from nestlearn.cli import _suite_words

    words = ["synthetic", "r.yaml", "--models", "hope", "delta", "--threads", "1", "--report", "--tasks=parity",
             "--left", "--keep-weights", "runs/w", "--quick", "--keep-weights=runs/v"]
    assert _suite_words(words) == ["synthetic", "r.yaml", "--threads", "1", "--quick"]


def test_kept_weights_score_as_their_rows(tmp_path):
    """--keep-weights: every finished run (selection runs too, MAD's wrapped compression model too) leaves the
    weights it was scored with; loaded back, they score exactly the row's numbers, and a suite resumed without
    the option keeps nothing new and reruns nothing."""
    path = tmp_path / "r.yaml"
    path.write_text("family: formal\ntasks: {parity: {}}\nmax_len: 12\nmodels: [transformer]\nseeds: [0]\n"
                    "select_seed: 100\nlr_grid: [0.001, 0.00316, 0.01]\nlr_extend: 0\nsteps: 6\nwarmup: 1\n"
                    "eval_every: 3\nval_batches: 1\neval_batches: 1\neval_batch_size: 8\nbatch_size: 4\n"
                    "model: {dim: 16, layers: 1, heads: 2}\n")
    out, keep = tmp_path / "out", tmp_path / "weights"
    assert main(["synthetic", str(path), "--out", str(out), "--threads", "1", "--keep-weights", str(keep)]) == 0
    rows = [json.loads(line) for line in (out / "formal.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(Path(r["weights"]).parent == keep / "formal" for r in rows)
    assert sorted(p.name for p in (keep / "formal").iterdir()) == sorted(Path(r["weights"]).name for r in rows)
    for r in rows:
        assert f"-{r['phase']}-seed{r['seed']}-lr{r['lr']:g}-{r['code']}.pt" in r["weights"]
        model, recipe, ident = S.load_weights(r["weights"])
        assert (ident["task"], ident["model"], ident["seed"], ident["best_step"]) == \
            (r["task"], r["model"], r["seed"], r["best_step"])
        assert recipe.lr == r["lr"] and not model.training
        scores = S.evaluate(model, recipe, r["task"])
        assert all(scores[k] == r[k] for k in ("bin0", "bin1", "bin2", "nonfinite")), (scores, r)
    S.run_suite(S.load_recipe(path), out, log=None)  # resumed without --keep-weights: nothing to run
    assert len((out / "formal.jsonl").read_text().splitlines()) == 4

    mad = S.Recipe(family="mad", tasks={"compression": {"seq_len": 16, "vocab": 12}}, models=["delta"],
                   steps=2, warmup=1, eval_batches=1, eval_batch_size=4, batch_size=4,
                   model={"dim": 16, "layers": 1, "heads": 2, "delta": {"heads": 2}})
    mad.validate()
    r = S.run_one(mad, "compression", "delta", 0, log=None, keep=tmp_path / "c.pt")
    model, recipe, _ = S.load_weights(r["weights"])
    assert type(model).__name__ == "LastTokenAutoencoder"
    assert S.evaluate(model, recipe, "compression")["acc"] == r["acc"]
    with pytest.raises(FileNotFoundError, match="--keep-weights"):
        S.load_weights(tmp_path / "missing.pt")


def test_interrupted_suite_resumes_without_redoing_runs(tmp_path, monkeypatch):
    path = tmp_path / "r.yaml"
    path.write_text("family: mqar\ntasks: {p2: {n_pairs: 2, seq_len: 16, n_keys: 8, n_values: 8}}\n"
                    "models: [transformer, delta]\nseeds: [0]\nsteps: 2\nwarmup: 1\neval_batches: 1\n"
                    "eval_batch_size: 4\nbatch_size: 4\nmodel: {dim: 16, layers: 1, heads: 2, delta: {heads: 2}}\n")
    recipe = S.load_recipe(path)
    calls = []
    real = S.run_one

    def counting(*args, **kwargs):
        if kwargs.get("trace") is not None:  # a fingerprint, not a run
            return real(*args, **kwargs)
        calls.append(args[2])
        if len(calls) == 2 and not hasattr(counting, "crashed"):
            counting.crashed = True
            raise KeyboardInterrupt  # the suite dies after its first run
        return real(*args, **kwargs)

    monkeypatch.setattr(S, "run_one", counting)
    with pytest.raises(KeyboardInterrupt):
        S.run_suite(recipe, tmp_path / "out", log=None)
    assert "Progress: 1 of 2 (task, model) pairs" in (tmp_path / "out" / "mqar.md").read_text()
    S.run_suite(recipe, tmp_path / "out", log=None)
    assert calls == ["transformer", "delta", "delta"]  # the finished run was not redone
    assert len((tmp_path / "out" / "mqar.jsonl").read_text().splitlines()) == 2


def test_left_names_the_next_run_and_trains_and_writes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "r.yaml"
    path.write_text(_TINY + "models: [transformer, delta]\nsteps: 2\neval_every: 1\n"
                    "lr_grid: [0.001, 0.00316, 0.01]\nlr_extend: 0\n")
    recipe, out = S.load_recipe(path), tmp_path / "out"
    assert S.runs_left(recipe, out) == "p2 transformer seed 100 lr 0.001"  # its first selection run
    assert not out.exists()
    S.run_suite(recipe, out, log=None, only_models=["transformer"])
    tables = (out / "mqar.md").read_text()
    assert S.runs_left(recipe, out, only_models=["transformer"]) is None
    assert S.runs_left(recipe, out) == "p2 delta seed 100 lr 0.001"
    monkeypatch.setattr(S, "run_one", lambda *a, **k: pytest.fail("--left trained"))
    S.main(str(path), out=str(out), left=True)
    assert (out / "mqar.md").read_text() == tables and not list(out.glob(".partial/*"))


def _stoppable_recipe(tmp_path, model: str):
    """A 10-step suite of one run that checkpoints and stops early (3 checks without a 50% gain, at step 8)."""
    path = tmp_path / "r.yaml"
    # MAD's compression: the model is wrapped (LastTokenAutoencoder), its language model's head tied
    task = "tasks: {compression: {seq_len: 12, vocab: 6}}\n" if model == "mad-compression" else \
        "tasks: {parity: {}}\nmax_len: 12\n"
    family, model = ("mad", "transformer") if model == "mad-compression" else ("formal", model)
    path.write_text(f"family: {family}\n{task}models: [{model}]\nseeds: [0]\n"
                    "steps: 10\nwarmup: 1\neval_every: 2\npatience: 3\nmin_delta: 0.5\neval_batches: 1\n"
                    "eval_batch_size: 4\nval_batches: 1\nbatch_size: 4\n"
                    "model: {dim: 16, layers: 1, heads: 2, max_seq_len: 32, delta: {heads: 2, chunk_size: 4},\n"
                    "  selfmod: {heads: 2, chunk_size: 4, chunk_size_other: 4},\n"
                    "  cms: {levels: [{chunk_size: 4, lr: 0.01}], hidden_mult: 1.0}}\n")
    return S.load_recipe(path)


@pytest.mark.parametrize("model", ["delta", "hope", "mad-compression"])
def test_a_run_killed_midway_resumes_from_its_checkpoint_to_the_same_row(tmp_path, monkeypatch, model):
    """A suite killed in the middle of a run continues that run from its last checkpoint (in the out folder's
    ``.partial``), and the row equals the uninterrupted run's: losses, validation curve, early stop, kept
    weights and test scores. The times add up the parts; the checkpoints go once the row is stored."""
    recipe = _stoppable_recipe(tmp_path, model)
    monkeypatch.setattr(S, "CHECKPOINT_EVERY", 2)
    clean = S.run_suite(recipe, tmp_path / "clean", log=None)[0]
    assert not list((tmp_path / "clean" / S.PARTIAL).iterdir())  # removed once the row was stored
    assert clean["stopped_at"] == 8  # early stopping (3 checks without a 50% gain), after the resume point
    kill_once_after(monkeypatch, 4)
    with pytest.raises(Killed):
        S.run_suite(recipe, tmp_path / "out", log=None)
    (left,) = (tmp_path / "out" / S.PARTIAL).iterdir()
    assert (left / "checkpoints" / "latest").read_text() == "step_0000004"
    logs = []
    again = S.run_suite(recipe, tmp_path / "out", log=logs.append)[0]
    assert any("resumed at step 4" in line for line in logs)
    assert again["resumed_at"] == [4] and "resumed_at" not in clean
    timing = {"wall_s", "train_s", "cpu_s", "resumed_at"}
    assert {k: v for k, v in again.items() if k not in timing} == {k: v for k, v in clean.items() if k not in timing}
    assert not list((tmp_path / "out" / S.PARTIAL).iterdir())


def test_a_stored_run_trained_again_is_identical_and_a_changed_row_is_caught(tmp_path):
    """experiments/synthetic/probes/reproduce.py trains a stored row again through the suite's own run and
    compares every number it computed: a run comes back as the same floats; a row whose scores were changed is
    reported with the field; a row of other protocol settings and a run not stored are refused by name."""
    probe = load_script(RECIPES / "probes" / "reproduce.py")
    recipe = _stoppable_recipe(tmp_path, "hope")
    row = S.run_suite(recipe, tmp_path / "out", log=None)[0]
    store, checks = tmp_path / "out" / "formal.jsonl", tmp_path / "checks"
    checks.mkdir()
    c = probe.check(str(tmp_path / "r.yaml"), "parity", "hope", 0, row["lr"], store=store, out=checks)
    assert c["equal"] and all(c["equal"].values()) and {"curve", "bin1", "final_loss", "best_step"} <= set(c["equal"])
    assert "| identical |" in (checks / "reproduce.md").read_text()
    store.write_text(json.dumps({**row, "bin1": row["bin1"] + 1.0}) + "\n")
    c = probe.check(str(tmp_path / "r.yaml"), "parity", "hope", 0, row["lr"], store=store, out=checks)
    assert [f for f, ok in c["equal"].items() if not ok] == ["bin1"]
    assert c["differences"] == {"bin1": [None, row["bin1"] + 1.0, row["bin1"]]}
    assert "differs: bin1" in (checks / "reproduce.md").read_text()
    store.write_text(json.dumps({**row, "settings": {**row["settings"], "steps": 5}}) + "\n")
    with pytest.raises(ValueError, match="other protocol settings.*'steps': \\(5, 10\\)"):
        probe.check(str(tmp_path / "r.yaml"), "parity", "hope", 0, row["lr"], store=store, out=checks)
    with pytest.raises(ValueError, match="no stored final row of hope on parity seed 1"):
        probe.check(str(tmp_path / "r.yaml"), "parity", "hope", 1, row["lr"], store=store, out=checks)


def test_a_run_in_progress_is_carried_to_a_fresh_checkout(tmp_path, monkeypatch):
    """``.partial`` is ignored by git, so a new session's checkout lacks it: ``carry_runs`` copies each run in
    progress (its latest checkpoint only) into a folder that is committed, ``restore_runs`` puts it back in the
    fresh checkout, and the run resumes there to the uninterrupted run's row."""
    from nestlearn.experiments.protocol import carry_runs, restore_runs

    recipe = _stoppable_recipe(tmp_path, "delta")
    monkeypatch.setattr(S, "CHECKPOINT_EVERY", 2)
    clean = S.run_suite(recipe, tmp_path / "clean", log=None)[0]
    machine, fresh = tmp_path / "machine", tmp_path / "fresh"  # two checkouts' experiments/ folders
    kill_once_after(monkeypatch, 6)
    with pytest.raises(Killed):
        S.run_suite(recipe, machine / "out", log=None)
    (run,) = (machine / "out" / S.PARTIAL).iterdir()
    assert carry_runs(machine, machine / "few", min_cpu_s=1e9) == []  # not worth its bytes: left out
    step_file = run / "checkpoints" / "step_0000006" / "state.json"
    os.utime(step_file, (time.time() - 86400, time.time() - 86400))  # paused a day ago: its row is not stored
    assert carry_runs(machine, machine / "carry") == [f"out/{S.PARTIAL}/{run.name}"]
    carried = machine / "carry" / "out" / S.PARTIAL / run.name / "checkpoints"
    assert sorted(p.name for p in carried.iterdir()) == ["latest", "step_0000006"]  # the latest checkpoint only
    shutil.copytree(machine / "carry", fresh / "carry")  # what a commit carries to the next checkout
    assert restore_runs(fresh / "carry", fresh) == [f"out/{S.PARTIAL}/{run.name}"]
    assert restore_runs(fresh / "carry", fresh) == []  # already there, as late: left alone
    logs = []
    again = S.run_suite(recipe, fresh / "out", log=logs.append)[0]
    assert any("resumed at step 6" in line for line in logs)
    timing = {"wall_s", "train_s", "cpu_s", "resumed_at"}
    assert {k: v for k, v in again.items() if k not in timing} == {k: v for k, v in clean.items() if k not in timing}
    assert again["run"] == run.name  # the row names the run in progress it ends
    assert not (fresh / "out" / S.PARTIAL / run.name).exists()
    # the carried copy is stale now (the row was stored after the carry): not restored, and not carried again
    assert restore_runs(fresh / "carry", fresh) == []
    shutil.copytree(machine / "carry" / "out" / S.PARTIAL, fresh / "out" / S.PARTIAL, dirs_exist_ok=True)
    assert carry_runs(fresh, fresh / "carry") == [] and not (fresh / "carry").exists()  # nothing left in progress


def test_a_row_of_an_older_computation_does_not_end_a_run_in_progress(tmp_path):
    """A run started over after a change of fingerprint keeps its folder's name; the older code's row naming it
    does not make it finished (it is carried), the row of the same code or of an equal fingerprint does."""
    from nestlearn.experiments.protocol import carry_runs, finished

    run = tmp_path / "out" / S.PARTIAL / "parity-hope-final-seed0-lr0.01-abc"
    (run / "checkpoints" / "step_0000004").mkdir(parents=True)
    (run / "checkpoints" / "step_0000004" / "state.json").write_text("{}")
    (run / "checkpoints" / "latest").write_text("step_0000004")
    (run / "run.json").write_text(json.dumps({"code": "new", "fingerprint": [1.0, 2.0]}))
    store = tmp_path / "out" / "formal.jsonl"
    store.write_text(json.dumps({"run": run.name, "code": "old", "fingerprint": [1.0, 3.0]}) + "\n")
    assert not finished(run)
    assert carry_runs(tmp_path, tmp_path / "carry") == [f"out/{S.PARTIAL}/{run.name}"]
    store.write_text(json.dumps({"run": run.name, "code": "older", "fingerprint": [1.0, 2.00001]}) + "\n")
    assert finished(run)  # another code version, the same computation
    store.write_text(json.dumps({"run": run.name, "code": "new", "fingerprint": None}) + "\n")
    assert finished(run)
    (run / "run.json").unlink()
    store.write_text(json.dumps({"run": run.name, "code": "old"}) + "\n")
    assert finished(run)  # no run.json: the name decides
    assert carry_runs(tmp_path, tmp_path / "carry") == []


def test_a_run_in_progress_of_other_code_starts_over(tmp_path, monkeypatch):
    """A checkpoint left by another code version whose fingerprint differs is not resumed: the run starts over."""
    path = tmp_path / "r.yaml"
    path.write_text("family: mqar\ntasks: {p2: {n_pairs: 2, seq_len: 16, n_keys: 8, n_values: 8}}\n"
                    "models: [delta]\nseeds: [0]\nsteps: 2\nwarmup: 1\neval_batches: 1\n"
                    "eval_batch_size: 4\nbatch_size: 4\nmodel: {dim: 16, layers: 1, heads: 2, delta: {heads: 2}}\n")
    recipe = S.load_recipe(path)
    ctx = S._Suite(recipe, [], partial=tmp_path / "p")
    sub = ctx.settings("delta", None)
    folder = ctx.resume_dir(sub, "p2", "delta", 0, "final", None)
    (folder / "checkpoints").mkdir()
    meta = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**meta, "code": "other", "fingerprint": [1.0, 2.0]}))
    logs = []
    assert ctx.resume_dir(sub, "p2", "delta", 0, "final", logs.append) == folder
    assert "ran other code" in logs[0] and not (folder / "checkpoints").exists()
    # the same code, or another code version with this code's fingerprint: kept
    (folder / "checkpoints").mkdir()
    (folder / "run.json").write_text(json.dumps({**meta, "code": "other"}))
    assert ctx.resume_dir(sub, "p2", "delta", 0, "final", logs.append) == folder and len(logs) == 1
    assert (folder / "checkpoints").exists()


def test_a_row_counts_only_under_the_settings_it_ran_with(tmp_path, monkeypatch):
    """A change to the protocol's settings (here the early-stopping rule) makes the finished rows stop counting:
    the suite runs them again and the table holds only the new ones (the rate and the code were the same)."""
    path = tmp_path / "r.yaml"
    text = ("family: mqar\ntasks: {p2: {n_pairs: 2, seq_len: 16, n_keys: 8, n_values: 8}}\n"
            "models: [delta]\nseeds: [0]\nsteps: 2\nwarmup: 1\neval_batches: 1\neval_batch_size: 4\n"
            "batch_size: 4\nmodel: {dim: 16, layers: 1, heads: 2, delta: {heads: 2}}\n")
    path.write_text(text + "solved_patience: 3\n")
    S.run_suite(S.load_recipe(path), tmp_path / "out", log=None)
    path.write_text(text)  # solved_patience back to its default, 0
    recipe = S.load_recipe(path)
    ctx = S._Suite(recipe, S.read_rows(tmp_path / "out" / "mqar.jsonl"))
    assert not ctx.same_protocol(ctx.done[0])
    assert ctx.find("p2", "delta", "final", 0, ctx.settings("delta", None)) is None
    S.run_suite(recipe, tmp_path / "out", log=None)
    rows = S.read_rows(tmp_path / "out" / "mqar.jsonl")
    assert [r["settings"]["solved_patience"] for r in rows] == [3, 0]
    assert "1 of 1 (task, model) pairs" in (tmp_path / "out" / "mqar.md").read_text()
    assert S._Suite(recipe, rows).same_protocol(rows[1])
    # a row of other early-stopping settings counts when this recipe's rule, replayed on its validation curve,
    # stops where it stopped: a run never solved is the same under any solved_patience; one stopped as solved is not
    unsolved = {**rows[0], "curve": [[1, 0.5, 50.0], [2, 0.4, 75.0]], "stopped_at": None}
    solved = {**rows[0], "curve": [[1, 0.5, 50.0], [2, 0.0, 100.0], [3, 0.0, 100.0], [4, 0.0, 100.0]],
              "stopped_at": 4}
    assert ctx.same_protocol(unsolved) and not ctx.same_protocol(solved)
    assert ctx.same_protocol({**solved, "stopped_at": None, "curve": solved["curve"][:2]})  # solved once: no stop


def test_min_steps_counts_the_rows_it_would_not_have_changed():
    """``min_steps`` (a flat validation loss stops no run before it): rows that ran before the key existed count
    under it when the rule replayed on their curves stops where they stopped: a run stopped flat after min_steps,
    one stopped as solved before it, one that ran the whole budget. One stopped flat before min_steps does not. The
    replay agrees with every stored row's own stop (their settings, the committed results)."""
    recipe = S.load_recipe(RECIPES / "mad.yaml")
    rule = dataclasses.replace(recipe, patience=3, solved_patience=2, min_delta=0.01, min_steps=0)
    later = dataclasses.replace(rule, min_steps=700)
    ctx = S._Suite(later, [])
    flat = [[100 * i, 1.0, 30.0] for i in range(1, 11)]  # flat from step 100: stopped at 400 without min_steps
    assert S.stop_step(flat, rule) == 400 and S.stop_step(flat, later) == 700
    old = {"model": "transformer", "settings": {k: getattr(rule, k) for k in S.PROTOCOL if k != "min_steps"}}
    assert not ctx.same_protocol({**old, "curve": flat[:4], "stopped_at": 400}, later)
    late = [[100, 1.0, 30.0]] + [[100 * i, 0.5 ** i, 30.0] for i in range(2, 8)] + [[800 + 100 * i, 0.01, 30.0]
                                                                                     for i in range(3)]
    assert S.stop_step(late, rule) == S.stop_step(late, later) == 1000
    assert ctx.same_protocol({**old, "curve": late, "stopped_at": 1000}, later)
    solved = [[100, 1.0, 30.0], [200, 0.1, 100.0], [300, 0.05, 100.0]]
    assert ctx.same_protocol({**old, "curve": solved, "stopped_at": 300}, later)
    assert ctx.same_protocol({**old, "curve": flat[:1], "stopped_at": None}, later)  # ran its whole (short) budget
    assert not ctx.same_protocol({**old, "settings": {**old["settings"], "steps": 5}, "curve": solved,
                                  "stopped_at": 300}, later)  # another budget: never the same run
    with pytest.raises(ValueError, match="min_steps must be at most steps = 10000"):
        dataclasses.replace(recipe, min_steps=10001).validate()
    for family in ("formal", "mad"):
        for r in S.read_rows(RECIPES / "results" / f"{family}.jsonl"):
            if r.get("curve") and "patience" in r["settings"]:
                st = r["settings"]
                own = dataclasses.replace(rule, patience=st["patience"], min_delta=st["min_delta"],
                                          solved_patience=st.get("solved_patience", 0),
                                          min_steps=st.get("min_steps", 0),
                                          patience_from=st.get("patience_from", "best"))
                assert S.stop_step(r["curve"], own) == r["stopped_at"], (r["task"], r["model"], r["seed"])


def test_rows_of_the_old_patience_rule_count_where_the_new_one_stops_them_alike(tmp_path):
    """``patience_from`` (since 2026-12-01 "last_gain": a gain is measured from the loss of the last gain). A row
    written before the key ran under "best" (from the lowest loss so far); it counts when the new rule, replayed
    on its curve, stops where it stopped (a plateau, a solved run, a whole budget), and not when the new rule
    would have gone on (a slow, steady decline). A run in progress keeps its folder across the change: its
    counters are rebuilt from its validations when it resumes."""
    recipe = S.load_recipe(RECIPES / "mad.yaml")
    new = dataclasses.replace(recipe, patience=3, solved_patience=2, min_delta=0.01, min_steps=0)
    assert new.patience_from == "last_gain"
    old = dataclasses.replace(new, patience_from="best")
    ctx = S._Suite(new, [])
    row = {"model": "transformer", "settings": {k: getattr(old, k) for k in S.PROTOCOL if k != "patience_from"}}
    plateau = [[100, 1.0, 30.0], [200, 0.5, 30.0]] + [[100 * i, 0.5, 30.0] for i in range(3, 6)]
    assert S.stop_step(plateau, old) == S.stop_step(plateau, new) == 500
    assert ctx.same_protocol({**row, "curve": plateau, "stopped_at": 500})
    decline = [[100 * i, 0.996 ** i, 30.0] for i in range(1, 8)]  # 0.4% a check: 1% every third check
    assert S.stop_step(decline, old) == 400 and S.stop_step(decline, new) is None
    assert not ctx.same_protocol({**row, "curve": decline[:4], "stopped_at": 400})
    assert ctx.same_protocol({**row, "curve": decline, "stopped_at": None})  # the whole budget: the same run
    with pytest.raises(ValueError, match="patience_from must be one of"):
        dataclasses.replace(recipe, patience_from="lowest").validate()
    # the folder of a run in progress does not depend on the rule
    a = S._Suite(new, [], partial=tmp_path / "p").resume_dir(new, "compression", "transformer", 0, "final", None)
    b = S._Suite(old, [], partial=tmp_path / "p").resume_dir(old, "compression", "transformer", 0, "final", None)
    assert a == b


def test_val_lengths_hold_validation_lengths_out_of_training(tmp_path):
    """``val_lengths: [lo, hi]`` trains on [1, lo − 1] and validates on [lo, hi]; the test bins do not move. Rows
    written before the key existed ran without it: they count under a recipe without it, and not under one with it."""
    recipe = S.load_recipe(RECIPES / "formal.yaml", quick=True)
    held = dataclasses.replace(recipe, val_lengths=[41, 50])
    held.validate()

    def lengths(r, split):
        _, _, mask = S.make_batch(r, "parity", 64, 3, split)
        return mask.sum(-1) - 1  # the string's length (the mask covers the start symbol too)

    assert int(lengths(held, "train").max()) <= 40 < int(lengths(recipe, "train").max())
    assert 41 <= int(lengths(held, "val").min()) and int(lengths(held, "val").max()) <= 50
    for split in ("bin0", "bin1"):
        assert torch.equal(lengths(held, split), lengths(recipe, split))
    row = {"task": "parity", "model": "delta", "seed": 0, "lr": recipe.lr,
           "settings": {k: getattr(recipe, k) for k in S.PROTOCOL if k != "val_lengths"}}
    assert S._Suite(recipe, []).same_protocol(row)
    assert not S._Suite(held, []).same_protocol(row)
    assert S._Suite(held, []).same_protocol({**row, "settings": {**row["settings"], "val_lengths": [41, 50]}})
    # a run records the setting, and the table says what Bin0 holds
    path = tmp_path / "r.yaml"
    path.write_text("family: formal\ntasks: {parity: {}}\nmodels: [delta]\nseeds: [0]\nsteps: 2\nwarmup: 1\n"
                    "eval_every: 1\neval_batches: 1\neval_batch_size: 4\nbatch_size: 4\nval_batches: 1\n"
                    "val_lengths: [41, 50]\nmodel: {dim: 16, layers: 1, heads: 2, delta: {heads: 2}}\n")
    rows = S.run_suite(S.load_recipe(path), tmp_path / "out", log=None)
    assert rows[0]["settings"]["val_lengths"] == [41, 50]
    assert "Bin0: lengths 1–50, trained on 1–40, validated on 41–50" in (tmp_path / "out" / "formal.md").read_text()


@pytest.mark.parametrize("family, value, message", [
    ("mqar", [41, 50], "formal languages only"),
    ("formal", [1, 50], "2 ≤ lo ≤ hi"),
    ("formal", [41, 60], "2 ≤ lo ≤ hi"),
    ("formal", [49, 50], "holds no string of abab_star"),
])
def test_bad_val_lengths_are_named(family, value, message):
    recipe = S.load_recipe(RECIPES / ("formal.yaml" if family == "formal" else "mqar.yaml"), quick=True)
    recipe = dataclasses.replace(recipe, val_lengths=value,
                                 tasks={"abab_star": {}} if family == "formal" else recipe.tasks)
    with pytest.raises(ValueError, match=message):
        recipe.validate()


class _Table:
    """A stand-in model whose logits are given per input batch."""

    def __init__(self, tables):
        self.tables = tables

    def __call__(self, ids):
        return self.tables[tuple(ids.flatten().tolist())], None, None

    def eval(self):
        return self

    def train(self, mode=True):
        return self


def test_formal_scoring_is_exact_set_prediction():
    recipe = S.Recipe(family="formal", tasks={"anbn": {}}, eval_batches=1, eval_batch_size=8)
    tables = {}
    for split, off in (("bin0", 0), ("bin1", 10_000), ("bin2", 20_000)):
        ids, targets, mask = S.make_batch(recipe, "anbn", 8, S._eval_seed(0) + off, split)
        assert mask.sum(-1).max() <= {"bin0": 51, "bin1": 101, "bin2": 201}[split]
        logits = targets * 20 - 10  # the true next-symbol sets
        if split == "bin1":
            logits[0, 1, 0] = 10.0  # one wrong symbol at one position of one string
        if split == "bin2":
            logits[3, 0, :] = float("nan")  # non-finite logits: wrong, and counted
        tables[tuple(ids.flatten().tolist())] = logits
    assert S.evaluate(_Table(tables), recipe, "anbn") == {"bin0": 100.0, "bin1": 87.5, "bin2": 87.5, "nonfinite": 1,
                                                          "nonfinite_by_split": {"bin0": 0, "bin1": 0, "bin2": 1}}


def test_nonfinite_logits_score_as_wrong_on_answer_tasks():
    recipe = S.Recipe(family="mqar", tasks={"p": {"n_pairs": 2, "seq_len": 12, "n_keys": 4, "n_values": 4}},
                      eval_batches=1, eval_batch_size=4)
    ids, targets = S.make_batch(recipe, "p", 4, S._eval_seed(0), "eval")
    logits = torch.nn.functional.one_hot(targets.clamp_min(0), 9).float() * 10
    logits[1] = float("nan")
    out = S.evaluate(_Table({tuple(ids.flatten().tolist()): logits}), recipe, "p")
    assert out == {"acc": 75.0, "nonfinite": 1}


def test_rows_record_their_code_and_a_table_refuses_to_mix_versions(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("family: mqar\ntasks: {p2: {n_pairs: 2, seq_len: 16, n_keys: 8, n_values: 8}}\n"
                    "models: [delta]\nseeds: [0, 1]\nsteps: 1\nwarmup: 1\neval_batches: 1\n"
                    "eval_batch_size: 4\nbatch_size: 4\nmodel: {dim: 16, layers: 1, heads: 2, delta: {heads: 2}}\n")
    recipe = S.load_recipe(path)
    rows = S.run_suite(recipe, tmp_path / "out", log=None)
    version = S.code_version()
    assert all(r["code"] == version["code"] and r["commit"] == version["commit"] for r in rows)
    assert rows[0]["config"]["block"] == "delta" and rows[0]["settings"]["steps"] == 1
    assert f"Code version {version['code']}" in (tmp_path / "out" / "mqar.md").read_text()
    assert "of 2 seeds)" not in (tmp_path / "out" / "mqar.md").read_text()
    assert "Left:" not in (tmp_path / "out" / "mqar.md").read_text()
    S.write_results(recipe, rows[:1], tmp_path / "out")  # a mean over fewer seeds than the recipe's says so
    text = (tmp_path / "out" / "mqar.md").read_text()
    assert "(1 of 2 seeds)" in text
    hours = rows[0]["cpu_s"] / 3600  # what is left, at the mean CPU time of the model's finished runs
    assert f"Left: at least 1 runs (delta 1); ≈ {hours:.1f} CPU hours" in text
    # a variant with no finished run is estimated at the mean of its block kind's runs, and says so
    with_variant = dataclasses.replace(recipe, models=["delta", "delta_b2"],
                                       variants={"delta_b2": {"block": "delta", "model": {"delta.beta_max": 2.0}}})
    S.write_results(with_variant, rows, tmp_path / "out")
    both = statistics.mean(r["cpu_s"] for r in rows) / 3600
    assert (f"≈ 0.0 CPU hours for those of the models with finished runs, at the mean CPU time of their runs here; "
            f"≈ {2 * both:.1f} more for delta_b2 (2), which have none, at the mean of their block kind's runs."
            in (tmp_path / "out" / "mqar.md").read_text())
    fp = rows[0]["fingerprint"]
    assert len(fp) == 3 + 2 * 2 + 1 and rows[1]["fingerprint"] == fp  # 3 losses, 2 validations, the test accuracy
    # another code version that computes the same numbers may share the table, and says so
    S.write_results(recipe, [rows[0], {**rows[1], "code": "0123456789ab"}], tmp_path / "out")
    assert "fingerprints agree" in (tmp_path / "out" / "mqar.md").read_text()
    other = [x * (1 + 1e-3) for x in fp]  # a change in what the code computes
    assert S.same_behaviour(fp, [x * (1 + 1e-6) for x in fp]) and not S.same_behaviour(fp, other)
    mixed = [rows[0], {**rows[1], "code": "0123456789ab", "fingerprint": other}]
    with pytest.raises(ValueError, match="refusing to write one table from 2 code versions"):
        S.write_results(recipe, mixed, tmp_path / "out")
    # rows of another code version with the same fingerprint are resumed, not redone
    jsonl = tmp_path / "out" / "mqar.jsonl"
    jsonl.write_text("".join(json.dumps({**r, "code": "old"}) + "\n" for r in rows))
    assert len(S.run_suite(recipe, tmp_path / "out", log=None)) == 2 and len(jsonl.read_text().splitlines()) == 2
    # rows whose fingerprint differs are not: the suite redoes them for this code
    jsonl.write_text("".join(json.dumps({**r, "code": "old", "fingerprint": other}) + "\n" for r in rows))
    with pytest.raises(ValueError, match="no run of this code version"):
        S.run_suite(recipe, tmp_path / "out", log=None, report_only=True)
    again = S.run_suite(recipe, tmp_path / "out", log=None)
    assert len(again) == 2 and len(jsonl.read_text().splitlines()) == 4


def test_bad_recipes_are_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("family: mad\ntasks: {compression: {}}\nlearning_rate: 1\n")
    with pytest.raises(ValueError, match="bad.yaml: unknown config key 'learning_rate'"):
        S.load_recipe(path)
    path.write_text("family: mad\ntasks: {nonsense: {}}\n")
    with pytest.raises(ValueError, match="unknown MAD task 'nonsense'"):
        S.load_recipe(path)
    path.write_text("family: mqar\ntasks: {a: {seq_len: 8}}\n")
    with pytest.raises(ValueError, match="needs n_pairs"):
        S.load_recipe(path)
    with pytest.raises(FileNotFoundError, match="recipe file not found"):
        S.load_recipe(tmp_path / "missing.yaml")
    assert main(["synthetic", str(tmp_path / "missing.yaml"), "--quick"]) == 2


def test_variants_change_settings_and_are_labelled(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("family: mqar\ntasks: {p2: {n_pairs: 2, seq_len: 16, n_keys: 8, n_values: 8}}\n"
                    "models: [delta, d2]\nvariants: {d2: {block: delta, model: {delta.chunk_size: 2}, steps: 3}}\n"
                    "seeds: [0]\nsteps: 2\nwarmup: 1\neval_batches: 1\neval_batch_size: 4\nbatch_size: 4\n"
                    "model: {dim: 16, layers: 1, heads: 2, delta: {heads: 2}}\n")
    rows = S.run_suite(S.load_recipe(path), tmp_path / "out", log=None)
    by = {r["model"]: r for r in rows}
    assert by["d2"]["block"] == "delta" and by["d2"]["steps"] == 3 and by["delta"]["steps"] == 2
    assert "| d2 |" in (tmp_path / "out" / "RESULTS.md").read_text()
    path.write_text(path.read_text().replace("block: delta,", "block: nope,"))
    with pytest.raises(ValueError, match="variants.d2 needs block"):
        S.load_recipe(path)


def test_a_diverging_run_is_retried_at_half_the_learning_rate(tmp_path, monkeypatch):
    path = tmp_path / "r.yaml"
    path.write_text("family: mqar\ntasks: {p2: {n_pairs: 2, seq_len: 16, n_keys: 8, n_values: 8}}\n"
                    "models: [transformer]\nseeds: [0]\nsteps: 12\nwarmup: 1\neval_batches: 1\n"
                    "eval_batch_size: 4\nbatch_size: 4\nlr: 0.002\nmodel: {dim: 16, layers: 1, heads: 2}\n")
    real = S.CausalLM.forward

    def nan_at_high_lr(self, ids, targets=None, state=None):  # a model that diverges at lr 0.002 only
        logits, loss, st = real(self, ids, targets, state)
        lr = S._current_lr
        return logits, (loss * float("nan") if lr > 0.0015 and loss is not None else loss), st

    monkeypatch.setattr(S.CausalLM, "forward", nan_at_high_lr)
    monkeypatch.setattr(S, "_current_lr", 0.0, raising=False)
    orig = S.run_one

    def tracking(recipe, *a, **k):
        S._current_lr = recipe.lr
        return orig(recipe, *a, **k)

    monkeypatch.setattr(S, "run_one", tracking)
    rows = S.run_suite(S.load_recipe(path), tmp_path / "out", log=None)
    assert rows[0]["lr"] == 0.002 and rows[0]["retry_lr"] == 0.001 and rows[0]["settings"]["lr"] == 0.001
    assert rows[0]["first_try_diverged_at"] == 9 and rows[0]["diverged_at"] is None
    assert "retried once at half the learning rate" in (tmp_path / "out" / "RESULTS.md").read_text()


_TINY = ("family: mqar\ntasks: {p2: {n_pairs: 2, seq_len: 16, n_keys: 8, n_values: 8}}\n"
         "seeds: [0]\neval_batches: 1\neval_batch_size: 4\nbatch_size: 4\nwarmup: 1\n"
         "model: {dim: 16, layers: 1, heads: 2, delta: {heads: 2}}\n")


def test_early_stopping_stops_on_a_flat_validation_loss_and_keeps_the_best_weights(tmp_path, monkeypatch):
    path = tmp_path / "r.yaml"
    path.write_text(_TINY + "models: [transformer]\nsteps: 40\neval_every: 2\npatience: 2\nmin_delta: 0.01\n")
    recipe = S.load_recipe(path)
    losses = iter([1.0, 0.5, 0.499, 0.55, 0.2])  # the 3rd is better by less than min_delta: not an improvement
    seen = []

    def fake_validate(model, recipe, task):
        seen.append(sum(float(p.detach().sum()) for p in model.parameters()))
        return next(losses), 50.0

    tested = []
    real_evaluate = S.evaluate

    def recording_evaluate(model, recipe, task):
        tested.append(sum(float(p.detach().sum()) for p in model.parameters()))
        return real_evaluate(model, recipe, task)

    monkeypatch.setattr(S, "validate", fake_validate)
    monkeypatch.setattr(S, "evaluate", recording_evaluate)
    r = S.run_one(recipe, "p2", "transformer", 0, log=None)
    assert r["stopped_at"] == 8 and r["steps_run"] == 8  # two validations in a row without a 1% gain
    assert r["best_step"] == 6 and r["val_loss"] == 0.499 and [c[0] for c in r["curve"]] == [2, 4, 6, 8]
    assert tested == [seen[2]] and seen[2] != seen[3]  # tested with the weights of step 6, not step 8


def test_selection_takes_the_lowest_validation_loss_and_grows_the_grid_past_an_edge(tmp_path, monkeypatch):
    path = tmp_path / "r.yaml"
    path.write_text(_TINY + "models: [delta, transformer]\nsteps: 2\neval_every: 1\nselect_seed: 7\n"
                    "lr_grid: [0.001, 0.002, 0.004]\nlr_extend: 2\n")
    recipe = S.load_recipe(path)
    best = {"delta": 0.008, "transformer": 0.1}  # delta's optimum is past the grid; the transformer's far past it

    def fake_validate(model, recipe, task):
        target = best[model.cfg.block]
        return (math.log(recipe.lr) - math.log(target)) ** 2, 50.0

    monkeypatch.setattr(S, "validate", fake_validate)
    rows = S.run_suite(recipe, tmp_path / "out", log=None)
    assert {r["model"]: r["lr"] for r in rows} == {"delta": 0.008, "transformer": 0.016}
    lines = [json.loads(x) for x in (tmp_path / "out" / "mqar.jsonl").read_text().splitlines()]
    select = {(r["model"], r["lr"]) for r in lines if r["phase"] == "select"}
    assert all(r["seed"] == 7 for r in lines if r["phase"] == "select")
    grown = {0.001, 0.002, 0.004, 0.008, 0.016}  # two rates past the upper edge, for both models
    assert select == {(m, x) for m in ("delta", "transformer") for x in grown}
    text = (tmp_path / "out" / "mqar.md").read_text()
    assert "Learning-rate selection (seed 7" in text
    assert "| transformer |" in text and "†" in text  # the transformer's rate is still on the edge
    delta_row = next(x for x in text.splitlines() if x.startswith("| delta |") and "**" in x)
    assert "†" not in delta_row
    # losses to three significant digits, so that tiny ones stay apart: (ln 0.125)² = 4.32…, the optimum exactly 0
    assert "| 4.32 |" in delta_row and "**0**" in delta_row
    # resuming redoes nothing
    n = len(lines)
    S.run_suite(recipe, tmp_path / "out", log=None)
    assert len((tmp_path / "out" / "mqar.jsonl").read_text().splitlines()) == n


def test_the_tables_are_rewritten_after_each_selection_run(tmp_path, monkeypatch):
    """A suite stopped during selection has its finished selection runs in the tables already (they used to
    wait for the next reported seed's run)."""
    path = tmp_path / "r.yaml"
    path.write_text(_TINY + "models: [delta]\nsteps: 2\neval_every: 1\nselect_seed: 7\n"
                    "lr_grid: [0.001, 0.002, 0.004]\nlr_extend: 0\n")
    recipe = S.load_recipe(path)
    real, calls = S.run_one, []

    def stopping(*args, **kwargs):
        if kwargs.get("trace") is None:  # a run, not a fingerprint
            calls.append(args[0].lr)
            if len(calls) == 3:
                raise KeyboardInterrupt  # stopped during the third selection run
        return real(*args, **kwargs)

    monkeypatch.setattr(S, "run_one", stopping)
    with pytest.raises(KeyboardInterrupt):
        S.run_suite(recipe, tmp_path / "out", log=None)
    text = (tmp_path / "out" / "mqar.md").read_text()
    assert "| p2 | 0.001 | 0.002 |\n" in text and "2 selection runs" in text  # the two that finished


@pytest.mark.parametrize("extra, message", [
    ("lr_grid: [0.001, 0.003, 0.004]\neval_every: 1\n", "geometric"),
    ("lr_grid: [0.001, 0.002]\neval_every: 1\n", "at least 3"),
    ("lr_grid: [0.001, 0.002, 0.004]\n", "lr_grid needs eval_every"),
    ("lr_grid: [0.001, 0.002, 0.004]\neval_every: 1\nselect_seed: 0\n", "must not be in the mean"),
    ("patience: 3\n", "patience needs eval_every"),
])
def test_bad_protocol_settings_are_named(tmp_path, extra, message):
    path = tmp_path / "r.yaml"
    path.write_text(_TINY + "models: [delta]\nsteps: 2\n" + extra)
    with pytest.raises(ValueError, match=message):
        S.load_recipe(path)


@pytest.mark.parametrize("path", sorted(p for p in RECIPES.rglob("*.yaml")  # not the runs in progress' own configs
                                         if not any(part.startswith(".") for part in p.relative_to(RECIPES).parts)),
                         ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_committed_recipe_loads_in_full_and_quick_mode(path):
    """Every recipe in experiments/synthetic (budget runs and probes included) is valid as committed, and every
    task's generator accepts its arguments; the quick tests above run four of them end to end."""
    for quick in (False, True):
        recipe = S.load_recipe(path, quick=quick)
        assert recipe.tasks and recipe.models and recipe.seeds
        for task in recipe.tasks:
            S.make_batch(recipe, task, 2, 0)


def test_the_device_reaches_the_trainer_and_the_scoring(tmp_path, monkeypatch):
    """--device (or the recipe's device) is where the runs train and are scored; rows record it. Shown on the
    CPU (no accelerator here): the Trainer gets the device, and every scored batch is on the model's device."""
    path = tmp_path / "r.yaml"
    path.write_text("family: mqar\ntasks: {p2: {n_pairs: 2, seq_len: 16, n_keys: 8, n_values: 8}}\n"
                    "models: [delta]\nseeds: [0]\nsteps: 2\nwarmup: 1\neval_batches: 1\neval_batch_size: 4\n"
                    "batch_size: 4\nmodel: {dim: 16, layers: 1, heads: 2, delta: {heads: 2}}\n")
    seen = record_trainer_devices(monkeypatch, S)
    rows = S.main(str(path), out=str(tmp_path / "out"), device="cpu:0")
    assert set(seen) == {"cpu:0"} and rows[0]["settings"]["device"] == "cpu:0"
    assert S.load_recipe(path).device == "cpu"


def test_the_tables_state_the_issues_targets_from_the_reported_means():
    formal_recipe = S.Recipe(family="formal", tasks={"parity": {}, "aa_star": {}}, seeds=[0, 1],
                             models=["hope", "delta", "titans"])

    def row(task, model, seed, **kw):
        return {"task": task, "model": model, "seed": seed, "diverged_at": None, **kw}

    rows = [row("parity", "hope", s, bin1=96.0, bin0=100.0) for s in (0, 1)] + [row("aa_star", "hope", 0, bin1=99.0)]
    rows += [row("parity", "delta", s, bin0=v, bin1=0.0) for s, v in ((0, 95.0), (1, 91.0))]
    text = "\n".join(S._targets(formal_recipe, rows, []))
    assert "HOPE ≥ 95% on Bin1 for every language (hope): open: parity 96.0, aa_star –." in text  # a seed missing
    assert "(delta): met: 93.0." in text and "Titans with no diverged run: open (0 runs" in text
    rows += [row("aa_star", "hope", 1, bin1=80.0), row("parity", "titans", 100, diverged_at=7)]
    text = "\n".join(S._targets(formal_recipe, rows[:-1], rows[-1:]))
    assert "(hope): **not met**: parity 96.0, aa_star 89.5." in text
    assert "Titans with no diverged run: **not met** (1 runs, selection runs included; diverged: " \
        "parity/titans/seed 100)" in text
    mad = S.Recipe(family="mad", tasks={"compression": {}, "memorization": {}}, seeds=[0],
                   models=["hope", "transformer", "titans"])
    accs = {("compression", "hope"): 50.0, ("compression", "transformer"): 40.0, ("compression", "titans"): 45.0,
            ("memorization", "hope"): 90.0, ("memorization", "transformer"): 95.0, ("memorization", "titans"): 80.0}
    text = "\n".join(S._targets(mad, [row(t, m, 0, acc=a) for (t, m), a in accs.items()], []))
    assert "(hope): **not met**: below on memorization (90.0 < 95.0)." in text
    accs[("memorization", "hope")] = 99.99  # a mean that rounds to its rival's: the line shows the digits that differ
    accs[("memorization", "transformer")] = 100.0
    text = "\n".join(S._targets(mad, [row(t, m, 0, acc=a) for (t, m), a in accs.items()], []))
    assert "below on memorization (99.99 < 100.00)." in text
    assert "Titans with no diverged run: met so far (2 runs" in text


def test_a_diverged_selection_run_is_marked_and_listed(tmp_path):
    """A selection run's validation loss is the best before it diverged: the table marks it and lists it."""
    recipe = S.Recipe(family="mad", tasks={"selective_copying": {}}, seeds=[0], models=["hope"],
                      lr_grid=[0.001, 0.00316, 0.01], select_seed=100)

    def row(lr, val_loss, diverged_at=None, skipped=0, phase="select", seed=100):
        return {"task": "selective_copying", "model": "hope", "seed": seed, "phase": phase, "lr": lr,
                "val_loss": val_loss, "diverged_at": diverged_at, "skipped": skipped, "acc": 20.0, "code": "c",
                "params": 100, "steps": 10, "steps_run": 10, "wall_s": 1.0, "cpu_s": 1.0}

    rows = [row(0.001, 2.55, diverged_at=977), row(0.00316, 2.54, diverged_at=440), row(0.01, 2.6, skipped=30),
            row(0.00316, None, phase="final", seed=0)]
    S.write_results(recipe, rows, tmp_path)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| hope | 2.55‡ | **2.54**‡ | 2.6 |" in text
    assert ("that diverged or skipped steps for a non-finite loss or gradient: selective_copying/hope lr 0.001: "
            "diverged at step 977; selective_copying/hope lr 0.00316: diverged at step 440; selective_copying/hope "
            "lr 0.01: 30 steps skipped.") in text


def test_snapshot_keeps_a_run_in_progress_best_weights_for_the_probes(tmp_path, monkeypatch):
    """experiments/synthetic/probes/snapshot.py writes the best weights of a run's latest checkpoint as kept weights
    that ``load_weights`` reads (the run untouched); a recipe the run does not belong to is refused."""
    from safetensors.torch import load_file

    probe = load_script(RECIPES / "probes" / "snapshot.py")
    recipe = _stoppable_recipe(tmp_path, "hope")
    monkeypatch.setattr(S, "CHECKPOINT_EVERY", 2)
    kill_once_after(monkeypatch, 4)
    with pytest.raises(Killed):
        S.run_suite(recipe, tmp_path / "out", log=None)
    (run,) = (tmp_path / "out" / S.PARTIAL).iterdir()
    before = sorted(p.name for p in run.rglob("*"))
    path = probe.snapshot(tmp_path / "r.yaml", run, tmp_path / "kept.pt")
    model, kept_recipe, row = S.load_weights(path)
    best = load_file(run / "checkpoints" / "step_0000004" / "best.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in best.items())
    assert (row["task"], row["model"], row["seed"], row["steps_run"]) == ("parity", "hope", 0, 4)
    assert row["best_step"] in (2, 4) and kept_recipe.steps == recipe.steps
    assert sorted(p.name for p in run.rglob("*")) == before
    other = tmp_path / "other.yaml"
    other.write_text((tmp_path / "r.yaml").read_text().replace("dim: 16", "dim: 8"))
    with pytest.raises(ValueError, match="does not match"):
        probe.snapshot(other, run, tmp_path / "x.pt")


@pytest.mark.parametrize("path", sorted(p.relative_to(RECIPES).as_posix() for p in RECIPES.rglob("*.yaml")
                                        if ".partial" not in p.parts and "carry" not in p.parts))
def test_every_recipe_and_probe_recipe_builds_each_model(path):
    """A misspelt setting in a probe's variant (``selfmod.momentum_max``) fails here, not hours into a suite."""
    recipe = S.load_recipe(RECIPES / path)
    ctx = S._Suite(recipe, [], dry=True)
    for task in recipe.tasks:
        for name in recipe.models:
            spec = ctx.spec(name)
            assert S.count_params(S.model_config(recipe, task, spec["block"], overrides=spec.get("model"))) > 0
