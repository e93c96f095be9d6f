"""Synthetic experiments (NL Tables 4 and 5): formal-language recognition, MAD and MQAR, for several
block kinds at equal parameter and step budgets over several seeds.

A recipe is a YAML file (``experiments/synthetic/*.yaml``)::

    family: formal | mad | mqar
    tasks: {name: {generator arguments}}     # formal: {parity: {}, ...}; mqar: {pairs4: {n_pairs: 4, ...}}
    models: [hope, transformer, titans, delta]   # block kinds, or names of variants
    variants: {name: {block: hope, model: {dotted overrides}, lr: 1e-3, steps: 600}}   # optional
    seeds: [0, 1, 2]
    steps, batch_size, lr, weight_decay, warmup, eval_batches, eval_batch_size
    model: {ModelConfig fields shared by every block kind}
    quick: {any of the keys above, for --quick}

Every run (task × model × seed) trains from scratch with AdamW (cosine schedule after a linear warm-up,
clipping at 1) and is appended to ``<family>.jsonl`` in the output folder as soon as it ends, so an
interrupted suite resumes where it stopped. Each row records the commit, the version of the library's
code (a hash of ``nestlearn/`` as the run saw it) and its exact settings; a suite resumes only the runs
of the current code version, and a table refuses rows of several code versions. Non-finite logits at
evaluation score as wrong and are listed. Non-HOPE models get the SwiGLU width whose parameter count is
closest to HOPE's for the same task (equal parameter budgets). ``RESULTS.md`` is written from
``results.jsonl`` with the paper's numbers beside ours.

Formal languages are trained and scored as next-symbol-set prediction (``nestlearn.data.formal``):
a sigmoid per symbol, binary cross-entropy on the string's positions, and a string is recognised when
every position's predicted set equals the true one. The other tasks use next-token cross-entropy on the
answer positions, scored as the accuracy of the argmax there.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import shutil
import statistics
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..config import build, read_yaml
from ..data import formal
from ..data.registry import TASKS, task_batch, task_vocab
from ..models import CausalLM, apply_overrides, from_dict
from ..models.autoencoder import LastTokenAutoencoder
from ..train import OptimConfig, RunConfig, Trainer, TrainSettings
from ..train.config import STOP_REFS, device_problem
from ..train.loop import replay_stop
from .protocol import (
    CHECKPOINT_EVERY,
    PARTIAL,
    RunClock,
    append_row,
    code_version,
    grid_problem,
    locked,
    partial_folder,
    partial_path,
    rate,
    read_rows,
    same_behaviour,
    select_rate,
    write_atomic,
)

FAMILIES = ("formal", "mad", "mqar")
MODELS = ("hope", "transformer", "titans", "delta")

# generator, vocabulary size from its arguments
# the paper's numbers (docs: ../shared/paper/NOTES.md, NL Tables 4 and 5)
PAPER_MAD = {  # Compression, ICR, Fuzzy ICR, Selective copying, Memorization
    "transformer": (49.4, 100, 47.9, 96.2, 83.7),
    "titans": (49.8, 100, 50.0, 99.4, 83.4),
    "hope": (51.2, 100, 52.1, 99.7, 85.2),
}
PAPER_FORMAL = {  # Bin0/Bin1 for parity, (aa)*, (abab)*, aⁿbⁿ, aⁿbⁿcⁿ, Shuffle-2
    "transformer": ("46.4/0.0", "0.0/0.0", "0.0/0.0", "100/100", "100/100", "100/100"),
    "delta": ("98.2/10.1", "0.0/0.0", "0.0/0.0", "100/100", "100/100", "100/100"),  # DeltaNet row
    "hope": ("100/100",) * 6,
}
FORMAL_BINS = ("bin0", "bin1", "bin2")
# the settings a row must share with the recipe to count (besides its rate, and its code through the fingerprint)
PROTOCOL = ("steps", "batch_size", "weight_decay", "warmup", "max_len", "eval_batches", "eval_batch_size",
            "eval_every", "patience", "min_delta", "solved_patience", "val_batches", "val_lengths", "min_steps",
            "patience_from")
# what a row written before a PROTOCOL key existed ran with (the key's default, which was then the only behaviour)
PROTOCOL_SINCE = {"val_lengths": None, "min_steps": 0, "patience_from": "best"}
STOPPING = ("patience", "min_delta", "solved_patience", "min_steps", "patience_from")  # the early-stopping rule's keys
# keys left out of a run in progress's identity (``resume_dir``): a run checkpointed under another early-stopping
# rule resumes under this one, its counters rebuilt from its validations so far (``Trainer.load``)
RESUME_ACROSS = ("patience_from",)
_MAD_ORDER = ("compression", "in_context_recall", "fuzzy_in_context_recall", "selective_copying", "memorization")
# (the paper's Table 4 has no noisy-recall column: that column is ours alone)


@dataclass
class Recipe:
    family: str
    tasks: dict[str, dict] = field(default_factory=dict)
    models: list[str] = field(default_factory=lambda: list(MODELS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup: int = 30
    eval_batches: int = 4
    eval_batch_size: int = 64
    max_len: int = 50  # formal: training / Bin0 lengths [1, max_len], Bin1 (max_len, 2·max_len]
    # the protocol (experiments/synthetic/README.md): validation, early stopping, learning-rate selection
    eval_every: int = 0  # validate every this many steps (0: never; the run takes its last weights)
    patience: int = 0  # stop after this many validations without a better validation loss, or at 100%
    #                    validation accuracy (0: never stop early)
    min_delta: float = 0.01  # an improvement is a validation loss below (1 − min_delta) × the reference:
    patience_from: str = "last_gain"  # the loss of the last improvement, or "best": the lowest loss so far (the
    #                                   rule until 2026-12-01 22:45 UTC; train.loop.early_stop)
    min_steps: int = 0  # a flat validation loss stops no run before this step (a solved one still stops): a
    #                     model on a plateau before a sudden gain (the Transformer's recall) is not cut off there
    solved_patience: int = 0  # stop after this many validations in a row at 100% accuracy (0: they count as
    #                           patience)
    val_batches: int = 2  # validation batches of eval_batch_size (seeds disjoint from training and test)
    # formal: [lo, hi], validation lengths held out of training (train on [1, lo − 1], validate on [lo, hi] ⊆
    # [1, max_len]), so that the selection sees some length generalisation; None: both on [1, max_len]
    val_lengths: list[int] | None = None
    lr_grid: list[float] = field(default_factory=list)  # geometric grid, the same for every model ([]: use lr)
    lr_extend: int = 2  # points added beyond an edge of lr_grid while the best rate sits on that edge
    select_seed: int = 100  # the seed of the selection runs (not one of the reported seeds)
    model: dict[str, Any] = field(default_factory=dict)
    out: str = "results"  # the output folder, relative to the recipe's folder (--out overrides it)
    variants: dict[str, dict] = field(default_factory=dict)
    order: str = "task"  # "task": every model on a task before the next task; "model": every task per model
    device: str = "cpu"  # where the runs train and are scored ("cuda", "cuda:1", …; --device overrides it)
    quick: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES} (got {self.family!r})")
        if not self.tasks:
            raise ValueError("tasks is empty: name at least one task")
        for name, args in self.tasks.items():
            if not isinstance(args, dict):
                raise ValueError(f"tasks.{name} must be a mapping of generator arguments (got {args!r})")
            if self.family == "formal" and name not in formal.LANGUAGES:
                raise ValueError(f"unknown formal language {name!r}; choose from {formal.LANGUAGES}")
            if self.family == "mad" and getattr(TASKS.get(name), "family", None) != "mad":
                raise ValueError(f"unknown MAD task {name!r}; choose from "
                                 f"{tuple(n for n, t in TASKS.items() if t.family == 'mad')}")
            if self.family == "mqar" and "n_pairs" not in args:
                raise ValueError(f"tasks.{name} needs n_pairs (an MQAR task is a number of key–value pairs)")
        for name, spec in self.variants.items():
            bad = set(spec) - {"block", "model", "lr", "steps"}
            if bad or spec.get("block") not in MODELS:
                raise ValueError(f"variants.{name} needs block in {MODELS} and may set model, lr, steps "
                                 f"(got {sorted(spec)})")
        for m in self.models:
            if m not in MODELS and m not in self.variants:
                raise ValueError(f"unknown model {m!r}; choose from {MODELS} or a name in variants")
        for name in ("steps", "batch_size", "eval_batches", "eval_batch_size", "max_len", "val_batches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int (got {getattr(self, name)!r})")
        for name in ("eval_every", "patience", "lr_extend", "solved_patience", "min_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an int ≥ 0 (got {getattr(self, name)!r})")
        if self.val_lengths is not None:
            v = self.val_lengths
            if self.family != "formal":
                raise ValueError("val_lengths holds lengths out of training: formal languages only (got family "
                                 f"{self.family!r})")
            if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v)
                    and 2 <= v[0] <= v[1] <= self.max_len):
                raise ValueError(f"val_lengths must be [lo, hi] with 2 ≤ lo ≤ hi ≤ max_len = {self.max_len}, so "
                                 f"that training keeps the lengths [1, lo − 1] (got {v!r})")
            for name in self.tasks:  # e.g. (abab)* has no string of a length in [49, 50]
                try:
                    formal.sample_string(name, tuple(v), random.Random(0))
                except ValueError as e:
                    raise ValueError(f"val_lengths {v} holds no string of {name} ({e}): widen it") from None
        if device_problem(self.device):
            raise ValueError(f"device: {device_problem(self.device)}")
        if self.order not in ("task", "model"):
            raise ValueError(f"order must be 'task' or 'model' (got {self.order!r})")
        if self.patience and not self.eval_every:
            raise ValueError("patience needs eval_every > 0: early stopping watches the validation loss")
        if not 0 <= self.min_delta < 1:
            raise ValueError(f"min_delta must be in [0, 1) (got {self.min_delta!r})")
        if self.patience_from not in STOP_REFS:
            raise ValueError(f"patience_from must be one of {STOP_REFS} (got {self.patience_from!r})")
        if self.min_steps > self.steps:
            raise ValueError(f"min_steps must be at most steps = {self.steps} (got {self.min_steps})")
        if self.lr_grid:
            if problem := grid_problem(self.lr_grid):
                raise ValueError(f"lr_grid {problem}")
            if any("lr" in spec for spec in self.variants.values()):
                raise ValueError("a variant's lr and lr_grid exclude each other: with a grid every model's rate "
                                 "is selected")
        if not self.seeds:
            raise ValueError("seeds is empty")
        if self.lr_grid and not self.eval_every:
            raise ValueError("lr_grid needs eval_every > 0: the rate is selected on the validation loss")
        if self.lr_grid and self.select_seed in self.seeds:
            raise ValueError(f"select_seed ({self.select_seed}) is one of the reported seeds {self.seeds}: the "
                             "selection runs must not be in the mean")


def load_recipe(path: str | Path, quick: bool = False) -> Recipe:
    """The recipe in a YAML file (``nestlearn.config``: unknown keys named); ``quick`` applies its
    ``quick`` section on top (``tasks`` there may be a list of task names: a subset)."""
    path = Path(path)
    data = read_yaml(path, "recipe")
    if quick:
        over = data.get("quick") or {}
        if "quick" in over:
            raise ValueError(f"{path}: unknown key quick.quick")
        if isinstance(over.get("tasks"), list):  # a subset of the full tasks, by name
            over = {**over, "tasks": {name: (data.get("tasks") or {})[name] for name in over["tasks"]}}
        data = {**data, **over}
        if "steps" in over:  # a quick run is short for every variant
            data["variants"] = {n: {k: v for k, v in spec.items() if k != "steps"}
                                for n, spec in (data.get("variants") or {}).items()}
    try:
        recipe = build(Recipe, data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    recipe.validate()
    return recipe


# ---- tasks -------------------------------------------------------------------------------------

def _generator(recipe: Recipe, task: str) -> str:
    return "mqar" if recipe.family == "mqar" else task  # MQAR tasks are named by their settings


def vocab_size(recipe: Recipe, task: str) -> int:
    return task_vocab(_generator(recipe, task), recipe.tasks[task])


def make_batch(recipe: Recipe, task: str, batch: int, seed: int, split: str = "train"):
    """Formal: ``(ids, multi-hot targets, mask)``; otherwise ``(ids, targets)`` with −100 off the answers."""
    if recipe.family == "formal":
        held = recipe.val_lengths
        if held and split in ("train", "val"):  # the validation lengths held out of training
            return task_batch(task, batch, seed, lengths=(1, held[0] - 1) if split == "train" else tuple(held))
        bins = formal.length_bins(recipe.max_len)
        return task_batch(task, batch, seed, lengths=bins["bin0" if split in ("train", "val") else split])
    return task_batch(_generator(recipe, task), batch, seed, **recipe.tasks[task])




def _train_seed(seed: int, step: int) -> int:
    return 1_000_003 * (seed + 1) + step


def _eval_seed(i: int) -> int:
    return 987_654_321 + i  # disjoint from every training seed used here


def _val_seed(i: int) -> int:
    return 555_555_555 + i  # disjoint from the training and test seeds


# ---- models ------------------------------------------------------------------------------------

def model_config(recipe: Recipe, task: str, block: str, mlp_mult: float | None = None,
                 overrides: dict | None = None):
    data = {**recipe.model, "block": block, "vocab_size": vocab_size(recipe, task)}
    if mlp_mult is not None:
        data["mlp_mult"] = mlp_mult
    cfg = from_dict(data)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    cfg.validate()
    return cfg


def count_params(cfg) -> int:
    with torch.device("meta"):
        return CausalLM(cfg).num_parameters()


def matched_mlp_mult(recipe: Recipe, task: str, block: str, target: int) -> float:
    """The SwiGLU width (as a multiple of dim) whose model is closest to ``target`` parameters."""
    dim = from_dict(recipe.model).dim
    c1 = count_params(model_config(recipe, task, block, 1.0))
    c2 = count_params(model_config(recipe, task, block, 2.0))  # linear in the width
    hidden = max(1, round(dim * (1.0 + (target - c1) / (c2 - c1))))
    return hidden / dim


# ---- one run -----------------------------------------------------------------------------------

def stop_step(curve: list, recipe: Recipe) -> int | None:
    """The step at which the recipe's early-stopping rule (:func:`~nestlearn.train.loop.early_stop`, the one the
    Trainer runs) stops a run whose validations gave ``curve`` (rows ``[step, loss, accuracy %]``), or None when
    it runs to its last validation."""
    return replay_stop([{"step": step, "val_loss": loss, "val_acc": acc / 100.0} for step, loss, acc in curve],
                       recipe)[3]


def _formal_loss(logits, targets, mask):
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none").sum(-1)
    return (loss * mask).sum() / mask.sum()


def _score(model: CausalLM, recipe: Recipe, task: str, split: str, seeds: list[int]) -> tuple[float, float, int]:
    """``(accuracy %, mean loss, sequences with non-finite logits)`` over one batch per seed. A sequence
    whose logits are not finite at a scored position counts as wrong."""
    good = total = nonfinite = 0
    losses = []
    for seed in seeds:
        batch = tuple(t.to(recipe.device) for t in make_batch(recipe, task, recipe.eval_batch_size, seed, split))
        if recipe.family == "formal":
            ids, targets, mask = batch
            logits, _, _ = model(ids)
            bad = (~torch.isfinite(logits).all(-1) & mask).any(-1)
            wrong = ((logits > 0).float() != targets).any(-1) & mask
            good += int((~(wrong.any(-1) | bad)).sum())
            total += ids.shape[0]
            nonfinite += int(bad.sum())
            losses.append(float(_formal_loss(logits, targets, mask)))
        else:
            ids, targets = batch
            logits, _, _ = model(ids)
            sel = targets != -100
            finite = torch.isfinite(logits).all(-1)
            good += int(((logits.argmax(-1) == targets) & finite)[sel].sum())
            total += int(sel.sum())
            nonfinite += int((~finite & sel).any(-1).sum())
            losses.append(float(F.cross_entropy(logits[sel].float(), targets[sel])))
    loss = statistics.mean(losses)
    return 100.0 * good / max(total, 1), (loss if math.isfinite(loss) else float("inf")), nonfinite


@torch.no_grad()
def evaluate(model: CausalLM, recipe: Recipe, task: str) -> dict[str, float]:
    """Test accuracy per split (formal: Bin0, Bin1, Bin2; otherwise ``acc``) on ``eval_batches`` held-out
    batches; ``nonfinite`` counts the sequences whose logits were not finite (scored as wrong), and
    ``nonfinite_by_split`` (formal, when there are any) says in which bins."""
    model.eval()
    out: dict = {}
    by_split = {}
    splits = FORMAL_BINS if recipe.family == "formal" else ("acc",)
    for j, split in enumerate(splits):
        seeds = [_eval_seed(i) + 10_000 * j for i in range(recipe.eval_batches)]
        out[split], _, by_split[split] = _score(model, recipe, task, split if recipe.family == "formal" else "eval",
                                                seeds)
    out["nonfinite"] = sum(by_split.values())
    if out["nonfinite"] and len(splits) > 1:
        out["nonfinite_by_split"] = by_split
    model.train()
    return out


@torch.no_grad()
def validate(model: CausalLM, recipe: Recipe, task: str) -> tuple[float, float]:
    """``(validation loss, validation accuracy %)`` on ``val_batches`` batches drawn like the training data
    (formal: the training lengths) from seeds disjoint from training and test."""
    model.eval()
    acc, loss, _ = _score(model, recipe, task, "val", [_val_seed(i) for i in range(recipe.val_batches)])
    model.train()
    return loss, acc


def run_one(recipe: Recipe, task: str, block: str, seed: int, mlp_mult: float | None = None,
            log=print, name: str | None = None, overrides: dict | None = None,
            trace: list | None = None, resume_dir: Path | None = None, keep: Path | None = None) -> dict[str, Any]:
    """Train one model from scratch (``nestlearn.train.Trainer``) and evaluate it; ``name`` labels a variant
    of ``block``.

    With ``eval_every`` the run validates every that many steps (the ``curve``), keeps the weights of the
    best validation loss, and with ``patience`` stops once that many validations in a row have not improved
    it by ``min_delta`` (relative); the test metrics are those of the kept weights. ``trace`` (a list)
    receives every step's training loss.

    ``resume_dir``: the run checkpoints there every ``CHECKPOINT_EVERY`` steps (the latest two kept) and,
    when it holds a checkpoint, continues from it: an interrupted run ends as the uninterrupted one would
    (the data of step s depends only on (seed, s); the early-stopping state travels with the checkpoint).
    ``cpu_s``, ``wall_s`` and ``train_s`` then add up every part, and ``resumed_at`` lists the steps it
    resumed from.

    ``keep``: the weights the run was scored with (those of the best validation loss) are written there
    (atomically), with the row's identity, for probes after the run (:func:`load_weights`); the row records
    the path as ``weights``."""
    cfg = model_config(recipe, task, block, mlp_mult, overrides)
    name = name or block
    torch.manual_seed(seed)
    model = _build(recipe, task, cfg)
    run = RunConfig(model=cfg, optim=OptimConfig(
        name="adamw", lr=recipe.lr, weight_decay=recipe.weight_decay, betas=(0.9, 0.98), schedule="cosine",
        warmup=recipe.warmup, min_lr_ratio=0.1, clip=1.0), train=TrainSettings(
        steps=recipe.steps, batch_size=recipe.batch_size, seed=seed, out_dir=str(resume_dir or ""), progress=False,
        device=recipe.device, log_every=max(1, recipe.steps // 5), eval_every=recipe.eval_every or recipe.steps + 1,
        ckpt_every=CHECKPOINT_EVERY if resume_dir else recipe.steps, max_bad_steps=10,
        on_nonfinite="stop", patience=recipe.patience, min_delta=recipe.min_delta,
        solved_patience=recipe.solved_patience, min_steps=recipe.min_steps, patience_from=recipe.patience_from,
        keep_best=bool(recipe.eval_every)))

    def loss(ids, targets, mask=None):
        ids, targets = ids.to(recipe.device), targets.to(recipe.device)
        mask = None if mask is None else mask.to(recipe.device)
        if mask is None:
            return model(ids, targets=targets)[1]
        return _formal_loss(model(ids)[0], targets, mask)

    def validation() -> dict:
        val_loss, val_acc = validate(model, recipe, task)
        return {"val_loss": val_loss, "val_acc": val_acc / 100}

    def progress(row: dict) -> None:
        if log and "loss" in row and row["step"] % max(1, recipe.steps // 5) == 0:
            log(f"  {task} {name} seed {seed} step {row['step']}/{recipe.steps} loss {row['loss']:.4f}")

    batches = types.SimpleNamespace(train=lambda step, micro: make_batch(recipe, task, recipe.batch_size,
                                                                         _train_seed(seed, step)))
    clock = RunClock(resume_dir)
    trainer = Trainer(run, model=model, batches=batches, loss=loss, evaluate=validation if recipe.eval_every else
                      (lambda: {}), log=progress, on_save=clock.on_save if resume_dir else None)
    if clock.resume(trainer) and log:
        log(f"  {task} {name} seed {seed}: resumed at step {trainer.step} ({resume_dir})")
    trainer.run()
    clock.trained()
    losses = trainer.losses
    if trace is not None:
        trace.extend(losses)
    if log and trainer.diverged_at is not None:
        log(f"  {task} {name} seed {seed}: non-finite loss 10 steps in a row, last at step {trainer.diverged_at}")
    if log and trainer.stopped_at is not None:
        log(f"  {task} {name} seed {seed}: {trainer.stop_reason}, stopped at step {trainer.stopped_at}")
    metrics = evaluate(model, recipe, task)
    settings = {k: getattr(recipe, k) for k in (*PROTOCOL, "lr", "device")}
    curve = [[h["step"], h["val_loss"], 100 * h["val_acc"]] for h in trainer.history if "val_loss" in h]
    val = {}
    if curve:
        at = next(c for c in curve if c[0] == trainer.best_step) if trainer.best_step else curve[-1]
        val = {"val_loss": at[1], "val_acc": at[2], "best_step": trainer.best_step, "curve": curve}
    finite = [x for x in losses if math.isfinite(x)]
    row = {"task": task, "model": name, "block": block, "seed": seed, "params": model.num_parameters(),
           **code_version(), "config": dataclasses.asdict(cfg), "settings": settings,
           "mlp_mult": cfg.mlp_mult, "steps": recipe.steps, "final_loss": finite[-1] if finite else float("nan"),
           "skipped": trainer.bad_total, "diverged_at": trainer.diverged_at, "lr": recipe.lr,
           "stopped_at": trainer.stopped_at, "steps_run": trainer.step,
           **clock.totals(), "threads": torch.get_num_threads(), **val, **metrics}
    if keep is not None:
        save_weights(keep, model, recipe, row)
        row["weights"] = str(keep)
    return row


def _build(recipe: Recipe, task: str, cfg) -> torch.nn.Module:
    """The model a run of ``task`` trains: a ``CausalLM``, wrapped for MAD's compression (last-token readout)."""
    model = CausalLM(cfg)
    if recipe.family != "formal" and TASKS[_generator(recipe, task)].readout == "last":  # MAD compression
        model = LastTokenAutoencoder(model)
    return model


