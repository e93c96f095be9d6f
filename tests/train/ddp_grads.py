"""Helper run by tests/train/test_distributed.py under torch.distributed.run: the gradients of a DDP-wrapped model
(through the Trainer's wrapper) against one process's full-batch gradients, with recomputation on."""

import sys

import torch
import torch.distributed as dist

from nestlearn.models import CausalLM, preset
from nestlearn.train.distributed import Dist


def grads(model, forward, ids):
    model.zero_grad(set_to_none=True)
    forward(ids, targets=ids)[1].backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def main(block: str, out: str) -> None:
    d = Dist(torch.device("cpu"))
    torch.manual_seed(0)
    over = {"cms.levels.0.chunk_size": 4, "cms.levels.1.chunk_size": 8}
    model = CausalLM(preset("debug", block=block, **over)).double().activation_checkpointing()
    ids = torch.randint(0, model.cfg.vocab_size, (4, 21), generator=torch.Generator().manual_seed(1))
    full = grads(model, model, ids)  # one process, the whole batch, before wrapping
    wrapped = d.wrap(model, "ddp")
    rows = d.shard(ids.shape[0])
    worst = 0.0
    for _ in range(2):  # a static graph records its first iteration: check the second too
        got = grads(model, wrapped, ids[rows])
        assert got.keys() == full.keys()
        worst = max(worst, max(float((got[n] - full[n]).abs().max() / full[n].abs().max().clamp_min(1e-30))
                               for n in full))
    try:  # a step with another recompute layout would be reduced at the wrong time: it is refused
        wrapped(ids[rows, :13], targets=ids[rows, :13])
        refused = "no"
    except ValueError as e:
        refused = "yes" if "same nodes" in str(e) else "other"
    if d.main:
        with open(out, "w") as f:
            f.write(f"{worst!r} {model.recompute_segments} {refused}\n")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
