"""Train a stored run of a synthetic suite again at this checkout and compare it with its row.

    python experiments/synthetic/probes/reproduce.py experiments/synthetic/formal.yaml \
        --task abab_star --model hope_eta2 --seed 100 --lr 0.01 [--phase select]

A table takes rows of several code versions when their fingerprints (what a 3-step run computes) agree with
this code's. What a fingerprint cannot see is the rest of a run: thousands of steps, the cosine schedule's later
rates, the early-stopping rule. This probe trains a stored run again through the suite's own run (the recipe's
settings, the model's variant and width, the rate that ran: a retried run's half rate), without checkpoints,
and says whether every number of its row comes back as the same float: the training loss of the last step,
the validation curve, the step it stopped at and the one whose weights it kept, and every test score. The recipe's
protocol settings must be the ones the row ran under (a row of an older budget is refused by name). Each check is
a line of ``reproduce.jsonl`` beside this script, and ``reproduce.md`` is rewritten from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from nestlearn.experiments import synthetic as suite
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

HERE = Path(__file__).resolve().parent
# what a row records of how and where it ran, not what it computed
NOT_NUMBERS = {"cpu_s", "wall_s", "train_s", "commit", "code", "threads", "resumed_at", "fingerprint", "phase",
               "first_try_diverged_at", "retry_lr", "lr", "settings", "config"}


def find(rows: list[dict], task: str, model: str, seed: int, lr: float, phase: str) -> dict:
    hits = [r for r in rows if (r["task"], r["model"], r["seed"], r.get("phase", "final")) == (task, model, seed, phase)
            and rate(r["lr"]) == rate(lr)]
    if not hits:
        raise ValueError(f"no stored {phase} row of {model} on {task} seed {seed} lr {lr:g}")
    return hits[-1]  # the latest: a row run again after a protocol change follows the older one


def rerun(recipe: suite.Recipe, row: dict) -> dict:
    ctx = suite._Suite(recipe, [])
    sub = dataclasses.replace(ctx.settings(row["model"], row["lr"]), lr=row["settings"]["lr"])  # what ran
    if not ctx.same_protocol(row, sub):
        differ = {k: (row["settings"].get(k), getattr(sub, k)) for k in suite.PROTOCOL
                  if row["settings"].get(k, suite.PROTOCOL_SINCE.get(k)) != getattr(sub, k)}
        raise ValueError(f"the row ran under other protocol settings than the recipe's (row, recipe): {differ}")
    return ctx.run(sub, row["task"], row["model"], row["seed"], log=None, phase=row.get("phase", "final"))


def scores(r: dict) -> str:
    return ", ".join(f"{k} {r[k]:.6g}" for k in ("acc", *suite.FORMAL_BINS) if k in r)


def table(checks: list[dict]) -> str:
    lines = rerun_table(
        "Stored runs of the synthetic suites, trained again",
        "python experiments/synthetic/probes/reproduce.py RECIPE --task T --model M --seed S --lr R [--phase select]",
        "Each line trained the stored run again at the commit shown (the suite's run, the recipe's settings, no "
        "checkpoints); *identical* means every number the row computed (the last training loss, the validation "
        "curve, the stopping and kept steps, every test score) is the same float.", checks,
        lambda c: f"{c['family']} {c['task']} {c['model']} {c['phase']} seed {c['seed']} lr {c['lr']:g}",
        "test scores", lambda c: c["stored_scores"], lambda c: c["scores"])
    parted = [c for c in checks if c.get("differences") and "curve" in c["differences"]]
    if parted:
        lines += ["", "Where the validation curves part (the first check that differs: step, loss, accuracy, stored "
                  "then again):", ""]
        for c in parted:
            _, a, b = c["differences"]["curve"]
            lines.append(f"- {c['task']} {c['model']} {c['phase']} seed {c['seed']} lr {c['lr']:g}: {a} / {b}")
    return "\n".join(lines) + "\n"


def check(recipe_path: str, task: str, model: str, seed: int, lr: float, phase: str = "final",
          store: Path | None = None, out: Path = HERE, quick: bool = False) -> dict:
    """Train the stored run again and record the check in ``out/reproduce.jsonl`` and ``out/reproduce.md``
    (``quick``: a row of the recipe's quick mode)."""
    recipe = suite.load_recipe(recipe_path, quick=quick)
    store = store or Path(recipe_path).parent / recipe.out / f"{recipe.family}.jsonl"
    old = find(read_rows(store), task, model, seed, lr, phase)
    new = rerun(recipe, old)
    result = {"family": recipe.family, "task": task, "model": model, "seed": seed, "lr": old["lr"], "phase": phase,
              "store": str(store), "stored_commit": old.get("commit"), "stored_code": old.get("code"),
              "stored_scores": scores(old), "scores": scores(new),
              **rerun_comparison(old, new, [k for k in sorted(old) if k not in NOT_NUMBERS]),
              "cpu_s": new["cpu_s"], **code_version()}
    write_atomic(out / "reproduce.md", table(append_row(out / "reproduce.jsonl", result)))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipe")
    p.add_argument("--task", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--lr", type=float, required=True, help="the row's rate (the one asked for, for a retried run)")
    p.add_argument("--phase", choices=("final", "select"), default="final")
    p.add_argument("--store", type=Path, default=None, help="the rows (default: the recipe's out folder)")
    p.add_argument("--quick", action="store_true", help="a row of the recipe's quick mode (--store names its file)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    return report_rerun(lambda: check(args.recipe, args.task, args.model, args.seed, args.lr, args.phase, args.store,
                                      quick=args.quick))


if __name__ == "__main__":
    sys.exit(main())
