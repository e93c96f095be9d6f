"""The CMS's in-context learning step (NL eq. 71) against a step computed by hand on a tiny case, and
the level clock."""

import torch
import torch.nn.functional as F

from nestlearn.layers import CMS, CMSConfig, LevelConfig, level_steps


def test_one_level_step_is_a_gradient_step_on_the_chunk_loss():
    torch.manual_seed(0)
    eta = 0.3
    cms = CMS(3, CMSConfig(levels=[LevelConfig(chunk_size=2, lr=eta)], hidden_mult=4 / 3)).double()
    x = torch.randn(1, 2, 3, dtype=torch.float64)
    c = torch.randn(1, 2, 3, dtype=torch.float64)  # the loss Σ c ⊙ y, a stand-in for the task loss
    state = cms.init_state(1)
    trace: list = []
    y, state = cms(x, state, trace=trace)
    grads = torch.autograd.grad((c * y).sum(), CMS.trace_tensors(trace), allow_unused=True)
    state = cms.step(cms.accumulate(state, trace, list(grads)), pos=2)  # the chunk ends at 2: one step
    # by hand: θ ← θ − η ∇θ Σ_t c_t · y_t, y = (silu(x Wg) ⊙ x Wu) Wd, gradients at θ₀
    mlp = cms.levels[0]
    wg, wu, wd = (p.detach().clone().requires_grad_(True) for p in (mlp.w_gate, mlp.w_up, mlp.w_down))
    loss = (c * ((F.silu(x @ wg) * (x @ wu)) @ wd)).sum()
    expect = [w - eta * g for w, g in zip((wg, wu, wd), torch.autograd.grad(loss, (wg, wu, wd)), strict=True)]
    for got, want in zip(state.weights[0], expect, strict=True):
        assert torch.allclose(got[0], want, atol=1e-12)
    assert all(a.shape[1] == 0 for a in state.acc[0])  # the accumulator starts again after a step


def test_no_step_before_the_chunk_ends_and_the_gradient_waits_in_the_accumulator():
    torch.manual_seed(0)
    cms = CMS(3, CMSConfig(levels=[LevelConfig(chunk_size=4, lr=0.3)], hidden_mult=1.0)).double()
    x = torch.randn(1, 2, 3, dtype=torch.float64)
    state = cms.init_state(1)
    trace: list = []
    y, state = cms(x, state, trace=trace)
    grads = torch.autograd.grad(y.sum(), CMS.trace_tensors(trace))
    after = cms.step(cms.accumulate(state, trace, list(grads)), pos=2)
    assert all(torch.equal(a, b) for a, b in zip(after.weights[0], state.weights[0], strict=True))
    assert after.acc[0][0].shape[1] == 2  # two tokens' factors kept for the step at position 4
    assert [level_steps(p, 4) for p in (0, 2, 4, 8)] == [False, False, True, True]
