"""Deviation D20: the self-modifying layer's η = η_max · sigmoid(·), η_max in the range where the DGD write
contracts; a setting out of range is an error, never a silent cap."""

import pytest
import torch

from nestlearn.layers import SelfModConfig, SelfModifyingTitans
from nestlearn.layers.selfmod import stable_eta_max
from nestlearn.memory import LinearMemory


def _gain_after(eta: float, chunk: int, chunks: int = 60) -> float:
    """‖M k‖ after writing one repeated unit key (target 0) for many chunks with linear DGD."""
    torch.manual_seed(0)
    mem = LinearMemory(1, 4, 4, rule="dgd", chunk_size=chunk).double()
    state = mem.init_state(1)
    w = torch.eye(4, dtype=torch.float64).view(1, 1, 4, 4)
    state = state._replace(weights=(w,), anchor=(w,))
    k = torch.zeros(1, chunk * chunks, 1, 4, dtype=torch.float64)
    k[..., 0] = 1.0
    v = torch.zeros_like(k)
    state = mem.write(state, k, v, eta)
    return float(mem.read(state, k[:, :1]).norm())


def test_contraction_bound_is_sharp():
    for chunk in (4, 8, 16):
        edge = 4 * stable_eta_max(chunk)  # (1 − η)^C = 1/3: the gain's magnitude is exactly 1
        assert _gain_after(0.9 * edge, chunk) < 1.0
        assert _gain_after(1.1 * edge, chunk) > 10.0


@pytest.mark.parametrize("memory,eta_max", [("linear", 1.0), ("linear", 2.0), ("mlp", stable_eta_max(8)),
                                            ("mlp", 0.3), ("mlp", 1.0), ("mlp", 2.0)])
def test_eta_at_its_bound_keeps_the_state_finite(memory, eta_max):
    """η saturated at η_max on one repeated input and on random inputs, the hardest case for a write. A
    matrix memory stays finite up to η_max = 2 (the write's factor αI − ηkkᵀ has |α − η| ≤ 1 along k);
    the MLP memory too with its proximal step (D27), whose size falls as the memory's tangent kernel grows."""
    torch.manual_seed(0)
    cfg = SelfModConfig(heads=2, chunk_size=8, chunk_size_other=4, memory=memory, eta_max=eta_max,
                        eta_scale=eta_max / 4)
    layer = SelfModifyingTitans(16, cfg)
    with torch.no_grad():
        layer.eta_bias.fill_(50.0)  # η at its bound everywhere
        for x in (torch.randn(1, 1, 16).expand(2, 400, 16), torch.randn(2, 400, 16)):
            y, state = layer(x)
            assert torch.isfinite(y).all()
            assert all(torch.isfinite(w).all() for w in (*state.group.weights, *state.memory.weights))


def test_default_eta_is_the_chunk_bound():
    layer = SelfModifyingTitans(16, SelfModConfig(heads=2, chunk_size=8, chunk_size_other=4))
    assert abs(layer.eta_max - stable_eta_max(8)) < 1e-12
    assert torch.allclose(torch.sigmoid(layer.eta_bias), torch.full((2,), 0.5))


def test_explicit_eta_max_and_initial_eta():
    layer = SelfModifyingTitans(16, SelfModConfig(heads=2, eta_max=0.2, eta_scale=0.05))
    assert layer.eta_max == 0.2
    assert torch.allclose(torch.sigmoid(layer.eta_bias) * 0.2, torch.full((2,), 0.05))


def test_out_of_range_eta_is_refused_not_capped():
    with pytest.raises(ValueError, match=r"selfmod.eta_max must be in \(0, 2.0\] \(got 2.5\).*expands"):
        SelfModifyingTitans(16, SelfModConfig(heads=2, eta_max=2.5))
    with pytest.raises(ValueError, match=r"selfmod.eta_scale \(the initial η\) must be in \(0, eta_max = 0.1\)"):
        SelfModifyingTitans(16, SelfModConfig(heads=2, eta_max=0.1, eta_scale=0.1))


def test_plain_mlp_steps_diverge_where_proximal_ones_do_not():
    """The reason for D27, measured: the same layer with the plain step (eq. 88 as printed) blows up at η_max = 0.3."""
    torch.manual_seed(0)
    layer = SelfModifyingTitans(16, SelfModConfig(heads=2, chunk_size=8, chunk_size_other=4, eta_max=0.3,
                                                  eta_scale=0.05))
    for mem in (layer.group, layer.memory):
        mem.step = "plain"
    with torch.no_grad():
        layer.eta_bias.fill_(50.0)
        _, state = layer(torch.randn(2, 400, 16))
    assert not all(torch.isfinite(w).all() and w.abs().max() < 1e6 for w in (*state.group.weights,
                                                                              *state.memory.weights))


@pytest.mark.parametrize("inputs", ["repeated", "random"])
def test_bounded_momentum_keeps_the_state_finite_where_a_free_one_does_not(inputs):
    """The reason for D30, measured: η at D20's bound and the momentum gate saturated. A repeated gradient then
    accumulates to a step of η/(1 − β): at β = 0.99 (100 η) the weights blow up, at β ≤ 0.75 (4 η, the edge D20's
    bound keeps a factor 4 below) they stay of order one."""
    def largest_weight(momentum_max: float) -> float:
        torch.manual_seed(0)
        layer = SelfModifyingTitans(16, SelfModConfig(heads=2, chunk_size=8, chunk_size_other=8,
                                                      momentum_max=momentum_max))
        with torch.no_grad():
            layer.eta_bias.fill_(50.0)  # η at its bound
            layer.beta_proj.weight.zero_()
            layer.beta_proj.bias.fill_(50.0)  # β = momentum_max everywhere
            x = torch.randn(1, 1, 16).expand(2, 400, 16) if inputs == "repeated" else torch.randn(2, 400, 16)
            _, state = layer(x)
        w = torch.cat([t.flatten() for t in (*state.group.weights, *state.memory.weights)])
        return float(w.abs().max()) if torch.isfinite(w).all() else float("inf")

    assert largest_weight(0.75) < 10.0
    assert largest_weight(0.5) < 10.0
    assert largest_weight(0.99) > 1e6


def test_momentum_max_scales_the_gate_and_is_refused_out_of_range():
    torch.manual_seed(0)
    free = SelfModifyingTitans(16, SelfModConfig(heads=2))
    torch.manual_seed(0)
    bounded = SelfModifyingTitans(16, SelfModConfig(heads=2, momentum_max=0.75))
    x = torch.randn(2, 24, 16)
    assert not torch.allclose(free(x)[0], bounded(x)[0])
    torch.manual_seed(0)
    same = SelfModifyingTitans(16, SelfModConfig(heads=2, momentum_max=1.0))
    assert torch.equal(free(x)[0], same(x)[0])  # 1: the present form, bit for bit
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=rf"selfmod.momentum_max must be in \(0, 1\] \(got {bad}\)"):
            SelfModifyingTitans(16, SelfModConfig(heads=2, momentum_max=bad))


def test_alpha_init_out_of_range_is_named():
    with pytest.raises(ValueError, match=r"selfmod.alpha_init must be in \(0, 1\) \(got 1.5\)"):
        SelfModifyingTitans(16, SelfModConfig(heads=2, alpha_init=1.5))


def test_titans_chunk_size_is_checked_before_its_default_bound():
    from nestlearn.layers import TitansConfig

    with pytest.raises(ValueError, match="titans.chunk_size must be a positive int"):
        TitansConfig(chunk_size=0).validate(16)
