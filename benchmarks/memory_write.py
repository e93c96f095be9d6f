"""Chunk-parallel memory write vs the token-loop reference, measured in the same run.

    python benchmarks/memory_write.py            # H=4, D=64, T=2048, C=64, B=8, float32, CPU
    python benchmarks/memory_write.py --quick    # a smaller shape, for a smoke run

Prints tokens/s of both paths and their ratio for each memory kind and rule, and writes the table
to benchmarks/results/memory_write.md. The chunked path runs twice: as the library runs it on a CPU
(the fused C++ chunk kernel, ``nestlearn/memory/write/fused.py``) and in PyTorch ops only
(``NESTLEARN_KERNELS=torch``). Target (issue 2): the chunked linear DGD write is ≥ 10× the reference.

A second table measures a sequence mixer's pass, ``Memory.read_write``, in both read modes in the same
run: per-token reads (the dual form, computed inside the chunk pass) against chunk-start reads (a read
of the chunk-start state per chunk, then the write). Target (issue 12): per-token ≤ 1.25× chunk-start.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

from nestlearn.benchmarking import stamp, timed
from nestlearn.memory import LinearMemory, MLPMemory
from nestlearn.memory.write import fused

TARGET = 10.0
READ_TARGET = 1.25


def make_case(kind: str, rule: str, momentum: bool, H: int, D: int, C: int):
    if kind == "linear":
        return LinearMemory(H, D, D, rule=rule, chunk_size=C, momentum=momentum)
    return MLPMemory(H, D, D, rule=rule, chunk_size=C, momentum=momentum)


def inputs(mem, B: int, T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    H, D = mem.heads, mem.dim_in
    k = torch.nn.functional.normalize(torch.randn(B, T, H, D, generator=g), dim=-1)
    v = torch.randn(B, T, H, mem.dim_out, generator=g)
    eta = 0.05 + 0.1 * torch.rand(B, T, H, generator=g)
    alpha = 0.95 + 0.05 * torch.rand(B, T, H, generator=g)
    beta = 0.9 * torch.rand(B, T, H, generator=g) if mem.momentum else None
    return k, v, eta, alpha, beta


@contextlib.contextmanager
def kernels(mode: str):
    """Run the chunked path with ``NESTLEARN_KERNELS=mode`` ("auto": the fused kernel where it builds)."""
    prev = os.environ.get("NESTLEARN_KERNELS")
    os.environ["NESTLEARN_KERNELS"] = mode
    try:
        yield
    finally:
        if prev is None:
            del os.environ["NESTLEARN_KERNELS"]
        else:
            os.environ["NESTLEARN_KERNELS"] = prev


def measure(mem, B, T, impl, train, repeats):
    k, v, eta, alpha, beta = inputs(mem, B, T)
    if train:
        k.requires_grad_(True)

        def run():
            state = mem.write(mem.init_state(B), k, v, eta, alpha, beta, impl=impl, validate=False)
            sum(w.sum() for w in state.weights).backward()
        return timed(run, repeats)
    with torch.no_grad():
        return timed(lambda: mem.write(mem.init_state(B), k, v, eta, alpha, beta, impl=impl, validate=False),
                     repeats)


def measure_read(mem, B, T, read, train, repeats):
    """Seconds of one ``read_write`` pass (write + reads at every token) in the given read mode."""
    k, v, eta, alpha, beta = inputs(mem, B, T)
    g = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(B, T, mem.heads, mem.dim_in, generator=g), dim=-1)
    if train:
        k.requires_grad_(True)
        q.requires_grad_(True)

        def run():
            y, state = mem.read_write(mem.init_state(B), q, k, v, eta, alpha, beta, read=read, validate=False)
            (y.sum() + sum(w.sum() for w in state.weights)).backward()
        return timed(run, repeats)
    with torch.no_grad():
        return timed(lambda: mem.read_write(mem.init_state(B), q, k, v, eta, alpha, beta, read=read, validate=False),
                     repeats)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small shape for a smoke run")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory_write.md"))
    args = p.parse_args()
    B, T, H, D, C = (2, 256, 2, 32, 32) if args.quick else (8, 2048, 4, 64, 64)
    torch.manual_seed(0)
    cases = [("linear", "dgd", False, False), ("linear", "gd", False, False), ("linear", "delta", False, False),
             ("linear", "dgd", True, False), ("mlp", "dgd", False, False), ("linear", "dgd", False, True),
             ("mlp", "dgd", True, True)]
    rows = []
    for kind, rule, momentum, train in cases:
        mem = make_case(kind, rule, momentum, H, D, C)
        with kernels("auto"):
            t_chunk = measure(mem, B, T, "chunk", train, repeats=5)
        with kernels("torch"):
            t_ops = measure(mem, B, T, "chunk", train, repeats=5)
        t_ref = measure(mem, B, T, "reference", train, repeats=1 if train or kind == "mlp" else 3)
        rows.append((kind, rule, momentum, "fwd+bwd" if train else "write", B * T / t_chunk, B * T / t_ops,
                     B * T / t_ref, t_ref / t_chunk))
        print(f"{kind:6s} {rule:5s} momentum={momentum!s:5s} {rows[-1][3]:7s} chunk {rows[-1][4]:>12,.0f} tok/s"
              f"  chunk (PyTorch ops) {rows[-1][5]:>12,.0f} tok/s  reference {rows[-1][6]:>10,.0f} tok/s"
              f"  ratio {rows[-1][7]:6.1f}x", flush=True)

    reads = []
    for kind, rule, momentum, train in cases:
        mem = make_case(kind, rule, momentum, H, D, C)
        t = {"token": [], "chunk_start": []}
        for _ in range(3):  # round robin, so that drift touches both modes alike
            for read in t:
                t[read].append(measure_read(mem, B, T, read, train, repeats=3))
        tok, start = statistics.median(t["token"]), statistics.median(t["chunk_start"])
        what = "fwd+bwd" if train else "no_grad"
        reads.append((kind, rule, momentum, what, B * T / tok, B * T / start, tok / start))
        print(f"{kind:6s} {rule:5s} momentum={momentum!s:5s} {what:7s} read_write token {B * T / tok:>12,.0f} "
              f"tok/s  chunk_start {B * T / start:>12,.0f} tok/s  token/chunk_start time {tok / start:.2f}x",
              flush=True)
    worst = max(r[6] for r in reads)
    read_ok = worst <= READ_TARGET

    headline = rows[0][7]
    ok = headline >= TARGET
    cmd = "python benchmarks/memory_write.py" + (" --quick" if args.quick else "")
    lines = [
        "# Memory write: chunk-parallel vs token-loop reference",
        "",
        f"Command: `{cmd}`  ",
        f"Shape: B={B}, T={T}, H={H}, D={D} (MLP hidden={D}), C={C}, float32, CPU, "
        f"{torch.get_num_threads()} threads  ",
        f"Machine: {platform.machine()}, {platform.processor() or 'unknown cpu'}, torch {torch.__version__}, "
        f"Python {platform.python_version()}  ",
        f"{stamp()}; median of 5 runs "
        "(chunk), 1–3 runs (reference); `write` under no_grad, `fwd+bwd` includes the backward pass.",
        "",
        f"`chunk`: as the library runs on this machine (fused CPU kernel: "
        f"{'yes' if fused.kernel() is not None else 'no, it did not build'}); `chunk, PyTorch ops`: "
        "`NESTLEARN_KERNELS=torch`.",
        "",
        "| memory | rule | momentum | pass | chunk tok/s | chunk, PyTorch ops tok/s | fused vs PyTorch ops | "
        "reference tok/s | chunk vs reference |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for kind, rule, mom, what, c, o, r, ratio in rows:
        lines.append(f"| {kind} | {rule} | {'yes' if mom else 'no'} | {what} | {c:,.0f} | {o:,.0f} | {c / o:.2f}× | "
                     f"{r:,.0f} | {ratio:.1f}× |")
    lines += ["", f"Target: linear DGD write ≥ {TARGET:.0f}× the reference: "
              f"{'met' if ok else 'NOT met'} ({headline:.1f}×).", "",
              "## Read modes of `Memory.read_write` (fused kernel; median of 3 rounds × 3 runs, modes alternated)",
              "", "| memory | rule | momentum | pass | per-token reads tok/s | chunk-start reads tok/s | "
              "per-token time vs chunk-start |", "|---|---|---|---|---:|---:|---:|"]
    for kind, rule, mom, what, tok, start, ratio in reads:
        lines.append(f"| {kind} | {rule} | {'yes' if mom else 'no'} | {what} | {tok:,.0f} | {start:,.0f} | "
                     f"{ratio:.2f}× |")
    lines += ["", f"Target: per-token reads ≤ {READ_TARGET}× the time of chunk-start reads: "
              f"{'met' if read_ok else 'NOT met'} (worst {worst:.2f}×)."]
    if not args.quick or args.out != p.get_default("out"):
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    print(f"target {'met' if ok else 'NOT met'}: linear dgd chunk/reference = {headline:.1f}x (target {TARGET:.0f}x)")
    print(f"target {'met' if read_ok else 'NOT met'}: per-token / chunk-start reads = {worst:.2f}x "
          f"(target ≤ {READ_TARGET}x)")
    return 0 if ok and read_ok else 1


if __name__ == "__main__":
    sys.exit(main())
