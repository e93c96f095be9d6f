"""The in-context learning driver: how a model's CMS levels learn while it reads (NL eqs. 70–74, D10).

The sequence runs in segments aligned to absolute positions (the smallest learning CMS chunk, the
model's ``segment``; ``nestlearn.memory.schedule``). After a segment whose next token is known, the
gradient of its next-token loss with respect to the segment's CMS activations is taken (first order,
deviation D10), each CMS accumulates it as low-rank factors, and the levels whose chunk ends there
step. A segment whose last target is not known yet (the end of the input) is kept in the state as
``pending`` ids and replayed, from the state before it, when the next piece arrives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from ..layers import CMS
from ..memory.schedule import slices, spans_at
from .state import ModelState, cross_entropy

if TYPE_CHECKING:
    from .lm import CausalLM


def forward_in_context(model: CausalLM, ids: Tensor, state: ModelState) -> tuple[Tensor, ModelState]:
    """Logits for ``ids`` and the state after them, the CMS levels learning segment by segment. Under
    ``no_grad`` (inference) no graph is kept across segments; in training the inner gradients stay in
    the outer graph (``retain_graph``) so that the outer loss trains the levels' initial weights."""
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
    cms_blocks = [i for i, b in enumerate(model.blocks) if b.learns_in_context]
    outs, pending, cursor = [], seq[:, :0], None
    for span in slices(spans_at(pos, T, model.segment)):
        p, n = span.start, span.stop - span.start
        seg = seq[:, span]
        traces: list[list] = [[] for _ in model.blocks]
        with torch.enable_grad():
            logits, new = model._run(seg, blocks, traces)
        outs.append(logits)
        if p + n == T:  # the last target is not known yet: replay this segment when it is complete
            pending = seg
            if not outer:
                cursor = pytree.tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, new)
            break
        # the segment's next-token loss, targets up to seq[p + n] (known now), differentiated
        # against this segment's CMS activations only (deviation D10)
        with torch.enable_grad():
            loss = cross_entropy(logits, seq[:, p + 1:p + n + 1], reduction="sum")
            handles = [t for i in cms_blocks for t in CMS.trace_tensors(traces[i])]
            grads = list(torch.autograd.grad(loss, handles, allow_unused=True, retain_graph=outer))
        blocks = list(new)
        for i in cms_blocks:  # each CMS takes its share of the gradients, then steps where a chunk ends
            cms = model.blocks[i].mlp
            k = len(CMS.trace_tensors(traces[i]))
            g, grads = grads[:k], grads[k:]
            blocks[i] = new[i]._replace(mlp=cms.step(cms.accumulate(new[i].mlp, traces[i], g), pos + n))
        blocks = tuple(blocks)
        if not outer:  # inference: keep no graph across segments
            blocks = pytree.tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, blocks)
        pos += n
    logits = torch.cat(outs, dim=1)[:, replay:]
    if not outer:
        logits = logits.detach()
    return logits, ModelState(blocks, pos, pending, cursor)


__all__ = ["forward_in_context"]
