"""M3 against AdamW and Muon on a small ViT (NL §9.7, Fig. 11, at CPU scale), under the protocol of
experiments/synthetic/README.md.

    nestlearn optimizers                      # both datasets, the protocol (hours; resumable)
    nestlearn optimizers --quick              # a smoke run (minutes)
    nestlearn optimizers --dataset cifar10 --steps 3000

(``python experiments/optimizers/vit.py`` runs the same.) Run from the repository root: the defaults read
``../shared/data`` and write to ``experiments/optimizers/``.

Every optimizer trains the same ViT (patch 4) for the same number of steps on the same batches.
A seeded ``--val`` share of every class of the training images is a validation split (never trained on;
stratified, since a file may be sorted by class); the test set is used for the reported numbers only.
1. **Learning rate**: each optimizer trains once per rate of one geometric grid at a selection seed
   (100, not a reported seed) and takes the rate of the lowest validation loss (the best of a validation
   every ``--eval-every`` steps; those weights are kept and tested); while that rate
   is on an edge of the grid the grid grows by one rate past that edge (at most ``--extend`` per edge).
2. **Its own hyperparameters**, at that rate and on the same split: Muon's momentum; M3's α (the slow
   momentum's weight) and its slow frequency f, as many points each as Muon's momentum.
3. **Seeds** 0 … n−1 train at the selected settings; the table gives mean ± std.
Optimizers: ``adamw``; ``muon`` (torch.optim.Muon, its rate on AdamW's scale, ``match_rms_adamw``);
``m3`` (Algorithm 1 as printed: plain accumulators, ``accumulate="sum"``, the rate as given) and
``m3-ema`` (deviation D15: moving averages with Adam's bias correction). Muon and M3 update the 2-D
matrices (attention, MLP); AdamW at ``--rest-lr`` updates everything else. Newton–Schulz runs in
float32 on a CPU (``ns_dtype="auto"``). Every finished run is a line of ``runs.jsonl`` (with its commit
and code version), so a stopped run resumes; RESULTS.md, results.json and curves.png are rewritten
from it.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.images import load_cifar10_subset, load_fashion_mnist, stratified_split
from ..models.vit import ViT, ViTConfig
from ..optim import build_optimizer
from ..train import OptimConfig, RunConfig, Trainer, TrainSettings
from ..train.config import device_problem
from .protocol import (
    CHECKPOINT_EVERY,
    PARTIAL,
    RunClock,
    append_row,
    code_version,
    grid_problem,
    partial_folder,
    rate,
    read_rows,
    same_behaviour,
    select_rate,
    write_atomic,
)

GRID = (1e-4, 3.16e-4, 1e-3)  # ×√10
MUON_MOMENTUM = (0.9, 0.95, 0.98)
M3_ALPHA = (0.05, 0.1, 0.3)  # as many points as Muon's momentum
M3_SLOW_EVERY = (10, 25, 100)
SELECT_SEED = 100
OPTIMIZERS = ("adamw", "muon", "m3", "m3-ema")
DATASETS = {"cifar10": ("cifar10_subset", load_cifar10_subset, 32, 3),
            "fashion_mnist": ("fashion_mnist", load_fashion_mnist, 28, 1)}
DEFAULTS = {"muon": {"momentum": 0.95}, "m3": {"alpha": 0.1, "slow_every": 25},  # build_optimizer's keywords
            "m3-ema": {"alpha": 0.1, "slow_every": 25}}


def dataset(ds: str, args) -> tuple[tuple, int, int]:
    """``((x_fit, y_fit, x_val, y_val, x_test, y_test), image_size, channels)`` for dataset ``ds`` as the
    experiment uses it: ``args.data_root``, the ``args.val`` share of every class held out for selection, and
    under ``args.quick`` a stratified sample of 600 training and 200 test images."""
    folder, loader, size, channels = DATASETS[ds]
    x_tr, y_tr, x_te, y_te = loader(Path(args.data_root) / folder)
    if args.quick:  # a stratified sample: the files may be sorted by class (the CIFAR-10 subset is)
        tr, te = stratified_split(y_tr, 600 / len(y_tr), seed=1)[1], stratified_split(y_te, 200 / len(y_te), 1)[1]
        x_tr, y_tr, x_te, y_te = x_tr[tr], y_tr[tr], x_te[te], y_te[te]
    fit, val = stratified_split(y_tr, args.val)
    return (x_tr[fit], y_tr[fit], x_tr[val], y_tr[val], x_te, y_te), size, channels


def make_optimizer(name: str, model, lr: float, hp: dict, args):
    """AdamW at ``lr``; or Muon / M3 at ``lr`` on the 2-D matrices and AdamW at ``--rest-lr`` on the rest."""
    return build_optimizer(model, name, lr=lr if name == "adamw" else args.rest_lr,
                           matrix_lr=None if name == "adamw" else lr, weight_decay=args.weight_decay,
                           betas=(0.9, 0.999), **hp)


@torch.no_grad()
def evaluate(model, x, y, batch=1000):
    model.eval()
    loss, correct = 0.0, 0
    device = next(model.parameters()).device
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch].to(device), y[i:i + batch].to(device)
        logits = model(xb)
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(-1) == yb).sum().item()
    model.train()
    loss = loss / len(x)
    return (loss if math.isfinite(loss) else float("inf")), correct / len(x)


class Epochs:
    """Training batches as a function of the step: epoch e is a permutation drawn from (seed, e), cut into
    ``batch``-image slices (the remainder dropped); the same batches for every optimizer."""

    def __init__(self, x, y, batch: int, seed: int):
        self.x, self.y, self.batch, self.seed, self._perm = x, y, batch, seed, (None, None)

    def train(self, step: int, micro: int = 0):
        per_epoch = len(self.x) // self.batch
        epoch, i = divmod(step, per_epoch)
        if self._perm[0] != epoch:
            g = torch.Generator().manual_seed(1_000_003 * (1000 + self.seed) + epoch)
            self._perm = (epoch, torch.randperm(len(self.x), generator=g))
        idx = self._perm[1][i * self.batch:(i + 1) * self.batch]
        return self.x[idx], self.y[idx]


def run(name, lr, hp, seed, data, args, image_size, channels, resume_dir: Path | None = None):
    """One run through ``nestlearn.train.Trainer``: constant rate, no clipping, stopped at the first
    non-finite loss (scored as inf). The validation loss is measured every ``--eval-every`` steps and the
    weights of the best one are kept and tested (9,000 training images can be overfitted within the
    budget: the final weights would then rank the optimizers by how fast they overfit). ``resume_dir``: the
    run checkpoints there every ``CHECKPOINT_EVERY`` steps and continues from the latest checkpoint it finds
    (``protocol.RunClock``), to the row the uninterrupted run writes."""
    x_train, y_train, x_val, y_val, x_test, y_test = data
    torch.manual_seed(seed)
    model = ViT(ViTConfig(image_size=image_size, channels=channels, patch=4, dim=args.dim, depth=args.depth,
                          heads=4, classes=10))
    cfg = RunConfig(optim=OptimConfig(schedule="constant", clip=0.0), train=TrainSettings(
        steps=args.steps, batch_size=args.batch, seed=seed, out_dir=str(resume_dir or ""), progress=False,
        log_every=args.steps, eval_every=min(args.eval_every, args.steps),
        ckpt_every=CHECKPOINT_EVERY if resume_dir else args.steps, max_bad_steps=1, on_nonfinite="stop",
        keep_best=True, device=args.device))

    def validation() -> dict:
        loss, acc = evaluate(model, x_val, y_val)
        return {"val_loss": loss, "val_acc": acc}

    clock = RunClock(resume_dir)
    trainer = Trainer(cfg, model=model, batches=Epochs(x_train, y_train, args.batch, seed),
                      loss=lambda x, y: F.cross_entropy(model(x.to(args.device)), y.to(args.device)),
                      evaluate=validation,
                      optimizer=make_optimizer(name, model, lr, hp, args),
                      on_save=clock.on_save if resume_dir else None)
    if clock.resume(trainer):
        print(f"  {name} lr={lr:g} {hp} seed {seed}: resumed at step {trainer.step} ({resume_dir})", flush=True)
    trainer.run()
    clock.trained()
    curve = trainer.losses
    tail = curve[-max(1, args.steps // 20):]
    train_loss = statistics.mean(tail) if all(map(math.isfinite, tail)) else float("inf")
    val_curve = [[h["step"], h["val_loss"], h["val_acc"]] for h in trainer.history if "val_loss" in h]
    val_loss, val_acc = evaluate(model, x_val, y_val)  # the kept (best) weights
    test_loss, test_acc = evaluate(model, x_test, y_test)
    if trainer.diverged_at is not None:  # the weights before the first non-finite step are not this rate's result
        val_loss = test_loss = float("inf")
    return dict(optimizer=name, lr=lr, hp=hp, seed=seed, steps=args.steps, train_loss=train_loss,
                val_loss=val_loss, val_acc=val_acc, test_loss=test_loss, test_acc=test_acc,
                best_step=trainer.best_step, final_val_loss=val_curve[-1][1] if val_curve else float("inf"),
                step_time=clock.totals()["train_s"] / max(1, trainer.step), **clock.totals(), curve=curve,
                val_curve=val_curve, **code_version())


class NotRun(Exception):
    """``--report``: a run the tables need is not in the store yet."""


class Runs:
    """Finished runs in ``runs.jsonl``: a run is done when a line with its dataset, optimizer, rate,
    hyperparameters, seed and settings is there, from this code version or from one whose fingerprint (the
    numbers a 3-step run of the same optimizer computes) equals this code's: a change that keeps the
    numbers does not make finished runs stale (as in the synthetic suite)."""

    SETTINGS = ("steps", "batch", "dim", "depth", "weight_decay", "rest_lr", "val", "eval_every")

    def __init__(self, path: Path, version: str):
        self.path, self.version, self.rows, self._fp = path, version, read_rows(path), {}

    def fingerprint(self, ds, name, data, args, size, channels) -> list[float]:
        if (ds, name) not in self._fp:
            tiny = argparse.Namespace(**{**vars(args), "steps": 3, "eval_every": 2, "batch": 8})
            small = tuple(t[:64] for t in data)
            r = run(name, args.grid[len(args.grid) // 2], dict(DEFAULTS.get(name, {})), 0, small, tiny, size, channels)
            self._fp[ds, name] = r["curve"] + [v for c in r["val_curve"] for v in c[1:]] + [r["test_loss"]]
        return self._fp[ds, name]

    def get(self, ds, name, lr, hp, seed, args, data, size, channels):
        """The stored run, else (unless ``args.report``: then ``NotRun``) a new one, stored."""
        settings = {k: getattr(args, k) for k in self.SETTINGS}
        key = (ds, name, rate(lr), json.dumps(hp, sort_keys=True), seed, json.dumps(settings, sort_keys=True))
        for r in self.rows:
            if (r["dataset"], r["optimizer"], rate(r["lr"]), json.dumps(r["hp"], sort_keys=True), r["seed"],
                    json.dumps(r.get("settings"), sort_keys=True)) == key and (
                    r.get("code") == self.version
                    or same_behaviour(r.get("fingerprint"), self.fingerprint(ds, name, data, args, size, channels))):
                return r
        if args.report:
            raise NotRun
        fp = self.fingerprint(ds, name, data, args, size, channels)
        folder = partial_folder(self.path.parent / PARTIAL, f"{ds}-{name}-lr{rate(lr):g}-seed{seed}",
                                {"hp": hp, "settings": settings, "store": self.path.name, "device": args.device},
                                self.version, fp, log=lambda line: print(line, flush=True))
        r = {"dataset": ds, **run(name, lr, hp, seed, data, args, size, channels, resume_dir=folder),
             "settings": settings, "fingerprint": fp,
             "run": folder.name}  # the run in progress this row ends (protocol.finished: not carried again)
        self.rows = append_row(self.path, r)
        shutil.rmtree(folder, ignore_errors=True)  # the row is stored: the run's checkpoints go
        print(f"{ds} {name} lr={lr:g} {hp} seed {seed}: train {r['train_loss']:.3f} val {r['val_loss']:.3f} "
              f"test acc {r['test_acc']:.3f}", flush=True)
        return r


def select(runs: Runs, ds, name, args, data, size, channels) -> dict:
    """Rate, then the optimizer's own hyperparameters, each by the lowest validation loss at the selection
    seed; returns ``{"lr", "hp", "grid": [...], "sweep": [...]}``."""
    hp = dict(DEFAULTS.get(name, {}))

    def score(lr):
        return runs.get(ds, name, lr, hp, SELECT_SEED, args, data, size, channels)["val_loss"]

    best, grid = select_rate(score, args.grid, args.extend)
    out = {"lr": best, "grid": [dict(lr=lr, val_loss=score(lr)) for lr in grid], "sweep": []}  # stored runs
    sweeps = {"muon": [("momentum", MUON_MOMENTUM)], "m3": [("alpha", M3_ALPHA), ("slow_every", M3_SLOW_EVERY)],
              "m3-ema": [("alpha", M3_ALPHA), ("slow_every", M3_SLOW_EVERY)]}.get(name, [])
    for key, values in sweeps if not args.quick else []:
        scores = {}
        for v in values:
            r = runs.get(ds, name, best, {**hp, key: v}, SELECT_SEED, args, data, size, channels)
            scores[v] = r["val_loss"]
            out["sweep"].append(dict(key=key, value=v, val_loss=r["val_loss"]))
        hp[key] = min(values, key=lambda v: scores[v])
    out["hp"] = hp
    return out


def _check(args, names: list[str]) -> str | None:
    """What is wrong with the command line (``args.grid`` is parsed here), or None."""
    bad = [n for n in names if n not in OPTIMIZERS]
    if bad:
        return f"--optimizers: unknown {bad}; choose from {OPTIMIZERS}"
    for key in ("steps", "batch", "seeds", "eval_every", "dim", "depth"):
        if getattr(args, key) < 1:
            return f"--{key.replace('_', '-')} must be ≥ 1 (got {getattr(args, key)})"
    if device_problem(args.device):
        return f"--device {device_problem(args.device)}"
    if args.dim % 4:
        return f"--dim must be a multiple of the ViT's 4 heads (got {args.dim})"
    if args.extend < 0 or args.weight_decay < 0 or args.rest_lr <= 0 or not 0 < args.val < 1:
        return (f"--extend ≥ 0, --weight-decay ≥ 0, --rest-lr > 0 and --val in (0, 1) (got {args.extend}, "
                f"{args.weight_decay}, {args.rest_lr}, {args.val})")
    try:
        args.grid = [float(g) for g in (args.grid.split(",") if isinstance(args.grid, str) else args.grid)]
    except ValueError:
        return f"--grid must be comma-separated rates (got {args.grid!r})"
    problem = grid_problem(args.grid)
    return f"--grid {problem}" if problem else None


def parser() -> argparse.ArgumentParser:
    """``nestlearn optimizers``' command line; its defaults are the experiment's settings (the probes read them)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=[*DATASETS, "both"], default="both")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    p.add_argument("--steps", type=int, default=None, help="the budget of every run (default 2,000; --quick: 10)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seeds", type=int, default=None, help="reported seeds 0 … n−1 (default 3; --quick: 1)")
    p.add_argument("--grid", default=",".join(str(g) for g in GRID), help="a geometric grid of rates")
    p.add_argument("--extend", type=int, default=None,
                   help="rates added past an edge while the best is on it (default 5; --quick: 0)")
    p.add_argument("--val", type=float, default=0.1, help="share of the training images held out for selection")
    p.add_argument("--eval-every", type=int, default=100, help="steps between validations (the best weights are kept)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--rest-lr", type=float, default=1e-3, help="AdamW lr of the non-matrix parameters (Muon, M3)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: by default 10 steps, 1 seed, no grid extension; no sweeps, 600 training images")
    p.add_argument("--out", default="experiments/optimizers")
    p.add_argument("--device", default="cpu", help="train and score on this device (default cpu)")
    p.add_argument("--report", action="store_true",
                   help="only rewrite RESULTS.md from the runs already done (train nothing)")
    p.add_argument("--left", action="store_true",
                   help="print the first (dataset, optimizer) with a run still to do ('left: …') or 'nothing left'; "
                        "train and write nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("--report", "--left")]
    args.report = args.report or args.left  # a run not in the store raises NotRun instead of training
    # --extend 5 (3 until 2026-11-30: m3-ema's best rate was still on the grid's lower edge after 3 rates past it)
    for key, full, quick in (("steps", 2000, 10), ("seeds", 3, 1), ("extend", 5, 0)):  # a given value is kept
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    names = args.optimizers.split(",")
    problem = _check(args, names)
    if problem:
        raise SystemExit(f"nestlearn optimizers: {problem}")
    sets = list(DATASETS) if args.dataset == "both" else [args.dataset]
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Runs(out / ("runs-quick.jsonl" if args.quick else "runs.jsonl"), code_version()["code"])
    results: dict[str, dict] = {ds: {} for ds in sets}
    for ds in sets:
        data, size, channels = dataset(ds, args)
        for name in names:
            try:
                chosen = select(runs, ds, name, args, data, size, channels)
                seeds = [runs.get(ds, name, chosen["lr"], chosen["hp"], s, args, data, size, channels)
                         for s in range(args.seeds)]
            except NotRun:  # --report: this optimizer's selection or seeds are not finished
                if args.left:
                    print(f"left: {ds} {name}", flush=True)
                    return 0
                continue
            results[ds][name] = {**chosen, "runs": seeds}
            if not args.left:
                write_results(results, args, names, runs.rows)  # the tables so far, after every optimizer
    if args.left:
        print("nothing left", flush=True)
        return 0
    write_results(results, args, names, runs.rows)
    return 0


def _ms(xs):
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _claim(per: dict, done: list[str], names: list[str]) -> str:
    """The paper's claim (NL Fig. 11: M3 reaches the lowest training and test loss) against the finished
    optimizers' means: which is lowest on each, and whether the claim holds among them."""
    mean = {n: {k: statistics.mean(r[k] for r in per[n]["runs"]) for k in ("train_loss", "test_loss")} for n in done}
    low = {k: min(done, key=lambda n: mean[n][k]) for k in ("train_loss", "test_loss")}
    m3 = [n for n in done if n.startswith("m3")]
    if not m3:
        verdict = "no M3 run has finished yet"
    elif all(low[k] in m3 for k in low):
        verdict = "**holds** among the optimizers finished here"
    else:
        verdict = "**does not hold** among the optimizers finished here"
    rest = [n for n in names if n not in done]
    return (f"The paper's claim (Fig. 11: M3 reaches the lowest training and test loss) {verdict}: the lowest mean "
            f"final training loss is {low['train_loss']}'s ({mean[low['train_loss']]['train_loss']:.3f}), the lowest "
            f"mean test loss {low['test_loss']}'s ({mean[low['test_loss']]['test_loss']:.3f})"
            + (f"; not finished: {', '.join(rest)}" if rest else "") + ".")


def write_results(results, args, names, stored=()):
    """RESULTS.md, results.json and curves.png from the finished (dataset, optimizer) pairs in ``results``;
    a pair not finished yet is listed with its selection runs found in ``stored`` (the store's rows)."""
    out = Path(args.out)
    cmd = "nestlearn optimizers " + " ".join(args.argv)
    rows = [r for per in results.values() for v in per.values() for r in v["runs"]]
    commits = sorted({r.get("commit", "unrecorded") for r in rows})
    lines = ["# M3 vs AdamW vs Muon on a small ViT", "",
             f"Command: `{cmd.strip()}`  ",
             f"ViT dim {args.dim}, depth {args.depth}, 4 heads, patch 4; batch {args.batch}; {args.steps} steps per "
             f"run; {int(args.val * 100)}% of the training images held out for selection. Rate from the grid "
             f"{args.grid} (grown by up to {args.extend} past an edge), then Muon's momentum {list(MUON_MOMENTUM)} / "
             f"M3's α {list(M3_ALPHA)} and f {list(M3_SLOW_EVERY)}, each by the best validation loss (measured every "
             f"{args.eval_every} steps; the weights of the best one are kept and tested) at seed {SELECT_SEED}; "
             f"seeds 0–{args.seeds - 1} at the selected settings (mean ± std). AdamW at lr "
             f"{args.rest_lr:g} updates the non-matrix parameters for Muon and M3. CPU, float32. Commit "
             f"{', '.join(commits) or '–'}.", ""]
    for ds, per in results.items():
        done = [n for n in names if n in per]
        lines += [f"## {ds}", ""]
        if done:
            lines += ["| optimizer | lr | settings | final train loss | best validation loss | test loss | "
                      "test accuracy | CPU min / run |", "|---|---:|---|---:|---:|---:|---:|---:|"]
        for name in done:
            v = per[name]
            runs = v["runs"]
            tl, vl, te, acc = (_ms([r[k] for r in runs]) for k in ("train_loss", "val_loss", "test_loss", "test_acc"))
            cpu = [r["cpu_s"] / 60 for r in runs if r.get("cpu_s")]
            edge = " †" if v["lr"] in (v["grid"][0]["lr"], v["grid"][-1]["lr"]) else ""
            swept: dict[str, list] = {}  # each hyperparameter's values run in the sweep
            for s in v["sweep"]:
                swept.setdefault(s["key"], []).append(s["value"])
            on_edge = [k for k, vals in swept.items() if len(vals) > 1 and v["hp"][k] in (min(vals), max(vals))]
            settings = (json.dumps(v["hp"]) + (f" † {', '.join(on_edge)}" if on_edge else "")) if v["hp"] else "–"
            lines.append(f"| {name} | {v['lr']:g}{edge} | {settings} | "
                         f"{tl[0]:.3f} ± {tl[1]:.3f} | {vl[0]:.3f} ± {vl[1]:.3f} | {te[0]:.3f} ± {te[1]:.3f} | "
                         f"{100 * acc[0]:.1f} ± {100 * acc[1]:.1f}% | {f'{_ms(cpu)[0]:.1f}' if cpu else '–'} |")
        if done:  # the runs ran in different sessions beside different loads: their times rank nothing
            lines += ["", "CPU min / run: the process CPU time of a reported run (training and its validations), "
                      "mean over seeds. The runs ran in different sessions beside different loads, so this column "
                      "is what the runs cost, not a speed comparison; the optimizers' step times measured in one "
                      "run are in `benchmarks/results/optimizer_step.md`."]
        if len(done) > 1:
            lines += ["", _claim(per, done, names)]
        if done:
            lines += ["", "Selection (best validation loss at seed 100; † = the selected rate is on an edge of the "
                      "grown grid, or in the settings column the hyperparameters selected on an edge of their "
                      "grids, which do not grow): "
                      + "; ".join(f"{n}: " + ", ".join(f"{g['lr']:g} → {g['val_loss']:.3f}" for g in per[n]["grid"])
                                  + "".join(f"; {s['key']} {s['value']} → {s['val_loss']:.3f}" for s in per[n]["sweep"])
                                  for n in done), ""]
        idle = []
        for name in (n for n in names if n not in per):
            sel = [r for r in stored if (r["dataset"], r["optimizer"], r["seed"]) == (ds, name, SELECT_SEED)]
            if not sel:
                idle.append(name)
                continue
            found = ", ".join(f"lr {r['lr']:g}{' ' + json.dumps(r['hp']) if r['hp'] else ''} → {r['val_loss']:.3f}"
                              for r in sel)
            lines += [f"Not finished: {name}. Its selection runs in the store so far (seed {SELECT_SEED}, validation "
                      f"loss; rows of other settings or code versions included): {found}.", ""]
        if idle:
            lines += [f"No finished run yet: {', '.join(idle)}.", ""]
    cpu = sum(r.get("cpu_s", 0.0) for r in {id(r): r for r in rows}.values())
    lines += [f"CPU time of the reported runs: {cpu / 3600:.2f} h (selection runs in runs.jsonl).", "",
              "![training curves](curves.png)", ""]
    write_atomic(out / ("RESULTS-quick.md" if args.quick else "RESULTS.md"), "\n".join(lines))
    slim = {ds: {n: {**{k: v[k] for k in ("lr", "hp", "grid", "sweep")},
                     "runs": [{k: r[k] for k in r if k != "curve"} for r in v["runs"]]} for n, v in per.items()}
            for ds, per in results.items()}
    write_atomic(out / ("results-quick.json" if args.quick else "results.json"), json.dumps(slim, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plot]'): no plot written")
        return
    shown = {ds: per for ds, per in results.items() if per}
    if not shown:
        return
    fig, axes = plt.subplots(1, len(shown), figsize=(6 * len(shown), 4), squeeze=False)
    for ax, (ds, per) in zip(axes[0], shown.items(), strict=True):
        for name in (n for n in names if n in per):
            curves = torch.tensor([r["curve"] for r in per[name]["runs"] if len(r["curve"]) == args.steps])
            if len(curves) == 0:
                continue
            k = max(1, args.steps // 50)
            smooth = curves.mean(0).unfold(0, k, k).mean(-1)
            ax.plot(torch.arange(len(smooth)) * k, smooth, label=f"{name} (lr {per[name]['lr']:g})")
        ax.set_title(ds)
        ax.set_xlabel("step")
        ax.set_ylabel("train loss (mean over seeds)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / ("curves-quick.png" if args.quick else "curves.png"), dpi=100)
    plt.close(fig)  # the suite rewrites the plot after every optimizer: an open figure each time would pile up


if __name__ == "__main__":
    sys.exit(main())
