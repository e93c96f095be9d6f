import pytest
import torch

from nestlearn.memory import LinearMemory, MLPMemory


def make_memory(kind, rule="dgd", chunk_size=4, momentum=False, heads=2, dim=6, objective="l2"):
    torch.manual_seed(0)
    if kind == "linear":
        mem = LinearMemory(heads, dim, dim, rule=rule, chunk_size=chunk_size, objective=objective,
                           momentum=momentum, init_std=0.3)
    else:  # "mlp", or "mlp_grouped": three memories sharing keys and gates (self-modifying Titans' group)
        mem = MLPMemory(heads, dim, 2 * dim, rule=rule, chunk_size=chunk_size, objective=objective,
                        momentum=momentum, groups=3 if kind == "mlp_grouped" else 1)
    return mem.double()


def make_inputs(mem, B=2, T=9, seed=1, requires_grad=False):
    """Keys ℓ2-normalised and gates in a stable range, as the layers produce them."""
    g = torch.Generator().manual_seed(seed)
    H, D = mem.heads, mem.dim_in
    f64 = dict(dtype=torch.float64, generator=g)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, D, **f64), dim=-1)
    v = torch.randn(B, T, H, mem.dim_out, **f64)
    eta = 0.05 + 0.25 * torch.rand(B, T, H, **f64)
    alpha = 0.8 + 0.2 * torch.rand(B, T, H, **f64)
    beta = 0.9 * torch.rand(B, T, H, **f64) if mem.momentum else None
    out = [k, v, eta, alpha, beta]
    if requires_grad:
        out = [None if x is None else x.clone().requires_grad_(True) for x in out]
    return out


def max_rel(xs, ys):
    return max(((x - y).abs().max() / y.abs().max().clamp_min(1e-300)).item() for x, y in zip(xs, ys, strict=True))


@pytest.fixture
def f64():
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(prev)
