"""Streaming generation with the carried state: per-token decode time, state size and peak memory
against the length of the context already read, HOPE and Hope-Attention against the Transformer with
its KV cache, measured in one run.

    python benchmarks/decode.py                    # d256 shape, contexts 1K, 4K, 16K, 64K
    python benchmarks/decode.py --quick            # debug preset, contexts 64 and 256 (a smoke run)

Each (block, context) runs in a fresh process, so that its peak resident memory is its own: the
process builds the model, reads the context in pieces of ``--piece`` tokens under ``no_grad`` (the
state carried from piece to piece, exactly as ``CausalLM.generate`` carries it), then decodes
``--new`` tokens one at a time (greedy). The decode time per token is the mean over those tokens: a
token that completes a CMS segment also replays that segment with its inner gradient (its cost shows
in the max column), and the mean spreads it over the segment's tokens.
"state" is the bytes of every tensor in the carried state after the context; "peak RSS" is the
process's high-water mark (model, context reading and decoding together), "RSS growth in decode" the
resident memory gained while decoding. Writes benchmarks/results/decode.md.
Targets (issue 14): HOPE's decode time per token flat in the context length and below the
Transformer's from 4K tokens of context on; its state and memory constant in the context length.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from model_step import SHAPES  # noqa: E402

from nestlearn.benchmarking import allocator, commit, write_lines  # noqa: E402

BLOCKS = ("transformer", "hope", "hope_attention")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def worker(shape: str, block: str, context: int, new: int, piece: int) -> dict:
    """One (block, context) measurement, in this process."""
    from torch.utils import _pytree as pytree

    from nestlearn.models import CausalLM

    torch.manual_seed(0)
    cfg = SHAPES[shape][0](block, max_seq_len=context + new + 1)
    cfg.validate()
    model = CausalLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, context))
    t0 = time.perf_counter()
    state = None
    with torch.no_grad():
        for p in range(0, context, piece):
            logits, _, state = model(ids[:, p:p + piece], state=state)
    read_s = time.perf_counter() - t0
    leaves, _ = pytree.tree_flatten(state)
    state_mb = sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor)) / 2**20
    rss0 = _rss_mb()
    times = []
    nxt = logits[:, -1].argmax(-1, keepdim=True)
    with torch.no_grad():
        for _ in range(new):
            t = time.perf_counter()
            logits, _, state = model(nxt, state=state)
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"block": block, "context": context, "params": model.num_parameters(), "read_s": read_s,
            "decode_ms": 1e3 * statistics.mean(times), "decode_max_ms": 1e3 * max(times), "state_mb": state_mb,
            "peak_mb": peak,
            "decode_growth_mb": _rss_mb() - rss0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--shape", choices=[s for s in SHAPES if s != "debug"], default="d256")
    p.add_argument("--contexts", type=int, nargs="+", default=None)
    p.add_argument("--blocks", nargs="+", default=list(BLOCKS))
    p.add_argument("--new", type=int, default=64, help="tokens decoded after the context (default 64: two CMS "
                   "segments at the d256 shape)")
    p.add_argument("--piece", type=int, default=512, help="tokens read per forward call (default 512)")
    p.add_argument("--out", default=None)
    p.add_argument("--worker", nargs=2, metavar=("BLOCK", "CONTEXT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    shape = "debug" if args.quick else args.shape
    if args.worker:
        print(json.dumps(worker(shape, args.worker[0], int(args.worker[1]), args.new, args.piece)))
        return 0
    contexts = args.contexts or ([64, 256] if args.quick else [1024, 4096, 16384, 65536])
    rows = []
    for block in args.blocks:
        for L in contexts:
            cmd = [sys.executable, __file__, "--worker", block, str(L), "--new", str(args.new),
                   "--piece", str(args.piece)] + (["--quick"] if args.quick else ["--shape", shape])
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{block} at {L} tokens failed:\n{out.stderr[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{block:15s} context {L:>6}  decode {r['decode_ms']:8.2f} ms/token  state {r['state_mb']:8.1f} MB"
                  f"  peak RSS {r['peak_mb']:8.0f} MB  (context read in {r['read_s']:.1f} s)", flush=True)
    base = {r["context"]: r for r in rows if r["block"] == "transformer"}
    cmd = "python benchmarks/decode.py" + (" --quick" if args.quick else "") + (
        f" --shape {args.shape}" if args.shape != "d256" and not args.quick else "")
    if args.contexts:
        cmd += " --contexts " + " ".join(map(str, args.contexts))
    if args.blocks != list(BLOCKS):
        cmd += " --blocks " + " ".join(args.blocks)
    if args.out:
        cmd += f" --out {args.out}"
    lines = ["# Streaming decode against context length", "",
             f"Command: `{cmd}`  ",
             f"Shape `{shape}`: {SHAPES[shape][3]}; batch 1, float32, CPU, {torch.get_num_threads()} threads; "
             f"{platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, malloc: {allocator()}  ",
             f"Measured: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC at commit {commit()}; "
             f"the context read {args.piece} tokens per call, then {args.new} tokens decoded one at a time "
             "(mean time per token; the slowest token in the max column). One process per row.", "",
             "| block | context | decode ms/token | vs Transformer | max ms/token | state (MB) | peak RSS (MB) | "
             "RSS growth in decode (MB) | context read (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b = base.get(r["context"])
        ratio = f"{r['decode_ms'] / b['decode_ms']:.2f}×" if b else "–"
        lines.append(f"| {r['block']} | {r['context']:,} | {r['decode_ms']:.2f} | {ratio} | {r['decode_max_ms']:.1f} | "
                     f"{r['state_mb']:.1f} | "
                     f"{r['peak_mb']:,.0f} | {r['decode_growth_mb']:.1f} | {r['read_s']:.1f} |")
    hope = {r["context"]: r for r in rows if r["block"] == "hope"}
    verdict = []
    if len(hope) > 1:
        lo, hi = hope[min(hope)], hope[max(hope)]
        verdict.append(f"HOPE's decode time from {min(hope):,} to {max(hope):,} tokens of context: "
                       f"{hi['decode_ms'] / lo['decode_ms']:.2f}× (flat is 1×); its state "
                       f"{lo['state_mb']:.1f} → {hi['state_mb']:.1f} MB.")
    faster = [L for L in sorted(hope) if L in base and hope[L]["decode_ms"] < base[L]["decode_ms"]]
    if hope and base:
        verdict.append("HOPE decodes faster than the Transformer with its KV cache at "
                       + (", ".join(f"{L:,}" for L in faster) if faster else "none of these contexts") + ".")
    lines += [""] + verdict
    out = args.out or str(Path(__file__).parent / "results" / ("decode_quick.md" if args.quick else "decode.md"))
    if not args.quick or args.out:
        write_lines(out, lines)
    print("\n".join(verdict))
    return 0


if __name__ == "__main__":
    sys.exit(main())
