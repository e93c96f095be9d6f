"""Where does HOPE (η_max = 2) fail past the training lengths, and is it the CMS's in-context steps?

    python experiments/synthetic/probes/length_failure.py                       # (abab)* and (aa)* seed 0
    python experiments/synthetic/probes/length_failure.py --tasks abab_star --seeds 0 1
    python experiments/synthetic/probes/length_failure.py --recipe experiments/synthetic/probes/no_decay.yaml \
        --model hope_eta2_alpha1 --out experiments/synthetic/probes/length_failure/no_decay.md

Trains a reported seed of formal.yaml again (or of ``--recipe``, a model of it: ``--model``), exactly as the suite
did (the recipe's settings, the rate of its stored row), and checks that its test bins equal the stored row.
Then, on the same test strings, it scores the kept weights six ways, changing only test time:

- as trained: the CMS levels step wherever their chunk ends (up to 24 times at 200 tokens; at most 6 in training);
- CMS steps capped at the training horizon: no level steps after position 48, the last step a training string
  of ≤ 50 tokens sees (the levels keep the weights they had there);
- CMS frozen: no level steps at all (the levels stay at their meta-learned weights; the self-modifying memories
  still write).

- memories frozen from 48: the self-modifying memories stop writing from the segment that starts at position 48
  (η = 0, α = 1, β = 0 there: the state after position 47 is read from then on; the CMS as trained);
- both frozen from 48: that, and no CMS step after position 48;
- no decay from 48: the memories write as trained but keep all of their state there (α = 1).

and reports accuracy per length band and the position of the first wrong next-symbol set. A second table follows
one 200-token string as trained, segment by segment: the smallest margin of its predictions there (the logit of
every symbol signed by the target: positive when the whole set is right) and the size of the in-context state
after the segment (Frobenius norms, mean over heads: the self-modifying memories' weights, and the CMS level 0's
change from its meta-learned weights), to see whether the state leaves the range it had inside the training
lengths. Every string of (aa)*
or (abab)* of a given length is the same string, so on those languages a model's predictions at a position are
the same for every test string: the first wrong position is one number. On Shuffle-2 a third part sorts the
strings by their deepest counter and their longest open stretch against the run's training strings (``by_depth``).
The trained weights are kept under ``--weights`` (per code version), and a later call at that code version scores
them without training again. A stored row whose suite kept its weights (``--keep-weights``, the row's ``weights``)
is scored from those, and nothing is trained. A probe of the mechanism, not a protocol result; written to
``length_failure/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import random
import sys
from pathlib import Path

import torch

from nestlearn.experiments import synthetic as suite
from nestlearn.experiments.protocol import code_version
from nestlearn.experiments.synthetic import FORMAL_BINS, load_recipe, make_batch, run_one
from nestlearn.layers.cms import CMS, CMSState, level_steps
from nestlearn.memory import Memory
from nestlearn.models import icl

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parents[0] / "formal.yaml"
MODEL = "hope_eta2"
HORIZON = 48  # the last position at which a CMS level steps inside a training string (≤ 50 tokens)
# column → (last CMS step position, first position of a segment whose memories are changed, how: "frozen" drops
# their writes, "no decay" keeps them and drops only the retention: α = 1)
CAPS = {"as trained": (None, None, None), "CMS steps capped at 48": (HORIZON, None, None),
        "CMS frozen": (0, None, None), "memories frozen from 48": (None, HORIZON, "frozen"),
        "both frozen from 48": (HORIZON, HORIZON, "frozen"), "no decay from 48": (None, HORIZON, "no decay")}
BANDS = [(1, 50), (51, 60), (61, 70), (71, 80), (81, 90), (91, 100), (101, 150), (151, 200)]


def kept_file(weights: Path, recipe_path, model: str, task: str, seed: int, lr: float) -> Path:
    """Where the weights of one retrained run are kept, at this code version."""
    return Path(weights) / f"{Path(recipe_path).stem}-{model}-{task}-seed{seed}-lr{lr}-{code_version()['code']}.pt"


def stored_row(store: Path, model: str, task: str, seed: int) -> dict:
    rows = [json.loads(line) for line in store.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["task"] == task and r["model"] == model and r["seed"] == seed]
    if not rows:
        raise SystemExit(f"no stored {model} row for {task} seed {seed} in {store}")
    return rows[-1]


class _Capped:
    """CMS.step that lets no level step after absolute position ``cap`` (the accumulators are emptied there,
    so nothing is carried into a later step)."""

    def __init__(self, cap: int | None):
        self.cap, self.orig = cap, CMS.step

    def __enter__(self):
        cap, orig = self.cap, self.orig
        if cap is None:
            return self

        def step(cms: CMS, state: CMSState, pos: int) -> CMSState:
            if pos <= cap:
                return orig(cms, state, pos)
            acc = tuple(a if w is None or not level_steps(pos, lv.chunk_size) else cms._empty_acc(w)
                        for a, w, lv in zip(state.acc, state.weights, cms.cfg.levels, strict=True))
            return CMSState(state.weights, acc)

        CMS.step = step
        return self

    def __exit__(self, *exc):
        CMS.step = self.orig


class _Frozen:
    """The self-modifying memories write nothing (η = 0, α = 1, β = 0: the state and its momentum's effect
    stop) in every in-context segment that starts at or after absolute position ``start``; with ``mode="no
    decay"`` they write as trained there but keep all of their state (α = 1). The driver runs a
    sequence segment by segment (``icl._segment``; here each segment is one chunk of both memories), so the
    segment's start is known while its memories write. A model whose CMS does not learn in context runs no
    segments: from position 0 its memories are stopped everywhere; from a later position it is refused (no segment
    says where a write is)."""

    def __init__(self, start: int | None, mode: str | None = "frozen"):
        self.start, self.mode, self.end, self.segments = start, mode, 0, False
        self.orig = icl._segment, Memory.read_write, Memory.write

    def __enter__(self):
        if self.start is None:
            return self
        seg_fn, rw_fn, w_fn = self.orig

        def segment(model, seg, targets, end, blocks, retain):
            # a pending segment (no targets) comes last: it starts where the last complete one ended
            self.end = end if targets is not None else self.end + seg.shape[1]
            self.segments = True
            return seg_fn(model, seg, targets, end, blocks, retain)

        def gates(seg_len: int, lr, decay, momentum):
            if not self.segments and self.start > 0:
                raise ValueError(f"the memories cannot be stopped from position {self.start} in a model whose CMS "
                                 "does not learn in context: it runs no segments that say where a write is")
            if self.start > 0 and self.end - seg_len < self.start:
                return lr, decay, momentum
            if self.mode == "no decay":
                return lr, None, momentum  # no decay given: α = 1
            return (torch.zeros_like(lr), torch.ones_like(lr), None if momentum is None else torch.zeros_like(lr))

        def read_write(mem, state, q, k, v, lr, decay=None, momentum=None, **kw):
            return rw_fn(mem, state, q, k, v, *gates(k.shape[1], lr, decay, momentum), **kw)

        def write(mem, state, k, v, lr, decay=None, momentum=None, **kw):
            return w_fn(mem, state, k, v, *gates(k.shape[1], lr, decay, momentum), **kw)

        icl._segment, Memory.read_write, Memory.write = segment, read_write, write
        return self

    def __exit__(self, *exc):
        icl._segment, Memory.read_write, Memory.write = self.orig


def readable(model, layers=None) -> list:
    """The mixers (of ``layers``, all when ``None``) whose memories' read can move to the chunk start (``cfg.read``,
    D21): HOPE's, not the others'. MAD's compression model wraps its language model (``.lm``)."""
    lm = getattr(model, "lm", model)
    return [block.mixer for i, block in enumerate(lm.blocks)
            if hasattr(getattr(block.mixer, "cfg", None), "read") and (layers is None or i in layers)]


