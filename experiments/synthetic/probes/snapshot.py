"""Kept weights from a run still in progress: its best weights so far, in the format probes read.

    python experiments/synthetic/probes/snapshot.py experiments/synthetic/probes/cms_static_fuzzy.yaml \
        experiments/synthetic/probes/cms_static_fuzzy/.partial/<run>

A suite keeps a run's weights (``--keep-weights``) only when the run finishes. A run in progress checkpoints under
its suite's ``.partial/<run>/checkpoints/step_N`` every 250 steps, with the weights of its best validation so far
(``best.safetensors``). This writes those weights of the latest checkpoint, with the run's identity (its task,
model, seed, rate, code version, the step of those weights), as ``synthetic.load_weights`` reads them, under
``--out`` (default ``runs/weights/<family>/<task>-<model>-<phase>-seed<S>-lr<R>-<code>-step<N>.pt``), so that any
probe (``fuzzy_errors.py``, ``ablate.py``, …) can score the run mid-training. The run is not touched. The recipe
must be the one the run belongs to: its identity (``run.json``) must match the recipe's settings for that run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml
from safetensors.torch import load_file

from nestlearn.experiments import synthetic as suite
from nestlearn.experiments.protocol import rate

NAME = re.compile(r"^(?P<task>[a-z0-9_]+)-(?P<model>[A-Za-z0-9_.]+)-(?P<phase>select|final)-seed(?P<seed>\d+)"
                  r"-lr(?P<lr>[0-9.e+-]+)-[0-9a-f]+$")


def snapshot(recipe_path: str | Path, run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the latest checkpoint's best weights of the run in progress ``run_dir`` as kept weights; their path."""
    run_dir = Path(run_dir)
    m = NAME.match(run_dir.name)
    if m is None:
        raise ValueError(f"{run_dir}: not a run in progress of a suite "
                         "(.partial/<task>-<model>-<phase>-seed<S>-lr<R>-…)")
    latest = run_dir / "checkpoints" / "latest"
    if not latest.is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint yet (checkpoints/latest)")
    ckpt = run_dir / "checkpoints" / latest.read_text().strip()
    recipe = suite.load_recipe(recipe_path)
    task, name, seed, lr = m["task"], m["model"], int(m["seed"]), float(m["lr"])
    if task not in recipe.tasks or name not in recipe.models:
        raise ValueError(f"{run_dir}: a run of {task} {name}, which {recipe_path} does not train")
    ident = json.loads((run_dir / "run.json").read_text())
    spec = recipe.variants.get(name, {"block": name})
    if ident.get("spec") != spec or ident.get("task_args") != recipe.tasks[task] \
            or ident.get("recipe_model") != recipe.model:
        raise ValueError(f"{run_dir}: the run's identity (run.json) does not match {recipe_path}'s settings for "
                         f"{task} {name}")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]
    sub = suite._Suite(recipe, []).settings(name, lr)
    model = suite._build(sub, task, suite.from_dict(cfg))
    model.load_state_dict(load_file(ckpt / "best.safetensors"))
    state = json.loads((ckpt / "state.json").read_text())
    row = {"task": task, "model": name, "block": spec["block"], "seed": seed, "lr": lr, "code": ident.get("code"),
           "config": cfg, "best_step": state.get("best_step"), "steps_run": state.get("step")}
    out = Path(out) if out else (Path("runs/weights") / recipe.family /
                                 f"{task}-{name}-{m['phase']}-seed{seed}-lr{rate(lr):g}-{row['code']}"
                                 f"-step{state.get('step')}.pt")
    suite.save_weights(out, model, sub, row)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipe", help="the suite's recipe (the .yaml the run belongs to)")
    p.add_argument("run", help="the run in progress: <suite out>/.partial/<run>")
    p.add_argument("--out", help="where to write the weights (default under runs/weights/<family>/)")
    args = p.parse_args()
    path = snapshot(args.recipe, args.run, args.out)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
