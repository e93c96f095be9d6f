"""Optimizers: closed-form first steps, reductions, Newton–Schulz against the SVD polar factor."""

import copy

import pytest
import torch
from torch import nn

from nestlearn.models import CausalLM, preset
from nestlearn.optim import DGD, M3, DeepMomentum, DeltaMomentum, newton_schulz, polar_svd, split_params


def test_cubic_newton_schulz_converges_to_the_polar_factor():
    torch.manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    G = U[:, :4] @ torch.diag(torch.tensor([1.0, 0.8, 0.6, 0.5], dtype=torch.float64)) @ V.T
    X = newton_schulz(G, steps=40, kind="cubic", dtype=None)
    assert torch.allclose(X, polar_svd(G), atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(16, 32), (32, 16), (3, 8, 8)])
def test_quintic_newton_schulz_orthogonalises(dtype, shape):
    """Muon's quintic maps singular values into about [0.7, 1.2] while keeping U and V."""
    torch.manual_seed(1)
    G = torch.randn(*shape)
    X = newton_schulz(G, steps=5, dtype=dtype)
    P = polar_svd(G)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    core = U.mT @ X @ Vh.mT  # ≈ diagonal with entries in [0.6, 1.3]
    d = core.diagonal(dim1=-2, dim2=-1)
    assert d.min() > 0.6 and d.max() < 1.3
    off = core - torch.diag_embed(d)
    assert off.abs().max() < (0.05 if dtype == torch.float32 else 0.1)
    assert ((X - P).norm() / P.norm()) < 0.35
    if len(shape) == 3 and dtype == torch.float32:  # a batch equals each matrix on its own
        for i in range(shape[0]):
            assert torch.allclose(X[i], newton_schulz(G[i], steps=5, dtype=dtype), atol=1e-4)


def _quad_grads(p, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=g) for _ in range(steps)]


def test_m3_first_two_steps_are_algorithm_1():
    torch.manual_seed(0)
    W0 = torch.randn(8, 5, dtype=torch.float64)
    p = nn.Parameter(W0.clone())
    b1, b2, b3, alpha, eps, lr, f = 0.9, 0.99, 0.8, 0.5, 1e-8, 0.01, 1
    opt = M3([p], lr=lr, betas=(b1, b2, b3), alpha=alpha, eps=eps, ns_steps=5, slow_every=f,
             accumulate="sum", ns_dtype=None)
    g1, g2 = _quad_grads(p, 2)
    g1, g2 = g1.double(), g2.double()
    ns = lambda m: newton_schulz(m, 5, dtype=None)  # noqa: E731
    scale = 1.0  # Algorithm 1 has no shape-based rate adjustment (the default adjust_lr_fn="none")
    # step 1: M1 = β1 g1, V = β2 g1², O2 = 0 (the slow memory starts empty)
    W1 = W0 - lr * scale * ns(b1 * g1) / ((b2 * g1 ** 2).sqrt() + eps)
    # after step 1 (f = 1) the slow memory takes g1: M2 = β3 g1
    M2 = b3 * g1
    # step 2
    M1 = b1 * g1 + b1 * g2
    V = b2 * g1 ** 2 + b2 * g2 ** 2
    W2 = W1 - lr * scale * (ns(M1) + alpha * ns(M2)) / (V.sqrt() + eps)
    p.grad = g1
    opt.step()
    assert torch.allclose(p.detach(), W1, atol=1e-12)
    p.grad = g2
    opt.step()
    assert torch.allclose(p.detach(), W2, atol=1e-12)


def test_m3_reduces_to_muon():
    """α = 0, no second moment, EMA momentum, Muon's rate adjustment and bfloat16 Newton–Schulz:
    torch.optim.Muon without Nesterov."""
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(12, 7))
    b = nn.Parameter(a.detach().clone())
    m3 = M3([a], lr=0.02, betas=(0.95, 0.999, 0.9), alpha=0.0, second_moment=False, accumulate="ema",
            adjust_lr_fn="original", ns_dtype=torch.bfloat16)
    muon = torch.optim.Muon([b], lr=0.02, momentum=0.95, nesterov=False, weight_decay=0.0)
    for g in _quad_grads(a, 10):
        a.grad, b.grad = g.clone(), g.clone()
        m3.step()
        muon.step()
    assert torch.allclose(a, b, atol=1e-6, rtol=0)


