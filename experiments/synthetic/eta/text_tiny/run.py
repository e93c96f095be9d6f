"""D20's bound on language modeling: tiny HOPE on Tiny Shakespeare (configs/text-tiny.yaml), 300 steps,
η_max at its default (D20's stable bound) and at 2, seeds 0 and 1, one thread, one run at a time.
Writes RESULTS.md beside this file (the run folders go to runs/eta-text-tiny/).

    python experiments/synthetic/eta/text_tiny/run.py
"""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
SETTINGS = {"default": [], "2": ["model.selfmod.eta_max=2.0"]}
SEEDS = (0, 1)


def main() -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {}
    for seed in SEEDS:
        for name, extra in SETTINGS.items():
            out = REPO / "runs" / "eta-text-tiny" / f"{name}-{seed}"
            metrics = out / "metrics.jsonl"
            if not metrics.is_file() or '"step": 300, "val_loss"' not in metrics.read_text():
                subprocess.run([sys.executable, "-m", "nestlearn", "train", "configs/text-tiny.yaml",
                                "train.steps=300", "train.eval_every=100", "train.eval_batches=16",
                                f"train.seed={seed}", f"train.out_dir={out}", "train.progress=false", *extra],
                               cwd=REPO, env=env, check=True)
            rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            val = [r for r in rows if "val_loss" in r]
            results[name, seed] = (val[-1]["val_loss"], [round(r["val_loss"], 4) for r in val])
    from nestlearn.experiments.protocol import code_version

    version = code_version()
    lines = ["# D20's bound on language modeling (tiny HOPE, Tiny Shakespeare)", "",
             f"Command: `python experiments/synthetic/eta/text_tiny/run.py` (commit {version['commit']}, code "
             f"{version['code']}; a finished run folder is reused); each run is "
             "`nestlearn train configs/text-tiny.yaml train.steps=300 train.eval_every=100 train.eval_batches=16 "
             "train.seed=S [model.selfmod.eta_max=2.0]`, one thread.", "",
             "| selfmod.eta_max | val loss at step 300 (mean over seeds) | per seed "
             "| val loss at steps 100 / 200 / 300 (seed 0) |", "|---|---:|---|---|"]
    for name in SETTINGS:
        finals = [results[name, s][0] for s in SEEDS]
        label = "default (D20's stable bound)" if name == "default" else name
        lines.append(f"| {label} | {statistics.mean(finals):.4f} | {', '.join(f'{x:.4f}' for x in finals)} | "
                     f"{' / '.join(str(x) for x in results[name, 0][1])} |")
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
