"""Which in-context recall queries does HOPE get wrong, when Titans and the Transformer get none?

    python experiments/synthetic/probes/recall_errors.py --checkpoint PATH/best.safetensors --step 1200
    python experiments/synthetic/probes/recall_errors.py --until 1250      # no checkpoint: train the suite's run
    python experiments/synthetic/probes/recall_errors.py --model titans --until 10000   # the same table for Titans

HOPE's in-context recall seeds on mad.yaml sit at 99.4–99.6% validation accuracy for thousands of steps (seeds
0 and 1; seed 2 leaves that plateau at step ~1,500 and scores 99.99%), where Titans' seeds solve the task. This
probe scores one HOPE run of the suite (seed 0 at its selected rate) on many more test sequences than the suite
does and sorts its wrong answers by what the query needed:

- the distance, in pairs, back to the key's last occurrence (the association the answer reads);
- whether that occurrence's value lies in the query's own chunk of the self-modifying memories (chunk 8 tokens):
  then only the per-token read of the chunk (D21's dual form) holds it; otherwise the chunk-start state does;
- how often the key occurred before, and the query's position.

and then changes test time only: the CMS levels' in-context steps off (the levels keep their meta-learned
weights), the self-modifying memories reading at the chunk's start (``read="chunk_start"``, D21), the memories
writing nothing, and both off; with ``--conv`` also the short convolutions (every layer's, or one layer's)
passing the current token only, and with ``--layer-reads`` one layer's memories at a time reading at the chunk
start. "The query's chunk" is the model's own (``chunk_layout``): Titans' chunks start after its persistent tokens.

The weights: ``--init`` scores the run's model at initialization (the CMS's in-context steps alone already
recall); ``--checkpoint`` loads a checkpoint the suite wrote while the run was in progress (its
``.partial/…/checkpoints/step_N/best.safetensors``: the weights of the best validation so far, which ``--step``
names; the ``.partial`` folders are not in git); without it, the probe trains the suite's run (its recipe, seed and
the rate of its stored row, the same cosine schedule over the whole budget) and stops after ``--until`` steps, as an
interruption would, keeping the best weights so far (``--resume`` continues the run from such a folder instead).
``--model titans`` (or ``transformer``) sorts that model's answers the same way (its run of the suite, at its
stored rate); of the test-time changes only those that exist in it run: Titans' memory read at the chunk start
(its chunk is 8 tokens in mad.yaml too), nothing for the Transformer.
A probe of the mechanism, not a protocol result; written to ``--out`` (``recall_errors/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_model

from nestlearn.experiments import synthetic as suite
from nestlearn.experiments.protocol import code_version
from nestlearn.experiments.synthetic import load_recipe, make_batch, model_config
from nestlearn.modules import ShortConv
from nestlearn.train.loop import check_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from length_failure import changed, stored_row  # noqa: E402  (the test-time changes; a stored row)

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parents[0] / "mad.yaml"
TASK, MODEL = "in_context_recall", "hope"
MODELS = {"hope": "HOPE", "titans": "Titans", "transformer": "the Transformer"}
CHUNK = 8  # the self-modifying memories' chunk in mad.yaml (selfmod.chunk_size)
DIST_BANDS = [(1, 1), (2, 3), (4, 7), (8, 15), (16, 63)]
POS_BANDS = [(0, 15), (16, 31), (32, 47), (48, 63)]
OCC_BANDS = [(1, 1), (2, 3), (4, 63)]


def query_table(ids: torch.Tensor, n_keys: int, chunk: int = CHUNK, offset: int = 0) -> dict[str, torch.Tensor]:
    """Per scored query (a key token whose key occurred before): its pair index, the distance in pairs to the
    key's last occurrence, whether that occurrence's value token lies in the query's chunk, and how many times
    the key occurred before. Tensors of shape ``[B, pairs]``; ``scored`` marks the queries. The memory's chunks
    hold ``chunk`` tokens and the sequence's first token sits at position ``offset`` of one (``chunk_layout``)."""
    keys = ids[:, 0::2] - 1
    B, n = keys.shape
    last = torch.full((B, n_keys), -1, dtype=torch.long)
    count = torch.zeros(B, n_keys, dtype=torch.long)
    dist = torch.zeros(B, n, dtype=torch.long)
    occ = torch.zeros(B, n, dtype=torch.long)
    rows = torch.arange(B)
    for i in range(n):
        k = keys[:, i]
        prev = last[rows, k]
        dist[:, i] = torch.where(prev >= 0, i - prev, 0)
        occ[:, i] = count[rows, k]
        last[rows, k] = i
        count[rows, k] += 1
    pair = torch.arange(n).expand(B, n)
    prev_value_pos = 2 * (pair - dist) + 1  # the value token of the last occurrence
    same_chunk = ((prev_value_pos + offset) // chunk) == ((2 * pair + offset) // chunk)
    return {"scored": occ > 0, "dist": dist, "occ": occ, "pair": pair, "same_chunk": same_chunk}


class _CurrentTokenConv:
    """Inside the block: the short convolutions (``ShortConv``) of the mixers of ``layers`` pass the current token
    only (their taps on the earlier ``w − 1`` tokens zeroed); the weights are restored on exit."""

    def __init__(self, model, layers):
        self.convs = [m for i in layers for m in model.blocks[i].mixer.modules() if isinstance(m, ShortConv)]
        if layers and not self.convs:
            raise ValueError(f"layers {list(layers)}: their mixers have no short convolution")

    def __enter__(self):
        self.saved = [conv.weight.detach().clone() for conv in self.convs]
        with torch.no_grad():
            for conv in self.convs:
                conv.weight[:, :-1] = 0.0

    def __exit__(self, *exc):
        with torch.no_grad():
            for conv, w in zip(self.convs, self.saved, strict=True):
                conv.weight.copy_(w)


@torch.no_grad()
def chunk_layout(model) -> tuple[int, int]:
    """The chunk of the mixers' memories (``mixer.memory``) and the position inside it at which a sequence's first
    token is written: Titans writes its persistent tokens first (D13), so its chunks start that many tokens
    before the sequence's (4 in mad.yaml: a chunk spans tokens 4–11, 12–19, …); HOPE's start with the sequence.
    A model without such memories (the Transformer) gets the suite's chunk from position 0."""
    ref = next(model.parameters())
    layouts = {(block.mixer.memory.chunk_size, block.mixer.init_state(1, ref).memory.offset)
               for block in model.blocks if hasattr(getattr(block.mixer, "memory", None), "chunk_size")}
    if len(layouts) > 1:
        raise ValueError(f"the layers' memories have different chunk layouts {sorted(layouts)}: one table cannot sort "
                         "their queries")
    return layouts.pop() if layouts else (CHUNK, 0)


@torch.no_grad()
def score(model, recipe, batches: int, read: str = "token", cms_frozen: bool = False,
          memories_frozen: bool = False, conv_current: tuple[int, ...] = (),
          read_layers: tuple[int, ...] | None = None) -> dict:
    """Right/wrong of every scored query over ``batches`` test batches (the suite's test seeds first, then
    further seeds of the same generator), with each query's descriptors. ``conv_current``: the layers whose short
    convolutions pass the current token only; ``read_layers``: the layers whose memories read as ``read`` says (all
    when ``None``)."""
    model.eval()
    layout = chunk_layout(model)
    parts: dict[str, list] = {}
    with changed(model, read, cms_frozen, memories_frozen, layers=read_layers), \
            _CurrentTokenConv(model, conv_current):
        for i in range(batches):
            ids, targets = make_batch(recipe, TASK, recipe.eval_batch_size, suite._eval_seed(i), "eval")
            logits = model(ids)[0]
            right = (logits.argmax(-1) == targets) & torch.isfinite(logits).all(-1)
            q = query_table(ids, recipe.tasks[TASK]["n_keys"], *layout)
            q["right"] = right[:, 0::2]
            assert bool(((targets[:, 0::2] != -100) == q["scored"]).all()), "query table disagrees with targets"
            for name, t in q.items():
                parts.setdefault(name, []).append(t)
    out = {name: torch.cat(ts) for name, ts in parts.items()}
    return {name: t[out["scored"]] for name, t in out.items()}


def counts(res: dict, sel: torch.Tensor) -> tuple[int, int, float]:
    """The queries ``sel`` marks: how many, how many wrong, and the error rate in %."""
    n, wrong = int(sel.sum()), int((~res["right"] & sel).sum())
    return n, wrong, 100.0 * wrong / max(n, 1)


def band_rows(res: dict, key: str, bands, label) -> list[str]:
    lines = []
    for lo, hi in bands:
        n, wrong, rate = counts(res, (res[key] >= lo) & (res[key] <= hi))
        lines.append(f"| {label(lo, hi)} | {n} | {wrong} | {rate:.2f}% |")
    return lines


def breakdown(res: dict) -> list[str]:
    n, wrong, rate = counts(res, torch.ones_like(res["right"]))
    lines = [f"{n} scored queries, {wrong} wrong ({rate:.2f}%).", "",
             "| queries | count | wrong | error rate |", "|---|---:|---:|---:|"]
    lines += band_rows(res, "dist", DIST_BANDS,
                       lambda lo, hi: f"key last seen {lo} pair{'s' if hi > 1 else ''} back" if lo == hi
                       else f"key last seen {lo}–{hi} pairs back")
    for flag, text in ((True, "its value in the query's chunk (only the per-token read holds it)"),
                       (False, "its value in an earlier chunk")):
        k, w, r = counts(res, res["same_chunk"] == flag)
        lines.append(f"| {text} | {k} | {w} | {r:.2f}% |")
    lines += ["", "The same by distance, split by where the last occurrence's value lies (error rate, wrong / count):",
              "",
              "| key last seen | value in the query's chunk | value in an earlier chunk |", "|---|---:|---:|"]
    for lo, hi in DIST_BANDS:
        cells = []
        for flag in (True, False):
            k, w, r = counts(res, (res["dist"] >= lo) & (res["dist"] <= hi) & (res["same_chunk"] == flag))
            cells.append(f"{r:.2f}% ({w} / {k})" if k else "–")
        what = f"{lo}{'' if lo == hi else f'–{hi}'} pair{'s' if hi > 1 else ''} back"
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    only = (res["occ"] == 1) & res["same_chunk"] & (res["dist"] >= 2)
    k, w, r = counts(res, only)
    k2, w2, r2 = counts(res, ~only)
    lines += ["", "**The key's one earlier occurrence is in the query's chunk, 2 or more pairs back** (the chunk-start "
              "state has not seen it, one layer's short convolution does not reach it, and in HOPE no CMS step "
              f"has seen it): {r:.2f}% wrong ({w} of {k} queries); "
              f"all other queries: {r2:.2f}% wrong ({w2} of {k2}).", ""]
    lines += ["| queries | count | wrong | error rate |", "|---|---:|---:|---:|"]
    lines += band_rows(res, "occ", OCC_BANDS,
                       lambda lo, hi: f"key seen {lo} time{'s' if lo > 1 else ''} before" if lo == hi
                       else f"key seen {lo}–{hi} times before")
    lines += band_rows(res, "pair", POS_BANDS, lambda lo, hi: f"query at pair {lo}–{hi}")
    return lines


def trained_model(recipe, lr: float, seed: int, until: int, resume: str | None = None, block: str = MODEL,
                  mlp_mult: float | None = None):
    """The suite's run (``run_one``), stopped after ``until`` steps; returns its model with the best weights.
    ``resume``: a ``.partial`` folder of that run, copied and continued from its latest checkpoint; ``block`` and
    ``mlp_mult``: the model the suite ran (a baseline's SwiGLU width matches HOPE's parameters)."""
    class Until(suite.Trainer):
        def run(self, until=until):  # run_one calls run(): stop where an interruption at ``until`` would
            return super().run(until=until)

    recipe = dataclasses.replace(recipe, lr=lr)
    saved = suite.Trainer
    suite.Trainer = Until
    try:
        with tempfile.TemporaryDirectory() as tmp:
            kept = Path(tmp) / "kept.pt"  # the scored weights, read back as every kept file is (load_weights)
            if resume:
                shutil.copytree(resume, Path(tmp) / "run")
            row = suite.run_one(recipe, TASK, block, seed, mlp_mult, log=print,
                                resume_dir=Path(tmp) / "run" if resume else None, keep=kept)
            model = suite.load_weights(kept)[0]
    finally:
        suite.Trainer = saved
    return model, row


def model_from_checkpoint(recipe, block: str, mult: float | None, path: str):
    """The suite's model of ``block`` (a baseline at the SwiGLU width ``mult`` its row records) with the weights of
    a checkpoint (``best.safetensors``, or weights ``--save`` wrote)."""
    model = suite.CausalLM(model_config(recipe, TASK, block, mult, None))
    weights = load_file(path)  # best.safetensors holds the tied head, model.safetensors does not
    check_weights(model, weights, Path(path), tied=model.head.weight is model.embed.weight)
    model.load_state_dict(weights, strict=False)
    print(f"loaded {path}", flush=True)
    return model


def write_report(out: str, lines: list[str]) -> int:
    """Write a probe's markdown lines to ``out`` (its folder made) and say where; 0, the probe's exit status."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines) + "\n")
    print(f"written to {out}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=MODEL, choices=list(MODELS), help="whose run of the suite (default: HOPE)")
    p.add_argument("--checkpoint", help="a best.safetensors the suite wrote for this run (see above)")
    p.add_argument("--init", action="store_true", help="score the model at initialization (no training)")
    p.add_argument("--step", type=int, help="the step of the checkpoint's weights (for the report)")
    p.add_argument("--until", type=int, default=1250, help="without --checkpoint: train the run this many steps")
    p.add_argument("--resume", help="without --checkpoint: the suite's .partial folder of the run, continued")
    p.add_argument("--save", help="without --checkpoint: save the trained weights here (safetensors)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, help="default: the rate of the run's stored row (mad.yaml's selection)")
    p.add_argument("--batches", type=int, default=32, help="test batches of 64 sequences (the suite scores 4)")
    p.add_argument("--conv", action="store_true",
                   help="also score with the short convolutions passing the current token only (each layer, both, "
                        "and with the memories read at the chunk start)")
    p.add_argument("--layer-reads", action="store_true",
                   help="also score with one layer's memories at a time reading at the chunk start")
    p.add_argument("--out", default=str(HERE / "recall_errors" / "RESULTS.md"))
    args = p.parse_args()
    if args.conv and args.model == "transformer":
        p.error("--conv: the Transformer has no short convolution")
    if args.layer_reads and args.model == "transformer":
        p.error("--layer-reads: the Transformer has no memory read to change")
    torch.set_num_threads(1)
    recipe = load_recipe(str(RECIPE))
    stored = stored_row(RECIPE.parent / recipe.out / "mad.jsonl", args.model, TASK, args.seed)
    if args.lr is None:
        args.lr = stored["lr"]
    who = MODELS[args.model]
    whose = who + ("'" if who.endswith("s") else "'s")
    mult = None if args.model == "hope" else stored["mlp_mult"]  # the suite's width for a baseline
    if args.init:
        torch.manual_seed(args.seed)  # as run_one builds the run's model
        model = suite.CausalLM(model_config(recipe, TASK, args.model, mult, None))
        source = f"{who} at initialization (seed {args.seed}, as the suite's run builds it; no training step)"
    elif args.checkpoint:
        model = model_from_checkpoint(recipe, args.model, mult, args.checkpoint)
        source = (f"`{args.checkpoint}`, {whose} in-context recall seed {args.seed} at lr {args.lr:g} "
                  f"(the best weights at step {args.step})")
    else:
        model, row = trained_model(recipe, args.lr, args.seed, args.until, args.resume, args.model, mult)
        if args.save:  # first, so that a failure below does not cost the training
            Path(args.save).parent.mkdir(parents=True, exist_ok=True)
            save_model(model, args.save)
            print(f"weights saved to {args.save} (--checkpoint scores them again)", flush=True)
        source = (f"the suite's run of {whose} in-context recall seed {args.seed} at lr {args.lr:g}, trained here "
                  + (f"from its checkpoint at step {row['resumed_at'][0]} " if row.get("resumed_at") else "")
                  + f"and stopped after step {args.until}: the best weights (step {row.get('best_step')}, "
                  f"validation loss {row.get('val_loss', float('nan')):.3g}, accuracy {row.get('val_acc', 0):.2f}%; "
                  f"the suite's test accuracy {row['acc']:.2f}%)")
    runs = {"as trained": {}, "CMS frozen in context": {"cms_frozen": True},
            "memories read at the chunk start (D21)": {"read": "chunk_start"},
            "memories write nothing (η = 0, α = 1: they keep their meta-learned initial state)":
                {"memories_frozen": True},
            "CMS frozen and memories write nothing": {"cms_frozen": True, "memories_frozen": True}}
    if args.model == "titans":  # no CMS; its memory is not run through the in-context driver that _Frozen follows
        runs = {"as trained": {}, "the memory read at the chunk start (D21)": {"read": "chunk_start"}}
    elif args.model == "transformer":
        runs = {"as trained": {}}
    every = tuple(range(len(model.blocks)))
    if args.conv:  # which token each layer's short convolution reaches (the in-chunk queries' other path)
        for which in [every] + [(i,) for i in every]:
            name = ("the short convolutions of every layer pass" if which == every else
                    f"layer {which[0] + 1}'s short convolution passes") + " the current token only"
            runs[name] = {"conv_current": which}
            runs[name + ", and the memories read at the chunk start"] = {"conv_current": which, "read": "chunk_start"}
    if args.layer_reads:  # whose per-token read answers the in-chunk queries
        runs.update({f"layer {i + 1}'s memories read at the chunk start (the other layers' per token)":
                     {"read": "chunk_start", "read_layers": (i,)} for i in every})
    chunk, offset = chunk_layout(model)
    cmd = "python experiments/synthetic/probes/recall_errors.py " + " ".join(sys.argv[1:])
    lines = [f"# Which in-context recall queries {who} gets wrong", "",
             f"Command: `{cmd.strip()}`  ",
             f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, code version "
             f"{code_version()['code']} (commit {code_version()['commit'][:12]}). Weights: {source}. "
             f"{args.batches} test batches of {recipe.eval_batch_size} sequences of {recipe.tasks[TASK]['seq_len']} "
             f"tokens (the suite's first 4 test seeds and {args.batches - 4} more of the same generator); only test "
             "time changes between the sections.", "",
             f"The memories' chunks hold {chunk} tokens; a sequence's first token is written at position {offset} of "
             "a chunk" + (f" (after the persistent tokens, D13), so the chunks span tokens {chunk - offset}–"
                          f"{2 * chunk - offset - 1}, … of the sequence" if offset else "") + ".", ""]
    for name, kw in runs.items():
        res = score(model, recipe, args.batches, **kw)
        print(name, f"{100.0 - counts(res, torch.ones_like(res['right']))[2]:.3f}%", flush=True)
        lines += [f"## {name}", ""] + breakdown(res) + [""]
    return write_report(args.out, lines)


if __name__ == "__main__":
    sys.exit(main())