WEIGHTS_KEYS = ("task", "model", "block", "seed", "lr", "code", "commit", "config", "best_step", "steps_run")


def save_weights(path: Path, model: torch.nn.Module, recipe: Recipe, row: dict) -> None:
    """Write a finished run's weights with what identifies it (``WEIGHTS_KEYS`` of its row, the recipe) through
    a temporary file and a rename, so that a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp")
    torch.save({"state": model.state_dict(), "row": {k: row.get(k) for k in WEIGHTS_KEYS},
                "recipe": dataclasses.asdict(recipe)}, tmp)
    tmp.replace(path)


def load_weights(path: str | Path, map_location: str = "cpu") -> tuple[torch.nn.Module, Recipe, dict]:
    """The model a suite run kept (``nestlearn synthetic … --keep-weights DIR``), in eval mode, with the
    recipe it ran under and its row's identity (task, model, seed, rate, code version, best step)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no kept weights at {path} (a suite keeps them with --keep-weights DIR)")
    saved = torch.load(path, map_location=map_location, weights_only=True)  # tensors and plain values only
    recipe = Recipe(**saved["recipe"])
    row = saved["row"]
    model = _build(recipe, row["task"], from_dict(row["config"]))
    model.load_state_dict(saved["state"])
    return model.eval(), recipe, row


