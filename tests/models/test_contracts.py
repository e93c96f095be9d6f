"""DESIGN's contracts for every block kind in each of its read modes, with every in-context write on:
one call == pieces with the carried state; cached generation == argmax of a full forward; causality."""

import pytest
import torch

from nestlearn.models import BLOCKS

from .conftest import make_model, read_cases


@pytest.mark.parametrize("block,reads", read_cases(BLOCKS))
def test_pieces_equal_one_call(block, reads, ids):
    model = make_model(block, **reads)
    with torch.no_grad():
        full, _, s_full = model(ids)
        for cuts in ([1, 2, 7, 8, 13], [5, 16], [4, 8, 12, 16, 20]):
            state, outs = None, []
            for lo, hi in zip([0, *cuts], [*cuts, ids.shape[1]], strict=True):
                logits, _, state = model(ids[:, lo:hi], state=state)
                outs.append(logits)
            assert torch.allclose(torch.cat(outs, 1), full, atol=1e-10, rtol=1e-9), cuts
            # the carried states agree too: the next token sees the same thing
            nxt = ids[:, :3]
            a, _, _ = model(nxt, state=state)
            b, _, _ = model(nxt, state=s_full)
            assert torch.allclose(a, b, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("block,reads", read_cases(BLOCKS))
def test_token_by_token_equals_one_call(block, reads, ids):
    model = make_model(block, **reads)
    with torch.no_grad():
        full, _, _ = model(ids)
        state, outs = None, []
        for t in range(ids.shape[1]):
            logits, _, state = model(ids[:, t:t + 1], state=state)
            outs.append(logits)
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("block,reads", read_cases(BLOCKS))
def test_greedy_generation_equals_full_forward_argmax(block, reads, ids):
    model = make_model(block, **reads)
    out, state = model.generate(ids[:, :5], max_new_tokens=12, temperature=0)
    assert out.shape == (2, 17)
    with torch.no_grad():
        logits, _, _ = model(out)
    assert torch.equal(out[:, 5:], logits[:, 4:-1].argmax(-1))
    assert state.pos + state.pending.shape[1] == 17


def test_generation_streams_each_token_as_it_is_chosen_and_refuses_a_negative_temperature(ids):
    model = make_model("transformer")
    seen = []
    out, _ = model.generate(ids[:, :5], max_new_tokens=6, temperature=0, on_token=lambda t: seen.append(t.clone()))
    assert torch.equal(torch.cat(seen, dim=1), out[:, 5:])
    with pytest.raises(ValueError, match="temperature must be ≥ 0"):
        model.generate(ids[:, :5], max_new_tokens=1, temperature=-1.0)


@pytest.mark.parametrize("block,reads", read_cases(BLOCKS))
def test_causality(block, reads, ids):
    model = make_model(block, **reads)
    with torch.no_grad():
        base, _, _ = model(ids)
        for t in (0, 3, 8, 15, 20):
            bumped = ids.clone()
            bumped[:, t] = (bumped[:, t] + 17) % 256
            logits, _, _ = model(bumped)
            assert torch.allclose(logits[:, :t], base[:, :t], atol=1e-12, rtol=0), t
            assert not torch.allclose(logits[:, t], base[:, t]), t


@pytest.mark.parametrize("block", ["hope", "hope_attention"])
def test_cms_levels_really_learn_in_context(block, ids):
    """The CMS fast weights move during a sequence, and differently with other tokens."""
    model = make_model(block)
    with torch.no_grad():
        _, _, s0 = model(ids[:, :1])
        _, _, s1 = model(ids)
        w0 = s0.blocks[0].mlp.weights[0][0]
        w1 = s1.blocks[0].mlp.weights[0][0]
        init = model.blocks[0].mlp.levels[0].w_gate
        # one token: no level has stepped, the fast weights are the meta-learned initial ones, exactly
        assert torch.equal(w0, init.expand_as(w0))
        # 21 tokens: level 0 (chunk 4) has stepped 5 times; each row moved, by a small step
        moved = (w1 - w0).flatten(1).norm(dim=1) / w0.flatten(1).norm(dim=1)
        assert (moved > 1e-5).all() and (moved < 0.5).all(), moved
        assert not torch.allclose(w1[0], w1[1])  # and differently for the two sequences
        # lr 0 everywhere: the levels are plain MLPs on their parameters, no fast weights
        frozen = make_model(block, **{"cms.levels.0.lr": 0.0, "cms.levels.1.lr": 0.0})
        _, _, sf = frozen(ids)
        assert sf.blocks[0].mlp.weights == (None, None) and frozen.segment == 0


@pytest.mark.parametrize("block", BLOCKS)
def test_gradients_reach_every_parameter(block, ids):
    model = make_model(block)
    _, loss, _ = model(ids, targets=ids)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


@pytest.mark.parametrize("block", BLOCKS)
def test_training_mode_computes_the_same_function(block, ids):
    """The forward with the outer graph recorded equals the no_grad forward (inner gradients are
    segment-local in both)."""
    model = make_model(block)
    a, _, _ = model(ids)
    with torch.no_grad():
        b, _, _ = model(ids)
    assert torch.allclose(a.detach(), b, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("block", BLOCKS)
def test_state_layout_is_fixed_and_holds_no_activations(block, ids):
    """The carried state has the layout of ``init_state`` at every position (what ``load_state`` builds
    its template from), and after an inference call no tensor in it is part of an autograd graph (fast
    weights that have not moved yet are views of the parameters, by design)."""
    from torch.utils import _pytree as pytree

    model = make_model(block)
    _, spec0 = pytree.tree_flatten(model.init_state(2))
    _, blocks0 = pytree.tree_flatten(model.init_state(2).blocks)
    with torch.no_grad():
        for n in (1, 5, 19):
            _, _, state = model(ids[:, :n])
            assert pytree.tree_flatten(state._replace(cursor=None))[1] == spec0, n  # what save_state writes
            if state.cursor is not None:  # inference: the blocks after the pending tokens, laid out alike
                assert pytree.tree_flatten(state.cursor)[1] == blocks0 and state.pending.shape[1] > 0, n
            leaves = pytree.tree_leaves(state)
            graph = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad
                     and not isinstance(t._base, torch.nn.Parameter)]
            assert not graph, n
