"""Regenerate the golden loss trace of the debug config (tests/golden/debug_loss.json).

    python scripts/make_golden.py

Run it only when a numeric change is intended, and say so in the commit message.
"""

import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nestlearn.train import load_config, train  # noqa: E402

STEPS = 20


def trace() -> list[float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: reductions in a fixed order
    try:
        with tempfile.TemporaryDirectory() as out:
            cfg = load_config(REPO / "configs" / "debug.yaml",
                              [f"train.steps={STEPS}", f"train.out_dir={out}", "train.progress=false",
                               "train.log_every=1", "train.eval_every=1000", "train.ckpt_every=1000"])
            return [h["loss"] for h in train(cfg).history if "loss" in h]
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    path = REPO / "tests" / "golden" / "debug_loss.json"
    path.write_text(json.dumps({"config": "configs/debug.yaml", "steps": STEPS, "loss": trace()}, indent=1) + "\n")
    print(f"wrote {path}")
