"""Split a model's parameters between a matrix optimizer (Muon, M3, DGD) and AdamW."""

from __future__ import annotations

import torch
from torch import nn


def split_params(model: nn.Module, exclude: tuple[type, ...] = (nn.Embedding,),
                 exclude_names: tuple[str, ...] = ("head", "lm_head", "pos", "cls")) -> tuple[list, list]:
    """``(matrices, others)``: parameters with ≥ 2 dims go to the matrix optimizer, except those of
    ``exclude`` modules (embeddings) and those whose own name or module name is in ``exclude_names``
    (output heads, positional tables, class tokens); every other parameter (norms, biases,
    embeddings, heads) goes to AdamW.

    Tied parameters appear once. The two lists partition ``model.parameters()`` exactly (asserted).
    """
    excluded = set()
    for name, module in model.named_modules():
        module_excluded = isinstance(module, exclude) or name.split(".")[-1] in exclude_names
        for pname, p in module.named_parameters(recurse=False):
            if module_excluded or pname in exclude_names:
                excluded.add(id(p))
    matrices, others = [], []
    for p in model.parameters():  # deduplicated by nn.Module
        (matrices if p.dim() >= 2 and id(p) not in excluded else others).append(p)
    assert_partition(model, matrices, others)
    return matrices, others


def assert_partition(model: nn.Module, *groups: list) -> None:
    """Every parameter of ``model`` is in exactly one group, and the groups hold nothing else."""
    ids = [id(p) for g in groups for p in g]
    own = {id(p) for p in model.parameters()}
    if len(ids) != len(set(ids)):
        raise AssertionError("a parameter appears in more than one optimizer group")
    if set(ids) != own:
        missing, extra = len(own - set(ids)), len(set(ids) - own)
        raise AssertionError(f"optimizer groups do not partition the model: {missing} missing, {extra} foreign")


def run_closure(closure):
    """``torch.optim``'s closure convention for ``step(closure)``: re-evaluate the loss with gradients on."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def with_grads(param_groups: list[dict]):
    """``(group, parameter)`` for every parameter that has a gradient, group by group."""
    for group in param_groups:
        for p in group["params"]:
            if p.grad is not None:
                yield group, p