# ---- the suite ---------------------------------------------------------------------------------

def fingerprint(recipe: Recipe, task: str, block: str, mlp_mult: float | None = None,
                overrides: dict | None = None) -> list[float]:
    """What the code computes for this model and task, in numbers: a 3-step run (batch 4) through
    :func:`run_one` — its training losses, validation curve and test metrics. Two code versions whose
    fingerprints agree (:func:`same_behaviour`) compute the same runs, so their rows may share a table (a
    speed-up that keeps the numbers does not make the finished runs stale)."""
    tiny = dataclasses.replace(recipe, steps=3, warmup=2, batch_size=4, eval_batches=1, eval_batch_size=4,
                               val_batches=1, eval_every=2, patience=0, lr=3e-3)
    trace: list[float] = []
    r = run_one(tiny, task, block, 0, mlp_mult, log=None, overrides=overrides, trace=trace)
    curve = [v for c in r.get("curve", []) for v in c[1:]]
    return trace + curve + [float(r[k]) for k in ("acc", *FORMAL_BINS) if k in r]


class WorkLeft(Exception):
    """``dry``: the suite reached a run that is not in the store yet (the message names it)."""


def runs_left(recipe: Recipe, out: str | Path, only_models: list[str] | None = None,
              only_tasks: list[str] | None = None) -> str | None:
    """The next run the suite (or the part of it named) would start, as ``"task model seed S lr R"`` (a selection
    run's seed is ``select_seed``), or None when every run it needs is stored: what ``--left`` prints. It trains
    nothing and writes nothing; rows of another code version count as ``run_suite`` counts them (fingerprints)."""
    try:
        run_suite(recipe, out, log=None, only_models=only_models, only_tasks=only_tasks, dry=True)
    except WorkLeft as e:
        return str(e)
    return None