@contextlib.contextmanager
def changed(model, read: str = "token", cms_frozen: bool = False, memories_frozen: bool = False, layers=None):
    """Inside the block the model runs with the memories of ``layers`` (all when ``None``) read as ``read``
    (``"chunk_start"``: D21 as printed), its CMS levels frozen in context (``cms_frozen``), its self-modifying
    memories writing nothing (``memories_frozen``); all undone on exit. A read change on a model without such
    memories is refused."""
    mixers = readable(model, layers)
    if read != "token" and not mixers:
        raise ValueError(f"read={read!r}: this model's mixers have no read to change")
    cfgs = [mixer.cfg for mixer in mixers]
    for mixer in mixers:  # a copy each: the layers of a model share one config object
        mixer.cfg = dataclasses.replace(mixer.cfg, read=read)
    try:
        with _Capped(0 if cms_frozen else None), _Frozen(0 if memories_frozen else None):
            yield model
    finally:
        for mixer, cfg in zip(mixers, cfgs, strict=True):
            mixer.cfg = cfg


def wrong_sets(logits, targets, mask):
    """Per position of each string: its predicted next-symbol set (sigmoid > 0.5) is not the target's, or a logit
    is not finite (the suite scores that as a failure)."""
    return (((logits > 0).float() != targets).any(-1) | ~torch.isfinite(logits).all(-1)) & mask


