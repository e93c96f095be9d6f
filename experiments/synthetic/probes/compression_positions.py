"""Which positions of a compressed sequence does each model get back? MAD compression's accuracy by position.

    python experiments/synthetic/probes/compression_positions.py runs/weights/mad/compression-*.pt

MAD's compression (mad.yaml: 31 random tokens from a vocabulary of 15, then the compression token) is scored on
every position's reconstruction from one vector, the last position's hidden state (``LastTokenAutoencoder``).
HOPE (56.0 ± 1.2%) and Titans are below the Transformer (63.9 ± 1.0%) there. The Transformer's attention rotates
queries and keys by position (RoPE); HOPE's and Titans' memories have no position signal but their short
convolutions, the order of their writes and their retention. This probe scores kept weights (``--keep-weights``)
on the suite's test sequences, test time only, and reports the accuracy at each position of the sequence (1 = the
first token, far from the code; 31 = the last random token; the compression token, 32, is not a random token and
is left out), and by blocks of 8 positions. Chance on a random token is 1/15 = 6.7%. A probe of the mechanism, not
a protocol result; written to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from nestlearn.experiments import synthetic as suite

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablate import out_words, report_head, run_label  # noqa: E402

HERE = Path(__file__).resolve().parent
TASK = "compression"
OUT = HERE / "compression_positions" / "RESULTS.md"  # the report's default place; a command names --out only elsewhere


@torch.no_grad()
def by_position(model, recipe, batches: int) -> tuple[torch.Tensor, int]:
    """Per position of the sequence: the fraction of test sequences whose token there is reconstructed (argmax over
    finite logits), over ``batches`` test batches of the suite's size (its test seeds first); and the number of
    sequences scored."""
    model.eval()
    good = None
    n = 0
    for i in range(batches):
        ids, targets = make(recipe, i)
        logits, _, _ = model(ids)
        right = ((logits.argmax(-1) == targets) & torch.isfinite(logits).all(-1)).double().sum(0)
        good = right if good is None else good + right
        n += ids.shape[0]
    return good / n, n


def make(recipe, i: int):
    return suite.make_batch(recipe, TASK, recipe.eval_batch_size, suite._eval_seed(i), "eval")


def blocks(acc: torch.Tensor, size: int = 8) -> list[tuple[str, float]]:
    """The mean accuracy over positions 1–8, 9–16, … of the random tokens (the compression token left out)."""
    tokens = acc[:-1]
    out = []
    for a in range(0, len(tokens), size):
        b = min(a + size, len(tokens))
        out.append((f"{a + 1}–{b}", float(tokens[a:b].mean())))
    return out


def label(row: dict, recipe) -> str:
    return f"{row['model']} {run_label(row, recipe)}, lr {row['lr']:g}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("weights", nargs="+", help="kept weights of compression runs (runs/weights/mad/compression-…pt)")
    p.add_argument("--batches", type=int, default=16, help="test batches of the suite's size (it scores 4)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    torch.set_num_threads(1)
    runs = []
    for path in args.weights:
        model, recipe, row = suite.load_weights(path)
        if row["task"] != TASK:
            raise SystemExit(f"{path}: a run of {row['task']}, not {TASK}")
        acc, n = by_position(model, recipe, args.batches)
        runs.append((label(row, recipe), Path(path).name, acc))
        print(label(row, recipe), f"{100 * float(acc[:-1].mean()):.2f}%", flush=True)
    names = [r[0] for r in runs]
    lines = ["| positions | " + " | ".join(names) + " |", "|---|" + "---:|" * len(runs)]
    lines.append("| all 31 random tokens | " + " | ".join(f"{100 * float(a[:-1].mean()):.1f}" for _, _, a in runs)
                 + " |")
    for j, (span, _) in enumerate(blocks(runs[0][2])):
        lines.append(f"| {span} | " + " | ".join(f"{100 * blocks(a)[j][1]:.1f}" for _, _, a in runs) + " |")
    lines += ["", "By position (1 = the sequence's first token; 31 = the last random token):", "",
              "| position | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(runs)]
    for t in range(len(runs[0][2]) - 1):
        lines.append(f"| {t + 1} | " + " | ".join(f"{100 * float(a[t]):.1f}" for _, _, a in runs) + " |")
    files = "\n".join(f"- {name}: `{f}`" for name, f, _ in runs)
    head = report_head(
        "MAD compression: which positions each model reconstructs",
        f"python experiments/synthetic/probes/compression_positions.py {' '.join(args.weights)}"
        f"{f' --batches {args.batches}' if args.batches != 16 else ''}"
        + out_words(args.out, OUT),
        f"{args.batches} test batches of {recipe.eval_batch_size} sequences (the "
        f"suite's test seeds first), {n} sequences a run. Accuracy in % of the sequences whose token at that "
        f"position is reconstructed; chance 6.7%.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(head + [files, ""] + lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
