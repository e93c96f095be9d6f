"""Does aligning the self-modifying memories' chunk with the CMS's fastest level cost quality?

    python benchmarks/chunk_tradeoff.py            # 2 settings × 3 seeds of configs/text-tiny.yaml, 300 steps

Trains the tiny HOPE language model of ``configs/text-tiny.yaml`` (Tiny Shakespeare, bytes) with
``selfmod.chunk_size_other`` at its preset value (8) and at the CMS's fastest chunk (16), two runs
side by side with one thread each, and tabulates the validation loss at the last step and the
training throughput. Runs already finished in ``--runs`` are read, not redone. Writes
benchmarks/results/chunk_tradeoff.md. Needs the data folder ../shared/data/tinyshakespeare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS = (8, 16)
SEEDS = (0, 1, 2)
STEPS = 300


def args_for(cso: int, seed: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "nestlearn", "train", "configs/text-tiny.yaml", f"train.out_dir={out}",
            f"model.selfmod.chunk_size_other={cso}", f"train.steps={STEPS}", "train.eval_every=100",
            "train.eval_batches=16", "train.progress=false", f"train.seed={seed}"]


def finished(out: Path) -> list[dict] | None:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows if any(r.get("step") == STEPS and "val_loss" in r for r in rows) else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default=str(REPO / "runs"), help="where the training runs go")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "chunk_tradeoff.md"))
    args = p.parse_args()
    if not (REPO.parent / "shared" / "data" / "tinyshakespeare").exists():
        print("needs ../shared/data/tinyshakespeare next to the repository", file=sys.stderr)
        return 2
    runs = Path(args.runs)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NESTLEARN_OVERWRITE": "1"}
    for seed in SEEDS:  # the two settings of one seed side by side, one thread each
        todo = [(cso, runs / f"cso{cso}-s{seed}") for cso in SETTINGS if finished(runs / f"cso{cso}-s{seed}") is None]
        procs = [subprocess.Popen(args_for(cso, seed, out), cwd=REPO, env=env, stdout=subprocess.DEVNULL)
                 for cso, out in todo]
        if any(proc.wait() for proc in procs):
            print("a training run failed", file=sys.stderr)
            return 1
    lines = ["# Self-modifying chunk vs quality (tiny HOPE on Tiny Shakespeare)", "",
             "Command: `python benchmarks/chunk_tradeoff.py`; each run is "
             f"`python -m nestlearn train configs/text-tiny.yaml model.selfmod.chunk_size_other=C "
             f"train.steps={STEPS} train.eval_every=100 train.eval_batches=16 train.seed=S` "
             "(one thread, the two settings of a seed side by side).", "",
             "| selfmod.chunk_size_other | seeds | val loss at the last step (mean ± sd) | per seed | "
             "train tok/s (mean) |", "|---:|---:|---:|---|---:|"]
    for cso in SETTINGS:
        losses, rates = [], []
        for seed in SEEDS:
            rows = finished(runs / f"cso{cso}-s{seed}")
            losses.append([r["val_loss"] for r in rows if "val_loss" in r][-1])
            rates.append([r["tok_s"] for r in rows if "tok_s" in r][-1])
        lines.append(f"| {cso} | {len(SEEDS)} | {statistics.mean(losses):.4f} ± {statistics.stdev(losses):.4f} | "
                     f"{', '.join(f'{x:.4f}' for x in losses)} | {statistics.mean(rates):,.0f} |")
    lines += ["", "The preset's CMS levels step every 16 and 64 tokens; at 16 the self-modifying memories "
              "update at the fastest level's frequency."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