@torch.no_grad()
def score(model, recipe, task: str, cap: tuple[int | None, int | None]) -> dict:
    """Per test bin: accuracy; per length band: accuracy; the first wrong position of each failed string."""
    model.eval()
    by_len: dict[int, list[int]] = {}
    first_wrong: list[int] = []
    bins = {}
    with _Capped(cap[0]), _Frozen(cap[1], cap[2]):
        for j, split in enumerate(FORMAL_BINS):
            good = total = 0
            for i in range(recipe.eval_batches):  # the suite's test seeds (synthetic.evaluate)
                ids, targets, mask = make_batch(recipe, task, recipe.eval_batch_size, suite._eval_seed(i) + 10_000 * j,
                                                split)
                logits = model(ids)[0]
                wrong = wrong_sets(logits, targets, mask)
                lengths = mask.sum(-1)
                for b in range(ids.shape[0]):
                    ok = not bool(wrong[b].any())
                    by_len.setdefault(int(lengths[b]), []).append(ok)
                    if not ok:
                        first_wrong.append(int(wrong[b].nonzero()[0]) + 1)
                    good += ok
                    total += 1
            bins[split] = 100.0 * good / total
    bands = {}
    for lo, hi in BANDS:
        oks = [ok for n, v in by_len.items() if lo <= n <= hi for ok in v]
        bands[f"{lo}–{hi}"] = (100.0 * sum(oks) / len(oks), len(oks)) if oks else None
    return {"bins": bins, "bands": bands, "first_wrong": sorted(first_wrong)}


@torch.no_grad()
def trajectory(model, task: str, length: int = 200) -> tuple[int, list[tuple]]:
    """Per in-context segment of one string of ``length`` symbols, or of the longest one below it that the language
    has (aⁿbⁿcⁿ: 198), as trained: the length, and per segment (first, last position, smallest margin, per layer:
    ‖M_memory‖, ‖grouped memories‖, ‖CMS level 0 − θ₀‖)."""
    from nestlearn.data.formal import formal_batch, longest_length

    model.eval()
    length = longest_length(task, length)
    ids, targets, _ = formal_batch(task, 1, (length, length), 0)
    states = []
    seg_fn = icl._segment

    def segment(m, seg, tgts, end, blocks, retain):
        out = seg_fn(m, seg, tgts, end, blocks, retain)
        states.append((seg.shape[1], out[1]))
        return out

    icl._segment = segment
    try:
        logits = model(ids)[0][0]
    finally:
        icl._segment = seg_fn
    margin = ((2 * targets[0] - 1) * logits).min(-1).values
    rows, start = [], 0

    def norm(ws) -> float:  # mean over the batch entry's heads (or memories) of each weight's Frobenius norm
        return sum(float(w.flatten(2).norm(dim=-1).mean()) for w in ws)

    for n, blocks in states:
        cells = []
        for block, st in zip(model.blocks, blocks, strict=True):
            mixer = st.mixer
            level0 = block.mlp.levels[0]
            w0 = st.mlp.weights[0]
            init = (level0.w_gate, level0.w_up, level0.w_down)
            cells += [norm(mixer.memory.weights), norm(mixer.group.weights),
                      sum(float((w[0] - p).norm()) for w, p in zip(w0, init, strict=True))]
        rows.append((start, start + n - 1, float(margin[start:start + n].min()), *cells))
        start += n
    model.train()
    return length, rows


def string_of(ids, mask, b: int) -> str:
    """Entry ``b``'s string in a formal batch: the symbols after ``^``, one fewer than the positions scored (the
    last scored position predicts the end)."""
    from nestlearn.data.formal import SYMBOLS

    return "".join(SYMBOLS[t] for t in ids[b, 1:int(mask[b].sum())].tolist())


def depths(s: str) -> list[tuple[int, int]]:
    """Shuffle-2's two counters (the open ``(`` and the open ``[``) after each prefix ``s[:i]``, i = 0..len(s)."""
    out, c = [(0, 0)], [0, 0]
    for ch in s:
        i = 0 if ch in "()" else 1
        c[i] += 1 if ch in "([" else -1
        out.append((c[0], c[1]))
    return out