def test_newton_schulz_works_in_float32_on_a_cpu_by_default():
    from nestlearn.optim.newton_schulz import working_dtype

    G = torch.randn(6, 4)
    assert working_dtype("auto", G) == torch.float32 and working_dtype(None, G.double()) == torch.float64
    assert torch.equal(newton_schulz(G), newton_schulz(G, dtype=torch.float32))
    assert not torch.equal(newton_schulz(G), newton_schulz(G, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="dtype must be"):
        newton_schulz(G, dtype="fast")


def test_m3_slow_momentum_changes_exactly_every_f_steps():
    p = nn.Parameter(torch.randn(6, 6))
    opt = M3([p], lr=1e-3, slow_every=3)
    changed = []
    prev = None
    for g in _quad_grads(p, 9):
        p.grad = g
        opt.step()
        o2 = opt.state[p]["o2"].clone()
        changed.append(prev is not None and not torch.equal(o2, prev) or (prev is None and o2.abs().sum() > 0))
        prev = o2
    assert changed == [False, False, True, False, False, True, False, False, True]


@pytest.mark.parametrize("shape", [(4, 6, 5), (8, 3, 3, 3)])
def test_m3_handles_3d_and_4d_parameters(shape):
    p = nn.Parameter(torch.randn(*shape))
    before = p.detach().clone()
    opt = M3([p], lr=1e-2, slow_every=2)
    for g in _quad_grads(p, 3):
        p.grad = g
        opt.step()
    assert p.shape == before.shape and torch.isfinite(p).all() and not torch.equal(p, before)


def test_dgd_single_sample_step_is_argmin_of_eq56():
    torch.manual_seed(0)
    layer = nn.Linear(5, 3, bias=False).double()
    x = 1.5 * torch.randn(1, 5, dtype=torch.float64)
    target = torch.randn(1, 3, dtype=torch.float64)
    W0 = layer.weight.detach().clone()
    eta = 0.3
    opt = DGD(layer, lr=eta)
    y = layer(x)
    loss = 0.5 * ((y - target) ** 2).sum()
    loss.backward()
    u = -(y - target).detach()  # u = −∇_y L (the local surprise signal)
    opt.step()
    # argmin_W ½‖W x − u‖² + 1/(2η)‖W − W0‖²  ⇔  (x xᵀ + I/η) Wᵀ = x uᵀ + W0ᵀ/η
    xx = x.T @ x + torch.eye(5, dtype=torch.float64) / eta
    W = torch.linalg.solve(xx, x.T @ u + W0.T / eta).T
    assert torch.allclose(layer.weight.detach(), W, atol=1e-12)


def test_dgd_remove_hooks_stops_collecting_input_statistics():
    layer = nn.Linear(5, 3)
    opt = DGD(layer, lr=0.1)
    layer(torch.randn(4, 5)).sum().backward()
    assert len(opt._stats) == 1
    opt.step()
    opt.remove_hooks()  # the optimizer lets go of the model: forward passes are no longer observed
    layer(torch.randn(4, 5)).sum().backward()
    assert opt._stats == {}
    with pytest.raises(RuntimeError, match="no input statistics"):
        opt.step()


def _tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


OPTIMIZERS = {
    "m3": lambda net: M3([p for p in net.parameters() if p.dim() >= 2], lr=1e-2, slow_every=2),
    "dgd": lambda net: DGD(net, lr=1e-2),
    "delta": lambda net: DeltaMomentum(net.parameters(), lr=1e-2),
    "deep": lambda net: DeepMomentum(net.parameters(), lr=1e-2),
}


def _train(net, opt, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 4, generator=g)
        loss = (net(x) - x[:, :2].sin()).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_and_determinism(name):
    net = _tiny_net()
    opt = OPTIMIZERS[name](net)
    _train(net, opt, 3)
    net2 = _tiny_net()
    net2.load_state_dict(net.state_dict())
    opt2 = OPTIMIZERS[name](net2)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    _train(net, opt, 3, seed=1)
    _train(net2, opt2, 3, seed=1)
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)
    again = _tiny_net()
    first = _tiny_net()
    assert _train(again, OPTIMIZERS[name](again), 4) == _train(first, OPTIMIZERS[name](first), 4)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_lowers_a_loss(name):
    net = _tiny_net()
    opt = OPTIMIZERS[name](net)
    first = _train(net, opt, 1)
    last = _train(net, opt, 150, seed=3)
    assert last < first


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=-1.0), "lr must be ≥ 0"),
    (dict(betas=(1.0, 0.9, 0.9)), r"betas\[0\] must be in \[0, 1\)"),
    (dict(betas=(0.9, -0.1, 0.9)), r"betas\[1\] must be in \[0, 1\)"),
    (dict(slow_every=0), "slow_every must be an int ≥ 1"),
    (dict(accumulate="mean"), "accumulate must be"),
    (dict(adjust_lr_fn="bogus"), "adjust_lr_fn must be"),
])
def test_m3_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        M3([nn.Parameter(torch.randn(3, 3))], **kwargs)


def test_other_bad_hyperparameters():
    net = _tiny_net()
    with pytest.raises(ValueError, match="lr must be ≥ 0"):
        DGD(net, lr=-0.1)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\)"):
        DeltaMomentum(net.parameters(), alpha=1.0)
    with pytest.raises(ValueError, match="lr must be ≥ 0"):
        DeepMomentum(net.parameters(), lr=-1)
    with pytest.raises(ValueError, match="M3 needs parameters with ≥ 2 dims"):
        p = nn.Parameter(torch.randn(3))
        p.grad = torch.randn(3)
        M3([p]).step()


def test_param_groups_partition_the_model():
    model = CausalLM(preset("debug", block="hope"))
    matrices, others = split_params(model)
    assert all(p.dim() >= 2 for p in matrices)
    assert model.embed.weight in others  # tied with the head: once, with AdamW
    assert len(matrices) + len(others) == len(list(model.parameters()))
