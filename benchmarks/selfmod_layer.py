"""How much of one self-modifying Titans layer's time is per-op overhead.

    python benchmarks/selfmod_layer.py

Times one ``SelfModifyingTitans`` layer (forward + backward, and a no-grad forward) over T=512 tokens
at the `small` preset's width and, with the same chunk sizes and so the same sequence of ops, at a
width and batch where the data is negligible. The second row is the cost of running the ops at all
(Python, dispatcher, autograd); the difference is the cost of the data. A third row runs the
small width with the fused CPU chunk kernel turned off (``NESTLEARN_KERNELS=torch``): the same layer in
PyTorch ops only. Writes benchmarks/results/selfmod_layer.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import torch

from nestlearn.layers import SelfModifyingTitans
from nestlearn.models import preset

sys.path.insert(0, str(Path(__file__).parent))
from memory_write import kernels  # noqa: E402

from nestlearn.benchmarking import allocator, preloaded, stamp, timed, write_lines  # noqa: E402


def layer_fns(dim: int, heads: int, B: int, T: int):
    """Forward + backward and no-grad forward of one layer on fixed input."""
    cfg = dataclasses.replace(preset("small", block="hope").selfmod, heads=heads)
    torch.manual_seed(0)
    layer = SelfModifyingTitans(dim, cfg)
    x = torch.randn(B, T, dim, requires_grad=True)

    def train():
        y, _ = layer(x)
        y.square().sum().backward()

    def infer():
        with torch.no_grad():
            layer(x)

    return train, infer


def alternate(cases: list, repeats: int) -> list[tuple[float, float]]:
    """Median times of every case, measured round-robin (one of each in turn), so that a drift of
    the machine's speed during the run touches every case alike. ``cases``: (train, infer, mode)."""
    samples = [([], []) for _ in cases]
    for r in range(repeats + 1):  # the first round warms up
        for (train, infer, mode), (tr, inf) in zip(cases, samples, strict=True):
            with kernels(mode):
                t_tr, t_inf = timed(train, 0, warmup=False), timed(infer, 0, warmup=False)
            if r:
                tr.append(t_tr)
                inf.append(t_inf)
    return [(statistics.median(tr), statistics.median(inf)) for tr, inf in samples]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "selfmod_layer.md"))
    args = p.parse_args()
    small = preset("small", block="hope")
    T = 512
    rows = [("small width", small.dim, small.selfmod.heads, 4, "auto"),
            ("width 8, B=1 (data negligible)", 8, small.selfmod.heads, 1, "auto"),
            ("small width, PyTorch ops only (`NESTLEARN_KERNELS=torch`)", small.dim, small.selfmod.heads, 4, "torch")]
    times = alternate([(*layer_fns(dim, heads, B, T), mode) for _, dim, heads, B, mode in rows], args.repeats)
    results = []
    for (label, dim, heads, B, _), (tr, inf) in zip(rows, times, strict=True):
        results.append((label, dim, heads, B, tr, inf))
        print(f"{label:32s} fwd+bwd {tr * 1e3:7.0f} ms   no-grad fwd {inf * 1e3:7.0f} ms", flush=True)
    alloc = allocator()
    cmd = "python benchmarks/selfmod_layer.py"
    if args.repeats != p.get_default("repeats"):
        cmd += f" --repeats {args.repeats}"
    if args.out != p.get_default("out"):
        cmd += f" --out {args.out}"
    cmd = preloaded(cmd, alloc)
    lines = ["# One self-modifying Titans layer: data vs per-op overhead", "",
             f"Command: `{cmd}`  ",
             f"T={T}, chunk sizes {small.selfmod.chunk_size}/{small.selfmod.chunk_size_other} (small preset), "
             f"float32, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, malloc: {alloc}  ",
             f"{stamp()}, median of "
             f"{args.repeats} rounds after a warm-up round; each round runs every row once in turn.", "",
             "| shape | dim | heads | B | fwd + bwd (ms) | no-grad fwd (ms) |", "|---|---:|---:|---:|---:|---:|"]
    for label, dim, heads, B, tr, inf in results:
        lines.append(f"| {label} | {dim} | {heads} | {B} | {tr * 1e3:.0f} | {inf * 1e3:.0f} |")
    share = results[1][4] / results[0][4]
    lines += ["", f"Per-op overhead (the negligible-data row) is {share:.0%} of the small-width layer's "
              "forward + backward. The fused CPU chunk kernel makes the small-width layer "
              f"{results[2][4] / results[0][4]:.2f}× faster in forward + backward and "
              f"{results[2][5] / results[0][5]:.2f}× in the no-grad forward than PyTorch ops alone."]
    write_lines(args.out, lines)
    print(f"overhead share {share:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