def open_stretches(s: str) -> list[tuple[int, int]]:
    """Per counter, after each prefix ``s[:i]``: for how many symbols it has been above 0 (0 when it is 0), that
    is, how long ago its oldest open bracket was read. A memory that forgets with age loses the count here."""
    out, last_zero = [(0, 0)], [0, 0]
    for i, pair in enumerate(depths(s)[1:], start=1):
        for t in (0, 1):
            if pair[t] == 0:
                last_zero[t] = i
        out.append(tuple(i - last_zero[t] for t in (0, 1)))
    return out


def deepest(pairs) -> int:
    """The largest value either counter takes over ``pairs`` (of ``depths`` or ``open_stretches``)."""
    return max(max(pair) for pair in pairs)


STRETCH_BANDS = [(0, 16), (17, 32), (33, 48), (49, 64), (65, 96), (97, 200)]
DEPTH_BANDS = [(1, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 16), (17, 24), (25, 200)]


@torch.no_grad()
def by_depth(model, recipe, task: str, seed: int, steps: int) -> list[str]:
    """Shuffle-2 needs two counters. Is a string past the training lengths failed because it is long, because a
    counter goes past the values that training strings reach, or because a count has been held longer than
    training ever held one? Accuracy by the string's deepest counter and by its longest open stretch (how long a
    counter stays above 0), per test bin, against every training string the run drew (its steps' seeds); and at
    each failed string's first wrong position, which symbol is wrong and where the counters stand."""
    from nestlearn.data.formal import SYMBOLS, length_bins, sample_string

    held = recipe.val_lengths  # make_batch's training range
    lengths = (1, held[0] - 1) if held else length_bins(recipe.max_len)["bin0"]
    train_deep: dict[int, int] = {}
    train_open: dict[int, int] = {}
    for step in range(steps):  # the run's training strings: formal_batch draws them from this generator
        rng = random.Random(suite._train_seed(seed, step))
        for _ in range(recipe.batch_size):
            x = sample_string(task, lengths, rng)
            d, o = deepest(depths(x)), deepest(open_stretches(x))
            train_deep[d] = train_deep.get(d, 0) + 1
            train_open[o] = train_open.get(o, 0) + 1
    n_train = sum(train_deep.values())
    top, longest = max(train_deep), max(train_open)
    model.eval()
    by_deep: dict[tuple[int, str], list[bool]] = {}
    by_open: dict[tuple[int, str], list[bool]] = {}
    kinds: dict[str, list[tuple[bool, bool, int]]] = {}
    for j, split in enumerate(FORMAL_BINS):
        for i in range(recipe.eval_batches):
            ids, targets, mask = make_batch(recipe, task, recipe.eval_batch_size, suite._eval_seed(i) + 10_000 * j,
                                            split)
            logits = model(ids)[0]
            pred = logits > 0
            wrong = wrong_sets(logits, targets, mask)
            for b in range(ids.shape[0]):
                x = string_of(ids, mask, b)
                ds, os_ = depths(x), open_stretches(x)
                ok = not bool(wrong[b].any())
                deep, stretch = deepest(ds), deepest(os_)
                band = next(k for k, (lo, hi) in enumerate(DEPTH_BANDS) if lo <= deep <= hi)
                by_deep.setdefault((band, split), []).append(ok)
                band = next(k for k, (lo, hi) in enumerate(STRETCH_BANDS) if lo <= stretch <= hi)
                by_open.setdefault((band, split), []).append(ok)
                if not ok:
                    at = int(wrong[b].nonzero()[0])  # reads x[:at]; predicts the set after it
                    bad = [SYMBOLS[k] for k in range(len(SYMBOLS)) if bool(pred[b, at, k]) != bool(targets[b, at, k])]
                    what = ", ".join(("extra " if bool(pred[b, at, SYMBOLS.index(c)]) else "missed ") + c
                                     for c in bad) or "non-finite"
                    closes = [t for t, c in enumerate(")]") if c in bad]  # the counters the wrong symbols are about
                    held_for = max(os_[at][t] for t in (closes or (0, 1)))
                    kinds.setdefault(what, []).append((deepest(ds[:at + 1]) > top,
                                                       held_for > longest, held_for))
    model.train()

    def table(title: str, bands, cells, train: dict[int, int]) -> list[str]:
        out = [f"| {title} | training strings | " + " | ".join(FORMAL_BINS) + " |",
               "|---|---:|" + "---:|" * len(FORMAL_BINS)]
        for k, (lo, hi) in enumerate(bands):
            row = []
            for split in FORMAL_BINS:
                v = cells.get((k, split))
                row.append("–" if not v else f"{100.0 * sum(v) / len(v):.1f}% ({len(v)})")
            n = sum(c for d, c in train.items() if lo <= d <= hi)
            if n or any(cells.get((k, split)) for split in FORMAL_BINS):
                out.append(f"| {lo}–{hi} | {n:,} | " + " | ".join(row) + " |")
        return out + [""]

    share = lambda hist, hi: 100.0 * sum(v for d, v in hist.items() if d <= hi) / n_train  # noqa: E731
    lines = [f"Accuracy as trained, by the string's deepest counter (the larger of the open `(` and the open `[`). "
             f"The run's {n_train:,} training strings (steps 0–{steps - 1}) reach at most **{top}**; "
             f"{share(train_deep, 8):.1f}% of them stay at ≤ 8, {share(train_deep, 12):.2f}% at ≤ 12.", ""]
    lines += table("deepest counter", DEPTH_BANDS, by_deep, train_deep)
    lines += [f"By the string's longest open stretch (the most symbols read while one counter stays above 0: how long "
              f"the oldest open bracket must be remembered). Training strings hold one for at most **{longest}** "
              f"symbols; {share(train_open, 32):.1f}% of them for ≤ 32.", ""]
    lines += table("longest open stretch", STRETCH_BANDS, by_open, train_open)
    lines += [f"Failed strings at their first wrong position: the wrong symbols (extra: predicted but not allowed; "
              f"missed: allowed but not predicted); whether a counter has gone past training's deepest ({top}) by "
              f"then; and for how long the counter the wrong symbol is about (both for `$`) has been above 0 there, "
              f"against training's longest ({longest}).", "",
              "| wrong symbols | strings | a counter past training's deepest | open longer than training's longest "
              "| open for (median) |", "|---|---:|---:|---:|---:|"]
    for what, rows in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
        held = sorted(r[2] for r in rows)
        lines.append(f"| {what} | {len(rows)} | {sum(r[0] for r in rows)} | {sum(r[1] for r in rows)} | "
                     f"{held[len(held) // 2]} |")
    return lines + [""]


