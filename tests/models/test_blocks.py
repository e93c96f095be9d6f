"""Blocks by composition (nestlearn/models/blocks.py): a new mixer is one module and one registry line."""

import pytest
import torch
from torch import nn
from torch.utils import _pytree as pytree

from nestlearn.layers import KVCache
from nestlearn.models import BLOCKS, MIXERS, Block, BlockState, CausalLM, preset
from nestlearn.models.blocks import Part

from .conftest import make_model


class CumulativeMean(nn.Module):
    """A toy mixer with state: the running mean of its inputs."""

    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)

    def init_state(self, batch_size, ref):
        return (ref.new_zeros(batch_size, self.proj.in_features), 0)

    def forward(self, x, state):
        total, n = state
        sums = total[:, None] + x.cumsum(1)
        count = n + torch.arange(1, x.shape[1] + 1, dtype=x.dtype)[:, None]
        return self.proj(sums / count), (sums[:, -1], n + x.shape[1])


def test_a_new_block_kind_is_one_module_and_two_registry_lines(monkeypatch):
    monkeypatch.setitem(MIXERS, "mean", Part(lambda c: CumulativeMean(c.dim)))
    monkeypatch.setitem(BLOCKS, "mean_cms", ("mean", "cms"))
    torch.manual_seed(0)
    model = CausalLM(preset("debug", block="mean_cms")).double()
    ids = torch.randint(0, 256, (2, 13))
    with torch.no_grad():
        full, _, _ = model(ids)
        a, _, s = model(ids[:, :6])
        b, _, _ = model(ids[:, 6:], state=s)
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-10)  # streaming equals one call, CMS learning on
    # committed up to the last whole CMS segment (4 tokens); tokens 4–5 are pending, replayed next call
    assert isinstance(s.blocks[0], BlockState) and s.blocks[0].mixer[1] == 4 and s.pending.shape[1] == 2


def test_block_state_is_named():
    model = CausalLM(preset("debug", block="hope_attention"))
    state = model.init_state(2)
    blk = state.blocks[0]
    assert isinstance(blk, BlockState) and isinstance(blk.mixer, KVCache) and blk.mlp is not None
    assert isinstance(model.blocks[0], Block) and model.blocks[0].learns_in_context
    assert CausalLM(preset("debug", block="transformer")).init_state(1).blocks[0].mlp is None


@pytest.mark.parametrize("block", list(BLOCKS))
def test_activation_checkpointing_gives_the_same_loss_gradients_and_state(block, ids, monkeypatch):
    """Recomputing in the backward changes no number, with the state carried from a first piece into a second:
    a model whose CMS learns in context recomputes its in-context segments whole (icl.py), the others each
    block."""
    from nestlearn.models import icl

    model = make_model(block)
    calls = []
    real_block, real_segment = Block._checkpoint, icl._Recomputed.apply

    def counting(fn, *args):
        calls.append(fn.__name__)
        return real_block(fn, *args)

    def counting_segments(*args):
        calls.append("segment")
        return real_segment(*args)

    monkeypatch.setattr(Block, "_checkpoint", staticmethod(counting))
    monkeypatch.setattr(icl._Recomputed, "apply", counting_segments)
    results = []
    for on in (False, True):
        model.activation_checkpointing(on)
        _, _, state = model(ids[:, :9], targets=ids[:, :9])
        _, loss, state = model(ids[:, 9:], targets=ids[:, 9:], state=state)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                        [t.detach() for t in pytree.tree_leaves(state) if isinstance(t, torch.Tensor)]))
        model.zero_grad(set_to_none=True)
    (l0, g0, s0), (l1, g1, s1) = results
    assert model.gradient_checkpointing
    segments = bool(model.segment)  # "auto": segments for a model that learns in context
    expected = "segment" if segments else "_mix" if model.blocks[0].learns_in_context else "_forward"
    assert model.recompute_segments == segments
    assert all(b.recompute != model.recompute_segments for b in model.blocks)
    assert calls and set(calls) == {expected}  # every recomputed call went through one mechanism
    torch.testing.assert_close(l1, l0, rtol=1e-12, atol=1e-12)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-10, atol=1e-12, msg=name)
    for a, b in zip(s0, s1, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("group,cut", [(1, 9), (3, 9), (2, 5), (3, 5)])
def test_segments_recomputed_in_groups_give_the_same_gradients(group, cut, ids):
    """Segments recomputed ``group`` at a time: the same gradients. With the first piece cut at 5 the second's
    nodes start mid-way through level 1's chunk (8 tokens; segments of 4), so level 1 steps inside a node from
    accumulators filled before it: the node keeps them (saved) and its later segments read the stepped weights."""
    model = make_model("hope")
    grads = []
    for on in (False, True):
        model.activation_checkpointing(on, group=group)
        _, _, state = model(ids[:, :cut], targets=ids[:, :cut])
        model(ids[:, cut:], targets=ids[:, cut:], state=state)[1].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    assert model.recompute_group == group and grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-10, atol=1e-12, msg=name)
    with pytest.raises(ValueError, match="group"):
        model.activation_checkpointing(group=0)


