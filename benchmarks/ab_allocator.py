"""The training step under glibc's malloc and under jemalloc, interleaved in one session: which allocator
should the long experiments run under?

    python benchmarks/ab_allocator.py --shape formal --blocks hope titans delta --rounds 2

Each measurement is its own process (``LD_PRELOAD`` acts at start-up), alternating glibc, jemalloc,
glibc, … so that drift of this shared machine falls on both alike. Every process measures each block's
training tokens/s at the shape's model and batch (``benchmarks/model_step.py``'s ``SHAPES``), the
Transformer among them, on one thread as the experiment suites run. The allocator only places memory: the
numbers a run computes are the same under both. Writes ``benchmarks/results/ab_allocator_SHAPE.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from nestlearn.benchmarking import allocator, commit, throughput, write_lines  # noqa: E402

JEMALLOC = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
            "/usr/lib64/libjemalloc.so.2")


def child(shape: str, blocks: list[str], repeats: int) -> None:
    """One process: ``{"allocator": …, block: training tokens/s}`` as a JSON line."""
    from model_step import SHAPES

    from nestlearn.models import CausalLM

    torch.set_num_threads(1)
    build, B, T, _ = SHAPES[shape]
    out = {"allocator": allocator()}
    for block in blocks:
        torch.manual_seed(0)
        model = CausalLM(build(block))
        ids = torch.randint(0, model.cfg.vocab_size, (B, T))
        out[block] = throughput(model, ids, repeats)[0]
    print(json.dumps(out), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="formal", help="a shape of benchmarks/model_step.py (formal, synthetic, …)")
    p.add_argument("--blocks", nargs="+", default=["hope", "titans", "delta"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    blocks = ["transformer"] + [b for b in args.blocks if b != "transformer"]
    if args.child:
        child(args.shape, blocks, args.repeats)
        return 0
    lib = next((path for path in JEMALLOC if Path(path).exists()), None)
    if lib is None:
        raise SystemExit(f"no libjemalloc.so.2 in {', '.join(JEMALLOC)} (Debian: apt-get install libjemalloc2)")
    runs: dict[str, list[dict]] = {"glibc": [], "jemalloc": []}
    base_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    cmd = [sys.executable, __file__, "--child", "--shape", args.shape, "--repeats", str(args.repeats),
           "--blocks", *blocks]
    for r in range(args.rounds):
        for name, env in (("glibc", base_env), ("jemalloc", {**base_env, "LD_PRELOAD": lib})):
            done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            want = "jemalloc" if name == "jemalloc" else "system (glibc)"
            if row["allocator"] != want:
                raise SystemExit(f"round {r}: the {name} process ran under {row['allocator']}")
            runs[name].append(row)
            print(f"round {r} {name}: " + "  ".join(f"{b} {row[b]:,.0f} tok/s" for b in blocks), flush=True)
    med = {n: {b: statistics.median(x[b] for x in rs) for b in blocks} for n, rs in runs.items()}
    out = args.out or str(Path(__file__).parent / "results" / f"ab_allocator_{args.shape}.md")
    command = "python benchmarks/ab_allocator.py" + (f" --shape {args.shape}" if args.shape != "formal" else "") + (
        f" --blocks {' '.join(args.blocks)}" if args.blocks != ["hope", "titans", "delta"] else "") + (
        f" --rounds {args.rounds}" if args.rounds != 2 else "")
    lines = [f"# The training step under glibc's malloc and under jemalloc ({args.shape} shape)", "",
             f"Command: `{command}`  ",
             f"{platform.machine()}, 1 thread, torch {torch.__version__}; commit {commit()}; {args.rounds} interleaved "
             f"rounds (glibc, jemalloc, …), each a process; jemalloc: `LD_PRELOAD={lib}`.", "",
             "Training tokens/s (median over rounds) and the speed-up of jemalloc over glibc:", "",
             "| block | glibc tok/s | jemalloc tok/s | jemalloc / glibc |", "|---|---:|---:|---:|"]
    for b in blocks:
        lines.append(f"| {b} | {med['glibc'][b]:,.0f} | {med['jemalloc'][b]:,.0f} | "
                     f"{med['jemalloc'][b] / med['glibc'][b]:.2f}× |")
    write_lines(out, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
