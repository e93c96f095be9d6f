"""The in-context learning driver: how a model's CMS levels learn while it reads (NL eqs. 70–74, D10).

The sequence runs in segments aligned to absolute positions (the smallest learning CMS chunk, the
model's ``segment``; ``nestlearn.memory.schedule``). After a segment whose next token is known, the
gradient of its next-token loss with respect to the segment's CMS activations is taken (first order,
deviation D10), each CMS accumulates it as low-rank factors, and the levels whose chunk ends there
step. A segment whose last target is not known yet (the end of the input) is kept in the state as
``pending`` ids and replayed, from the state before it, when the next piece arrives.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from ..layers import CMS
from ..layers.cms import level_steps
from ..memory.schedule import slices, spans_at
from .state import ModelState, cross_entropy

if TYPE_CHECKING:
    from .lm import CausalLM


def forward_in_context(model: CausalLM, ids: Tensor, state: ModelState) -> tuple[Tensor, ModelState]:
    """Logits for ``ids`` and the state after them, the CMS levels learning segment by segment. Under
    ``no_grad`` (inference) no graph is kept across segments; in training the inner gradients stay in
    the outer graph (``retain_graph``) so that the outer loss trains the levels' initial weights. With
    ``model.recompute_segments`` (training) each group of ``model.recompute_group`` segments keeps only its
    input state and runs again in the backward (``_Recomputed``)."""
    outer = torch.is_grad_enabled()
    replay = state.pending.shape[1]
    if not outer and state.cursor is not None and spans_at(state.pos, replay + ids.shape[1], model.segment)[0] \
            == replay + ids.shape[1]:
        # inference inside the pending segment: the fast weights are constant there, so the new tokens run
        # from the states after the pending ones; the segment is replayed once, by the call that completes it
        logits, cursor = model._run(ids, state.cursor)
        return logits, ModelState(state.blocks, state.pos, torch.cat([state.pending, ids], dim=1), cursor)
    seq = torch.cat([state.pending, ids], dim=1) if replay else ids
    T = seq.shape[1]
    blocks, pos = state.blocks, state.pos
    outs, pending, cursor = [], seq[:, :0], None
    spans = slices(spans_at(pos, T, model.segment))
    complete = [sp for sp in spans if sp.stop < T]  # the last target of each is known
    if outer and model.recompute_segments:  # training, recomputed: complete segments in groups of recompute_group
        k = model.recompute_group
        if model.static_layout is not None:
            _check_static(model, (-(-len(complete) // k), len(complete) < len(spans)), T, state.pos)
        for i in range(0, len(complete), k):
            group = complete[i:i + k]
            run = functools.partial(_segments, model, seq, group, state.pos)
            logits, blocks = _recomputed(model, run, blocks, [state.pos + sp.stop for sp in group[:-1]])
            outs.append(logits)
    else:
        for span in complete:
            logits, blocks = _segments(model, seq, [span], state.pos, blocks, retain=outer)
            outs.append(logits)
            if not outer:  # inference: keep no graph across segments
                blocks = pytree.tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, blocks)
    pos = state.pos + (complete[-1].stop if complete else 0)
    if len(complete) < len(spans):  # the last target is not known yet: replay this segment when it is complete
        pending = seq[:, spans[-1]]
        logits, new = _segment(model, pending, None, 0, blocks, retain=outer)
        outs.append(logits)
        if not outer:
            cursor = pytree.tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, new)
    logits = torch.cat(outs, dim=1)[:, replay:]
    if not outer:
        logits = logits.detach()
    return logits, ModelState(blocks, pos, pending, cursor)


def _check_static(model: CausalLM, layout: tuple, T: int, pos: int) -> None:
    """Under DDP's static graph a parameter's gradient hook must fire as often in every step as in the first:
    once per recomputed node, and once for the graph outside them. A step whose layout (nodes, a segment
    outside them) differs would be reduced at the wrong time, so it is refused."""
    if not model.static_layout:
        model.static_layout = layout
    elif layout != model.static_layout:
        raise ValueError(
            f"DDP reduces recomputed in-context segments with a static graph, so every training forward must "
            f"recompute the same nodes: the first had {model.static_layout[0]} node(s), this one "
            f"{layout[0]} ({T} tokens from position {pos}; a node is {model.recompute_group} segment(s) of "
            f"{model.segment} tokens). Keep the sequence length and start position fixed, or recompute blocks "
            "(activation_checkpointing(unit='block'))")


def _segments(model: CausalLM, seq: Tensor, spans: list[slice], start: int, blocks: tuple,
              retain: bool) -> tuple[Tensor, tuple]:
    """Complete segments ``seq[:, span]`` one after the other from ``blocks`` (``start``: the absolute
    position of ``seq[:, 0]``): their logits side by side, and the blocks after the last."""
    outs = []
    for span in spans:
        logits, blocks = _segment(model, seq[:, span], seq[:, span.start + 1:span.stop + 1], start + span.stop,
                                  blocks, retain)
        outs.append(logits)
    return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0], blocks


def _segment(model: CausalLM, seg: Tensor, targets: Tensor | None, end: int, blocks: tuple,
             retain: bool) -> tuple[Tensor, tuple]:
    """One segment from ``blocks``: its logits, and the blocks after it. With its ``targets`` (the next
    tokens, known), the gradient of its next-token loss with respect to this segment's CMS activations only
    (deviation D10) is taken, each CMS takes its share, and the levels whose chunk ends at ``end`` step;
    ``retain`` keeps the graph for an outer backward. Without targets the blocks are as the forward left them."""
    traces: list[list] = [[] for _ in model.blocks]
    with torch.enable_grad():
        logits, new = model._run(seg, blocks, traces)
    if targets is None:
        return logits, new
    cms_blocks = [i for i, b in enumerate(model.blocks) if b.learns_in_context]
    with torch.enable_grad():
        loss = cross_entropy(logits, targets, reduction="sum")
        handles = [t for i in cms_blocks for t in CMS.trace_tensors(traces[i])]
        grads = list(torch.autograd.grad(loss, handles, allow_unused=True, retain_graph=retain))
    out = list(new)
    for i in cms_blocks:  # each CMS takes its share of the gradients, then steps where a chunk ends
        cms = model.blocks[i].mlp
        k = len(CMS.trace_tensors(traces[i]))
        g, grads = grads[:k], grads[k:]
        out[i] = new[i]._replace(mlp=cms.step(cms.accumulate(new[i].mlp, traces[i], g), end))
    return logits, tuple(out)


def _recomputed(model: CausalLM, run, blocks: tuple, inner_ends: list[int]) -> tuple[Tensor, tuple]:
    """``run(blocks, retain)`` whose graph is not kept: the tensors of ``blocks`` are saved, and the backward
    runs the segments again from them (deterministic: the same values) before differentiating them.

    The CMS gradient accumulators are saved only for the levels that step inside the node (at ``inner_ends``,
    the absolute ends of its segments but the last): such a step reads the factors accumulated before the
    node, and the node's next segment reads the weights it forms. Every other level's accumulators are
    detached factors that nothing in the node reads but a step at its end, which adds a constant to the
    weights (their gradient passes through unchanged) and whose result the backward discards: the backward
    runs those levels with empty accumulators, the same graph and gradients for less saved memory."""
    leaves, spec = pytree.tree_flatten(blocks)
    lean = pytree.tree_leaves(_without_accumulators(model, blocks, inner_ends))
    where = [i for i, t in enumerate(leaves) if isinstance(t, Tensor)]
    # the node (its ctx, and this closure) lives as long as the outer graph, after its backward too: it holds
    # no tensor but the saved ones, which autograd frees once the node's backward has run
    others = [None if isinstance(t, Tensor) else t for t in leaves]
    layout: dict = {}

    def run_flat(retain: bool, *tensors: Tensor) -> list[Tensor]:
        filled = list(others)
        for i, t in zip(where, tensors, strict=True):
            filled[i] = t
        out_leaves, out_spec = pytree.tree_flatten(run(pytree.tree_unflatten(filled, spec), retain=retain))
        # the layout only: a tensor kept here would keep its segment's whole graph alive until the backward
        layout.update(tensor=[isinstance(t, Tensor) for t in out_leaves],
                      other=[None if isinstance(t, Tensor) else t for t in out_leaves], spec=out_spec)
        return [t for t in out_leaves if isinstance(t, Tensor)]

    # the parameters are not inputs of the node (their gradients accumulate inside its backward); an empty
    # input that requires grad makes its outputs require grad even when the state holds no tensor yet
    anchor = torch.empty(0, requires_grad=True)
    saved = [lean[i] for i in where]
    outs = iter(_Recomputed.apply(run_flat, anchor, saved, *(leaves[i] for i in where)))
    filled = [next(outs) if is_tensor else t for is_tensor, t in zip(layout["tensor"], layout["other"], strict=True)]
    return pytree.tree_unflatten(filled, layout["spec"])


class _Recomputed(torch.autograd.Function):
    """A segment as one autograd node that saves its inputs only. Its backward runs the segment again with
    the graph kept and differentiates it: the parameters' gradients accumulate there, the inputs' are
    returned (a backward inside the backward, as reentrant checkpointing does)."""

    @staticmethod
    def forward(ctx, run_flat, anchor, saved, *inputs):
        """``saved``: what the backward runs from, one tensor per input (the input itself, or a stand-in)."""
        ctx.run_flat = run_flat
        # the backward runs the segments again under the autocast this forward ran under (the same dtypes)
        ctx.autocast = [(d, torch.get_autocast_dtype(d)) for d in ("cpu", "cuda") if torch.is_autocast_enabled(d)]
        ctx.save_for_backward(*saved)
        ctx.set_materialize_grads(False)  # an output nothing differentiated gets None, not a tensor of zeros
        with torch.enable_grad():
            outs = run_flat(False, *(_leaf(t, need) for t, need in zip(inputs, ctx.needs_input_grad[3:],
                                                                         strict=True)))
        detached = tuple(t.detach() for t in outs)
        # what had no graph in the segment (the accumulators, the ids) stays without one
        ctx.mark_non_differentiable(*(d for d, t in zip(detached, outs, strict=True) if not t.requires_grad))
        return detached

    @staticmethod
    def backward(ctx, *grads):
        inputs = [_leaf(t, need) for t, need in zip(ctx.saved_tensors, ctx.needs_input_grad[3:], strict=True)]
        with torch.enable_grad(), contextlib.ExitStack() as stack:
            for device, dtype in ctx.autocast:
                stack.enter_context(torch.autocast(device, dtype=dtype))
            outs = ctx.run_flat(True, *inputs)
        pairs = [(o, g) for o, g in zip(outs, grads, strict=True) if g is not None and o.requires_grad]
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None, None, None, *(t.grad if need else None for t, need in zip(inputs, ctx.needs_input_grad[3:],
                                                                                  strict=True)))


def _without_accumulators(model: CausalLM, blocks: tuple, inner_ends: list[int]) -> tuple:
    """``blocks`` with the gradient accumulators emptied of every CMS level that does not step at one of
    ``inner_ends`` (the weights and mixer states kept)."""
    out = []
    for block, state in zip(model.blocks, blocks, strict=True):
        if state is not None and block.learns_in_context and state.mlp is not None:
            cms = block.mlp
            acc = tuple(a if a is None or any(level_steps(e, lv.chunk_size) for e in inner_ends)
                        else cms._empty_acc(w)
                        for a, w, lv in zip(state.mlp.acc, state.mlp.weights, cms.cfg.levels, strict=True))
            state = state._replace(mlp=state.mlp._replace(acc=acc))
        out.append(state)
    return tuple(out)


def _leaf(t: Tensor, need: bool) -> Tensor:
    return t.detach().requires_grad_(need)


__all__ = ["forward_in_context"]
