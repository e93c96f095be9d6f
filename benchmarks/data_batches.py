"""Time to build one training batch of each synthetic task, against the reference generator in the same run.

    python benchmarks/data_batches.py           # batch 32 at the recipes' shapes, one thread
    python benchmarks/data_batches.py --quick

The synthetic suites draw a fresh batch every training step in the training process, so a slow generator
adds to every step of every model. Each task is built by its generator and by its ``*_reference`` (the
entry-by-entry loop it replaced, tested equal), interleaved round by round; process CPU time, medians.
Writes benchmarks/results/data_batches.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from nestlearn.benchmarking import machine, stamp, write_lines
from nestlearn.data import formal, synthetic

ROOT = Path(__file__).resolve().parents[1]

# (label, fast, reference, kwargs): the shapes of experiments/synthetic/formal.yaml and mad.yaml
MAD = {"in_context_recall": dict(seq_len=128, n_keys=8, n_values=8),
       "noisy_in_context_recall": dict(seq_len=128, n_keys=8, n_values=8, noise_vocab=16, frac_noise=0.2),
       "fuzzy_in_context_recall": dict(seq_len=128, n_keys=8, vocab=8, max_span=3)}


def cases(batch: int):
    for lang in formal.LANGUAGES:
        yield (f"formal {lang} (lengths 1–50)", lambda s, lang=lang: formal.formal_batch(lang, batch, (1, 50), s),
               lambda s, lang=lang: formal.formal_batch_reference(lang, batch, (1, 50), s))
    for name, kw in MAD.items():
        fast, ref = getattr(synthetic, name), getattr(synthetic, name + "_reference")
        yield (f"MAD {name} (T {kw['seq_len']})",
               lambda s, f=fast, kw=kw: f(batch, **kw, generator=torch.Generator().manual_seed(s)),
               lambda s, f=ref, kw=kw: f(batch, **kw, generator=torch.Generator().manual_seed(s)))


def cpu_ms(fn, seeds: range) -> float:
    t = time.process_time()
    for s in seeds:
        fn(s)
    return (time.process_time() - t) / len(seeds) * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data_batches.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    rounds, per = (1, 2) if args.quick else (args.rounds, 10)
    lines = ["# One batch of each synthetic task: generator vs its reference", "",
             f"Command: `python benchmarks/data_batches.py{' --quick' if args.quick else ''}` (batch {args.batch}; "
             f"process CPU time per batch, median of {rounds} interleaved rounds of {per} batches)  ",
             f"{stamp()}  ", f"Machine: {machine()}", "",
             "| task | generator (ms) | reference (ms) | reference / generator |", "|---|---:|---:|---:|"]
    for label, fast, ref in cases(args.batch):
        got: dict[str, list[float]] = {"fast": [], "ref": []}
        for r in range(rounds):
            seeds = range(r * per, (r + 1) * per)
            got["fast"].append(cpu_ms(fast, seeds))
            got["ref"].append(cpu_ms(ref, seeds))
        f, rf = statistics.median(got["fast"]), statistics.median(got["ref"])
        lines.append(f"| {label} | {f:.2f} | {rf:.2f} | {rf / f:.1f}× |")
        print(lines[-1], flush=True)
    write_lines(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
