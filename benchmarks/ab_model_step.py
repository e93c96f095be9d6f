"""The model-step benchmark at two commits, interleaved in one session: does a change keep the speed?

    python benchmarks/ab_model_step.py --base be93344 --shape synthetic --blocks hope titans delta --rounds 2

Checks out ``--base`` into a temporary git worktree, then runs ``benchmarks/model_step.py`` from the
base tree and from this tree in turn (base, this, base, this, …), each in its own process with its own
sources on ``PYTHONPATH``. Every run measures the Transformer beside the other blocks, so each block's
time per token against the Transformer of its own run is compared, which cancels most of this shared
machine's drift. Writes ``benchmarks/results/ab_model_step_SHAPE.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nestlearn.benchmarking import commit, machine, write_lines  # noqa: E402


def run(tree: Path, shape: str, blocks: list[str], out: Path) -> dict[str, float]:
    """One model_step run from ``tree``: ``{block: train time per token vs the Transformer}``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(tree / "benchmarks" / "model_step.py"), "--shape", shape, "--blocks", *blocks,
           "--repeats", "3", "--out", str(out)]
    subprocess.run(cmd, cwd=tree, env=env, check=False, capture_output=True, text=True)
    ratios = {}
    for line in out.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 3 and cells[3].endswith("×") and cells[0] != "block":
            ratios[cells[0]] = float(cells[3].rstrip("×"))
    return ratios


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="the commit to compare against")
    p.add_argument("--shape", default="synthetic")
    p.add_argument("--blocks", nargs="+", default=["hope"])
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base), args.base], check=True)
        try:
            got: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
            for i in range(args.rounds):
                for name, tree in (("base", base), ("this", ROOT)):
                    got[name].append(run(tree, args.shape, args.blocks, Path(tmp) / f"{name}{i}.md"))
                    print(name, i, got[name][-1], flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    labels = [b for b in got["this"][0] if b in got["base"][0]]
    cmd = f"python benchmarks/ab_model_step.py --base {args.base} --shape {args.shape} --blocks " \
          f"{' '.join(args.blocks)} --rounds {args.rounds}"
    lines = [f"# Model step at two commits ({args.shape} shape)", "", f"Command: `{cmd}`  ",
             f"{machine()}; this tree at commit {commit()}, base {args.base}; {args.rounds} interleaved rounds "
             "(base, this, …), each a `model_step.py` process.", "",
             "Training time per token against the Transformer of the same process (median over rounds):", "",
             "| block | base | this | this / base |", "|---|---:|---:|---:|"]
    for b in labels:
        x = statistics.median(r[b] for r in got["base"])
        y = statistics.median(r[b] for r in got["this"])
        lines.append(f"| {b} | {x:.2f}× | {y:.2f}× | {y / x:.2f} |")
    write_lines(ROOT / "benchmarks" / "results" / f"ab_model_step_{args.shape}.md", lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
