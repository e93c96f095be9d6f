"""Where a synthetic run goes non-finite: its training batches replayed through a model's weights.

    PYTHONPATH=. python experiments/synthetic/probes/nonfinite_trace.py KEPT_WEIGHTS [--state MODEL.safetensors]
        [--train-seed S] [--steps A-B] [--out REPORT.md]

KEPT_WEIGHTS is a run's kept weights (``nestlearn synthetic … --keep-weights DIR``): they give the model, the
recipe and the task. ``--state`` loads other weights of the same model over them, such as a run in progress's
checkpoint (``.partial/<run>/checkpoints/step_N/model.safetensors``). Each training batch of the run with seed
``--train-seed`` (the suite's batch for that step) is run forward; a non-finite loss is reported with the
sequences whose logits are not finite, and for the first of them the largest magnitude entering each block's
mixer output norm (the memory's read, for self-modifying Titans) at every position, with the output memory's
gates there (η, α, the momentum β) and its self-generated target's magnitude; a finite loss is run
backward and the parameters whose gradient is not finite are named. The probe stops at the first non-finite loss.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from nestlearn.experiments.synthetic import _train_seed, load_weights, make_batch


def read_magnitudes(model, ids: torch.Tensor) -> dict[str, list[float]]:
    """Per block with a mixer output norm: the largest |x| entering it at each position, in the order the
    model runs them (a model that runs a sequence in segments calls the norm once per segment)."""
    seen: dict[str, list[float]] = {}
    handles = []
    for name, mod in model.named_modules():
        if name.endswith("mixer.out_norm"):
            def pre(mod, inp, name=name):
                t = inp[0]
                seen.setdefault(name, []).extend(t.abs().reshape(t.shape[0], t.shape[1], -1).amax(-1)[0].tolist())
            handles.append(mod.register_forward_pre_hook(pre))
    patched = []
    for name, mod in model.named_modules():  # self-modifying Titans: its output memory's gates at each token
        memory = getattr(mod, "memory", None)
        if name.endswith("mixer") and hasattr(memory, "read_write"):
            def read_write(ms, q, k, vhat, eta, alpha, beta, validate=False, real=memory.read_write, name=name):
                o, ms = real(ms, q, k, vhat, eta, alpha, beta, validate=validate)
                gates = {"eta (max over heads)": eta[0].amax(-1), "alpha (min)": alpha[0].amin(-1),
                         "target M(v) |x| (max)": vhat[0].abs().flatten(1).amax(-1)}
                if beta is not None:
                    gates["beta (max)"] = beta[0].amax(-1)
                for g, v in gates.items():
                    seen.setdefault(f"{name}.memory {g}", []).extend(v.tolist())
                return o, ms
            memory.read_write = read_write
            patched.append(memory)
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in handles:
            h.remove()
        for memory in patched:
            del memory.read_write
    return seen


def trace(model, recipe, task: str, seed: int, steps: range) -> list[str]:
    model.train()
    lines = []
    for step in steps:
        ids, targets, *_ = make_batch(recipe, task, recipe.batch_size, _train_seed(seed, step))
        model.zero_grad()
        loss = model(ids, targets=targets)[1]
        if not torch.isfinite(loss):
            with torch.no_grad():
                logits = model(ids)[0]
            bad = (~torch.isfinite(logits)).flatten(2).any(-1)
            rows = bad.any(-1).nonzero().flatten().tolist()
            lines.append(f"- step {step}: non-finite loss; sequences with non-finite logits: {rows}, first "
                         f"non-finite position of each: {[bad[r].nonzero()[0].item() for r in rows]}")
            if rows:
                r = rows[0]
                lines.append(f"  - sequence {r}: {ids[r].tolist()}")
                for name, mags in read_magnitudes(model, ids[r:r + 1]).items():
                    what = f"largest |x| entering `{name}`" if name.endswith("out_norm") else f"`{name}`"
                    lines.append(f"  - {what} by position: " + ", ".join(f"{m:.3g}" for m in mags))
            return lines
        loss.backward()
        names = [k for k, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if names:
            lines.append(f"- step {step}: finite loss {loss.item():.4g}, non-finite gradient in {len(names)} "
                         f"parameters: {', '.join(names[:8])}{' …' if len(names) > 8 else ''}")
    lines.append(f"- no non-finite loss on the batches of steps {steps.start}–{steps.stop - 1}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights")
    ap.add_argument("--state", help="model.safetensors of the same model, loaded over the kept weights")
    ap.add_argument("--train-seed", type=int, help="the run's seed (default: the kept run's)")
    ap.add_argument("--steps", default="0-100", help="training steps whose batches to replay, A-B inclusive")
    ap.add_argument("--out", help="write the report here (markdown)")
    args = ap.parse_args()
    a, _, b = args.steps.partition("-")
    if not a.isdigit() or not b.isdigit() or int(b) < int(a):
        raise SystemExit(f"--steps must be A-B with A ≤ B (got {args.steps!r})")
    torch.set_num_threads(1)
    model, recipe, row = load_weights(args.weights)
    if args.state:
        from safetensors.torch import load_file

        missing, unexpected = model.load_state_dict(load_file(args.state), strict=False)
        tied = {"head.weight"} if getattr(getattr(model, "cfg", None), "tie_embeddings", True) else set()
        if set(missing) - tied or unexpected:
            raise SystemExit(f"--state does not match the model: missing {missing}, unexpected {unexpected}")
    seed = row["seed"] if args.train_seed is None else args.train_seed
    t0 = time.time()
    lines = trace(model, recipe, row["task"], seed, range(int(a), int(b) + 1))
    head = ["# Where a run goes non-finite", "",
            "Command: `python " + " ".join(shlex.quote(x) for x in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
            + "`  ", f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.time() - t0:.0f} s; "
            f"task {row['task']}, model {row['model']}, training batches of seed {seed}.", ""]
    text = "\n".join(head + lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
