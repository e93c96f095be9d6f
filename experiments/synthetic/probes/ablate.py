"""What does a trained HOPE compute its answers with? Its kept weights scored with one in-context part switched off.

    python experiments/synthetic/probes/ablate.py runs/weights/mad/*-hope-*.pt

HOPE learns in context in two places: its CMS levels take gradient steps on the sequence's own next tokens (every
8 and 16 tokens in mad.yaml), and its self-modifying memories write every token (read per token, D21's dual form).
This probe scores each kept run of the suite (``--keep-weights``) on the suite's test sequences as trained and with
one of them switched off, at test time only:

- the CMS levels frozen in context (they keep their meta-learned weights);
- the self-modifying memories writing nothing (η = 0 and no decay: each keeps its initial state);
- the memories read at the chunk start instead of per token (D21 as printed).

and, as trained, measures how far each layer's output memory's per-token read moves from its chunk-start read as
the chunk's writes accumulate (``write_strength.py``'s measure), with the writes' mean learning rate.

Accuracy as the suite scores it (MAD: ``acc``; the formal languages: ``--split``, Bin1 by default). A probe of the
mechanism, not a protocol result; written to ``--out`` (``ablate/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch

from nestlearn.experiments import synthetic as suite
from nestlearn.experiments.protocol import code_version

sys.path.insert(0, str(Path(__file__).resolve().parent))
from length_failure import changed, readable  # noqa: E402  (the test-time changes)
from write_strength import measure  # noqa: E402  (the per-token read against the chunk-start read)

HERE = Path(__file__).resolve().parent
OUT = HERE / "ablate" / "RESULTS.md"  # the report's default place; a command names --out only elsewhere
CHANGES = {"as trained": {}, "CMS frozen in context": {"cms_frozen": True},
           "memories write nothing": {"memories_frozen": True}, "read at the chunk start": {"read": "chunk_start"}}


@torch.no_grad()
def accuracy(model, recipe, task: str, batches: int, split: str | None = None, **change) -> float:
    """The suite's test accuracy (%) over ``batches`` test batches (its test seeds first), under ``change``;
    ``split``: the formal languages' bin (default Bin1, the generalisation test), MAD's test split otherwise."""
    model.eval()
    split = split or ("bin1" if recipe.family == "formal" else "eval")
    with changed(model, **change):
        return suite._score(model, recipe, task, split, [suite._eval_seed(i) for i in range(batches)])[0]


def report_head(title: str, command: str, what: str) -> list[str]:
    """A probe report's first lines: its title, the exact command, when and on which code it ran, and ``what``."""
    cv = code_version()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [f"# {title}", "", f"Command: `{command}`  ",
            f"Run {stamp}, code version {cv['code']} (commit {cv['commit'][:12]}). {what}", ""]


def run_label(row: dict, recipe) -> str:
    """A kept run's label: its seed, or "selection" for the suite's selection seed."""
    return "selection" if row["seed"] == recipe.select_seed else f"seed {row['seed']}"


def out_words(out: str, default: Path) -> str:
    """The ``--out`` words of a report's recorded command: empty when it went to the script's default place."""
    return f" --out {out}" if Path(out).resolve() != default.resolve() else ""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("weights", nargs="+", help="kept weights of HOPE runs (runs/weights/…pt)")
    p.add_argument("--batches", type=int, default=8, help="test batches of the suite's size (it scores 4)")
    p.add_argument("--split", choices=["bin0", "bin1", "bin2"], help="formal runs: the bin scored (default bin1)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    torch.set_num_threads(1)
    lines = ["| run | rate | " + " | ".join(CHANGES) + " |", "|---|---:|" + "---:|" * len(CHANGES)]
    writes = ["", "How far a chunk's own writes move the output memory's per-token read (``write_strength.py``'s "
              "measure: ‖o_t − o⁰_t‖ / ‖o⁰_t‖ against the chunk-start read, after the chunk's first, middle and last "
              "write; η: the writes' mean learning rate; its bound: η_max, D20):", "",
              "| run | layer | η | η bound | after 1 | after C/2 | after C |", "|---|---:|---:|---:|---:|---:|---:|"]
    for path in args.weights:
        model, recipe, row = suite.load_weights(path)
        if not readable(model):
            raise SystemExit(f"{path}: a run of {row['model']}, which has no self-modifying memories to change")
        cells = [f"{accuracy(model, recipe, row['task'], args.batches, args.split, **kw):.2f}"
                 for kw in CHANGES.values()]
        what = run_label(row, recipe)
        lines.append(f"| {row['task']} {row['model']} {what} (`{Path(path).name}`) | {row['lr']:g} | "
                     + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
        blocks = getattr(model, "lm", model).blocks  # MAD's compression model wraps its language model
        for layer, st in enumerate(measure(model, recipe, args.batches, row["task"])):
            rel = st["rel"]
            writes.append(f"| {row['task']} {row['model']} {what}, lr {row['lr']:g} | {layer + 1} | {st['lr']:.4f} | "
                          f"{blocks[layer].mixer.eta_max:.4g} | {100 * rel[0]:.1f}% | "
                          f"{100 * rel[len(rel) // 2 - 1]:.1f}% | {100 * rel[-1]:.1f}% |")
    head = report_head(
        "What HOPE computes its answers with: one in-context part switched off at test time",
        f"python experiments/synthetic/probes/ablate.py {' '.join(args.weights)}"
        f"{f' --batches {args.batches}' if args.batches != 8 else ''}{f' --split {args.split}' if args.split else ''}"
        + out_words(args.out, OUT),
        f"{args.batches} test batches (the suite's test seeds first). Test accuracy in % as the suite scores it "
        f"(formal runs: {(args.split or 'bin1').capitalize()}).")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(head + lines + writes) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
