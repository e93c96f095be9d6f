"""Optimizer step time of AdamW, Muon and M3 on the same ViT, as ratios measured in one run.

    python benchmarks/optimizer_step.py            # ViT dim 192, depth 6 (the matrices dominate), CPU
    python benchmarks/optimizer_step.py --quick

Only ``optimizer.step()`` is timed (gradients are fixed random tensors), interleaving the optimizers
round by round so that machine noise hits all of them alike. Muon and M3 update the 2-D matrices and
AdamW the rest, as in experiments/optimizers. Writes benchmarks/results/optimizer_step.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from nestlearn.benchmarking import stamp
from nestlearn.models.vit import ViT, ViTConfig
from nestlearn.optim import M3, Optimizers, split_params


def build(name: str, model):
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=1e-3)
    mats, others = split_params(model)
    others += [p for p in mats if p.dim() != 2]
    mats = [p for p in mats if p.dim() == 2]
    main = (torch.optim.Muon(mats, lr=1e-3, adjust_lr_fn="match_rms_adamw") if name == "muon"
            else M3(mats, lr=1e-5, slow_every=25, adjust_lr_fn="match_rms_adamw"))
    return Optimizers(main, torch.optim.AdamW(others, lr=1e-3))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "optimizer_step.md"))
    args = p.parse_args()
    cfg = ViTConfig(dim=64, depth=2) if args.quick else ViTConfig(dim=192, depth=6, heads=6)
    rounds = 5 if args.quick else args.rounds
    names = ("adamw", "muon", "m3")
    models, opts = {}, {}
    for name in names:
        torch.manual_seed(0)
        models[name] = ViT(cfg)
        g = torch.Generator().manual_seed(1)
        for prm in models[name].parameters():
            prm.grad = torch.randn(prm.shape, generator=g) * 1e-2
        opts[name] = build(name, models[name])
        opts[name].step()  # warm-up (state allocation)
    times = {n: [] for n in names}
    for _ in range(rounds):
        for name in names:
            t0 = time.perf_counter()
            opts[name].step()
            times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(t) for n, t in times.items()}
    n_params = sum(q.numel() for q in models["adamw"].parameters())
    cmd = "python benchmarks/optimizer_step.py" + (" --quick" if args.quick else "")
    lines = ["# Optimizer step time on a ViT (AdamW, Muon, M3)", "", f"Command: `{cmd}`  ",
             f"ViT dim {cfg.dim}, depth {cfg.depth}, {n_params / 1e6:.2f}M parameters; CPU, float32, "
             f"{torch.get_num_threads()} threads; {platform.machine()}, torch {torch.__version__}  ",
             f"{stamp()}; median of {rounds} "
             "interleaved rounds. M3 does two Newton–Schulz runs only on slow steps (every f = 25), one otherwise.",
             "", "| optimizer | step (ms) | vs Muon | vs AdamW |", "|---|---:|---:|---:|"]
    for name in names:
        lines.append(f"| {name} | {1e3 * med[name]:.2f} | {med[name] / med['muon']:.2f}× | "
                     f"{med[name] / med['adamw']:.2f}× |")
        print(f"{name:6s} {1e3 * med[name]:8.2f} ms  vs muon {med[name] / med['muon']:.2f}x  "
              f"vs adamw {med[name] / med['adamw']:.2f}x")
    if not args.quick or args.out != p.get_default("out"):
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
