"""Per-token reads (the dual form): ``y_t = M_t(q_t)``, the state after writing tokens ≤ t, computed in
chunk form, against the token loop that reads right after each write (DESIGN contract 2)."""

import itertools

import pytest
import torch

from .conftest import make_inputs, make_memory, max_rel

KINDS = ("linear", "mlp", "mlp_grouped")
RULES = ("gd", "dgd", "delta")


def _lengths(C):
    return sorted({T for T in (1, C - 1, C, 3 * C + 5) if T >= 1})


CASES = [(kind, rule, mom, C, T) for kind, rule, mom, C in itertools.product(KINDS, RULES, (False, True), (1, 4, 16))
         for T in _lengths(C)]


def _queries(mem, T, seed=7):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(2, T, mem.heads, mem.dim_in, dtype=torch.float64, generator=g),
                                         dim=-1)


@pytest.mark.parametrize("kind,rule,momentum,C,T", CASES)
def test_token_reads_equal_the_token_loop(kind, rule, momentum, C, T):
    mem = make_memory(kind, rule, C, momentum)
    k, v, eta, alpha, beta = make_inputs(mem, T=T)
    q = _queries(mem, T)
    s0 = mem.init_state(2)
    y, fast = mem.read_write(s0, q, k, v, eta, alpha, beta)
    y_ref, ref = mem.read_write(s0, q, k, v, eta, alpha, beta, impl="reference")
    assert y.shape == (2, T, mem.heads, mem.dim_out)
    assert max_rel([y], [y_ref]) < 1e-10
    assert max_rel(fast.weights, ref.weights) < 1e-10
    # the last read is the final state read at q_T
    assert max_rel([y[:, -1:]], [mem.read(fast, q[:, -1:])]) < 1e-10


@pytest.mark.parametrize("kind,rule,momentum", list(itertools.product(KINDS, RULES, (False, True))))
def test_token_reads_in_uneven_pieces_with_the_carried_state(kind, rule, momentum):
    mem = make_memory(kind, rule, 4, momentum)
    T = 23
    k, v, eta, alpha, beta = make_inputs(mem, T=T)
    q = _queries(mem, T)
    y_ref, _ = mem.read_write(mem.init_state(2), q, k, v, eta, alpha, beta, impl="reference")
    for cuts in ([1, 5, 8, 12, 20], [3, 4, 11], [7]):
        state, ys = mem.init_state(2), []
        for lo, hi in zip([0, *cuts], [*cuts, T], strict=True):
            sl = slice(lo, hi)
            y, state = mem.read_write(state, q[:, sl], k[:, sl], v[:, sl], eta[:, sl], alpha[:, sl],
                                      None if beta is None else beta[:, sl])
            ys.append(y)
        assert max_rel([torch.cat(ys, dim=1)], [y_ref]) < 1e-10


GRAD_CASES = [("linear", "dgd", True), ("mlp", "gd", True), ("mlp_grouped", "dgd", True), ("linear", "delta", False),
              ("mlp", "delta", True)]


@pytest.mark.parametrize("kind,rule,momentum", GRAD_CASES)
def test_token_read_gradients_equal_the_token_loop(kind, rule, momentum):
    """Gradients of the reads to q, k, v, every gate and the initial weights."""
    mem = make_memory(kind, rule, 4, momentum)
    T = 11
    inputs = [t for t in make_inputs(mem, T=T, requires_grad=True) if t is not None]
    q = _queries(mem, T).requires_grad_()
    leaves = [q, *inputs, *mem.parameters()]
    grads = {}
    for impl in ("chunk", "reference"):
        y, state = mem.read_write(mem.init_state(2), q, *inputs[:4], inputs[4] if momentum else None, impl=impl)
        w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
        loss = (y * w).sum() + sum((s * s).sum() for s in state.weights)
        grads[impl] = torch.autograd.grad(loss, leaves)
    assert max_rel(grads["chunk"], grads["reference"]) < 1e-9


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_token_read_gradcheck(kind):
    mem = make_memory(kind, "dgd", 2, momentum=True, heads=1, dim=2)
    k, v, eta, alpha, beta = make_inputs(mem, B=1, T=3, requires_grad=True)
    q = _queries(mem, 3)[:1].clone().requires_grad_()

    def f(q, k, v, eta, alpha, beta):
        return mem.read_write(mem.init_state(1), q, k, v, eta, alpha, beta)[0]

    assert torch.autograd.gradcheck(f, (q, k, v, eta, alpha, beta))


def test_chunk_start_reads_see_only_earlier_chunks():
    """``read="chunk_start"`` (eq. 90 as printed, D21): a token's read ignores its own chunk's writes."""
    mem = make_memory("linear", "dgd", 4)
    k, v, eta, alpha, _ = make_inputs(mem, T=8)
    q = _queries(mem, 8)
    y, _ = mem.read_write(mem.init_state(2), q, k, v, eta, alpha, read="chunk_start")
    v2 = v.clone()
    v2[:, 5] += 1.0
    y2, _ = mem.read_write(mem.init_state(2), q, k, v2, eta, alpha, read="chunk_start")
    assert torch.equal(y, y2)  # token 5's write reaches only the next chunk, which this sequence lacks
    t, _ = mem.read_write(mem.init_state(2), q, k, v, eta, alpha)
    t2, _ = mem.read_write(mem.init_state(2), q, k, v2, eta, alpha)
    assert torch.equal(t[:, :5], t2[:, :5]) and (t[:, 5:] - t2[:, 5:]).abs().amin(dim=(0, 2, 3)).gt(0).all()


def test_bad_read_mode_and_query_length():
    mem = make_memory("linear", "dgd", 4)
    k, v, eta, alpha, _ = make_inputs(mem, T=6)
    with pytest.raises(ValueError, match="read must be one of"):
        mem.read_write(mem.init_state(2), _queries(mem, 6), k, v, eta, alpha, read="chunk")
    with pytest.raises(ValueError, match="q has 5 tokens but k has 6"):
        mem.read_write(mem.init_state(2), _queries(mem, 5), k, v, eta, alpha)
