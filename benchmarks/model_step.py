"""Training and inference throughput of each block kind, as ratios to the Transformer measured in
the same run.

    python benchmarks/model_step.py             # `small` preset, T=512, B=4, CPU
    python benchmarks/model_step.py --quick     # `debug` preset, T=128, B=2 (a smoke run)

Training = forward + backward + AdamW step; inference = a no_grad forward over the whole sequence
(in-context writes on). Writes benchmarks/results/model_step.md. Target (issue 3): HOPE's training
step within 3× of the Transformer's time per token (goal 1.5×).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from nestlearn.models import CausalLM, preset

BLOCKS = ("transformer", "hope", "hope_attention", "titans")
TARGET = 3.0


def timed(fn, repeats: int) -> float:
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def measure(name: str, block: str, B: int, T: int, repeats: int) -> tuple[int, float, float]:
    """Parameters, training tokens/s and inference tokens/s of one block kind."""
    torch.manual_seed(0)
    model = CausalLM(preset(name, block=block))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, model.cfg.vocab_size, (B, T))

    def train_step():
        _, loss, _ = model(ids, targets=ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model(ids)

    return model.num_parameters(), B * T / timed(train_step, repeats), B * T / timed(infer, repeats)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "model_step.md"))
    args = p.parse_args()
    name, B, T = ("debug", 2, 128) if args.quick else ("small", 4, 512)
    rows = {}
    for block in BLOCKS:
        rows[block] = measure(name, block, B, T, args.repeats)
        print(f"{block:15s} params {rows[block][0] / 1e6:6.2f}M  train {rows[block][1]:>9,.0f} tok/s  "
              f"infer {rows[block][2]:>9,.0f} tok/s", flush=True)
    base = rows["transformer"]
    cmd = "python benchmarks/model_step.py" + (" --quick" if args.quick else "")
    lines = ["# Model step: throughput against the Transformer", "",
             f"Command: `{cmd}`  ",
             f"Preset `{name}`, B={B}, T={T}, float32, CPU, {torch.get_num_threads()} threads; "
             f"{platform.machine()} {platform.processor() or ''}, torch {torch.__version__}  ",
             f"Measured: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, median of "
             f"{args.repeats} after a warm-up. Time per token relative to the Transformer: higher is slower.", "",
             "| block | params | train tok/s | train time/token vs Transformer | infer tok/s | "
             "infer time/token vs Transformer |", "|---|---:|---:|---:|---:|---:|"]
    for block, (n, tr, inf) in rows.items():
        lines.append(f"| {block} | {n / 1e6:.2f}M | {tr:,.0f} | {base[1] / tr:.2f}× | {inf:,.0f} | "
                     f"{base[2] / inf:.2f}× |")
    ratio = base[1] / rows["hope"][1]
    ok = ratio <= TARGET
    lines += ["", f"Target: HOPE's training time per token ≤ {TARGET:.0f}× the Transformer's: "
              f"{'met' if ok else 'NOT met'} ({ratio:.2f}×)."]
    if not args.quick or args.out != p.get_default("out"):
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    print(f"target {'met' if ok else 'NOT met'}: hope train time/token = {ratio:.2f}x transformer "
          f"(target ≤ {TARGET:.0f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