def run_suite(recipe: Recipe, out: str | Path, command: str = "", log=print, report_only: bool = False,
              only_models: list[str] | None = None, only_tasks: list[str] | None = None,
              dry: bool = False, keep_weights: str | Path | None = None) -> list[dict]:
    """Run every (task, model, seed) not yet in ``out``; ``report_only`` just rewrites the tables.

    With ``lr_grid``, each (task, model) first trains once per grid rate at ``select_seed`` (the selection
    runs) and takes the rate of the lowest validation loss; while that rate is on an edge of the grid the
    grid grows by one rate past that edge (at most ``lr_extend`` times per edge). The reported seeds then
    train at the selected rate. A row of another code version is reused when its fingerprint equals this
    code's (:func:`fingerprint`).

    ``only_models`` / ``only_tasks`` run a part of the suite, so that several processes (one per core or per
    machine with a shared folder) can share one: give them disjoint parts. Rows are appended under a file
    lock, and every process re-reads the file after each of its runs, so the tables hold every process's rows.

    ``dry`` trains and writes nothing: the first run not in the store raises ``WorkLeft`` (``runs_left``).

    ``keep_weights``: each run this call finishes keeps the weights it was scored with under
    ``keep_weights/<family>/<task>-<model>-<phase>-seed<S>-lr<R>-<code version>.pt`` (:func:`load_weights`)."""
    for name, only, known in (("models", only_models, recipe.models), ("tasks", only_tasks, list(recipe.tasks))):
        unknown = sorted(set(only or ()) - set(known))
        if unknown:
            raise ValueError(f"--{name} {unknown} not in the recipe's {name} {known}")
    out = Path(out)
    if not dry:
        out.mkdir(parents=True, exist_ok=True)
    path = out / f"{recipe.family}.jsonl"
    ctx = _Suite(recipe, read_rows(path), partial=out / PARTIAL, dry=dry,
                 keep=None if keep_weights is None else Path(keep_weights))
    pairs = [(t, m) for t in recipe.tasks for m in recipe.models]
    if recipe.order == "model":
        pairs = [(t, m) for m in recipe.models for t in recipe.tasks]
    pairs = [(t, m) for t, m in pairs if (only_tasks is None or t in only_tasks)
             and (only_models is None or m in only_models)]
    report = functools.partial(_report_locked, recipe, ctx, out, command, path)  # the tables from every row so far
    if dry:
        def report() -> list[dict]:  # a dry run writes no table
            return []
    for task, name in ([] if report_only else pairs):
        lr = _select(ctx, task, name, path, log, report) if recipe.lr_grid else None
        for seed in recipe.seeds:
            sub = ctx.settings(name, lr)
            if ctx.find(task, name, "final", seed, sub) is not None:
                continue
            r = ctx.run(sub, task, name, seed, log)
            if r["diverged_at"] is not None:  # one retry at half the learning rate, recorded as such
                first = r
                r = ctx.run(dataclasses.replace(sub, lr=sub.lr / 2), task, name, seed, log)
                r["first_try_diverged_at"] = first["diverged_at"]
                r["lr"] = sub.lr  # the rate the run was asked for; settings.lr and retry_lr: what ran
                r["retry_lr"] = sub.lr / 2
                r["wall_s"] += first["wall_s"]
                r["cpu_s"] += first["cpu_s"]
            _append(path, r, ctx)
            if log:
                log(f"{task} {name} seed {seed}: " + ", ".join(
                    f"{k} {r[k]:.1f}" for k in ("acc", *FORMAL_BINS) if k in r) + f" ({r['wall_s']:.0f} s)")
            report()  # after every run
    return report()


