"""Train a stored run of the optimizer experiment again at this checkout and compare it with its row.

    python experiments/optimizers/probes/reproduce.py --dataset fashion_mnist --optimizer adamw --lr 0.001 --seed 0
        [--hp '{"momentum": 0.95}'] [--store experiments/optimizers/runs.jsonl] [--data-root ../shared/data]

A table accepts rows of other code versions when their fingerprints (a 3-step run) agree with this code's. A
row whose commit ends in ``+dirty`` ran from library code with uncommitted changes, which no commit holds; this
check trains it again, through the experiment's own ``run`` with the row's stored settings and data split, and
says whether every number of the row comes back: the training loss of every step, the validation curve, and the
kept weights' validation and test scores, each compared as the same float. A store named ``runs-quick.jsonl``
holds quick-mode rows (``nestlearn optimizers --quick``), whose data is the quick sample. Each check is a line of
``reproduce.jsonl`` beside this script, and ``reproduce.md`` is rewritten from them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from nestlearn.experiments.optimizers import dataset, parser, run
from nestlearn.experiments.protocol import (
    append_row,
    code_version,
    rate,
    read_rows,
    report_rerun,
    rerun_comparison,
    rerun_table,
    write_atomic,
)

HERE = Path(__file__).parent
FIELDS = ("curve", "val_curve", "train_loss", "val_loss", "val_acc", "test_loss", "test_acc", "best_step",
          "final_val_loss")


def find(rows: list[dict], ds: str, optimizer: str, lr: float, seed: int, hp: dict | None = None) -> dict:
    """The one stored row of that run; ``hp`` (the optimizer's hyperparameters) is needed when the rate and
    seed leave several (a sweep)."""
    key = (ds, optimizer, rate(lr), seed)
    hits = [r for r in rows if (r["dataset"], r["optimizer"], rate(r["lr"]), r["seed"]) == key
            and (hp is None or r["hp"] == hp)]
    if len(hits) != 1:
        what = f"{ds} {optimizer} lr {lr:g} seed {seed}"
        what += "" if hp is None else f" hp {json.dumps(hp, sort_keys=True)}"
        if not hits:
            raise ValueError(f"no stored row matches {what}")
        found = "; ".join(json.dumps(r["hp"], sort_keys=True) for r in hits)
        raise ValueError(f"{len(hits)} stored rows match {what} (their hp: {found}); give --hp to pick one")
    return hits[0]


def settings_of(row: dict, data_root: str, quick: bool, device: str = "cpu") -> argparse.Namespace:
    """The experiment's command-line settings with the row's stored ones."""
    args = parser().parse_args(["--data-root", data_root, "--device", device, *(["--quick"] if quick else [])])
    for key, value in row["settings"].items():
        setattr(args, key, value)
    return args


def rerun(row: dict, data_root: str, quick: bool, device: str = "cpu") -> dict:
    args = settings_of(row, data_root, quick, device)
    data, size, channels = dataset(row["dataset"], args)
    return run(row["optimizer"], row["lr"], row["hp"], row["seed"], data, args, size, channels)


def table(checks: list[dict]) -> str:
    return "\n".join(rerun_table(
        "Stored runs of the optimizer experiment, trained again",
        "python experiments/optimizers/probes/reproduce.py --dataset D --optimizer O --lr R --seed S [--hp JSON]",
        "Each line trained the stored run again at the commit shown, with the row's settings and data split; "
        "*identical* means every step's training loss, the validation curve and the kept weights' validation and "
        "test scores are the same floats.", checks,
        lambda c: f"{c['dataset']} {c['optimizer']} lr {c['lr']:g} {json.dumps(c['hp'], sort_keys=True)} "
                  f"seed {c['seed']}",
        "test loss", lambda c: f"{c['stored_test_loss']:.6g}", lambda c: f"{c['test_loss']:.6g}")) + "\n"


def check(store: Path, ds: str, optimizer: str, lr: float, seed: int, hp: dict | None = None,
          data_root: str = "../shared/data", device: str = "cpu", out: Path = HERE) -> dict:
    """Train the stored run again, record the check in ``out/reproduce.jsonl`` and ``out/reproduce.md``."""
    old = find(read_rows(store), ds, optimizer, lr, seed, hp)
    new = rerun(old, data_root, quick=store.name == "runs-quick.jsonl", device=device)
    result = {"dataset": ds, "optimizer": optimizer, "lr": old["lr"], "hp": old["hp"], "seed": seed,
              "store": str(store), "stored_commit": old.get("commit"), "stored_code": old.get("code"),
              "stored_test_loss": old["test_loss"], "test_loss": new["test_loss"],
              **rerun_comparison(old, new, FIELDS), "cpu_s": new["cpu_s"], **code_version()}
    checks = append_row(out / "reproduce.jsonl", result)
    write_atomic(out / "reproduce.md", table(checks))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--optimizer", required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--hp", type=json.loads, default=None, help="the optimizer's hyperparameters, as JSON")
    p.add_argument("--store", type=Path, default=Path("experiments/optimizers/runs.jsonl"))
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    return report_rerun(lambda: check(args.store, args.dataset, args.optimizer, args.lr, args.seed, args.hp,
                                      args.data_root, args.device))


if __name__ == "__main__":
    sys.exit(main())