def test_the_recompute_unit_can_be_chosen_and_a_wrong_one_is_refused(ids):
    """Hope-Attention recomputes its blocks when asked (a CMS block its mixer alone; the same gradients); a
    model without in-context segments refuses unit='segment'."""
    model = make_model("hope_attention")
    grads = []
    for unit in (None, "block"):
        model.activation_checkpointing(unit is not None, unit=unit or "auto")
        assert not model.recompute_segments and all(b.recompute == (unit == "block") for b in model.blocks)
        model(ids, targets=ids)[1].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-10, atol=1e-12, msg=name)
    with pytest.raises(ValueError, match="unit='segment' needs a model whose CMS learns in context"):
        make_model("transformer").activation_checkpointing(unit="segment")
    with pytest.raises(ValueError, match="unit must be 'auto', 'segment' or 'block'"):
        model.activation_checkpointing(unit="layer")


def test_recomputed_segments_run_again_under_the_forward_autocast(ids):
    """Under bfloat16 autocast the backward recomputes in bfloat16 too: the gradients differ from the kept
    graph's by bfloat16 rounding only (per segment they are summed in float32, the kept graph sums the
    autocast weight cache's gradients in bfloat16), not by a recomputation in float32 (7% here)."""
    torch.manual_seed(0)
    model = CausalLM(preset("debug", block="hope"))
    grads = []
    for on in (False, True):
        model.activation_checkpointing(on)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, targets=ids)[1]
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    worst = max(float((grads[1][n] - grads[0][n]).norm() / grads[0][n].norm().clamp_min(1e-12)) for n in grads[0])
    assert worst < 0.02, worst


def test_a_recomputed_node_frees_its_input_state_after_its_backward(ids, monkeypatch):
    """A node's saved input state is freed once its backward has run, although the outer graph (and so the
    node) lives on while ``loss`` does: the node keeps no other reference to it (a closure over the input
    state kept every node's state alive to the end of the backward)."""
    import gc
    import weakref

    from nestlearn.models import icl

    model = make_model("hope").activation_checkpointing(group=1)
    refs, real = [], icl._Recomputed.apply

    def recording(*args):
        outs = real(*args)
        refs.extend(weakref.ref(t) for t in outs if t.is_floating_point() and t.numel() > 0)
        return outs

    monkeypatch.setattr(icl._Recomputed, "apply", recording)
    _, loss, state = model(ids, targets=ids)
    del state  # the state after the sequence (the last node's outputs): the caller's to keep or drop
    gc.collect()
    alive_before = sum(r() is not None for r in refs)
    loss.backward()
    gc.collect()
    assert alive_before > 0 and sum(r() is not None for r in refs) == 0
