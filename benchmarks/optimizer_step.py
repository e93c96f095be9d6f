"""Optimizer step time of AdamW, Muon, M3 and M3's EMA form on the same ViT, as ratios measured in one run.

    python benchmarks/optimizer_step.py            # two ViTs: dim 192, depth 6 (the matrices dominate), and
                                                   # the optimizer experiment's (dim 64, depth 4); CPU, 1 thread
    python benchmarks/optimizer_step.py --quick

Only ``optimizer.step()`` is timed (gradients are fixed random tensors), interleaving the optimizers
round by round so that machine noise hits all of them alike. Each optimizer is built as
experiments/optimizers builds it (``nestlearn.optim.build_optimizer``: Muon, ``m3`` (Algorithm 1, plain
sums) and ``m3-ema`` (D15) on the 2-D matrices, AdamW on the rest; f = 25). Writes
benchmarks/results/optimizer_step.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from nestlearn.benchmarking import cpu, stamp
from nestlearn.models.vit import ViT, ViTConfig
from nestlearn.optim import build_optimizer
from nestlearn.optim.newton_schulz import newton_schulz

NAMES = ("adamw", "muon", "m3", "m3-ema", "m3-ema bf16")
BF16 = " bf16"  # the same optimizer with Newton–Schulz in bfloat16 (torch.optim.Muon's precision on every device)


def build(name: str, model):
    """As ``experiments/optimizers.make_optimizer``: the rate on the matrices, AdamW at 1e-3 on the rest."""
    base = name.removesuffix(BF16)
    hp = {"alpha": 0.1, "slow_every": 25} if base.startswith("m3") else {}
    opt = build_optimizer(model, base, lr=1e-3, matrix_lr=None if base == "adamw" else 1e-4,
                          betas=(0.9, 0.999), **hp)
    if name.endswith(BF16):
        for g in opt.opts[0].param_groups:
            g["ns_dtype"] = torch.bfloat16
    return opt


def newton_schulz_times(cfg: ViTConfig, rounds: int) -> list[tuple[tuple[int, ...], float, float]]:
    """Median ms of one 5-step Newton–Schulz per distinct matrix shape of the ViT, float32 and bfloat16."""
    shapes = sorted({tuple(q.shape) for q in ViT(cfg).parameters() if q.dim() == 2 and min(q.shape) > 10})
    out = []
    for shape in shapes:
        G = torch.randn(shape)
        med = []
        for dtype in (torch.float32, torch.bfloat16):
            newton_schulz(G, dtype=dtype)
            ts = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                newton_schulz(G, dtype=dtype)
                ts.append(time.perf_counter() - t0)
            med.append(1e3 * statistics.median(ts))
        out.append((shape, *med))
    return out


def measure(cfg: ViTConfig, rounds: int) -> tuple[dict, int]:
    """Median seconds of ``step()`` per optimizer, the optimizers interleaved round by round."""
    models, opts = {}, {}
    for name in NAMES:
        torch.manual_seed(0)
        models[name] = ViT(cfg)
        g = torch.Generator().manual_seed(1)
        for prm in models[name].parameters():
            prm.grad = torch.randn(prm.shape, generator=g) * 1e-2
        opts[name] = build(name, models[name])
        opts[name].step()  # warm-up (state allocation)
    times = {n: [] for n in NAMES}
    for _ in range(rounds):
        for name in NAMES:
            t0 = time.perf_counter()
            opts[name].step()
            times[name].append(time.perf_counter() - t0)
    return {n: statistics.median(t) for n, t in times.items()}, sum(q.numel() for q in models["adamw"].parameters())


def _cpu() -> str:
    """The CPU's model name and whether it has native bfloat16 products (which decide bfloat16's speed)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return cpu()
    name = cpu()
    flags = [f for f in ("avx512_bf16", "amx_bf16") if f in info]
    return f"{name}, {', '.join(flags) if flags else 'no native bfloat16 instructions'}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the experiment runs one per process)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "optimizer_step.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    shapes = ([("dim 64, depth 2", ViTConfig(dim=64, depth=2))] if args.quick else
              [("dim 192, depth 6, 6 heads", ViTConfig(dim=192, depth=6, heads=6)),
               ("dim 64, depth 4 (experiments/optimizers)", ViTConfig(dim=64, depth=4, heads=4))])
    rounds = 5 if args.quick else args.rounds
    cmd = "python benchmarks/optimizer_step.py" + (" --quick" if args.quick else "")
    if args.threads != 1:
        cmd += f" --threads {args.threads}"
    lines = ["# Optimizer step time on a ViT (AdamW, Muon, M3 as printed, M3's EMA form)", "", f"Command: `{cmd}`  ",
             f"CPU, float32, {torch.get_num_threads()} thread(s); {platform.machine()}, torch {torch.__version__}  ",
             f"{stamp()}; median of {rounds} interleaved rounds; each optimizer built as experiments/optimizers "
             "builds it (f = 25: M3's two Newton–Schulz runs every 25th step, one otherwise); `m3-ema bf16` is "
             f"m3-ema with its Newton–Schulz in bfloat16, Muon's precision. CPU: {_cpu()}.", ""]
    for label, cfg in shapes:
        med, n_params = measure(cfg, rounds)
        lines += [f"## ViT {label}, {n_params / 1e6:.2f}M parameters", "",
                  "| optimizer | step (ms) | vs Muon | vs AdamW |", "|---|---:|---:|---:|"]
        print(label)
        for name in NAMES:
            lines.append(f"| {name} | {1e3 * med[name]:.2f} | {med[name] / med['muon']:.2f}× | "
                         f"{med[name] / med['adamw']:.2f}× |")
            print(f"  {name:6s} {1e3 * med[name]:8.2f} ms  vs muon {med[name] / med['muon']:.2f}x  "
                  f"vs adamw {med[name] / med['adamw']:.2f}x")
        lines += ["", "Newton–Schulz alone (5 quintic steps) per matrix shape of this ViT, float32 against bfloat16 "
                  "(M3's `ns_dtype`: float32 on a CPU by default; `torch.optim.Muon` works in bfloat16 everywhere):",
                  "", "| matrix | float32 (ms) | bfloat16 (ms) | bfloat16 / float32 |", "|---|---:|---:|---:|"]
        for shape, f32, b16 in newton_schulz_times(cfg, rounds):
            lines.append(f"| {shape[0]} × {shape[1]} | {f32:.3f} | {b16:.3f} | {b16 / f32:.2f}× |")
        lines.append("")
    if not args.quick or args.out != p.get_default("out"):
        Path(args.out).write_text("\n".join(lines))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