def train(recipe, model_name: str, task: str, seed: int, lr: float, kept: Path,
          resume_dir: Path | None = None) -> dict:
    """The suite's run (its row), trained again as the suite trains it; the weights it is scored with are kept at
    ``kept`` (``run_one``'s ``keep``: :func:`nestlearn.experiments.synthetic.load_weights` reads them).
    ``resume_dir``: a copy of the run's folder in progress (its ``checkpoints/``), continued from its latest
    checkpoint instead of starting over, as the suite resumes a run."""
    spec = recipe.variants[model_name]
    return run_one(dataclasses.replace(recipe, lr=lr), task, spec["block"], seed, None, log=None, name=model_name,
            overrides=spec.get("model"), resume_dir=resume_dir, keep=kept)


def kept_weights(store: Path, weights: Path, recipe_path, model: str, task: str, seed: int) -> tuple[Path, bool]:
    """The weights of a stored row's run: those its suite kept (``--keep-weights``) when the file is there,
    else this probe's own file at this code version (which may not exist yet); and whether they are the suite's."""
    stored = stored_row(store, model, task, seed)
    suite_kept = HERE.parents[2] / stored.get("weights", "")
    if stored.get("weights") and suite_kept.is_file():
        return suite_kept, True
    return kept_file(weights, recipe_path, model, task, seed, stored["lr"]), False


