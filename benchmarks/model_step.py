"""Training and inference throughput of each block kind, as ratios to the Transformer measured in
the same run.

    python benchmarks/model_step.py             # `small` preset, T=512, B=4, CPU
    python benchmarks/model_step.py --quick     # `debug` preset, T=128, B=2 (a smoke run)
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 python benchmarks/model_step.py
    python benchmarks/model_step.py --blocks transformer hope \
        --variant hope:selfmod.chunk_size_other=32 --out benchmarks/results/model_step_variants.md

The allocator matters on a CPU: a HOPE step allocates and frees gigabytes of state-sized tensors, and
glibc's malloc hands much of it back to the OS and faults it in again. The table names the
allocator it ran under (read from the process's memory map).

Training = forward + backward + AdamW step; inference = a no_grad forward over the whole sequence
(in-context writes on). The memory writes run the fused CPU chunk kernel when it builds; a row
"hope (PyTorch ops only)" measures HOPE again with it turned off (``NESTLEARN_KERNELS=torch``), and a
row "hope (chunk-start reads)" with M_memory read at the start of its chunk (``selfmod.read=chunk_start``,
eq. 90 as printed): per-token reads must cost at most 1.25× that (issue 12).
Writes benchmarks/results/model_step.md. Target (issue 3): HOPE's training step within 3× of the
Transformer's time per token (goal 1.5×).

Beside the times, each row counts the work of one training step, so that a ratio of times can be
read against a ratio of work: the matmul FLOPs (counted op by op with PyTorch's FLOP formulas, so
elementwise work is not in them) and the bytes autograd saves for the backward.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from nestlearn.benchmarking import allocator, commit, preloaded, throughput, timed, write_lines  # noqa: F401
from nestlearn.data.registry import task_vocab
from nestlearn.memory.write import fused
from nestlearn.models import BLOCKS as BLOCK_KINDS
from nestlearn.models import CausalLM, apply_overrides, from_dict, preset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from memory_write import kernels  # noqa: E402

BLOCKS = ("transformer", "hope", "hope_attention", "titans")
# issue 14 (formal: a synthetic recipe too); d256: reported only
TARGETS = {"small": 3.0, "synthetic": 4.0, "formal": 4.0, "quickstart": 4.0, "debug": 3.0}
READ_TARGET = 1.25
CHUNK_START = "hope (chunk-start reads)"


class CountFlops(TorchDispatchMode):
    """Matmul-class FLOPs of every op run inside (PyTorch's registered formulas: mm, bmm, conv, SDPA…)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def work(model: CausalLM, ids: torch.Tensor) -> tuple[float, float]:
    """GFLOP of one forward + backward, and MB that autograd saves for the backward (distinct storages).

    FLOPs are counted with the fused CPU kernel off: the counter sees ATen ops only, and the kernel
    does the same products (its backward recomputes a few more). Saved bytes are those of the path
    the run takes.
    """
    storages: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        storages.setdefault(st.data_ptr(), st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, loss, _ = model(ids, targets=ids)
    loss.backward()
    with kernels("torch"), CountFlops() as fc:
        _, loss, _ = model(ids, targets=ids)
        loss.backward()
    model.zero_grad(set_to_none=True)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = sum(n for ptr, n in storages.items() if ptr not in params)
    return fc.total / 1e9, saved / 1e6


def parse_variant(spec: str) -> tuple[str, str, dict]:
    """``BLOCK:key=value[,key=value…]`` (dotted config keys) → (row label, block, overrides)."""
    block, _, sets = spec.partition(":")
    if block not in BLOCK_KINDS or not sets:
        raise SystemExit(f"--variant must be BLOCK:key=value[,key=value] with BLOCK one of {tuple(BLOCK_KINDS)} "
                         f"(got {spec!r})")
    overrides = {}
    for item in sets.split(","):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--variant {spec!r}: {item!r} is not key=value")
        overrides[key] = yaml.safe_load(value)
    return f"{block} ({sets})", block, overrides


def _recipe_model(block: str, vocab: int, recipe: str = "mqar", **overrides):
    """The model of a synthetic recipe (experiments/synthetic/RECIPE.yaml), for any block kind."""
    recipe = yaml.safe_load((ROOT / "experiments" / "synthetic" / f"{recipe}.yaml").read_text())
    return apply_overrides(from_dict({**recipe["model"], "block": block, "vocab_size": vocab}), overrides)


def _quickstart_model(block: str, **overrides):
    from nestlearn.quickstart import BASE

    vocab = 1 + BASE["data"]["recall_keys"] + BASE["data"]["recall_values"]
    return apply_overrides(from_dict({**BASE["model"], "block": block, "vocab_size": vocab}), overrides)


# shape name → (model builder (block, **overrides) → ModelConfig, B, T, what it is)
SHAPES = {
    "small": (lambda block, **o: preset("small", block=block, **o), 4, 512, "preset `small`"),
    "d256": (lambda block, **o: preset("small", block=block, **{"dim": 256, "layers": 4, **o}), 4, 512,
             "preset `small` at dim 256, 4 layers, 4 heads, vocab 4096 (a shape other implementations report)"),
    "synthetic": (lambda block, **o: _recipe_model(block, 129, **o), 32, 64,
                  "the synthetic recipes' model (experiments/synthetic/mqar.yaml: dim 64, 2 layers), vocab 129"),
    "formal": (lambda block, **o: _recipe_model(block, task_vocab("parity", {}), "formal", **o), 32, 50,
               "the formal-language suite's model (experiments/synthetic/formal.yaml: dim 64, 2 layers, CMS chunks "
               "8 and 16, so 8-token in-context segments) at its training lengths (≤ 50), parity's vocabulary"),
    "quickstart": (lambda block, **o: _quickstart_model(block, **o), 16, 20,
                   "the quickstart's model (nestlearn/quickstart.py: dim 32, 2 layers), vocab 33"),
    "debug": (lambda block, **o: preset("debug", block=block, **o), 2, 128, "preset `debug` (a smoke run)"),
}


def measure(shape: str, block: str, B: int, T: int, repeats: int, overrides: dict | None = None) -> tuple:
    """Parameters, training tokens/s, inference tokens/s, training GFLOP and saved MB of one block kind."""
    torch.manual_seed(0)
    cfg = SHAPES[shape][0](block, **(overrides or {}))
    cfg.validate()
    model = CausalLM(cfg)
    ids = torch.randint(0, model.cfg.vocab_size, (B, T))
    train_rate, infer_rate = throughput(model, ids, repeats)
    gflop, saved = work(model, ids)
    return model.num_parameters(), train_rate, infer_rate, gflop, saved


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--blocks", nargs="+", default=list(BLOCKS), choices=list(BLOCK_KINDS),
                   help="block kinds to measure (the Transformer, the baseline, is always measured)")
    p.add_argument("--variant", action="append", default=[],
                   help="an extra row: BLOCK:key=value[,key=value] with dotted config keys, "
                        "e.g. hope:selfmod.chunk_size_other=32 (repeatable)")
    p.add_argument("--shape", choices=list(SHAPES), default="small",
                   help="small (default), d256, synthetic, formal or quickstart (model and batch of that use)")
    p.add_argument("--out", default=None, help="default: benchmarks/results/model_step.md (model_step_SHAPE.md)")
    args = p.parse_args()
    name = "debug" if args.quick else args.shape
    _, B, T, what = SHAPES[name]
    default_out = str(Path(__file__).parent / "results" / ("model_step.md" if name in ("small", "debug")
                                                            else f"model_step_{name}.md"))
    args.out = args.out or default_out
    runs = [(b, b, {}, "auto") for b in ["transformer"] + [b for b in args.blocks if b != "transformer"]]
    if "hope" in args.blocks and fused.kernel() is not None:  # the fused CPU kernel against PyTorch ops alone
        runs.append(("hope (PyTorch ops only)", "hope", {}, "torch"))
    if "hope" in args.blocks:
        runs.append((CHUNK_START, "hope", {"selfmod.read": "chunk_start"}, "auto"))
    runs += [(*parse_variant(v), "auto") for v in args.variant]
    rows = {}
    for label, block, overrides, mode in runs:
        with kernels(mode):
            rows[label] = measure(name, block, B, T, args.repeats, overrides)
        print(f"{label:15s} params {rows[label][0] / 1e6:6.2f}M  train {rows[label][1]:>9,.0f} tok/s  "
              f"infer {rows[label][2]:>9,.0f} tok/s  {rows[label][3]:7.3g} GFLOP/step  "
              f"saved {rows[label][4]:7.0f} MB", flush=True)
    base = rows["transformer"]
    alloc = allocator()
    cmd = "python benchmarks/model_step.py" + (" --quick" if args.quick else "") + (
        f" --shape {args.shape}" if args.shape != "small" and not args.quick else "")
    cmd = preloaded(cmd, alloc)
    if args.blocks != list(BLOCKS):
        cmd += " --blocks " + " ".join(args.blocks)
    cmd += "".join(f" --variant {v}" for v in args.variant)
    if args.out != default_out:
        cmd += f" --out {args.out}"
    lines = ["# Model step: throughput against the Transformer", "",
             f"Command: `{cmd}`  ",
             f"Shape `{name}`: {what}; B={B}, T={T}, float32, CPU, {torch.get_num_threads()} threads; "
             f"{platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, malloc: {alloc}  ",
             f"Measured: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC at commit {commit()}, "
             f"median of "
             f"{args.repeats} after a warm-up. Time per token relative to the Transformer: higher is slower.", "",
             "| block | params | train tok/s | train time/token vs Transformer | infer tok/s | "
             "infer time/token vs Transformer | train GFLOP/step | FLOPs vs Transformer | train GFLOP/s | "
             "saved for backward (MB) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for block, (n, tr, inf, gf, mb) in rows.items():
        lines.append(f"| {block} | {n / 1e6:.2f}M | {tr:,.0f} | {base[1] / tr:.2f}× | {inf:,.0f} | "
                     f"{base[2] / inf:.2f}× | {gf:.3g} | {gf / base[3]:.2f}× | {gf * tr / (B * T):.0f} | {mb:,.0f} |")
    target = TARGETS.get(name)
    if "hope" not in rows:
        ratio, ok, verdict = float("nan"), True, "not measured (no `hope` row)"
    else:
        ratio = base[1] / rows["hope"][1]
        ok = target is None or ratio <= target
        verdict = (f"{ratio:.2f}× (no target at this shape)" if target is None
                   else f"{'met' if ok else 'NOT met'} ({ratio:.2f}×)")
    if CHUNK_START in rows:
        reads = rows[CHUNK_START][1] / rows["hope"][1]
        lines += ["", f"Per-token reads (`hope`) against chunk-start reads (`{CHUNK_START}`), training time: "
                  f"{reads:.2f}× (target ≤ {READ_TARGET}×: {'met' if reads <= READ_TARGET else 'NOT met'})."]
    lines += ["", f"Target: HOPE's training time per token ≤ {target or float('nan'):.0f}× the Transformer's: "
              f"{verdict}.", "",
              "FLOPs count matmul-class ops only (PyTorch's FLOP formulas); elementwise work is not in them. "
              "`train GFLOP/s` = counted FLOPs per step / step time: how well a block kind keeps the "
              "cores busy. `saved for backward` = distinct storages autograd holds for the backward "
              "(parameters excluded)."]
    if not args.quick or args.out != default_out:
        write_lines(args.out, lines)
    print(f"target: {verdict}; hope train time/token vs transformer (target ≤ {target}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
