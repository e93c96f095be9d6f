"""Is a Shuffle-2 bracket held open long lost from HOPE's state, or only from its readout?

    python experiments/synthetic/probes/readout.py

``length_failure.py`` found HOPE's Shuffle-2 Bin1 failures at open brackets held longer than training holds one,
with α learned, with α = 1 and with α = 1 and plain gradient descent alike. This probe asks where the count goes.
At every position of every string it reads the hidden state after each block (the last one through the final
norm: what the output head reads), and asks of each counter (the open ``(``, the open ``[``) whether it is above 0,
that is, whether its close is allowed, three ways:

- **the model**: its own output for that close (sigmoid > 0.5), the readout trained on strings of ≤ 50 symbols;
- **probe fit ≤ 50**: a logistic regression on the state, fit on strings of 1–50 symbols (what the readout saw);
- **probe fit 51–100**: the same, fit on other strings of 51–100 symbols: is the bit linearly in the state there?

scored on held-out strings of 51–100 symbols, by how long the counter has been open (``length_failure``'s
open stretch), both counters pooled. If the fit-51–100 probe reads the bit where the model fails, the state still
holds the count and the readout does not generalise to it; if it cannot either, the state has lost it.
It needs a run's kept weights: its suite's (``--keep-weights``, the row's ``weights``) or those ``length_failure.py``
keeps (``runs/probes/length_failure/``); it trains nothing.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch

from nestlearn.data.formal import TOKEN, formal_batch
from nestlearn.experiments import synthetic as suite
from nestlearn.experiments.protocol import code_version
from nestlearn.experiments.synthetic import load_recipe

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from length_failure import STRETCH_BANDS, depths, kept_weights, open_stretches, string_of  # noqa: E402 (the probe beside this one)

ROOT = HERE.parents[2]
KEPT = ROOT / "runs" / "probes" / "length_failure"
# (recipe, model): HOPE's Shuffle-2 seed 0 as selected, with α = 1, and with α = 1 and plain gradient descent
RUNS = [(HERE.parent / "formal.yaml", "hope_eta2"), (HERE / "no_decay_shuffle2.yaml", "hope_eta2_alpha1"),
        (HERE / "no_dgd_shuffle2.yaml", "hope_eta2_alpha1_gd")]
CLOSE = (TOKEN[")"], TOKEN["]"])
SEEDS = {"fit_short": 910_000, "fit_long": 920_000, "test": 930_000}  # none is a suite's train or test seed


def load(recipe_path: Path, model_name: str, seed: int = 0):
    """The kept weights of this run: its suite's (``--keep-weights``) or ``length_failure.py``'s (refused, with
    the command, when there are neither)."""
    recipe = load_recipe(recipe_path)
    store = recipe_path.parent / recipe.out / "formal.jsonl"
    kept, _ = kept_weights(store, KEPT, recipe_path, model_name, "shuffle2", seed)
    if not kept.exists():
        raise SystemExit(f"no kept weights for {recipe_path.stem} {model_name} at code version "
                         f"{code_version()['code']} in {KEPT}: run python experiments/synthetic/probes/"
                         f"length_failure.py --recipe {recipe_path.relative_to(ROOT)} --model {model_name} "
                         "--tasks shuffle2 first")
    return suite.load_weights(kept)[0]


@torch.no_grad()
def states(model, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per layer, the hidden state after each block ``[B, L, D]`` (the last through the final norm), and the
    logits. The in-context driver runs the blocks segment by segment; the pieces are put back in order."""
    pieces: list[list[torch.Tensor]] = [[] for _ in range(len(model.blocks) + 1)]
    hooks = [b.register_forward_hook(lambda m, a, out, i=i: pieces[i].append(out[0]))
             for i, b in enumerate(model.blocks[:-1])]
    hooks.append(model.norm.register_forward_hook(lambda m, a, out: pieces[-1].append(out)))
    try:
        logits = model(ids)[0]
    finally:
        for h in hooks:
            h.remove()
    out = [torch.cat(p, dim=1) for p in pieces if p]
    assert all(h.shape[1] == logits.shape[1] for h in out), "a position's state missing"
    return out, logits


