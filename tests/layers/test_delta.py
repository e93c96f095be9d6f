"""The delta-rule mixer as DeltaNet defines it: its write strength (β up to 1, or up to 2 for negative
eigenvalues)."""

import pytest
import torch

from nestlearn.layers import DeltaConfig, DeltaRule
from nestlearn.memory import LinearMemory


def test_deltanet_beta_one_overwrites_a_key():
    """β = 1 with a unit key replaces what the key held: M k = v after the write (DeltaNet)."""
    mem = LinearMemory(1, 4, 3, rule="delta", chunk_size=4, delta_lr="direct").double()
    k = torch.nn.functional.normalize(torch.randn(1, 2, 1, 4, dtype=torch.float64), dim=-1)[:, :1].expand(1, 2, 1, 4)
    v = torch.randn(1, 2, 1, 3, dtype=torch.float64)
    for impl in ("chunk", "reference"):
        state = mem.write(mem.init_state(1), k, v, 1.0, impl=impl)
        assert torch.allclose(mem.read(state, k[:, :1]), v[:, 1:], atol=1e-12)
    # NL eq. 56's exact step writes at most half of it: η′ = η/(1 + η) for a unit key
    exact = LinearMemory(1, 4, 3, rule="delta", chunk_size=4).double()
    state = exact.write(exact.init_state(1), k[:, :1], v[:, :1], 1.0)
    assert torch.allclose(exact.read(state, k[:, :1]), 0.5 * v[:, :1], atol=1e-12)


def test_beta_above_one_flips_the_sign_along_the_key():
    """β ∈ (1, 2): the factor I − β k kᵀ has the negative eigenvalue 1 − β along k (state tracking)."""
    mem = LinearMemory(1, 2, 2, rule="delta", chunk_size=1, delta_lr="direct").double()
    state = mem.init_state(1)
    w = torch.eye(2, dtype=torch.float64).view(1, 1, 2, 2)
    state = state._replace(weights=(w,), anchor=(w,))
    k = torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 1, 1, 2)
    state = mem.write(state, k, torch.zeros_like(k), 1.5)
    assert torch.allclose(mem.read(state, k), -0.5 * k, atol=1e-12)


def test_delta_layer_beta_range():
    layer = DeltaRule(16, DeltaConfig(heads=2, beta_max=2.0))
    with torch.no_grad():
        layer.gates.bias.fill_(30.0)  # β at its bound, forgetting nothing
        y, state = layer(torch.randn(2, 40, 16))
    assert torch.isfinite(y).all() and torch.isfinite(state.memory.weights[0]).all()
    with pytest.raises(ValueError, match=r"delta.beta_max must be in \(0, 2\] \(got 2.5\)"):
        DeltaConfig(beta_max=2.5).validate(16)
    with pytest.raises(ValueError, match="delta_lr='direct' sets the delta rule's write strength"):
        LinearMemory(1, 2, 2, rule="dgd", delta_lr="direct")
