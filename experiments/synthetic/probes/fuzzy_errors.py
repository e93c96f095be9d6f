"""Which fuzzy-recall answers do HOPE and the Transformer get wrong, and how many can any model get right?

    python experiments/synthetic/probes/fuzzy_errors.py runs/weights/mad/fuzzy_in_context_recall-hope-final-seed0-….pt \
        runs/weights/mad/fuzzy_in_context_recall-transformer-select-seed100-….pt

MAD's fuzzy in-context recall (``nestlearn.data.synthetic.fuzzy_in_context_recall``) writes pairs of spans: a key of
1–3 key tokens, then a value of 1–3 value tokens; once a key has occurred, each token of its value is the target of
the token before it. The spans of a sequence are drawn independently, so two keys can get the same span with
different values: after that span no model can know which value follows. This probe scores kept runs of the suite
(``--keep-weights``) on many test sequences and sorts every scored answer by

- whether the context determines it: the distinct values that followed the same key span (with the same value
  tokens so far) earlier in the sequence are the keys that can be asking, each as likely as the others (keys are
  drawn uniformly and independently). The **context bound** is the expected accuracy of guessing the token most of
  them continue with (ties split evenly): no model can beat it on average, and it is below 100%;
- whether it is a value's first token (the key span read whole) or a later one (the value continued);
- the key span's length;
- the distance back, in tokens, to the same answer in the key's last occurrence, and whether that earlier answer lies
  in the query's chunk of the memories (8 tokens in mad.yaml; only the per-token read holds it there), and whether
  every earlier occurrence does (no chunk's end, no memory's chunk-start state and no CMS step, has passed any).

``--chunk-start`` adds, for each model whose memories have the per-token read (HOPE), a column of the same weights
read at the chunk start (D21 as printed; test time only); ``--ablate`` two more, its CMS levels frozen in context and
its memories writing nothing (test time only).

The weights are those a suite run kept (:func:`nestlearn.experiments.synthetic.load_weights`: the row's identity
travels with them). A probe of the mechanism, not a protocol result; written to ``--out``
(``fuzzy_errors/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from nestlearn.experiments import synthetic as suite

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablate import CHANGES, report_head, run_label  # noqa: E402
from length_failure import changed, readable  # noqa: E402  (the test-time changes)

HERE = Path(__file__).resolve().parent
TASK = "fuzzy_in_context_recall"
CHUNK = 8  # the self-modifying memories' chunk in mad.yaml (selfmod.chunk_size); HOPE's chunks start at token 0
DIST_BANDS = [(1, 7), (8, 15), (16, 31), (32, 63), (64, 127)]
NAMES = {"hope": "HOPE", "transformer": "Transformer", "titans": "Titans", "delta": "delta rule"}


def pairs_of(row: list[int], vocab: int) -> list[tuple[tuple[int, ...], tuple[int, ...], int]]:
    """The (key span, value span, key start) pairs of one sequence: key tokens are ``1…vocab``, value tokens
    ``vocab+1…2·vocab``, 0 pads the end."""
    out, i, n = [], 0, len(row)
    while i < n and row[i] != 0:
        start = i
        while i < n and 1 <= row[i] <= vocab:
            i += 1
        key = tuple(row[start:i])
        v0 = i
        while i < n and vocab < row[i] <= 2 * vocab:
            i += 1
        if not key or i == v0:
            raise ValueError(f"not a fuzzy-recall sequence: no key or no value at token {start}")
        out.append((key, tuple(row[v0:i]), start))
    return out


def answer_table(ids: torch.Tensor, targets: torch.Tensor, vocab: int, chunk: int = CHUNK,
                 offset: int = 0) -> dict[str, torch.Tensor]:
    """Per scored position (``targets != -100``, in row-major order): the context bound (expected accuracy of the
    best guess from the sequence so far), whether the answer is a value's first token, the key span's length, the
    distance in tokens to the same answer in the key span's last occurrence, and whether that earlier answer lies
    in the query's chunk (chunks of ``chunk`` tokens, the sequence's first token at position ``offset`` of one).
    Checks that the parse finds exactly the suite's targets: a pair is a query when its key (by the generator's
    index, which the spans do not always tell apart) occurred before, which the targets record."""
    cols: dict[str, list] = {k: [] for k in ("bound", "first", "key_len", "dist", "same_chunk", "only_chunk")}
    for b in range(ids.shape[0]):
        row = ids[b].tolist()
        want = {p: t for p, t in enumerate(targets[b].tolist()) if t != -100}
        got = {}
        seen: dict[tuple, list] = {}  # key span → its earlier (value span, value start), oldest first
        for key, value, start in pairs_of(row, vocab):
            v0 = start + len(key)
            earlier = seen.get(key, [])
            # scored when its key occurred before: the generator knows keys by index, and two keys can share a
            # span, so the targets (not the span) say which pairs are queries
            if v0 - 1 in want:
                if not earlier:
                    raise AssertionError(f"sequence {b}: a query at token {v0 - 1} whose key span never occurred")
                for t, tok in enumerate(value):
                    pos = v0 + t - 1  # the position whose next token is value[t]
                    got[pos] = tok
                    # the keys that can be asking: each distinct value seen after this span (keys are drawn
                    # uniformly and independently, so each is as likely as the others, however often it occurred)
                    nxt = [v[t] for v in {v for v, _ in earlier} if v[:t] == value[:t] and len(v) > t]
                    best = max(nxt.count(x) for x in set(nxt)) if nxt else 0
                    tied = {x for x in set(nxt) if nxt.count(x) == best}
                    cols["bound"].append(1.0 / len(tied) if tok in tied else 0.0)
                    cols["first"].append(t == 0)
                    cols["key_len"].append(len(key))
                    # the latest earlier answer in the same place: a value with the same tokens so far and this one
                    same = [v_start for v, v_start in earlier if v[:t + 1] == value[:t + 1]]
                    back = (same[-1] if same else earlier[-1][1]) + t
                    cols["dist"].append(v0 + t - back)
                    here = (pos + offset) // chunk
                    cols["same_chunk"].append((back + offset) // chunk == here)
                    # every earlier occurrence of this answer in the query's chunk: no chunk's end has passed it
                    cols["only_chunk"].append(bool(same) and all((v_start + t + offset) // chunk == here
                                                                  for v_start in same))
            seen.setdefault(key, []).append((value, v0))
        if got != want:
            raise AssertionError(f"sequence {b}: the parsed answers differ from the suite's targets")
    return {k: torch.tensor(v) for k, v in cols.items()}


@torch.no_grad()
def score(model, recipe, batches: int, **change) -> dict[str, torch.Tensor]:
    """Right/wrong of every scored answer over ``batches`` test batches (the suite's test seeds first, then further
    seeds of the same generator), with each answer's descriptors; ``change``: a test-time change of
    ``length_failure.changed`` (read at the chunk start, CMS frozen, memories writing nothing), undone after."""
    model.eval()
    vocab = recipe.tasks[TASK]["vocab"]
    parts: dict[str, list] = {}
    with changed(model, **change):
        for i in range(batches):
            ids, targets = suite.make_batch(recipe, TASK, recipe.eval_batch_size, suite._eval_seed(i), "eval")
            logits = model(ids)[0]
            right = (logits.argmax(-1) == targets) & torch.isfinite(logits).all(-1)
            table = answer_table(ids, targets, vocab)
            table["right"] = right[targets != -100]
            for k, v in table.items():
                parts.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in parts.items()}


def _rate(res: dict, sel: torch.Tensor) -> str:
    n = int(sel.sum())
    if not n:
        return "–"
    return f"{100.0 * int(res['right'][sel].sum()) / n:.2f}"


def rows(res: dict) -> list[tuple[str, torch.Tensor]]:
    """The table's rows: (label, selection over the scored answers)."""
    every = torch.ones_like(res["right"])
    det = res["bound"] == 1.0
    out = [("all answers", every), ("determined by the context (bound 100%)", det),
           ("not determined (an identical key span with another value)", ~det),
           ("determined, a value's first token", det & res["first"]),
           ("determined, a later value token", det & ~res["first"])]
    out += [(f"determined, key span of {n} token{'s' if n > 1 else ''}", det & (res["key_len"] == n))
            for n in (1, 2, 3)]
    out += [(f"determined, the earlier answer {lo}–{hi} tokens back", det & (res["dist"] >= lo) & (res["dist"] <= hi))
            for lo, hi in DIST_BANDS]
    near = det & (res["dist"] <= CHUNK - 1)  # near enough to lie in the query's chunk or in the one before
    out += [("determined, the earlier answer in the query's chunk", det & res["same_chunk"]),
            ("determined, the earlier answer in an earlier chunk", det & ~res["same_chunk"]),
            ("determined, every earlier occurrence in the query's chunk", det & res["only_chunk"]),
            ("determined, the last in the query's chunk, an older one in an earlier chunk",
             det & res["same_chunk"] & ~res["only_chunk"]),
            (f"determined, 1–{CHUNK - 1} tokens back, in the query's chunk", near & res["same_chunk"]),
            (f"determined, 1–{CHUNK - 1} tokens back, in the chunk before", near & ~res["same_chunk"])]
    return out