def positions(model, n: int, length: tuple[int, int], seed: int, batch: int = 64) -> dict:
    """Every position of ``n`` strings: features per layer, the two counters' bits (above 0), their open
    stretches, and the model's own bits for the two closes."""
    feats: list[list[torch.Tensor]] = []
    bits, stretch, own = [], [], []
    for start in range(0, n, batch):
        ids, _, mask = formal_batch("shuffle2", min(batch, n - start), length, seed + start)
        layers, logits = states(model, ids)
        feats.append([h[mask] for h in layers])
        own.append(torch.sigmoid(logits[..., list(CLOSE)])[mask] > 0.5)
        for b in range(ids.shape[0]):
            s = string_of(ids, mask, b)
            bits += [[c > 0 for c in pair] for pair in depths(s)]
            stretch += open_stretches(s)
    return {"x": [torch.cat([f[i] for f in feats]) for i in range(len(feats[0]))],
            "bit": torch.tensor(bits), "stretch": torch.tensor(stretch), "own": torch.cat(own)}


def fit(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, iters: int = 200):
    """A logistic regression per column of ``y`` on standardised ``x`` (L-BFGS): a function of new features."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], y.shape[1], requires_grad=True)
    b = torch.zeros(y.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y.float()) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, b = w.detach(), b.detach()
    return lambda x_new: ((x_new - mean) / std) @ w + b > 0


def table(test: dict, columns: dict[str, torch.Tensor]) -> list[str]:
    """Accuracy of each column's bits on the test positions: closed counters, then open ones by stretch band."""
    lines = ["| counter | positions | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    bit, stretch = test["bit"], test["stretch"]
    bands = [(1, STRETCH_BANDS[0][1]), *STRETCH_BANDS[1:]]  # an open counter has been open for ≥ 1 symbol
    rows = [("closed (0)", ~bit)] + [(f"open {lo}–{hi}", bit & (stretch >= lo) & (stretch <= hi)) for lo, hi in bands]
    for name, where in rows:
        if int(where.sum()) == 0:
            continue
        cells = [f"{100.0 * float((pred == bit)[where].float().mean()):.1f}%" for pred in columns.values()]
        lines.append(f"| {name} | {int(where.sum()):,} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--strings", type=int, default=256, help="strings in each of the three sets")
    p.add_argument("--out", default=str(HERE / "length_failure" / "readout.md"))
    args = p.parse_args()
    if not 1 <= args.strings <= 10_000:
        p.error(f"--strings {args.strings}: between 1 and 10,000 (each set draws its batches from seeds 10,000 apart)")
    torch.set_num_threads(1)
    cmd = "python experiments/synthetic/probes/readout.py" + (
        f" --strings {args.strings}" if args.strings != 256 else "")
    lines = ["# Shuffle-2: is a bracket held open long lost from HOPE's state, or from its readout?", "",
             f"Command: `{cmd}`  ",
             f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, code version "
             f"{code_version()['code']}. The weights are those `length_failure.py` kept for each run (seed 0). "
             f"{args.strings} strings per set: the probes fit on strings of 1–50 or of 51–100 symbols, all scored on "
             "other strings of 51–100 (seeds apart from the suite's). Each cell: the share of test positions whose "
             "bit (the counter above 0, so its close allowed) is read right; both counters pooled. Layer columns "
             "are logistic regressions on the state after that block (the last: through the final norm, what the "
             "output head reads).", ""]
    for recipe_path, name in RUNS:
        model = load(recipe_path, name)
        short = positions(model, args.strings, (1, 50), SEEDS["fit_short"])
        long = positions(model, args.strings, (51, 100), SEEDS["fit_long"])
        test = positions(model, args.strings, (51, 100), SEEDS["test"])
        columns = {"the model": test["own"]}
        for fit_on, label in ((short, "fit ≤ 50"), (long, "fit 51–100")):
            for i in range(len(test["x"])):
                columns[f"L{i + 1}, {label}"] = fit(fit_on["x"][i], fit_on["bit"])(test["x"][i])
        section = [f"## {name} (`{recipe_path.relative_to(ROOT)}`)", ""] + table(test, columns) + [""]
        print("\n".join(section), flush=True)
        lines += section
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
