"""The selected Muon and m3-ema on CIFAR-10 with a longer budget than the protocol's 2,000 steps.

    python experiments/optimizers/probes/long_budget.py [--steps 6000] [--seed 100] [--data-root ../shared/data]

m3-ema's selected rate (3.16e-7, on its grid's lower edge) was still improving at step 2,000 in two of its
three seeds, while Muon's best validation loss came at steps 400–500. Both run here, one seed, with the same
longer budget through the experiment's own ``run`` (same ViT, data split, batches, validation every 100 steps
with the best weights kept and tested). The rate is constant, so each run's first 2,000 steps are the 2,000-step
run's. Resumable: each run checkpoints under ``.partial/`` (a rerun continues it) and each finished run is a
line of ``long_budget.jsonl``; the table ``long_budget.md`` is rewritten after each.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from nestlearn.benchmarking import stamp
from nestlearn.experiments.optimizers import dataset, parser, run

HERE = Path(__file__).parent
RUNS = (("muon", 1e-3, {"momentum": 0.95}), ("m3-ema", 3.16e-7, {"alpha": 0.3, "slow_every": 100}))


def at(curve: list, step: int) -> float:
    """The validation loss measured at ``step`` (the curve's rows are [step, loss, accuracy])."""
    return next((loss for s, loss, _ in curve if s == step), float("nan"))


def table(rows: list[dict], args) -> str:
    lines = ["# Muon and m3-ema with a longer budget (CIFAR-10)", "",
             f"Command: `python experiments/optimizers/probes/long_budget.py --steps {args.steps} --seed {args.seed}`"
             "  ", f"{stamp()}. The experiment's ViT, data split and batches; the settings `RESULTS.md` selected "
             "with 2,000-step runs; one seed; the weights of the best validation loss tested.", "",
             "| optimizer | lr | settings | steps | validation loss at 500 / 2,000 / the end | best validation "
             "loss (step) | test loss | test accuracy | final train loss | CPU min |",
             "|---|---:|---|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        c = r["val_curve"]
        lines.append(f"| {r['optimizer']} | {r['lr']:g} | {json.dumps(r['hp'])} | {r['steps']} | "
                     f"{at(c, 500):.3f} / {at(c, 2000):.3f} / {c[-1][1]:.3f} | "
                     f"{r['val_loss']:.3f} ({r['best_step']}) | "
                     f"{r['test_loss']:.3f} | {100 * r['test_acc']:.1f}% | {r['train_loss']:.3f} | "
                     f"{r['cpu_s'] / 60:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--data-root", default="../shared/data")
    args = p.parse_args()
    torch.set_num_threads(1)
    # the experiment's settings with this budget, and its data split
    settings = parser().parse_args(["--steps", str(args.steps), "--data-root", args.data_root])
    data, size, channels = dataset("cifar10", settings)
    store = HERE / "long_budget.jsonl"
    rows = [json.loads(x) for x in store.read_text().splitlines()] if store.exists() else []
    for name, lr, hp in RUNS:
        key = (name, lr, json.dumps(hp, sort_keys=True), args.seed, args.steps)
        if any((r["optimizer"], r["lr"], json.dumps(r["hp"], sort_keys=True), r["seed"], r["steps"]) == key
               for r in rows):
            continue
        folder = HERE / ".partial" / f"long-{name}-lr{lr:g}-seed{args.seed}-steps{args.steps}"
        row = run(name, lr, hp, args.seed, data, settings, size, channels, resume_dir=folder)
        row.pop("curve")  # the training losses of every step: the validation curve is kept
        rows.append(row)
        with store.open("a") as f:
            f.write(json.dumps(row) + "\n")
        shutil.rmtree(folder, ignore_errors=True)  # the row is stored: the run's checkpoints go
        print(f"{name} lr {lr:g}: best validation {row['val_loss']:.3f} at step {row['best_step']}, "
              f"test {row['test_loss']:.3f}", flush=True)
        (HERE / "long_budget.md").write_text(table([r for r in rows if r["steps"] == args.steps], args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
