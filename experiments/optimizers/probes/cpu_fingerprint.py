"""Do the stored runs' fingerprints hold on this CPU, and how far does one optimizer step amplify rounding?

    python experiments/optimizers/probes/cpu_fingerprint.py [--data-root ../shared/data]

``nestlearn optimizers`` treats a stored run as done when its code version is this one's or when its
fingerprint (the losses of a 3-step run of the same optimizer, ``Runs.fingerprint``) equals this code's to
rounding (``protocol.same_behaviour``: relative 1e-4). The runs were trained on one CPU; on another the
fingerprint is computed again. Part 1 compares, per dataset and optimizer, this CPU's fingerprint with the stored
rows' (their largest relative difference, and whether the store accepts them). Part 2 measures why a
fingerprint can move: from one initialization and one batch of 128 training images, one step of each optimizer
at the fingerprint's rate, once with the gradient as computed and once with every entry multiplied by
1 + 10⁻⁶·N(0, 1) (a rounding-sized change, as another CPU's summation order makes). It reports the largest
change of a weight against the largest entry of the step itself. Trains nothing that is stored; about a minute.
Writes ``cpu_fingerprint.md`` beside this file.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from nestlearn.benchmarking import machine, stamp, write_lines
from nestlearn.experiments.optimizers import (
    DATASETS,
    DEFAULTS,
    OPTIMIZERS,
    Runs,
    ViT,
    ViTConfig,
    code_version,
    dataset,
    make_optimizer,
    parser,
)
from nestlearn.experiments.protocol import same_behaviour

HERE = Path(__file__).parent
STORE = HERE.parent / "runs.jsonl"


def largest_relative(a: list[float], b: list[float]) -> float:
    """max |a − b| / max(|b|, 1e-12) over the entries (inf when the lengths differ)."""
    if len(a) != len(b):
        return float("inf")
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b, strict=True))


def amplification(model: torch.nn.Module, name: str, lr: float, hp: dict, args, x, y,
                  noise: float = 1e-6, seed: int = 1) -> tuple[float, float]:
    """(largest step entry, largest weight change that relative ``noise`` on the gradient makes) for one step
    of optimizer ``name`` from ``model``'s weights on the batch ``(x, y)``; ``model`` is not changed."""
    after = []
    for scale in (0.0, noise):
        m = copy.deepcopy(model)
        opt = make_optimizer(name, m, lr, hp, args)
        F.cross_entropy(m(x), y).backward()
        g = torch.Generator().manual_seed(seed)
        for p in m.parameters():
            if p.grad is not None and scale:
                p.grad.mul_(1 + scale * torch.randn(p.grad.shape, generator=g))
        opt.step()
        after.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    return (after[0] - before).abs().max().item(), (after[0] - after[1]).abs().max().item()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--out", default=str(HERE / "cpu_fingerprint.md"))
    a = p.parse_args()
    torch.set_num_threads(1)
    args = parser().parse_args(["--data-root", a.data_root])
    args.grid = [float(g) for g in args.grid.split(",")]  # only the grid and the model settings reach the fingerprint
    lr = args.grid[len(args.grid) // 2]
    runs = Runs(STORE, code_version()["code"])
    lines = ["# The optimizer experiment's fingerprints on this CPU", "",
             "Command: `python experiments/optimizers/probes/cpu_fingerprint.py`  ",
             f"{stamp()} on {machine()}.", "",
             "## 1. This CPU's fingerprint against the stored rows'", "",
             "| dataset | optimizer | stored rows | distinct stored fingerprints | largest relative difference "
             "| the store accepts them |", "|---|---|---:|---:|---:|---|"]
    amp = []
    for ds in DATASETS:
        data, size, channels = dataset(ds, args)
        for name in OPTIMIZERS:
            fp = runs.fingerprint(ds, name, data, args, size, channels)
            stored = [r["fingerprint"] for r in runs.rows if r["dataset"] == ds and r["optimizer"] == name]
            distinct = [f for i, f in enumerate(stored) if f not in stored[:i]]
            diff = max((largest_relative(fp, f) for f in distinct), default=float("nan"))
            ok = all(same_behaviour(f, fp) for f in distinct) if distinct else None
            lines.append(f"| {ds} | {name} | {len(stored)} | {len(distinct)} | {diff:.2g} | "
                         f"{'—' if ok is None else 'yes' if ok else '**no**'} |")
            torch.manual_seed(0)
            model = ViT(ViTConfig(image_size=size, channels=channels, patch=4, dim=args.dim, depth=args.depth,
                                  heads=4, classes=10))
            step, moved = amplification(model, name, lr, dict(DEFAULTS.get(name, {})), args,
                                        data[0][:128], data[1][:128])
            amp.append(f"| {ds} | {name} | {step:.3g} | {moved:.3g} | {moved / step:.2g} |")
            print(lines[-1], amp[-1], sep="\n", flush=True)
    lines += ["", f"## 2. One step at rate {lr:g}: a rounding-sized change of the gradient (relative 1e-6) against "
              "the step", "", "| dataset | optimizer | largest step entry | largest weight change from the "
              "gradient's change | ratio |", "|---|---|---:|---:|---:|", *amp]
    write_lines(a.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
