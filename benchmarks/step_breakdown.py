"""Where the time of one training step goes, phase by phase, for the Transformer, Hope-Attention and HOPE.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 python benchmarks/step_breakdown.py

Each phase is wall-clock time measured with forward hooks on the model's own modules (no code is
patched): the mixers' forward, the MLP/CMS forward, the rest of each pass through the network
(embedding, norms, residuals, the output head), what the forward does between passes (with in-context
CMS learning: each segment's next-token loss, its gradient with respect to the CMS fast weights,
and the level steps; otherwise only the final loss), and the backward. Times are medians over
``--repeats`` steps after a warm-up, in milliseconds and as a share of the Transformer's whole
step (forward + backward) measured in the same run. Writes benchmarks/results/step_breakdown.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from nestlearn.models import CausalLM, preset

sys.path.insert(0, str(Path(__file__).parent))
from nestlearn.benchmarking import allocator, preloaded, stamp, write_lines  # noqa: E402

BLOCKS = ("transformer", "hope_attention", "hope")
PHASES = ("mixer forward", "MLP / CMS forward", "rest of the passes", "between passes", "backward")


class PhaseClock:
    """Sums the wall time spent inside the mixers, the MLP/CMS layers and whole passes (embed → head)."""

    def __init__(self, model: CausalLM):
        self.total: dict[str, float] = defaultdict(float)
        self._start: dict[int, float] = {}
        for block in model.blocks:
            self._watch(block.mixer, block.mixer, "mixer forward")
            self._watch(block.mlp, block.mlp, "MLP / CMS forward")
        self._watch(model.embed, model.head, "pass")

    def _watch(self, first, last, name: str) -> None:
        def pre(mod, args):
            self._start[id(last), name] = time.perf_counter()

        def post(mod, args, out):
            self.total[name] += time.perf_counter() - self._start.pop((id(last), name))

        first.register_forward_pre_hook(pre)
        last.register_forward_hook(post)


def breakdown(block: str, B: int, T: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = CausalLM(preset("small", block=block))
    ids = torch.randint(0, model.cfg.vocab_size, (B, T))
    clock = PhaseClock(model)
    samples: dict[str, list[float]] = defaultdict(list)
    for i in range(repeats + 1):
        clock.total.clear()
        t0 = time.perf_counter()
        _, loss, _ = model(ids, targets=ids)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        if i == 0:  # warm-up
            continue
        mix, mlp, passes = (clock.total[k] for k in ("mixer forward", "MLP / CMS forward", "pass"))
        step = {"mixer forward": mix, "MLP / CMS forward": mlp, "rest of the passes": passes - mix - mlp,
                "between passes": (t1 - t0) - passes, "backward": t2 - t1, "step": t2 - t0}
        for k, v in step.items():
            samples[k].append(v)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "step_breakdown.md"))
    args = p.parse_args()
    rows = {}
    for block in BLOCKS:
        rows[block] = breakdown(block, args.batch, args.seq, args.repeats)
        print(f"{block:15s} " + "  ".join(f"{k} {v * 1e3:6.0f} ms" for k, v in rows[block].items()), flush=True)
    base = rows["transformer"]["step"]
    alloc = allocator()
    cmd = "python benchmarks/step_breakdown.py"
    cmd = preloaded(cmd, alloc)
    if (args.batch, args.seq, args.repeats) != (4, 512, 3):
        cmd += f" --batch {args.batch} --seq {args.seq} --repeats {args.repeats}"
    if args.out != p.get_default("out"):
        cmd += f" --out {args.out}"
    lines = ["# One training step, phase by phase", "",
             f"Command: `{cmd}`  ",
             f"Preset `small`, B={args.batch}, T={args.seq}, float32, CPU, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}, malloc: {alloc}  ",
             f"{stamp()}, median of "
             f"{args.repeats} steps after a warm-up. Each cell: milliseconds (multiple of the Transformer's "
             "whole step, forward + backward, in this run).", "",
             "| block | " + " | ".join(PHASES) + " | step |", "|---|" + "---:|" * (len(PHASES) + 1)]
    for block, r in rows.items():
        cells = [f"{r[k] * 1e3:,.0f} ({r[k] / base:.2f}×)" for k in (*PHASES, "step")]
        lines.append(f"| {block} | " + " | ".join(cells) + " |")
    hope = rows["hope"]
    lines += ["", "Phases: the mixers' forward (attention or self-modifying Titans); the MLP (Transformer) "
              "or CMS forward; the rest of each pass through the network (embedding, norms, residuals, "
              "output head); between passes (with in-context CMS learning: each segment's next-token loss, "
              "its gradient with respect to the CMS fast weights, which runs back through every layer above "
              "the CMS, mixers included, and the level steps; otherwise the final loss); the backward.", "",
              f"HOPE's self-modifying mixers' forward alone takes {hope['mixer forward'] / base:.2f}× the "
              f"Transformer's whole step; the CMS in-context learning between passes "
              f"{hope['between passes'] / base:.2f}× (Hope-Attention's: "
              f"{rows['hope_attention']['between passes'] / base:.2f}×); the backward "
              f"{hope['backward'] / base:.2f}×. Issue 3's target is ≤ 3× for the whole step."]
    write_lines(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
