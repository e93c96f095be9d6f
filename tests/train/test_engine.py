"""The training engine: config precedence, exact resume, checkpoints, NaN handling, data, CLI."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nestlearn.data.text import TokenStream, read_texts
from nestlearn.data.tokenizer import BPETokenizer, ByteTokenizer, load_tokenizer
from nestlearn.train import Trainer, load_config, lr_factor, train

REPO = Path(__file__).resolve().parents[2]
DEBUG = REPO / "configs" / "debug.yaml"


def cfg_for(tmp_path, *overrides, steps=6):
    return load_config(DEBUG, [f"train.out_dir={tmp_path}", f"train.steps={steps}", "train.progress=false",
                               "train.eval_every=3", "train.ckpt_every=3", "train.log_every=1",
                               "model.block=hope_attention", *overrides])


def test_config_precedence_and_unknown_keys(tmp_path):
    (tmp_path / "c.yaml").write_text("model: {dim: 48}\ntrain: {steps: 7, batch_size: 4}\n")
    cfg = load_config(tmp_path / "c.yaml", ["train.steps=9", "model.selfmod.rule=gd"])
    assert cfg.model.dim == 48  # YAML over defaults
    assert cfg.train.batch_size == 4 and cfg.train.steps == 9  # command line over YAML
    assert cfg.model.selfmod.rule == "gd" and cfg.optim.lr == 3e-3  # a default stays
    with pytest.raises(ValueError, match="unknown config key 'train.stepz'"):
        load_config(tmp_path / "c.yaml", ["train.stepz=3"])
    (tmp_path / "bad.yaml").write_text("optim: {lrr: 1}\n")
    with pytest.raises(ValueError, match="unknown config key 'optim.lrr'"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="train.steps must be a positive int"):
        load_config(None, ["train.steps=0"])
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="must look like key=value"):
        load_config(None, ["train.steps"])
    assert load_config(None, ["optim.lr=1e-4"]).optim.lr == 1e-4  # YAML 1.1 reads 1e-4 as a string
    with pytest.raises(ValueError, match="optim.lr must be a number"):
        load_config(None, ["optim.lr=fast"])


def test_resume_equals_uninterrupted_bitwise(tmp_path):
    full = train(cfg_for(tmp_path / "full"))
    half = Trainer(cfg_for(tmp_path / "half"))
    half.run(until=3)  # stopped after step 3 (a checkpoint is written every 3 steps)
    assert half.step == 3
    resumed = train(cfg_for(tmp_path / "half"), resume=True)
    assert resumed.step == 6
    for (n, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    losses = lambda t: [h["loss"] for h in t.history if "loss" in h]  # noqa: E731
    assert losses(full) == losses(resumed)  # the logged rows before the interruption travel with the checkpoint
    assert resumed.losses == full.losses


def test_activation_checkpointing_setting_trains_the_same_run(tmp_path):
    """train.activation_checkpointing recomputes the blocks in the backward: the run's losses are unchanged
    (float32, the same ops in the same order), and a model that is not a CausalLM is refused by name."""
    plain = train(cfg_for(tmp_path / "plain", steps=3))
    recomputed = train(cfg_for(tmp_path / "recompute", "train.activation_checkpointing=true", steps=3))
    assert recomputed.model.gradient_checkpointing
    losses = lambda t: [h["loss"] for h in t.history if "loss" in h]  # noqa: E731
    assert losses(recomputed) == pytest.approx(losses(plain), rel=1e-6)
    with pytest.raises(ValueError, match="activation_checkpointing needs a CausalLM model"):
        Trainer(cfg_for(tmp_path / "linear", "train.activation_checkpointing=true", "train.out_dir="),
                model=torch.nn.Linear(2, 2), batches=object())


def test_corrupted_checkpoint_is_reported_and_the_previous_one_kept(tmp_path):
    train(cfg_for(tmp_path))
    ckpts = sorted((tmp_path / "checkpoints").glob("step_*"))
    assert [p.name for p in ckpts] == ["step_0000003", "step_0000006"]
    latest = ckpts[-1] / "model.safetensors"
    latest.write_bytes(latest.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match=r"step_0000006 is unreadable .* untouched: \['step_0000003'\]"):
        train(cfg_for(tmp_path), resume=True)
    trainer = Trainer(cfg_for(tmp_path))
    trainer.load(ckpts[0])  # the previous checkpoint still loads
    assert trainer.step == 3
    assert not list((tmp_path / "checkpoints").glob(".tmp*"))


def test_refuses_to_overwrite_a_run(tmp_path):
    train(cfg_for(tmp_path, steps=3))
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(cfg_for(tmp_path, steps=3))


def test_non_finite_loss_is_skipped_and_reported(tmp_path, capsys):
    trainer = Trainer(cfg_for(tmp_path))
    real = trainer.loss

    def sometimes_nan(ids, targets):
        loss = real(ids, targets)
        return loss * float("nan") if trainer.step == 2 else loss

    trainer.loss = sometimes_nan
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    assert "step 2: non-finite loss" in capsys.readouterr().out
    assert trainer.bad_total == 1 and trainer.step == 6
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())


def test_too_many_non_finite_losses_stop_the_run(tmp_path):
    trainer = Trainer(cfg_for(tmp_path, "train.max_bad_steps=2", steps=9))
    real = trainer.loss
    trainer.loss = lambda ids, t: real(ids, t) * (float("nan") if trainer.step >= 4 else 1.0)
    with pytest.raises(RuntimeError, match=r"non-finite for 2 steps in a row \(last at step 5\).*step_0000003"):
        trainer.run()


def test_schedules():
    cfg = load_config(None, ["optim.warmup=10", "train.steps=100", "optim.min_lr_ratio=0.1"])
    assert lr_factor(cfg, 0) == pytest.approx(0.1) and lr_factor(cfg, 9) == pytest.approx(1.0)
    assert lr_factor(cfg, 10) == pytest.approx(1.0) and lr_factor(cfg, 100) == pytest.approx(0.1)
    cfg = load_config(None, ["optim.schedule=wsd", "train.steps=100", "optim.decay_fraction=0.2"])
    assert lr_factor(cfg, 79) == 1.0 and lr_factor(cfg, 90) == pytest.approx(0.55)


def test_tokenizers_round_trip_unicode(tmp_path):
    text = "Nested learning — ünïcödé, 日本語, emoji 🙂, tabs\tand\nnewlines."
    byte = ByteTokenizer()
    assert byte.decode(byte.encode(text)) == text
    bpe = BPETokenizer.train([text * 20, "plain ascii text " * 50], vocab_size=300)
    assert bpe.decode(bpe.encode(text)) == text
    bpe.save(tmp_path / "tok.json")
    byte.save(tmp_path / "byte.json")
    assert load_tokenizer(tmp_path / "tok.json").encode(text) == bpe.encode(text)
    assert isinstance(load_tokenizer(tmp_path / "byte.json"), ByteTokenizer)


def test_packing_is_deterministic_and_cached(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("alpha beta gamma " * 40)
    (tmp_path / "docs" / "b.jsonl").write_text(json.dumps({"text": "delta epsilon " * 40}) + "\n")
    assert len(list(read_texts(tmp_path / "docs"))) == 2
    s1 = TokenStream.build(tmp_path / "docs", ByteTokenizer(), tmp_path / "cache", "byte")
    s2 = TokenStream.build(tmp_path / "docs", ByteTokenizer(), tmp_path / "cache", "byte")
    assert np.array_equal(np.asarray(s1.tokens), np.asarray(s2.tokens))
    assert len(list((tmp_path / "cache").glob("tokens-*.npy"))) == 1
    a, b = s1.batch(5, 4, 16, seed=1), s2.batch(5, 4, 16, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[0][:, 1:], a[1][:, :-1])
    with pytest.raises(ValueError, match="fewer than batch_size"):
        s1.batch(0, 10_000, 16, seed=0)
    (tmp_path / "bad.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(ValueError, match="'text' field"):
        list(read_texts(tmp_path / "bad.jsonl"))


def test_cli_train_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "nestlearn", "train", str(DEBUG), "train.steps=20", f"train.out_dir={tmp_path}",
           "train.progress=false", "model.block=transformer"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_0000020"
    bad = subprocess.run(cmd[:5] + ["train.stepz=3"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and "unknown config key 'train.stepz'" in bad.stderr
    ev = subprocess.run([sys.executable, "-m", "nestlearn", "eval", str(tmp_path)], capture_output=True, text=True,
                        env=env, cwd=REPO, timeout=300)
    assert ev.returncode == 0 and "val_loss" in ev.stdout


def _default_sigint():
    # A shell without job control starts background commands with SIGINT ignored, and a Python
    # started with SIGINT ignored never raises KeyboardInterrupt: give the run the default handler,
    # as a terminal would (found when CI was launched in the background).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_writes_a_checkpoint(tmp_path):
    # PYTHONFAULTHANDLER: if the run ever hangs after the interrupt, SIGABRT below makes it print
    # every thread's stack, so the failure says where it hung
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nestlearn", "train", str(DEBUG), "train.steps=100000",
                             f"train.out_dir={tmp_path}", "train.progress=false", "model.block=transformer",
                             "train.log_every=1"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)
    deadline, metrics = time.time() + 120, tmp_path / "metrics.jsonl"
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().strip()):
        time.sleep(0.2)  # interrupt a running loop: wait for its first logged step
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"the run did not stop within 120 s of SIGINT; its stacks:\n{err[-4000:]}")
    assert "interrupted at step" in out, err[-2000:]
    latest = (tmp_path / "checkpoints" / "latest").read_text()
    trainer = Trainer(load_config(tmp_path / "config.yaml", ["train.progress=false"]))
    trainer.load()
    assert trainer.step > 0 and latest == f"step_{trainer.step:07d}"


def test_tensorboard_logs_when_installed(tmp_path):
    pytest.importorskip("torch.utils.tensorboard", reason="the tensorboard package is not installed")
    train(cfg_for(tmp_path, steps=3))
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_hf_source_without_datasets_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ValueError, match="needs the 'datasets' package"):
        list(read_texts("hf:wikitext:wikitext-2-raw-v1@train"))


def test_cli_generate_streams_text_from_a_text_run(tmp_path, capsys):
    from nestlearn.cli import main

    (tmp_path / "text.txt").write_text("the cat sat on the mat. " * 200)
    args = ["train", str(DEBUG), "train.steps=2", f"train.out_dir={tmp_path / 'run'}", "train.progress=false",
            "model.block=transformer", "data.source=text", f"data.train={tmp_path / 'text.txt'}",
            "data.tokenizer=byte", "data.seq_len=32", "train.batch_size=2"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "--prompt", "the cat", "--max-new-tokens", "7",
                 "--temperature", "0"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    from nestlearn.cli import _run_trainer

    trainer = _run_trainer(str(tmp_path / "run"))  # the same greedy tokens from the library's own generate
    tok = trainer.batches.tokenizer
    prompt = tok.encode("the cat")
    out, _ = trainer.model.eval().generate(torch.tensor([prompt]), 7, temperature=0)
    assert line == "the cat" + "".join(tok.decode([t]) for t in out[0, len(prompt):].tolist())


def _plugin_trainer(tmp_path, losses, **train):
    """A Trainer on a one-weight model with plug-in batches, loss and evaluation (``losses[step]``
    scales the loss; the validation loss is the weight's distance to 3)."""
    from types import SimpleNamespace

    from nestlearn.train import OptimConfig, RunConfig, TrainSettings

    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    cfg = RunConfig(optim=OptimConfig(lr=0.1, schedule="constant", clip=0.0),
                    train=TrainSettings(**{"steps": len(losses), "batch_size": 1, "out_dir": "", "progress": False,
                                           "log_every": 1, "eval_every": 1, **train}))
    batches = SimpleNamespace(train=lambda step, micro: (torch.tensor([[float(step)]]),))
    vals = []

    def evaluate():
        vals.append(abs(3.0 - model.weight.item()))
        return {"val_loss": vals[-1], "val_acc": 0.0}

    def loss(x):
        return (model.weight.sum() - 3.0) ** 2 * losses[int(x.item())]

    from nestlearn.optim import Optimizers

    sgd = Optimizers(torch.optim.SGD(model.parameters(), lr=0.1))  # no momentum: a zero loss stops the weight
    return Trainer(cfg, model=model, batches=batches, loss=loss, evaluate=evaluate, optimizer=sgd), vals


def test_plugins_early_stopping_best_weights_and_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # the loss vanishes after step 3: the validation loss goes flat and the run stops after `patience` checks
    trainer, vals = _plugin_trainer(tmp_path, [1.0] * 3 + [0.0] * 20, patience=2, keep_best=True)
    trainer.run()
    assert trainer.stopped_at == 5 and trainer.step == 5 and trainer.best_step == 3
    assert trainer.stop_reason == "validation loss flat for 2 checks"
    assert abs(3.0 - trainer.model.weight.item()) == pytest.approx(vals[2])  # the best weights are kept
    assert list(tmp_path.iterdir()) == []  # out_dir "": nothing written
    assert len(trainer.losses) == 5


@pytest.mark.parametrize("until", [2, 4, 5])
def test_a_resumed_run_stops_and_keeps_its_best_weights_as_the_uninterrupted_one(tmp_path, monkeypatch, until):
    """The early-stopping state (best loss and step, the best weights, the patience counters, a stop already
    made) and the logged rows are saved with each checkpoint: an interrupted run resumes to the same end."""
    monkeypatch.chdir(tmp_path)
    schedule = [1.0] * 3 + [0.0] * 20
    full, _ = _plugin_trainer(tmp_path, schedule, patience=2, keep_best=True)
    full.run()
    kw = dict(patience=2, keep_best=True, out_dir=str(tmp_path / "run"), ckpt_every=1)
    half, _ = _plugin_trainer(tmp_path, schedule, **kw)
    half.on_save = lambda: {"spent": half.step * 10}
    half.run(until=until)
    resumed, _ = _plugin_trainer(tmp_path, schedule, **kw)
    resumed.load()
    assert resumed.extra == {"spent": until * 10}
    resumed.run()
    assert (resumed.stopped_at, resumed.step, resumed.best_step, resumed.stop_reason) == \
        (full.stopped_at, full.step, full.best_step, full.stop_reason) == (5, 5, 3, "validation loss flat for 2 checks")
    assert resumed.model.weight.item() == full.model.weight.item()  # the best weights, restored at the end
    assert resumed.losses == full.losses
    strip = lambda h: [{k: v for k, v in r.items() if k != "tok_s"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)


def test_a_checkpoint_keeps_what_a_plugin_evaluation_logs_beside_python_numbers(tmp_path, monkeypatch):
    """The logged rows (metrics.jsonl, and the checkpoint's copy) are JSON: a 0-d tensor or a NumPy scalar that a
    plug-in evaluation returns is written as a number, where it once stopped the run with a TypeError."""
    monkeypatch.chdir(tmp_path)
    trainer, _ = _plugin_trainer(tmp_path, [1.0] * 4, out_dir=str(tmp_path / "run"), ckpt_every=2)
    trainer.evaluate = lambda: {"val_loss": torch.tensor(0.5), "val_acc": np.float32(0.25)}
    trainer.run()
    again, _ = _plugin_trainer(tmp_path, [1.0] * 4, out_dir=str(tmp_path / "run"), ckpt_every=2)
    again.load()
    assert [r for r in again.history if "val_loss" in r][-1] == {"step": 4, "val_loss": 0.5, "val_acc": 0.25}
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1] == {"step": 4, "val_loss": 0.5, "val_acc": 0.25}


def test_plugins_nonfinite_stop_ends_the_run_without_raising(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer, _ = _plugin_trainer(tmp_path, [1.0, float("nan"), float("nan"), 1.0], max_bad_steps=2,
                                 on_nonfinite="stop")
    trainer.run()
    assert trainer.diverged_at == 2 and trainer.step == 3 and trainer.bad_total == 2
    import math

    assert math.isnan(trainer.losses[1]) and math.isfinite(trainer.model.weight.item())


def test_one_optimizer_builder():
    from nestlearn.models import CausalLM, preset
    from nestlearn.optim import M3, build_optimizer

    model = CausalLM(preset("debug", block="transformer"))
    adamw = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.1).opts[0]
    decay, rest = adamw.param_groups
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in rest["params"])
    for name, accumulate in (("m3", "sum"), ("m3-ema", "ema")):
        main, other = build_optimizer(model, name, lr=1e-3, matrix_lr=0.02, alpha=0.3, slow_every=7).opts
        assert isinstance(main, M3) and main.defaults["accumulate"] == accumulate
        assert main.defaults["lr"] == 0.02 and main.defaults["alpha"] == 0.3 and main.defaults["slow_every"] == 7
        assert other.defaults["lr"] == 1e-3
    muon = build_optimizer(model, "muon", momentum=0.9).opts[0]
    assert muon.defaults["momentum"] == 0.9
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_optimizer(model, "sgd")


