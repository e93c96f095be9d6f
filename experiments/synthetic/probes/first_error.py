"""Where each model's formal-language strings first go wrong past the training lengths, from the weights the suite kept.

    python experiments/synthetic/probes/first_error.py [--models titans transformer] [--tasks abab_star]

For every reported seed of ``formal.yaml`` whose suite kept its weights (``--keep-weights``: the row's ``weights``
file exists on this machine), it scores the test bins again exactly as the suite did (``length_failure.score``,
nothing changed at test time), checks them against the stored row, and lists, over the strings that fail, the
position of each one's first wrong next-symbol set: its quartiles, the most common position and its share, and how
many strings first fail at a position training strings have (≤ 50). A failure that starts at the
same position in every failing string is a property of the position (what the model never saw), not of the
string. It trains nothing; rows whose weights were not kept (runs finished before 2026-12-01 09:39 UTC, or on
another machine) are listed as such. A probe, one row per seed: evidence, not a protocol result; written to
``first_error/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import sys
from pathlib import Path

import torch

from nestlearn.experiments import synthetic as suite
from nestlearn.experiments.protocol import code_version
from nestlearn.experiments.synthetic import FORMAL_BINS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from length_failure import quantiles, score  # noqa: E402 (the probe beside this one)

ROOT = HERE.parents[2]
STORE = HERE.parent / "results" / "formal.jsonl"
AS_TRAINED = (None, None, None)  # length_failure's caps: no CMS step capped, no write frozen


def first_errors(model, recipe, task: str, train_max: int) -> dict:
    """The test bins as the suite scores them, and the failing strings' first wrong positions (1-based)."""
    r = score(model, recipe, task, AS_TRAINED)
    fw = r["first_wrong"]
    common = collections.Counter(fw).most_common(1)
    return {"bins": r["bins"], "failed": len(fw), "first_wrong": fw,
            "mode": common[0] if common else None, "inside": sum(p <= train_max for p in fw)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default=str(HERE.parent / "formal.yaml"), help="the suite's recipe")
    p.add_argument("--store", default=str(STORE), help="the suite's formal.jsonl")
    p.add_argument("--models", nargs="+", default=None, help="only these models (default: every one with kept weights)")
    p.add_argument("--tasks", nargs="+", default=None, help="only these languages")
    p.add_argument("--out", default=str(HERE / "first_error" / "RESULTS.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = [json.loads(line) for line in Path(args.store).read_text().splitlines() if line.strip()]
    ctx = suite._Suite(suite.load_recipe(args.recipe), rows)  # the rows the tables count: this code, this protocol
    last = {}
    for r in rows:
        wanted = (args.models is None or r["model"] in args.models) and (args.tasks is None or r["task"] in args.tasks)
        if wanted and r.get("phase", "final") == "final" and ctx.current(r) and ctx.same_protocol(r):
            last[r["task"], r["model"], r["seed"]] = r  # a rerun supersedes the row before it
    rows = list(last.values())
    cmd = "python experiments/synthetic/probes/first_error.py" + (
        f" --models {' '.join(args.models)}" if args.models else "") + (
        f" --tasks {' '.join(args.tasks)}" if args.tasks else "")
    lines = ["# Where formal-language strings first go wrong, from the suite's kept weights", "",
             f"Command: `{cmd}`  ",
             f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, code version "
             f"{code_version()['code']} (commit {code_version()['commit'][:12]}). Each row is a reported seed's kept "
             "weights scored again as the suite scored them (Bin0 / Bin1 / Bin2 in %, checked against the stored "
             "row); over the strings that fail (of 768: 256 per bin), the first wrong position's quartiles "
             "(min / 25% / median / 75% / max), the most common one with its count, and how many first fail at a "
             "position that training strings have (≤ max_len, 50 in formal.yaml; a string longer than that can still "
             "hold there a prefix no training string has, e.g. more a's than aⁿbⁿ's training strings). One seed per "
             "row: evidence.", "",
             "| language | model | seed | lr | Bin0 / Bin1 / Bin2 | stored row | failing strings "
             "| first wrong position | most common | first wrong at a position ≤ max_len |",
             "|---|---|---:|---:|---|---|---:|---|---|---:|"]
    missing = []
    for r in rows:
        path = ROOT / r["weights"] if r.get("weights") else None
        if path is None or not path.is_file():
            missing.append(f"{r['task']} {r['model']} seed {r['seed']}")
            continue
        model, recipe, ident = suite.load_weights(path)
        got = first_errors(model, recipe, r["task"], recipe.max_len)
        same = all(abs(got["bins"][b] - r[b]) < 1e-9 for b in FORMAL_BINS)
        mode = got["mode"]
        lines.append(
            f"| {r['task']} | {r['model']} | {r['seed']} | {r['lr']:g} | "
            + " / ".join(f"{got['bins'][b]:.1f}" for b in FORMAL_BINS)
            + f" | {'the same' if same else '**differs**'} | {got['failed']} | "
            + f"{quantiles(sorted(got['first_wrong']))} | "
            + (f"{mode[0]} ({mode[1]})" if mode else "–") + f" | {got['inside']} |")
        print(lines[-1], flush=True)
    if missing:
        lines += ["", f"No kept weights here for {len(missing)} reported rows (finished before the suites kept them, "
                      "or on another machine): " + ", ".join(missing) + "."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