def _report_locked(recipe: Recipe, ctx: _Suite, out: Path, command: str, path: Path) -> list[dict]:
    """The tables from every row in the store, written by one process at a time (processes may share a suite)."""
    with locked(path):
        ctx.done[:] = read_rows(path)
        return _report(recipe, ctx, out, command)


class _Suite:
    """The suite's finished rows and what it knows of the current code (its version and fingerprints)."""

    def __init__(self, recipe: Recipe, done: list[dict], partial: Path | None = None, dry: bool = False,
                 keep: Path | None = None):
        self.recipe, self.done, self.version = recipe, done, code_version()["code"]
        self.keep = keep  # where finished runs' weights are kept (None: not kept)
        self.dry = dry  # run() refuses: WorkLeft names the run
        self._mult: dict[tuple[str, str], float | None] = {}
        self._fp: dict[tuple[str, str], list[float]] = {}
        self.partial = partial  # where runs in progress checkpoint (None: runs are not resumable)
        self._finished: list[Path] = []  # checkpoints of runs whose rows are about to be stored

    def spec(self, name: str) -> dict:
        return self.recipe.variants.get(name, {"block": name})

    def settings(self, name: str, lr: float | None) -> Recipe:
        spec = self.spec(name)
        return dataclasses.replace(self.recipe, lr=lr if lr is not None else spec.get("lr", self.recipe.lr),
                                   steps=spec.get("steps", self.recipe.steps))

    def mult(self, task: str, name: str) -> float | None:
        if (task, name) not in self._mult:
            block = self.spec(name)["block"]
            hope = count_params(model_config(self.recipe, task, "hope"))
            self._mult[task, name] = (None if block in ("hope", "hope_attention")
                                      else matched_mlp_mult(self.recipe, task, block, hope))
        return self._mult[task, name]

    def fingerprint(self, task: str, name: str) -> list[float]:
        if (task, name) not in self._fp:
            spec = self.spec(name)
            self._fp[task, name] = fingerprint(self.recipe, task, spec["block"], self.mult(task, name),
                                               spec.get("model"))
        return self._fp[task, name]

    def current(self, r: dict) -> bool:
        """Whether a row counts for the current code: the same code version, or the same fingerprint."""
        if r.get("code") == self.version:
            return True
        if r.get("fingerprint") is None or r["task"] not in self.recipe.tasks or r["model"] not in self.recipe.models:
            return False
        return same_behaviour(r["fingerprint"], self.fingerprint(r["task"], r["model"]))

    def same_protocol(self, r: dict, sub: Recipe | None = None) -> bool:
        """Whether row ``r`` ran as it would under the settings ``sub`` (default: its model's in this recipe): the
        same value of every key of ``PROTOCOL`` (a changed budget or batch makes the old rows stop counting),
        except that a row whose early-stopping settings differ counts when the rule of ``sub``, replayed on the
        row's validation curve, stops where the row stopped (the same run: e.g. one that never reached 100%
        validation accuracy under another ``solved_patience``, or one stopped flat past a new ``min_steps``)."""
        sub = sub or self.settings(r["model"], None)
        ran = r.get("settings", {})
        absent = object()  # a key the row lacks matches nothing, unless the row predates it (PROTOCOL_SINCE)

        def same(k: str) -> bool:
            return ran.get(k, PROTOCOL_SINCE.get(k, absent)) == getattr(sub, k)

        if not all(same(k) for k in PROTOCOL if k not in STOPPING):
            return False
        if all(same(k) for k in STOPPING):
            return True
        return bool(r.get("curve")) and stop_step(r["curve"], sub) == r.get("stopped_at")

    def find(self, task: str, name: str, phase: str, seed: int, sub: Recipe) -> dict | None:
        for r in self.done:
            if (r["task"], r["model"], r.get("phase", "final"), r["seed"]) == (task, name, phase, seed) \
                    and rate(r["lr"]) == rate(sub.lr) and self.same_protocol(r, sub) and self.current(r):
                return r
        return None

    def resume_dir(self, sub: Recipe, task: str, name: str, seed: int, phase: str, log) -> Path | None:
        """Where this run checkpoints while in progress (``protocol.partial_folder``), or None."""
        if self.partial is None:
            return None
        return partial_folder(self.partial, self._label(sub, task, name, seed, phase), self._what(sub, task, name),
                              self.version, self.fingerprint(task, name), log)

    def _label(self, sub: Recipe, task: str, name: str, seed: int, phase: str) -> str:
        return f"{task}-{name}-{phase}-seed{seed}-lr{rate(sub.lr):g}"

    def _what(self, sub: Recipe, task: str, name: str) -> dict:
        """Everything that decides a run (the identity of its folder in progress)."""
        return {"family": self.recipe.family, "settings": {k: getattr(sub, k) for k in (*PROTOCOL, "lr", "device")
                                                           if k not in RESUME_ACROSS},
                "spec": self.spec(name), "recipe_model": self.recipe.model, "task_args": self.recipe.tasks[task]}

    def in_progress(self, sub: Recipe, task: str, name: str, seed: int, phase: str) -> bool:
        """Whether this run has a checkpoint in progress to resume (creates nothing)."""
        if self.partial is None:
            return False
        folder = partial_path(self.partial, self._label(sub, task, name, seed, phase), self._what(sub, task, name))
        return (folder / "checkpoints" / "latest").is_file()

    def run(self, sub: Recipe, task: str, name: str, seed: int, log, phase: str = "final") -> dict:
        if self.dry:
            raise WorkLeft(f"{task} {name} seed {seed} lr {sub.lr:g}")
        spec = self.spec(name)
        folder = self.resume_dir(sub, task, name, seed, phase, log)
        keep = None if self.keep is None else Path(self.keep) / self.recipe.family / \
            f"{task}-{name}-{phase}-seed{seed}-lr{rate(sub.lr):g}-{self.version}.pt"
        r = run_one(sub, task, spec["block"], seed, self.mult(task, name), log, name=name,
                    overrides=spec.get("model"), resume_dir=folder, keep=keep)
        r["phase"] = phase
        r["fingerprint"] = self.fingerprint(task, name)
        if folder is not None:
            r["run"] = folder.name  # the run in progress this row ends (protocol.finished: not carried again)
            self._finished.append(folder)
        return r

    def stored(self) -> None:
        """The rows of the finished runs are in the store: their checkpoints go."""
        for folder in self._finished:
            shutil.rmtree(folder, ignore_errors=True)
        self._finished.clear()


def _append(path: Path, r: dict, ctx: _Suite) -> None:
    ctx.done[:] = append_row(path, r)  # every row in the file: processes sharing the suite append theirs too
    ctx.stored()


def _select(ctx: _Suite, task: str, name: str, path: Path, log, report=None) -> float:
    """The learning rate of the lowest validation loss over the grid (grown past an edge while the best
    rate sits on it: ``protocol.select_rate``); every selection run is a row with ``phase: "select"``, and
    ``report()`` rewrites the tables after each."""
    recipe = ctx.recipe

    def score(lr: float) -> float:
        sub = ctx.settings(name, lr)
        r = ctx.find(task, name, "select", recipe.select_seed, sub)
        if r is None:
            r = ctx.run(sub, task, name, recipe.select_seed, log, phase="select")
            _append(path, r, ctx)
            if log:
                log(f"{task} {name} lr {lr:g} (selection): validation loss {r.get('val_loss', float('inf')):.3g}")
            if report is not None:
                report()
        return r.get("val_loss", float("inf"))

    def resumable(lr: float) -> bool:
        return ctx.in_progress(ctx.settings(name, lr), task, name, recipe.select_seed, "select")

    return select_rate(score, recipe.lr_grid, recipe.lr_extend, first=resumable)[0]