def test_plugins_a_solved_task_stops_after_solved_patience(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer, _ = _plugin_trainer(tmp_path, [1.0] * 10, patience=50, solved_patience=3)
    trainer.evaluate = lambda: {"val_loss": 1.0 / (trainer.step + 1), "val_acc": 1.0 if trainer.step >= 4 else 0.5}
    trainer.run()
    assert trainer.stopped_at == 6  # accuracy 1 at steps 4, 5 and 6
    assert trainer.stop_reason == "100% validation accuracy for 3 checks"


def test_min_steps_keeps_a_flat_run_going_but_not_a_solved_one(tmp_path, monkeypatch):
    """``min_steps``: a flat validation loss stops no run before that step (a model on a plateau before a sudden
    gain is not cut off there); a solved run still stops at once. A min_steps past the budget is refused."""
    monkeypatch.chdir(tmp_path)

    def flat(**kw):
        trainer, _ = _plugin_trainer(tmp_path, [1.0] * 10, patience=2, **kw)
        trainer.evaluate = lambda: {"val_loss": 1.0, "val_acc": 0.5}
        trainer.run()
        return trainer.stopped_at

    assert flat() == 3  # the best at step 1, then 2 checks without a gain
    assert flat(min_steps=7) == 7
    trainer, _ = _plugin_trainer(tmp_path, [1.0] * 10, patience=2, solved_patience=2, min_steps=7)
    trainer.evaluate = lambda: {"val_loss": 1.0, "val_acc": 1.0}
    trainer.run()
    assert trainer.stopped_at == 2 and trainer.stop_reason == "100% validation accuracy for 2 checks"
    from nestlearn.train import RunConfig, TrainSettings
    from nestlearn.train.config import validate

    with pytest.raises(ValueError, match=r"train.min_steps must be an int in \[0, train.steps = 10\] \(got 11\)"):
        validate(RunConfig(train=TrainSettings(steps=10, patience=2, min_steps=11)))


def test_the_trainer_and_the_replay_of_a_stored_curve_stop_at_the_same_step(tmp_path, monkeypatch):
    """One early-stopping rule (``early_stop``): the Trainer, validating live, and ``synthetic.stop_step``,
    replaying the curve a run stored, stop at the same step for every setting, on curves with a plateau, a late
    gain, a NaN validation and a solved stretch."""
    import types

    from nestlearn.experiments.synthetic import stop_step

    monkeypatch.chdir(tmp_path)
    curves = {
        "plateau then gain": [(1.0, 0.3)] * 4 + [(0.5, 0.6), (0.49, 0.6), (0.2, 0.9)] + [(0.2, 0.9)] * 3,
        "nan, then solved": [(2.0, 0.1), (float("nan"), 0.0), (1.0, 0.5), (0.1, 1.0), (0.1, 1.0), (0.09, 1.0),
                             (0.5, 0.9), (0.5, 0.9), (0.5, 0.9), (0.5, 0.9)],
        "nan first": [(float("nan"), 0.0), (1.0, 0.5), (1.0, 0.5), (0.5, 0.6)] + [(0.5, 0.6)] * 6,
        "slow decline": [(0.996 ** i, 0.5) for i in range(10)],
    }
    for name, points in curves.items():
        for patience, solved_patience, min_steps, min_delta in [(2, 0, 0, 0.01), (2, 2, 0, 0.01), (3, 0, 6, 0.01),
                                                               (2, 3, 8, 0.6), (0, 2, 0, 0.01), (0, 0, 0, 0.01)]:
            for patience_from in ("last_gain", "best"):
                trainer, _ = _plugin_trainer(tmp_path, [1.0] * 10, patience=patience, solved_patience=solved_patience,
                                             min_steps=min_steps, min_delta=min_delta, patience_from=patience_from)
                trainer.evaluate = lambda t=trainer, p=points: dict(zip(("val_loss", "val_acc"), p[t.step - 1],
                                                                        strict=True))
                trainer.run()
                rule = types.SimpleNamespace(patience=patience, solved_patience=solved_patience, min_steps=min_steps,
                                             min_delta=min_delta, patience_from=patience_from)
                stored = [[step, loss, 100 * acc] for step, (loss, acc) in enumerate(points, 1)]
                assert stop_step(stored, rule) == trainer.stopped_at, (name, patience, solved_patience, min_steps,
                                                                       patience_from)


def test_a_slow_steady_decline_is_a_gain_measured_from_the_last_gain(tmp_path, monkeypatch):
    """``patience_from="last_gain"`` (the default): a validation loss falling 0.4% a check gains 1% every third
    check, so ``patience`` 4 never stops the run; against the lowest loss so far (``"best"``, the rule until
    2026-12-01) no single check gains 1%, and the run stopped after 4 checks although the loss kept falling.
    A checkpoint written under "best" resumes under "last_gain" with its counters rebuilt from its validations:
    the run ends as one that ran under "last_gain" throughout."""
    monkeypatch.chdir(tmp_path)
    points = [(0.996 ** i, 0.5) for i in range(12)]

    def trainer(**kw):
        t, _ = _plugin_trainer(tmp_path, [1.0] * 12, patience=4, **kw)
        t.evaluate = lambda: dict(zip(("val_loss", "val_acc"), points[t.step - 1], strict=True))
        return t

    best = trainer(patience_from="best")
    best.run()
    assert best.stopped_at == 5 and best.stop_reason == "validation loss flat for 4 checks"
    last = trainer()
    last.run()
    assert last.stopped_at is None and last.step == 12
    kw = dict(out_dir=str(tmp_path / "run"), ckpt_every=1)
    half = trainer(patience_from="best", **kw)
    half.run(until=4)
    assert half._stale == 3 and half.stopped_at is None  # under "best": three checks without a gain
    resumed = trainer(**kw)
    resumed.load()
    assert resumed._stale == 0  # under "last_gain": the fourth check gained (0.996³ < 0.99)
    resumed.run()
    assert resumed.stopped_at is None and resumed.step == 12 and resumed.best_step == last.best_step
    from nestlearn.train import RunConfig, TrainSettings
    from nestlearn.train.config import validate

    with pytest.raises(ValueError, match="train.patience_from must be one of"):
        validate(RunConfig(train=TrainSettings(patience_from="lowest")))


def test_compiled_training_of_hope_runs(tmp_path):
    """``train.compile`` with in-context CMS learning: the driver's inner ``autograd.grad`` keeps the graph
    (retain_graph), which a compiled backward with donated buffers refused (a RuntimeError at the first step)."""
    cfg = load_config(DEBUG, [f"train.out_dir={tmp_path}", "train.steps=2", "train.compile=true",
                               "train.progress=false", "model.block=hope", "model.layers=1",
                               "train.eval_every=2", "train.eval_batches=1"])
    trainer = train(cfg)
    assert trainer.step == 2 and all(np.isfinite(trainer.losses))


def test_non_finite_gradient_with_a_finite_loss_is_skipped(tmp_path, capsys):
    """A finite loss whose gradient holds a NaN skips the step: clipping and the optimizer's moments would
    otherwise spread that NaN to every weight, and every later loss would be NaN."""
    trainer = Trainer(cfg_for(tmp_path))
    real = trainer.loss

    def nan_gradient(ids, targets):
        loss = real(ids, targets)
        if trainer.step != 2:
            return loss
        w = next(trainer.model.parameters())
        # finite forward, NaN backward: sqrt's derivative at 0 is inf, times 0 gives NaN
        return loss + 0.0 * torch.sqrt(torch.zeros_like(w) * w).sum()

    trainer.loss = nan_gradient
    trainer.run()
    out = capsys.readouterr().out
    assert "step 2: non-finite gradient (norm nan" in out and all(math.isfinite(x) for x in trainer.losses)
    assert trainer.bad_total == 1 and trainer.step == 6
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())


def test_non_finite_gradient_is_caught_without_clipping(tmp_path, capsys):
    trainer = Trainer(cfg_for(tmp_path, "optim.clip=0"))
    real = trainer.loss
    w = next(trainer.model.parameters())
    trainer.loss = lambda ids, t: real(ids, t) + 0.0 * torch.sqrt(torch.zeros_like(w) * w).sum()
    trainer.cfg.train.max_bad_steps = 2
    with pytest.raises(RuntimeError, match=r"loss or its gradient was non-finite for 2 steps in a row"):
        trainer.run()
    assert "non-finite gradient" in capsys.readouterr().out
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())
