"""Distributed set-up, applied from outside the model (the model code never imports
torch.distributed). ``torchrun --nproc_per_node=N -m nestlearn train ...`` starts N processes;
each takes its rows of the global batch, DDP averages the gradients (gloo on CPU, NCCL on GPU),
and rank 0 alone logs and writes checkpoints. In-context memories are per-sample state, not
parameters: under FSDP2 each block builds its fresh state inside its own forward (``Block.own_state``),
where its parameters are whole, and ``forward_context`` keeps the in-forward inner gradients of CMS
learning from resharding them."""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
from torch import nn


class Dist:
    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, batch_size: int) -> slice:
        """This rank's rows of a global batch."""
        if batch_size % self.world:
            raise ValueError(f"train.batch_size={batch_size} must be divisible by the number of processes "
                             f"({self.world})")
        per = batch_size // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def wrap(self, model: nn.Module, mode: str) -> nn.Module:
        if self.world == 1 or mode == "none":
            return model
        if mode == "ddp":
            # recomputed in-context segments run a backward inside the backward (reentrant), so a parameter's
            # gradient hook fires once per recomputed node: DDP reduces them correctly with a static graph, and
            # the model refuses a step whose recompute layout differs from the first's (icl._check_static)
            static = getattr(model, "recompute_segments", False)
            if static:
                model.static_layout = ()
            return nn.parallel.DistributedDataParallel(model, static_graph=static)
        if mode == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for block in model.blocks:  # one shard group per block, then the rest
                fully_shard(block)
            fully_shard(model)
            return model
        raise ValueError(f"train.parallel must be 'ddp', 'fsdp' or 'none' (got {mode!r})")

    @contextlib.contextmanager
    def forward_context(self, model: nn.Module, mode: str):
        """Around a forward under FSDP2. Models that learn in context (CMS) differentiate their
        segment loss inside the forward (``torch.autograd.grad``), which runs FSDP's backward hooks:
        here those hooks neither reshard the parameters nor reduce gradients, so the forward goes on
        with full parameters; the real backward afterwards syncs and reshards as usual."""
        if not self.sharded(mode):
            yield
            return
        from torch.distributed.fsdp import FSDPModule

        mods = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for m in mods:
            m.set_reshard_after_backward(False)
            m.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            for m in mods:
                m.set_reshard_after_backward(True)
                m.set_requires_gradient_sync(True)

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return t.item() / self.world

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group together: without it, a rank that exits while another's gloo
        threads still talk to it can die in ``std::terminate`` (seen once in a 2-process CI test)."""
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    # ---- full (unsharded) state for checkpoints; collective under FSDP: every rank must call ----
    def sharded(self, mode: str) -> bool:
        return self.world > 1 and mode == "fsdp"

    def full_state(self, model: nn.Module, opts: list, mode: str) -> tuple[dict, list]:
        if not self.sharded(mode):
            return model.state_dict(), [o.state_dict() for o in opts]
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return (get_model_state_dict(model, options=full),
                [get_optimizer_state_dict(model, o, options=full) for o in opts])

    def load_full_state(self, model: nn.Module, opts: list, weights: dict, states: list, mode: str) -> None:
        if not self.sharded(mode):
            model.load_state_dict(weights, strict=False)
            for o, st in zip(opts, states, strict=True):
                o.load_state_dict(st)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        full = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False, strict=False)
        set_model_state_dict(model, weights, options=full)
        for o, st in zip(opts, states, strict=True):
            set_optimizer_state_dict(model, o, st, options=full)