def _selection(recipe: Recipe, rows: list[dict], task: str, name: str) -> tuple[dict[float, dict], float | None]:
    """The selection rows of (task, model) by rate, and the rate they select."""
    runs = {rate(r["lr"]): r for r in rows if r.get("phase") == "select" and r["task"] == task
            and r["model"] == name and r["seed"] == recipe.select_seed}
    if not runs:
        return runs, None
    return runs, min(runs, key=lambda lr: runs[lr].get("val_loss", float("inf")))


def _report(recipe: Recipe, ctx: _Suite, out: Path, command: str) -> list[dict]:
    rows = [r for r in ctx.done if r["task"] in recipe.tasks and r["model"] in recipe.models and ctx.same_protocol(r)
            and (r["seed"] in recipe.seeds or (r.get("phase") == "select" and r["seed"] == recipe.select_seed))]
    current = [r for r in rows if ctx.current(r)]
    if rows and not current:
        found = sorted({r.get("code", "unrecorded") for r in rows})
        raise ValueError(f"{out}: no run of this code version ({ctx.version}); the rows there come from {found}, "
                         "whose fingerprints differ from this code's. Run the suite to redo them, or check out "
                         "the code they were run with")
    if recipe.lr_grid:  # the reported seeds count at the rate their selection chose
        chosen = {(t, m): _selection(recipe, current, t, m)[1] for t in recipe.tasks for m in recipe.models}
        current = [r for r in current if r.get("phase") == "select" or rate(r["lr"]) == chosen[r["task"], r["model"]]]
    write_results(recipe, current, out, command, left_out=len(rows) - len(current))
    return [r for r in current if r.get("phase", "final") == "final"]


def _ms(xs: list[float]) -> str:
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.1f}"
    return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs):.1f}"