def report(results: list[tuple[str, dict]]) -> list[str]:
    """One table: a row per kind of answer (its count and share), a column per model (accuracy in %)."""
    first = results[0][1]
    n = first["right"].numel()
    bound = 100.0 * float(first["bound"].mean())
    lines = [f"{n} scored answers; the context bound (the best any model can expect) **{bound:.2f}%**.", "",
             "| answers | count | " + " | ".join(name for name, _ in results) + " |",
             "|---|---:|" + "---:|" * len(results)]
    labels = rows(first)
    per_model = [rows(res) for _, res in results]
    for i, (label, sel) in enumerate(labels):
        cells = [_rate(res, model_rows[i][1]) for (_, res), model_rows in zip(results, per_model, strict=True)]
        lines.append(f"| {label} | {int(sel.sum())} | " + " | ".join(cells) + " |")
    undetermined = labels[2][1]
    lines += ["", f"The context bound on the answers the context does not determine: "
              f"{100.0 * float(first['bound'][undetermined].mean()):.2f}%."]
    return lines


SNAPSHOT = re.compile(r"-step\d+$")  # the name snapshot.py gives a run in progress's weights


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("weights", nargs="+", help="kept weights of fuzzy-recall runs (runs/weights/mad/…pt)")
    p.add_argument("--batches", type=int, default=16, help="test batches of the suite's size (it scores 4)")
    p.add_argument("--chunk-start", action="store_true",
                   help="also score each model whose memories can read at the chunk start (D21) that way")
    p.add_argument("--ablate", action="store_true",
                   help="also score HOPE with its CMS frozen in context, and with its memories writing nothing")
    p.add_argument("--out", default=str(HERE / "fuzzy_errors" / "RESULTS.md"))
    args = p.parse_args()
    out = "" if args.out == p.get_default("out") else f" --out {args.out}"
    results, described = [], []
    for path in args.weights:
        model, recipe, row = suite.load_weights(path)
        if row["task"] != TASK:
            raise SystemExit(f"{path}: a run of {row['task']}, not {TASK}")
        torch.set_num_threads(1)
        what = run_label(row, recipe)
        name = (f"{NAMES.get(row['model'], row['model'])} {what}"
                + (f", lr {row['lr']:g}" if what == "selection" else "")
                + (f", step {row['best_step']} of a run in progress" if SNAPSHOT.search(Path(path).stem) else ""))
        wanted = ["as trained"] + (["read at the chunk start"] if args.chunk_start and readable(model) else []) \
            + (["CMS frozen in context", "memories write nothing"] if args.ablate and readable(model) else [])
        for change in wanted:  # ablate.CHANGES names them
            results.append((name if change == "as trained" else f"{name}, {change}",
                            score(model, recipe, args.batches, **CHANGES[change])))
        described.append(f"{name}: `{path}` (lr {row['lr']}, best weights at step {row['best_step']}, "
                         f"code {row['code']})")
    if any(not torch.equal(r["bound"], results[0][1]["bound"]) for _, r in results):
        raise AssertionError("the runs were scored on different answers")
    lines = [*report_head(
        "Fuzzy in-context recall: which answers the models get wrong",
        f"python experiments/synthetic/probes/fuzzy_errors.py {' '.join(args.weights)}"
        f"{f' --batches {args.batches}' if args.batches != 16 else ''}"
        f"{' --chunk-start' if args.chunk_start else ''}{' --ablate' if args.ablate else ''}{out}",
        f"{args.batches} test batches (the suite's {min(args.batches, 4)} of its 4 test seeds and "
        f"{max(args.batches - 4, 0)} more of the same generator). Accuracy in % per kind of answer."),
        *[f"- {d}" for d in described], "", *report(results)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
