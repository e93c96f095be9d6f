"""How much do a chunk's own writes move a memory's per-token read, in HOPE and in Titans?

    python experiments/synthetic/probes/write_strength.py \
        --weights titans=runs/probes/recall_errors/titans_seed0.safetensors \
        --weights hope=runs/probes/recall_errors/hope_seed0_step4000.safetensors

On in-context recall (mad.yaml) Titans answers every query whose pair sits only in the query's own chunk, and
with its memory read at the chunk start it fails 87% of them; HOPE, reading per token as well, fails 27–52% of
them (`recall_errors/`). Both models' output memories write with learning rates under the same bound (D20, D26).
This probe measures, at test time on kept weights, what each output memory's read sees of its chunk's writes:
for every layer, on the suite's test sequences, the read ``o_t`` after writing tokens ≤ t (D21's dual form, what
the model computes) against the read of the chunk-start state ``o⁰_t`` for the same query, as the relative
change ``‖o_t − o⁰_t‖ / ‖o⁰_t‖`` by the token's position in its chunk (after 1, 2, …, C writes, and as many steps
of the retention α), with the write's
learning rate (η, θ) and the norm of the target it writes (Titans' value ``v``; HOPE's self-generated ``M(v)``,
eq. 84, of an ℓ2-normalised ``v``, D9), averaged over sequences, tokens and heads. Test time only; nothing trained.
A probe of the mechanism, not a protocol result; written to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch

from nestlearn.experiments import synthetic as suite
from nestlearn.experiments.protocol import code_version
from nestlearn.experiments.synthetic import load_recipe, make_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from length_failure import stored_row  # noqa: E402
from recall_errors import MODELS, RECIPE, TASK, chunk_layout, model_from_checkpoint, write_report  # noqa: E402

HERE = Path(__file__).resolve().parent


class _Recorder:
    """Inside the block: every layer's output memory (``mixer.memory``) computes its dual-form read and, beside it,
    the read of the chunk-start state for the same queries (the state it returns is the dual form's); per layer it
    sums the relative change of the read by position in the chunk, the learning rate and the target's norm. The
    persistent tokens Titans writes when a sequence starts (``init_state``) are not counted."""

    def __init__(self, model):
        self.mixers = [block.mixer for block in model.blocks]
        self.stats = [{"rel": torch.zeros(m.memory.chunk_size, dtype=torch.float64),
                       "n": torch.zeros(m.memory.chunk_size, dtype=torch.float64),
                       "lr": 0.0, "target": 0.0, "read": 0.0} for m in self.mixers]

    def __enter__(self):
        for i, mixer in enumerate(self.mixers):
            orig_rw, orig_init = mixer.memory.read_write, mixer.init_state
            flag = {"init": False}

            def init_state(*args, _orig=orig_init, _flag=flag, **kw):
                _flag["init"] = True
                try:
                    return _orig(*args, **kw)
                finally:
                    _flag["init"] = False

            def read_write(state, q, k, v, lr, *args, _orig=orig_rw, _flag=flag, _st=self.stats[i],
                           _chunk=mixer.memory.chunk_size, **kw):
                o, new = _orig(state, q, k, v, lr, *args, **kw)
                if not _flag["init"] and kw.get("read", "token") == "token":  # a dual-form read only
                    with torch.no_grad():  # the CMS's in-context driver runs the mixers with gradients on
                        o0, _ = _orig(state, q, k, v, lr, *args, **{**kw, "read": "chunk_start"})
                        o_, v_ = o.detach(), v.detach()
                        lr_t = lr.detach() if isinstance(lr, torch.Tensor) else torch.full(q.shape[:3], float(lr))
                        rel = ((o_ - o0).norm(dim=-1) / o0.norm(dim=-1).clamp_min(1e-12)).double()  # [B, T, H]
                        T = q.shape[1]
                        pos = (state.offset + torch.arange(T)) % _chunk
                        _st["rel"].index_add_(0, pos, rel.mean(dim=(0, 2)))
                        _st["n"].index_add_(0, pos, torch.ones(T, dtype=torch.float64))
                        _st["lr"] += float(lr_t.double().mean()) * T
                        _st["target"] += float(v_.norm(dim=-1).double().mean()) * T
                        _st["read"] += float(o0.norm(dim=-1).double().mean()) * T
                return o, new

            mixer.memory.read_write, mixer.init_state = read_write, init_state
        return self

    def __exit__(self, *exc):
        for mixer in self.mixers:
            del mixer.memory.read_write, mixer.init_state  # the instance attributes: the class's methods again

    def tokens(self) -> list[int]:
        """Per layer, the sequence tokens recorded."""
        return [int(st["n"].sum()) for st in self.stats]

    def rows(self) -> list[dict]:
        out = []
        for layer, (st, tokens) in enumerate(zip(self.stats, self.tokens(), strict=True)):
            if tokens == 0:
                raise ValueError(f"layer {layer + 1}'s output memory recorded no token: it did not read per token "
                                 "through read_write (read='chunk_start'?), and this probe compares per-token reads")
            out.append({"rel": (st["rel"] / st["n"].clamp_min(1)).tolist(), "lr": st["lr"] / tokens,
                        "target": st["target"] / tokens, "read": st["read"] / tokens})
        return out


@torch.no_grad()
def measure(model, recipe, batches: int, task: str = TASK) -> list[dict]:
    """Per layer: the mean relative change of the read by position in the chunk, the mean learning rate, the mean
    norm of the written target and of the chunk-start read, over ``batches`` of the suite's test sequences of
    ``task`` (MAD's compression model wraps its language model: ``.lm``)."""
    model.eval()
    with _Recorder(getattr(model, "lm", model)) as rec:
        for i in range(batches):
            ids, _ = make_batch(recipe, task, recipe.eval_batch_size, suite._eval_seed(i), "eval")
            model(ids)
    return rec.rows()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", action="append", required=True,
                   help="MODEL=PATH: kept weights of the model's in-context recall run (recall_errors.py --save)")
    p.add_argument("--steps", action="append", default=[],
                   help="MODEL=STEP: the step of those weights, for the report")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", type=int, default=8, help="test batches of 64 sequences")
    p.add_argument("--out", default=str(HERE / "recall_errors" / "write_strength.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    recipe = load_recipe(str(RECIPE))
    steps = dict(s.split("=", 1) for s in args.steps)
    cmd = "python experiments/synthetic/probes/write_strength.py " + " ".join(sys.argv[1:])
    lines = ["# How much a chunk's own writes move each output memory's read (in-context recall)", "",
             f"Command: `{cmd.strip()}`  ",
             f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, code version "
             f"{code_version()['code']} (commit {code_version()['commit'][:12]}). {args.batches} of the suite's test "
             f"batches of {recipe.eval_batch_size} sequences; test time only. Relative change of the read: "
             "‖o_t − o⁰_t‖ / ‖o⁰_t‖, the dual-form read after writing tokens ≤ t against the chunk-start state's "
             "read of the same query, by the token's position in its chunk (1 = the chunk's first token, after its "
             "own write); η: the write's learning rate; target: the norm of what is written (Titans: v; HOPE: "
             "M(v) of a unit v).", ""]
    table = None
    for spec in args.weights:
        name, path = spec.split("=", 1)
        if name not in MODELS or name == "transformer":
            raise SystemExit(f"--weights {spec}: MODEL must be hope or titans (the models with an output memory)")
        stored = stored_row(RECIPE.parent / recipe.out / "mad.jsonl", name, TASK, args.seed)
        model = model_from_checkpoint(recipe, name, None if name == "hope" else stored["mlp_mult"], path)
        chunk, _ = chunk_layout(model)
        if table is None:
            table = chunk
            lines += ["| model, layer | η (mean) | target norm | read norm | "
                      + " | ".join(f"after {j + 1}" for j in range(chunk)) + " |",
                      "|---|---:|---:|---:|" + "---:|" * chunk]
        elif chunk != table:
            raise SystemExit(f"{name}: chunks of {chunk} tokens, the other model's {table}: one table cannot hold both")
        at = f", step {steps[name]}" if name in steps else ""
        for layer, row in enumerate(measure(model, recipe, args.batches)):
            lines.append(f"| {MODELS[name]} (`{path}`{at}), layer {layer + 1} | {row['lr']:.4f} | "
                         f"{row['target']:.3f} | {row['read']:.3f} | "
                         + " | ".join(f"{100 * r:.1f}%" for r in row["rel"]) + " |")
            print(lines[-1], flush=True)
    return write_report(args.out, lines)


if __name__ == "__main__":
    sys.exit(main())
