"""Peak memory of one training step, with and without recomputation in the backward
(``CausalLM.activation_checkpointing(unit=…)``: whole in-context segments, or blocks), against the
Transformer measured in the same run.

    python benchmarks/activation_memory.py                     # `small` preset (B 4, T 512)
    python benchmarks/activation_memory.py --quick             # `debug` preset (a smoke run)
    python benchmarks/activation_memory.py --groups 1 3 4      # also HOPE with 1, 3, 4 segments per node
    python benchmarks/activation_memory.py --seq-len 1024 --no-plain-hope --blocks transformer hope \
        --out benchmarks/results/activation_memory_t1024.md    # twice the length (no HOPE row without recompute)

Each (block kind, setting) runs in a fresh process under glibc's malloc with ``MALLOC_MMAP_THRESHOLD_=131072``,
so that large freed blocks go back to the system and the resident size follows what is alive. The process
runs one warm-up step (forward + backward), then resets its peak (``/proc/self/clear_refs``) and runs one
more: "peak" is the step's highest resident size above the resident size before it (activations, saved
tensors and temporaries; the weights and their gradients are already there). The step's time is from the
same process (glibc, one step: read the ratios, not the absolute times). Writes
benchmarks/results/activation_memory.md. Target (issue 14): HOPE's ≤ 3× the Transformer's (without
recomputation, the Transformer's default).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from nestlearn.benchmarking import machine, stamp, write_lines

BLOCKS = ("transformer", "hope_attention", "hope")
UNITS = {"transformer": ("off", "auto"), "hope_attention": ("off", "auto", "block"), "hope": ("off", "auto", "block")}
UNIT_TEXT = {"off": "no", "auto": "auto", "segment": "segment", "block": "block"}
TARGET = 3.0


def _status(key: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def batch_shape(shape: str, seq_len: int = 0) -> tuple[int, int]:
    """``(B, T)`` of a preset's row: ``small`` B 4, T 512; ``debug`` B 2, T 128; ``seq_len`` overrides T."""
    B, T = (4, 512) if shape == "small" else (2, 128)
    return B, seq_len or T


def child(shape: str, block: str, unit: str, seq_len: int = 0) -> None:
    """Measure one (block, setting) in this process and print a JSON line."""
    import torch

    from nestlearn.models import CausalLM, preset

    B, T = batch_shape(shape, seq_len)
    torch.manual_seed(0)
    model = CausalLM(preset(shape, block=block))
    if unit != "off":
        name, _, group = unit.partition(":")  # "segment:4": four segments per recomputed node
        model.activation_checkpointing(unit=name, **({"group": int(group)} if group else {}))
    ids = torch.randint(0, model.cfg.vocab_size, (B, T))

    def step():
        _, loss, _ = model(ids, targets=ids)
        loss.backward()

    step()  # the gradients now exist: the measured step adds what a step holds on top of them
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    print(json.dumps({"peak_mb": (_status("VmHWM") - before) / 1e6, "seconds": seconds,
                      "params": sum(p.numel() for p in model.parameters())}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the `debug` preset, B 2, T 128")
    p.add_argument("--blocks", nargs="+", default=list(BLOCKS))
    p.add_argument("--groups", nargs="*", type=int, default=[], metavar="K",
                   help="also HOPE recomputing K segments per node (`unit='segment', group=K`), one row each")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "activation_memory.md"))
    p.add_argument("--seq-len", type=int, default=0, metavar="T", help="sequence length (default: the preset's, 512)")
    p.add_argument("--no-plain-hope", action="store_true",
                   help="skip HOPE and Hope-Attention without recomputation (long sequences: gigabytes)")
    p.add_argument("--child", nargs=3, metavar=("SHAPE", "BLOCK", "UNIT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child, seq_len=args.seq_len)
        return 0
    shape = "debug" if args.quick else "small"
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    env.pop("LD_PRELOAD", None)  # glibc: freed large blocks return to the system, so RSS follows what is alive
    rows = {}
    for block in ["transformer"] + [b for b in args.blocks if b != "transformer"]:
        units = UNITS[block] + (tuple(f"segment:{k}" for k in args.groups) if block == "hope" else ())
        if args.no_plain_hope and block != "transformer":
            units = tuple(u for u in units if u != "off")
        for unit in units:
            out = subprocess.run([sys.executable, __file__, "--child", shape, block, unit,
                                  "--seq-len", str(args.seq_len)], env=env,
                                 capture_output=True, text=True, check=True).stdout
            rows[block, unit] = json.loads(out.strip().splitlines()[-1])
            r = rows[block, unit]
            print(f"{block:15s} recompute={unit:8s} peak {r['peak_mb']:8.0f} MB  step {r['seconds']:.2f} s", flush=True)
    base = rows["transformer", "off"]["peak_mb"]
    cmd = "python benchmarks/activation_memory.py" + (" --quick" if args.quick else "")
    if args.blocks != list(BLOCKS):
        cmd += " --blocks " + " ".join(args.blocks)
    if args.groups:
        cmd += " --groups " + " ".join(map(str, args.groups))
    if args.seq_len:
        cmd += f" --seq-len {args.seq_len}"
    if args.no_plain_hope:
        cmd += " --no-plain-hope"
    B, T = batch_shape(shape, args.seq_len)
    lines = ["# Activation memory: peak of a training step, with and without recomputation", "",
             f"Command: `{cmd}`  ", f"Preset `{shape}` (B {B}, T {T}), "
             f"float32, CPU, {machine()} (children: glibc, MALLOC_MMAP_THRESHOLD_=131072)  ", f"{stamp()}.", "",
             "| block | recompute | peak above the resident size before the step (MB) | vs the Transformer without "
             "recompute | step (s) | step vs without recompute |", "|---|---|---:|---:|---:|---:|"]
    for (block, unit), r in rows.items():
        plain = rows.get((block, "off"))
        text = UNIT_TEXT.get(unit) or f"segment, {unit.partition(':')[2]} per node"
        against = f"{r['seconds'] / plain['seconds']:.2f}×" if plain else "(not run)"
        lines.append(f"| {block} | {text} | {r['peak_mb']:,.1f} | {r['peak_mb'] / base:.2f}× | "
                     f"{r['seconds']:.2f} | {against} |")
    verdict = "not measured (no `hope` rows)"
    if ("hope", "auto") in rows:
        ratio = rows["hope", "auto"]["peak_mb"] / base
        verdict = f"{'met' if ratio <= TARGET else 'NOT met'} ({ratio:.2f}×)"
    lines += ["", f"Target: HOPE's peak with recomputation (`auto`) ≤ {TARGET:.0f}× the Transformer's without: "
              f"{verdict}.", "",
              "Recompute units (`CausalLM.activation_checkpointing(unit=…)`): `segment` keeps only the state at each "
              "in-context segment's start and runs the segment again in the backward (its forward, inner gradient "
              "and level steps), two segments at a time (`group=2`); `block` recomputes each block (a CMS block its "
              "mixer alone); `auto` takes segments for a model that learns in context, blocks otherwise. One step "
              "each, one process each."]
    if not args.quick:
        write_lines(args.out, lines)
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
