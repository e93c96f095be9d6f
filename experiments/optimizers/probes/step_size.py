"""How far each optimizer moves the ViT's matrices per step, at the settings experiments/optimizers selected.

    python experiments/optimizers/probes/step_size.py [--data-root ../shared/data] [--steps 200]

Trains the experiment's ViT (dim 64, depth 4) on its CIFAR-10 batches (seed 0) with each optimizer for
``--steps`` steps, and measures, at a few steps, the matrices' update: its RMS relative to the weights' RMS
(the median over matrices), and the distribution of its entries' sizes (median, 99.9th percentile, max).
Muon's update is an orthogonalised momentum, whose entries are of similar size; M3 divides its orthogonalised
momenta entrywise by √V, which spreads them. Writes ``step_size.md`` beside this file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from nestlearn.benchmarking import stamp
from nestlearn.data.images import load_cifar10_subset
from nestlearn.experiments.optimizers import Epochs, make_optimizer, parser
from nestlearn.models.vit import ViT, ViTConfig

# the selected settings of RESULTS.md (CIFAR-10), and m3-ema at the grid's faster rates for contrast
SETTINGS = (("muon", 1e-3, {"momentum": 0.95}), ("m3", 1e-5, {"alpha": 0.1, "slow_every": 25}),
            ("m3-ema", 3.16e-7, {"alpha": 0.3, "slow_every": 100}),
            ("m3-ema", 3.16e-6, {"alpha": 0.1, "slow_every": 25}),
            ("m3-ema", 3.16e-5, {"alpha": 0.1, "slow_every": 25}))


def probe(name, lr, hp, x, y, steps, at) -> list[dict]:
    torch.manual_seed(0)
    settings = parser().parse_args([])  # the experiment's ViT and optimizer settings
    model = ViT(ViTConfig(image_size=32, channels=3, patch=4, dim=settings.dim, depth=settings.depth, heads=4,
                          classes=10))
    opt = make_optimizer(name, model, lr, hp, settings)
    mats = list(opt.opts[0].param_groups[0]["params"])  # the matrices Muon / M3 update
    data, out = Epochs(x, y, settings.batch, 0), []
    for step in range(1, steps + 1):
        xb, yb = data.train(step - 1)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        before = [p.detach().clone() for p in mats]
        opt.step()
        if step in at:
            rel = statistics.median(((p.detach() - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()).item()
                                    for p, b in zip(mats, before, strict=True))
            d = torch.cat([(p.detach() - b).abs().flatten() for p, b in zip(mats, before, strict=True)])
            q = torch.quantile(d, torch.tensor([0.5, 0.999]))
            out.append({"step": step, "loss": loss.item(), "rel": rel, "median": q[0].item(), "p999": q[1].item(),
                        "max": d.max().item()})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(1)
    x, y, _, _ = load_cifar10_subset(Path(args.data_root) / "cifar10_subset")
    at = sorted({s for s in (10, 50, args.steps) if s <= args.steps})
    lines = ["# How far each optimizer moves the ViT's matrices per step", "",
             "Command: `python experiments/optimizers/probes/step_size.py" +
             (f" --steps {args.steps}" if args.steps != 200 else "") + "`  ",
             f"{stamp()}. The experiment's ViT and CIFAR-10 batches (seed 0), each optimizer at the settings "
             "`RESULTS.md` selected, and m3-ema at two faster rates of its grid. `update / weight`: the RMS of a "
             "matrix's update over the RMS of its weights, the median over matrices; then the sizes of the update's "
             "entries over every matrix.", "",
             "| optimizer | lr | settings | step | training loss | update / weight | entry median | "
             "99.9th percentile | max | 99.9th / median |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, lr, hp in SETTINGS:
        for r in probe(name, lr, hp, x, y, args.steps, at):
            lines.append(f"| {name} | {lr:g} | {json.dumps(hp)} | {r['step']} | {r['loss']:.3f} | {r['rel']:.2e} | "
                         f"{r['median']:.2e} | {r['p999']:.2e} | {r['max']:.2e} | {r['p999'] / r['median']:.0f} |")
            print(lines[-1], flush=True)
    out = Path(__file__).with_suffix(".md")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