def quantiles(xs: list[int]) -> str:
    if not xs:
        return "–"
    q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))]  # noqa: E731
    return f"{xs[0]} / {q(0.25)} / {q(0.5)} / {q(0.75)} / {xs[-1]}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=["abab_star", "aa_star"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--recipe", default=str(RECIPE), help="a formal recipe whose stored rows are retrained")
    p.add_argument("--model", default=MODEL, help="one of the recipe's HOPE variants")
    p.add_argument("--out", default=str(HERE / "length_failure" / "RESULTS.md"))
    p.add_argument("--weights", default=str(HERE.parents[2] / "runs" / "probes" / "length_failure"),
                   help="where each retrained model's weights are kept (per code version) and reused from")
    p.add_argument("--resume", default=None,
                   help="a copy of the suite's folder of the run in progress (one task and seed): training continues "
                        "from its latest checkpoint; the bins are checked against the stored row as always")
    args = p.parse_args()
    torch.set_num_threads(1)
    recipe = load_recipe(args.recipe)
    store = Path(args.recipe).resolve().parent / recipe.out / "formal.jsonl"
    rel = lambda path: Path(path).resolve().relative_to(HERE.parents[2])  # noqa: E731
    cmd = "python experiments/synthetic/probes/length_failure.py" + (
        f" --recipe {rel(args.recipe)} --model {args.model}" if Path(args.recipe).resolve() != RECIPE else "") + (
        f" --out {rel(args.out)}" if Path(args.out).resolve() != HERE / "length_failure" / "RESULTS.md" else "") + (
        f" --tasks {' '.join(args.tasks)}" if args.tasks != ["abab_star", "aa_star"] else "") + (
        f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [0] else "") + (
        f" --resume {args.resume}" if args.resume else "")
    lines = [f"# Where HOPE ({args.model}) fails past the training lengths", "",
             f"Command: `{cmd}`  ",
             f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, code version "
             f"{code_version()['code']} (commit {code_version()['commit'][:12]}). Each run is a reported seed of "
             f"`{rel(args.recipe)}`, with the weights its suite kept or trained again as the suite trained it "
             f"(its stored row's rate); only test time changes between the columns. 256 test strings per bin (the "
             f"suite's test seeds).", ""]
    for task in args.tasks:
        for seed in args.seeds:
            stored = stored_row(store, args.model, task, seed)
            kept, from_suite = kept_weights(store, Path(args.weights), args.recipe, args.model, task, seed)
            reused = kept.exists()  # the suite's, or this probe's from an earlier call at this code version
            how = "the suite's kept weights" if from_suite else "kept weights" if reused else "trained"
            if not reused:
                train(recipe, args.model, task, seed, stored["lr"], kept, Path(args.resume) if args.resume else None)
            model, rec, ident = suite.load_weights(kept)
            steps = ident["steps_run"]
            results = {name: score(model, rec, task, cap) for name, cap in CAPS.items()}
            row = results["as trained"]["bins"]
            same = all(abs(row[b] - stored[b]) < 1e-9 for b in FORMAL_BINS)
            print(f"{task} seed {seed}: {steps} steps ({how}); "
                  f"bins {[row[b] for b in FORMAL_BINS]} (stored {[stored[b] for b in FORMAL_BINS]})", flush=True)
            lines += [f"## {task}, seed {seed} (lr {stored['lr']}, {steps} steps)", "",
                      f"Test bins as trained here: {' / '.join(f'{row[b]:.1f}' for b in FORMAL_BINS)}; stored row "
                      f"(commit {stored['commit'][:8]}): {' / '.join(f'{stored[b]:.1f}' for b in FORMAL_BINS)} — "
                      + ("the same." if same else "**not the same**: the columns below are of this run."), "",
                      "| length | " + " | ".join(CAPS) + " |", "|---|" + "---:|" * len(CAPS)]
            for band in results["as trained"]["bands"]:
                cells = []
                for name in CAPS:
                    v = results[name]["bands"][band]
                    cells.append("–" if v is None else f"{v[0]:.1f}% ({v[1]})")
                lines.append(f"| {band} | " + " | ".join(cells) + " |")
            lines.append("| Bin0 / Bin1 / Bin2 | " + " | ".join(
                " / ".join(f"{results[n]['bins'][b]:.1f}" for b in FORMAL_BINS) for n in CAPS) + " |")
            lines.append("| first wrong position of failed strings (min / q1 / median / q3 / max) | " + " | ".join(
                quantiles(results[n]["first_wrong"]) for n in CAPS) + " |")
            lines.append("")
            length, rows = trajectory(model, task)
            layers = len(model.blocks)
            lines += [f"One string of {length} symbols, as trained, segment by segment (positions 0-based; position 0 "
                      f"reads `^`; training strings have at most {rec.max_len} symbols):", "",
                      "| positions | smallest margin | " + " | ".join(
                          f"L{i} ‖M_memory‖ | L{i} ‖grouped‖ | L{i} ‖CMS₀ − θ₀‖" for i in range(1, layers + 1)) + " |",
                      "|---|---:|" + "---:|" * (3 * layers)]
            lines += [f"| {r[0]}–{r[1]} | {r[2]:+.2f} | " + " | ".join(f"{c:.2f}" for c in r[3:]) + " |" for r in rows]
            lines.append("")
            if task == "shuffle2":
                lines += by_depth(model, rec, task, seed, steps)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