def write_results(recipe: Recipe, rows: list[dict], out: Path, command: str = "", left_out: int = 0) -> Path:
    """Write ``<family>.md`` and ``RESULTS.md``. Refuses rows of several code versions unless, for every
    (task, model), they carry the same fingerprint (the same computation, :func:`same_behaviour`)."""
    versions = sorted({r.get("code", "unrecorded") for r in rows})
    if len(versions) > 1:
        for key in {(r["task"], r["model"]) for r in rows}:
            fps = [r.get("fingerprint") for r in rows if (r["task"], r["model"]) == key]
            if not all(same_behaviour(fp, fps[0]) for fp in fps):
                raise ValueError(f"refusing to write one table from {len(versions)} code versions {versions}: "
                                 f"the rows of {key[0]}/{key[1]} differ in what they compute (fingerprints)")
    selection = [r for r in rows if r.get("phase") == "select"]
    rows = [r for r in rows if r.get("phase", "final") == "final"]

    def cell(task, model, key):
        return _ms([r[key] for r in rows if r["task"] == task and r["model"] == model])

    def cell_note(task, model) -> str:  # the cell's rate (selected per task), and fewer seeds than the recipe's
        ran = [r for r in rows if r["task"] == task and r["model"] == model]
        n = len({r["seed"] for r in ran})
        lrs = sorted({rate(r["lr"]) for r in ran}) if recipe.lr_grid else []
        return ((f" lr {', '.join(f'{x:g}' for x in lrs)}" if lrs else "")
                + (f" ({n} of {len(recipe.seeds)} seeds)" if 0 < n < len(recipe.seeds) else ""))

    tasks = list(recipe.tasks)
    models = [m for m in recipe.models if any(r["model"] == m for r in rows)]

    def block_of(m: str) -> str:  # a variant is compared with the paper's row of its block kind
        return _block(recipe, m)
    lines = [f"# Synthetic experiments: {recipe.family}", ""]
    if command:
        lines += ["Command:", "", f"    {command}", ""]
    rate_text = (f"the learning rate selected per model from the grid {recipe.lr_grid} (column lr)"
            if recipe.lr_grid else f"lr {recipe.lr}")
    stop = (f"; validation every {recipe.eval_every} steps, the weights of the best validation loss kept"
            + (f", stopped after {recipe.patience} validations without a {recipe.min_delta:.0%} improvement"
               + (" on the lowest loss so far" if recipe.patience_from == "best" else " on the loss of the last one")
               if recipe.patience else "") if recipe.eval_every else "")
    lines += [f"Budget {recipe.steps} steps × batch {recipe.batch_size}, AdamW with {rate_text} "
              f"(cosine, warm-up {recipe.warmup}){stop}; "
              f"seeds {recipe.seeds}; model {json.dumps(recipe.model)}. Mean ± std over seeds (a cell says so when "
              "fewer seeds have finished). "
              f"Wall times are on the machine that ran this (train + evaluation, per run).", ""]
    if recipe.variants:
        lines += ["Variants (changes from the settings above): " + json.dumps(recipe.variants), ""]
    if rows or selection:
        every = rows + selection
        commits = sorted({r.get("commit", "unrecorded") for r in every})
        lines += [f"Code version {', '.join(versions)} (commit {', '.join(commits)})"
                  + (" (rows of several code versions whose fingerprints agree: the same computation)"
                     if len(versions) > 1 else "")
                  + (f"; {left_out} rows in {recipe.family}.jsonl are not in this table (other code, or a rate "
                     "the selection did not choose)" if left_out else "") + ".", ""]
    if recipe.family == "formal":
        bins = formal.length_bins(recipe.max_len)
        (l0, h0), (l1, h1), (l2, h2) = bins["bin0"], bins["bin1"], bins["bin2"]
        lines += [f"Recognition accuracy (% of strings whose every next-symbol set is predicted exactly), "
                  f"Bin0 / Bin1 / Bin2. Bin0: lengths {l0}–{h0}, "
                  + ("the training range" if not recipe.val_lengths else
                     f"trained on {l0}–{recipe.val_lengths[0] - 1}, validated on {recipe.val_lengths[0]}–"
                     f"{recipe.val_lengths[1]}") + f"; Bin1: {l1}–{h1} and "
                  f"Bin2: {l2}–{h2} test length generalisation; "
                  f"{recipe.eval_batches * recipe.eval_batch_size} strings per bin. "
                  "Paper (NL Table 5, Bin0/Bin1) in brackets; a variant shows its block kind's row.", "",
                  "| model | params | " + " | ".join(tasks) + " | rates selected | steps run | wall / run |",
                  "|---|---:|" + "---|" * len(tasks) + "---|---:|---:|"]
        paper_idx = {lang: i for i, lang in enumerate(formal.LANGUAGES)}
        for m in models:
            cells = []
            for t in tasks:
                ours = " / ".join(cell(t, m, b) for b in FORMAL_BINS)
                paper = PAPER_FORMAL.get(block_of(m))
                cells.append(ours + (f" [{paper[paper_idx[t]]}]" if paper else "") + cell_note(t, m))
            lines.append(f"| {m} | {_params(rows, m)} | " + " | ".join(cells)
                         + f" | {_lrs(recipe, rows, selection, m)} | {_steps_run(rows, m)} | {_wall(rows, m)} |")
    else:
        metric = "token accuracy on the answer positions" if recipe.family == "mad" else "accuracy on the queries"
        lines += [f"Held-out {metric} (%), {recipe.eval_batches * recipe.eval_batch_size} sequences per task."
                  + (" Paper (NL Table 4) in brackets." if recipe.family == "mad" else ""), "",
                  "| model | params | " + " | ".join(tasks) + " | rates selected | steps run | wall / run |",
                  "|---|---:|" + "---|" * len(tasks) + "---|---:|---:|"]
        for m in models:
            cells = []
            for t in tasks:
                c = cell(t, m, "acc")
                if recipe.family == "mad" and block_of(m) in PAPER_MAD and t in _MAD_ORDER:
                    c += f" [{PAPER_MAD[block_of(m)][_MAD_ORDER.index(t)]}]"
                cells.append(c + cell_note(t, m))
            lines.append(f"| {m} | {_params(rows, m)} | " + " | ".join(cells)
                         + f" | {_lrs(recipe, rows, selection, m)} | {_steps_run(rows, m)} | {_wall(rows, m)} |")
    if selection:
        lines += ["", "Learning-rate selection (seed " + str(recipe.select_seed) + ", not a reported seed): "
                  "validation loss at each rate; **bold** is the rate selected (the lowest), † marks a selected "
                  f"rate on an edge of the rates run so far (the grid grows past an edge up to {recipe.lr_extend} "
                  "times; a † left when the suite has finished is an optimum the grid did not bracket); ‡ marks a "
                  "run that diverged (10 non-finite losses in a row: its loss is the best before that, listed below "
                  "the tables)."
                  + (" In brackets, each selection run's Bin1 accuracy, shown only: the rate is chosen on the "
                     "validation loss at the training lengths, never on a test bin." if recipe.family == "formal"
                     else ""), ""]
        for t in tasks:
            rates = sorted({rate(r["lr"]) for r in selection if r["task"] == t})
            if not rates:
                continue
            lines += [f"| {t} | " + " | ".join(f"{x:g}" for x in rates) + " |", "|---|" + "---:|" * len(rates)]
            for m in recipe.models:
                runs, best = _selection(recipe, selection, t, m)
                if not runs:
                    continue
                edge = "†" if best in (min(runs), max(runs)) else ""
                cells = []
                for x in rates:
                    v = runs[x].get("val_loss", float("inf")) if x in runs else None
                    # three significant digits: solved runs' losses differ at 1e-5 and below, where a fixed
                    # four decimals printed every one of them as 0.0000
                    c = "" if v is None else f"{v:.3g}"
                    c = f"**{c}**{edge}" if x == best else c
                    if v is not None and runs[x].get("diverged_at") is not None:
                        c += "‡"
                    if v is not None and "bin1" in runs[x]:
                        c += f" [{runs[x]['bin1']:.1f}]"
                    cells.append(c)
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
            lines.append("")
    skips = [f"{r['task']}/{r['model']}/seed {r['seed']}: {r['skipped']}" for r in rows if r.get("skipped")]
    if skips:
        lines += ["", "Training steps skipped for a non-finite loss: " + "; ".join(skips) + "."]
    def trouble(r: dict) -> list[str]:
        return ([f"diverged at step {r['diverged_at']}"] if r.get("diverged_at") is not None else []) \
            + ([f"{r['skipped']} steps skipped"] if r.get("skipped") else [])

    unstable = [f"{r['task']}/{r['model']} lr {rate(r['lr']):g}: " + ", ".join(trouble(r))
                for r in selection if trouble(r)]
    if unstable:
        lines += ["", f"Selection runs (seed {recipe.select_seed}) that diverged or skipped steps for a non-finite "
                  "loss or gradient: " + "; ".join(unstable) + "."]
    bad = [f"{r['task']}/{r['model']}/seed {r['seed']}: {r['nonfinite']}"
           + (" (" + ", ".join(f"{k} {v}" for k, v in r["nonfinite_by_split"].items() if v) + ")"
              if r.get("nonfinite_by_split") else "") for r in rows if r.get("nonfinite")]
    if bad:
        lines += ["", "Sequences with non-finite logits at evaluation (scored as wrong): " + "; ".join(bad) + "."]
    retried = [f"{r['task']}/{r['model']}/seed {r['seed']} (step {r['first_try_diverged_at']})" for r in rows
               if r.get("first_try_diverged_at") is not None]
    if retried:
        lines += ["", "Diverged (10 non-finite losses in a row) and retried once at half the learning rate; "
                  "the table holds the retry: " + "; ".join(retried) + "."]
    failed = [f"{r['task']}/{r['model']}/seed {r['seed']} (step {r['diverged_at']})" for r in rows
              if r.get("diverged_at") is not None]
    if failed:
        lines += ["", "Diverged again on the retry (scored as they ended): " + "; ".join(failed) + "."]
    lines += _targets(recipe, rows, selection)
    complete = sum(1 for t in tasks for m in recipe.models
                   if {r["seed"] for r in rows if (r["task"], r["model"]) == (t, m)} >= set(recipe.seeds))
    lines += ["", f"Progress: {complete} of {len(tasks) * len(recipe.models)} (task, model) pairs have all "
              f"{len(recipe.seeds)} reported seeds" + (f"; {len(selection)} selection runs" if selection else "") + "."
              + _remaining(recipe, rows, selection)]
    lines += ["", "Task arguments: " + json.dumps(recipe.tasks), "",
              f"Total wall time of these runs: {sum(r['wall_s'] for r in rows) / 60:.1f} min"
              + (f", and {sum(r['wall_s'] for r in selection) / 60:.1f} min of selection runs" if selection else "")
              + f"; {sum(r.get('cpu_s', r['wall_s'] * r.get('threads', 1)) for r in rows + selection) / 3600:.2f} "
              "CPU hours (process CPU time; wall time × threads for rows that predate it)."]
    if recipe.family == "mqar" and _plot_mqar(recipe, rows, out / "mqar.png"):
        lines += ["", "![MQAR accuracy vs number of pairs](mqar.png)"]
    write_atomic(out / f"{recipe.family}.md", "\n".join(lines) + "\n")
    # RESULTS.md: every family's table found in this folder, in a fixed order
    parts = [(out / f"{f}.md").read_text() for f in FAMILIES if (out / f"{f}.md").is_file()]
    path = out / "RESULTS.md"
    write_atomic(path, "# Synthetic experiments (NL Tables 4 and 5)\n\n"
           + "\n".join(p.replace("# Synthetic experiments: ", "## ", 1) for p in parts))
    return path


def _block(recipe: Recipe, name: str) -> str:
    """The block kind of a model of the recipe (a variant's ``block``, else the name itself)."""
    return recipe.variants.get(name, {}).get("block", name)


def _apart(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` with one decimal, or as many more (up to 4) as it takes for the two to read apart: a
    target line must not say "100.0 < 100.0" when one mean is 99.99."""
    for d in range(1, 5):
        x, y = f"{a:.{d}f}", f"{b:.{d}f}"
        if x != y:
            break
    return x, y


def _targets(recipe: Recipe, rows: list[dict], selection: list[dict]) -> list[str]:
    """Issue 13's targets (the paper's) against the reported seeds' means in this table: met, not met, or not
    yet measurable (a mean needs every reported seed)."""
    def block(m: str) -> str:
        return _block(recipe, m)

    def mean(task: str, model: str, key: str) -> float | None:  # over every reported seed, else None
        xs = {r["seed"]: r[key] for r in rows if (r["task"], r["model"]) == (task, model) and key in r}
        return statistics.mean(xs.values()) if set(recipe.seeds) <= set(xs) else None

    def verdict(checks: list[bool | None]) -> str:
        if any(c is False for c in checks):
            return "**not met**"
        return "met" if checks and all(checks) else "open"

    out = []
    if recipe.family == "formal":
        for m in (m for m in recipe.models if block(m) == "hope"):
            cells = [(t, mean(t, m, "bin1")) for t in recipe.tasks]
            checks = [None if v is None else v >= 95.0 for _, v in cells]
            out.append(f"- HOPE ≥ 95% on Bin1 for every language ({m}): {verdict(checks)}: " + ", ".join(
                f"{t} {'–' if v is None else f'{v:.1f}'}" for t, v in cells) + ".")
        for m in (m for m in recipe.models if block(m) == "delta" and "parity" in recipe.tasks):
            v = mean("parity", m, "bin0")
            out.append(f"- the delta rule ≥ 90% on parity Bin0, a check of the harness ({m}): "
                       f"{verdict([None if v is None else v >= 90.0])}: {'–' if v is None else f'{v:.1f}'}.")
    if recipe.family == "mad":
        hope = [m for m in recipe.models if block(m) == "hope"]
        rivals = [m for m in recipe.models if block(m) in ("transformer", "titans")]
        for h in hope:
            checks, worse = [], []
            for t in recipe.tasks:
                ours = mean(t, h, "acc")
                theirs = [mean(t, m, "acc") for m in rivals]
                if ours is None or None in theirs or not theirs:
                    checks.append(None)
                    continue
                checks.append(ours >= max(theirs))
                if ours < max(theirs):
                    worse.append(f"{t} ({' < '.join(_apart(ours, max(theirs)))})")
            out.append(f"- HOPE ≥ the Transformer and Titans on every column ({h}): {verdict(checks)}"
                       + (f": below on {', '.join(worse)}" if worse else "") + ".")
    titans = [r for r in rows + selection if block(r["model"]) == "titans"]
    if any(block(m) == "titans" for m in recipe.models):
        bad = [f"{r['task']}/{r['model']}/seed {r['seed']}" for r in titans
               if r.get("diverged_at") is not None or r.get("first_try_diverged_at") is not None]
        out.append(f"- Titans with no diverged run: {'**not met**' if bad else 'open' if not titans else 'met so far'}"
                   f" ({len(titans)} runs, selection runs included" + (f"; diverged: {', '.join(bad)}" if bad else "")
                   + ").")
    return ["", "Targets (issue 13, the paper's), from the means of the reported seeds above:", "", *out] if out else []


def _remaining(recipe: Recipe, rows: list[dict], selection: list[dict]) -> str:
    """What is left, in runs and in CPU hours at the mean CPU time of each model's finished runs in this table
    (a lower bound: a grid that grows past an edge adds selection runs)."""
    left: dict[str, int] = {}
    for m in recipe.models:
        for t in recipe.tasks:
            picked = {rate(r["lr"]) for r in selection if (r["task"], r["model"]) == (t, m)}
            seeds = {r["seed"] for r in rows if (r["task"], r["model"]) == (t, m)}
            left[m] = left.get(m, 0) + max(0, len(recipe.lr_grid) - len(picked)) + len(set(recipe.seeds) - seeds)
    if not sum(left.values()):
        return ""
    hours, kin, kin_hours, unknown = 0.0, [], 0.0, []
    for m, n in left.items():
        spent = [r["cpu_s"] for r in rows + selection if r["model"] == m and "cpu_s" in r]
        # a model with no finished run: the mean of the other models of its block kind (its variants), if any
        same = [r["cpu_s"] for r in rows + selection
                if _block(recipe, r["model"]) == _block(recipe, m) and "cpu_s" in r]
        if n and spent:
            hours += n * statistics.mean(spent) / 3600
        elif n and same:
            kin_hours += n * statistics.mean(same) / 3600
            kin.append(f"{m} ({n})")
        elif n:
            unknown.append(f"{m} ({n})")
    return (f" Left: at least {sum(left.values())} runs ("
            + ", ".join(f"{m} {n}" for m, n in left.items() if n)
            + f"); ≈ {hours:.1f} CPU hours for those of the models with finished runs, at the mean CPU time of "
            "their runs here"
            + (f"; ≈ {kin_hours:.1f} more for {', '.join(kin)}, which have none, at the mean of their block kind's "
               "runs" if kin else "")
            + (f"; no finished run of their block kind yet, so no estimate: {', '.join(unknown)}" if unknown else "")
            + ".")


def _params(rows, m) -> str:
    ps = sorted({r["params"] for r in rows if r["model"] == m})
    return f"{ps[0]:,}" if len(ps) == 1 else f"{ps[0]:,}–{ps[-1]:,}"


def _lrs(recipe: Recipe, rows, selection, m) -> str:
    lrs = sorted({rate(r["lr"]) for r in rows if r["model"] == m})
    return ", ".join(f"{x:g}" for x in lrs) if lrs else "–"


def _steps_run(rows, m) -> str:
    xs = [r.get("steps_run", r["steps"]) for r in rows if r["model"] == m]
    return f"{statistics.mean(xs):.0f}" if xs else "–"


def _wall(rows, m) -> str:
    ws = [r["wall_s"] for r in rows if r["model"] == m]
    return f"{statistics.mean(ws):.0f} s" if ws else "–"


def _plot_mqar(recipe: Recipe, rows: list[dict], path: Path) -> bool:
    """Accuracy against the number of pairs, a line per model, written to ``path``; False (nothing written)
    without matplotlib or before any row."""
    series = []
    for m in recipe.models:
        xs, ys, es = [], [], []
        for t, args in recipe.tasks.items():
            accs = [r["acc"] for r in rows if r["task"] == t and r["model"] == m]
            if accs:
                xs.append(args["n_pairs"])
                ys.append(statistics.mean(accs))
                es.append(statistics.stdev(accs) if len(accs) > 1 else 0.0)
        if xs:
            series.append((m, xs, ys, es))
    if not series:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, xs, ys, es in series:
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=m)
    ax.set_xlabel("key–value pairs")
    ax.set_ylabel("query accuracy (%)")
    ax.set_ylim(0, 102)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(recipe_path: str, quick: bool = False, out: str | None = None, threads: int | None = None,
         command: str = "", report_only: bool = False, only_models: list[str] | None = None,
         only_tasks: list[str] | None = None, device: str | None = None, left: bool = False,
         keep_weights: str | None = None) -> list[dict]:
    """``left``: print the next run the suite would start (``left: …``) or ``nothing left``, and train nothing."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be ≥ 1 (got {threads})")
        torch.set_num_threads(threads)
    recipe = load_recipe(recipe_path, quick=quick)
    if device is not None:
        recipe = dataclasses.replace(recipe, device=device)
        recipe.validate()
    if out is None:
        out = "runs/synthetic-quick" if quick else str(Path(recipe_path).parent / recipe.out)
    if left:
        nxt = runs_left(recipe, out, only_models=only_models, only_tasks=only_tasks)
        print(f"left: {nxt}" if nxt else "nothing left", flush=True)
        return []
    return run_suite(recipe, out, command=command, report_only=report_only, only_models=only_models,
                     only_tasks=only_tasks, keep_weights=keep_weights)


__all__ = ["FAMILIES", "MODELS", "Recipe", "WorkLeft", "evaluate", "load_recipe", "load_weights", "main", "make_batch",
           "run_one", "run_suite", "runs_left", "save_weights", "write_results"]
