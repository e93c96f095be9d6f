"""The chunk-parallel write against its token-loop reference (DESIGN contract 2)."""

import itertools

import pytest
import torch

from nestlearn.memory import LinearMemory, MemoryState
from nestlearn.memory.write import decay_matrix

from .conftest import make_inputs, make_memory, max_rel

KINDS = ("linear", "mlp", "mlp_grouped")
RULES = ("gd", "dgd", "delta")
CHUNKS = (1, 4, 16, 64)


def _lengths(C):
    return sorted({T for T in (1, C - 1, C, 3 * C + 5) if T >= 1})


CASES = [(kind, rule, mom, C, T) for kind, rule, mom, C in itertools.product(KINDS, RULES, (False, True), CHUNKS)
         for T in _lengths(C)]


@pytest.mark.parametrize("kind,rule,momentum,C,T", CASES)
def test_chunk_equals_reference(kind, rule, momentum, C, T):
    mem = make_memory(kind, rule, C, momentum)
    k, v, eta, alpha, beta = make_inputs(mem, T=T)
    s0 = mem.init_state(2)
    fast = mem.write(s0, k, v, eta, alpha, beta)
    ref = mem.write(s0, k, v, eta, alpha, beta, impl="reference")
    assert fast.offset == ref.offset == T % C
    assert max_rel(fast.weights, ref.weights) < 1e-9
    assert max_rel(fast.anchor, ref.anchor) < 1e-9
    if momentum:
        assert max_rel(fast.momentum, ref.momentum) < 1e-9


@pytest.mark.parametrize("kind,rule", [(k, r) for k in KINDS for r in ("gd", "dgd")])
def test_dot_objective_equals_reference(kind, rule):
    mem = make_memory(kind, rule, 4, objective="dot")
    k, v, eta, alpha, _ = make_inputs(mem, T=11)
    s0 = mem.init_state(2)
    fast = mem.write(s0, k, v, eta, alpha)
    ref = mem.write(s0, k, v, eta, alpha, impl="reference")
    assert max_rel(fast.weights, ref.weights) < 1e-9


@pytest.mark.parametrize("kind,rule,momentum", list(itertools.product(KINDS, RULES, (False, True))))
def test_pieces_equal_one_write(kind, rule, momentum):
    """Splits at and off chunk boundaries: the carried state makes them one write."""
    mem = make_memory(kind, rule, 4, momentum)
    T = 23
    k, v, eta, alpha, beta = make_inputs(mem, T=T)
    whole = mem.write(mem.init_state(2), k, v, eta, alpha, beta)
    for cuts in ([1, 5, 8, 12, 20], [3, 4, 11], [7]):
        state = mem.init_state(2)
        for lo, hi in zip([0, *cuts], [*cuts, T], strict=True):
            sl = slice(lo, hi)
            state = mem.write(state, k[:, sl], v[:, sl], eta[:, sl], alpha[:, sl],
                              None if beta is None else beta[:, sl])
        assert state.offset == whole.offset
        assert max_rel(state.weights, whole.weights) < 1e-10
        assert max_rel(state.anchor, whole.anchor) < 1e-10


def test_delta_single_token_is_argmin_of_eq56():
    """C = 1: M_t = argmin_W ½‖W k − v‖² + 1/(2η)‖W − α M_{t−1}‖², solved as a linear system."""
    mem = make_memory("linear", "delta", 1)
    k, v, eta, alpha, _ = make_inputs(mem, T=5)
    k = 1.7 * k  # not unit norm: η′ = η/(1 + η‖k‖²) must hold in general
    state = mem.init_state(2)
    M = state.weights[0].mT  # [B, H, Dout, Din]
    eye = torch.eye(mem.dim_in, dtype=torch.float64)
    for t in range(5):
        state = mem.write(state, k[:, t:t + 1], v[:, t:t + 1], eta[:, t:t + 1], alpha[:, t:t + 1])
        kt, vt, et, at = k[:, t], v[:, t], eta[:, t, :, None, None], alpha[:, t, :, None, None]
        # Stationarity: W (k kᵀ + I/η) = v kᵀ + α M/η  ⇔  (k kᵀ + I/η) Wᵀ = k vᵀ + α Mᵀ/η
        lhs = kt.unsqueeze(-1) * kt.unsqueeze(-2) + eye / et
        rhs = kt.unsqueeze(-1) * vt.unsqueeze(-2) + at * M.mT / et
        M = torch.linalg.solve(lhs, rhs).mT
        assert max_rel([state.weights[0].mT], [M]) < 1e-12


@pytest.mark.parametrize("kind,rule,momentum", list(itertools.product(KINDS, RULES, (False, True))))
def test_gradcheck_through_write(kind, rule, momentum):
    """Gradients flow to k, v, η, α, β and the meta-learned initial weights."""
    mem = make_memory(kind, rule, 3, momentum, heads=1, dim=3)
    k, v, eta, alpha, beta = make_inputs(mem, B=1, T=5, requires_grad=True)
    params = list(mem.init)

    def f(k, v, eta, alpha, *rest):
        beta = rest[0] if momentum else None
        state = mem.write(mem.init_state(1), k, v, eta, alpha, beta)
        q = torch.linspace(-1, 1, 3 * mem.dim_in, dtype=torch.float64).reshape(1, 3, 1, mem.dim_in)
        return mem.read(state, q)

    inputs = (k, v, eta, alpha) + ((beta,) if momentum else ())
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)
    # ... and to the initial weights, compared against the reference path's autograd
    out = {}
    for impl in ("chunk", "reference"):
        mem.zero_grad()
        state = mem.write(mem.init_state(1), *inputs[:4], beta if momentum else None, impl=impl)
        sum(w.pow(2).sum() for w in state.weights).backward()
        out[impl] = [p.grad.clone() for p in params]
    assert max_rel(out["chunk"], out["reference"]) < 1e-9


@pytest.mark.parametrize("kind", KINDS)
def test_input_gradients_match_reference(kind):
    mem = make_memory(kind, "dgd", 4, momentum=True)
    grads = {}
    for impl in ("chunk", "reference"):
        inputs = make_inputs(mem, T=10, requires_grad=True)
        state = mem.write(mem.init_state(2), *inputs, impl=impl)
        torch.autograd.backward(sum((w * torch.cos(w)).sum() for w in state.weights))
        grads[impl] = [x.grad for x in inputs]
    assert max_rel(grads["chunk"], grads["reference"]) < 1e-9


def test_decay_matrix_products_and_zero_gate():
    a = torch.tensor([0.5, 0.0, 2.0, 3.0], dtype=torch.float64)
    G = decay_matrix(a)
    for t, s in itertools.product(range(5), range(5)):
        want = torch.prod(a[s:t]).item() if s <= t else 0.0
        assert G[t, s].item() == pytest.approx(want)


def test_zero_decay_forgets_everything_before():
    """α_t = 0 wipes the state. With the dot objective the writes do not depend on the state, so
    nothing written before token t can matter after it, wherever t falls in a chunk."""
    mem = make_memory("linear", "gd", 4, objective="dot")
    k, v, eta, alpha, _ = make_inputs(mem, T=10)
    alpha[:, 6] = 0.0
    k2, v2 = k.clone(), v.clone()
    k2[:, :6] += 1.0
    v2[:, :6] -= 1.0
    a = mem.write(mem.init_state(2), k, v, eta, alpha)
    b = mem.write(mem.init_state(2), k2, v2, eta, alpha)
    assert torch.allclose(a.weights[0], b.weights[0], atol=1e-12)
    alpha[:, 6] = 1.0
    c = mem.write(mem.init_state(2), k2, v2, eta, alpha)
    assert not torch.allclose(a.weights[0], c.weights[0])


def test_linear_write_equals_linear_attention():
    """gd, dot objective, η = 1, α = 1, zero init: M_T = Σ v_t k_tᵀ (NL eq. 14–18)."""
    mem = LinearMemory(2, 5, 3, rule="gd", objective="dot", chunk_size=4).double()
    k = torch.randn(2, 7, 2, 5, dtype=torch.float64)
    v = torch.randn(2, 7, 2, 3, dtype=torch.float64)
    state = mem.write(mem.init_state(2), k, v, lr=1.0)
    want = torch.einsum("bthk,bthv->bhkv", k, v)
    assert torch.allclose(state.weights[0], want, atol=1e-12)
    q = torch.randn(2, 4, 2, 5, dtype=torch.float64)
    assert torch.allclose(mem.read(state, q), torch.einsum("bthk,bhkv->bthv", q, want), atol=1e-12)


def test_mlp_read_is_residual_mlp():
    mem = make_memory("mlp")
    state = mem.init_state(2)
    q = torch.randn(2, 3, mem.heads, mem.dim_in, dtype=torch.float64)
    W2, W1 = (w.mT for w in mem.init)  # paper convention, per head
    want = q + torch.einsum("hdj,bthj->bthd", W1, mem.act(torch.einsum("hjd,bthd->bthj", W2, q)))
    assert torch.allclose(mem.read(state, q), want, atol=1e-12)


def test_read_chunk_start_sees_the_anchor():
    mem = make_memory("linear", "dgd", 4)
    k, v, eta, alpha, _ = make_inputs(mem, T=6)
    s = mem.write(mem.init_state(2), k, v, eta, alpha)
    assert s.offset == 2
    at4 = mem.write(mem.init_state(2), k[:, :4], v[:, :4], eta[:, :4], alpha[:, :4])
    q = torch.randn(2, 3, mem.heads, mem.dim_in, dtype=torch.float64)
    assert torch.allclose(mem.read(s, q, at="chunk_start"), mem.read(at4, q), atol=1e-12)
    assert isinstance(s, MemoryState)


@pytest.mark.parametrize("kind,rule,momentum", list(itertools.product(KINDS, RULES, (False, True))))
def test_zero_gates_match_reference(kind, rule, momentum):
    """Exact zeros in α and β (a full wipe, a momentum reset) stay finite and exact."""
    mem = make_memory(kind, rule, 4, momentum)
    k, v, eta, alpha, beta = make_inputs(mem, T=13)
    alpha[:, 5] = 0.0
    if beta is not None:
        beta[:, 2] = 0.0
    s0 = mem.init_state(2)
    fast = mem.write(s0, k, v, eta, alpha, beta)
    ref = mem.write(s0, k, v, eta, alpha, beta, impl="reference")
    assert max_rel(fast.weights, ref.weights) < 1e-9


@pytest.mark.parametrize("kind", KINDS)
def test_reference_runs_without_grad(kind):
    mem = make_memory(kind, "dgd", 4)
    k, v, eta, alpha, _ = make_inputs(mem, T=9)
    with torch.no_grad():
        s0 = mem.init_state(2)
        fast = mem.write(s0, k, v, eta, alpha)
        ref = mem.write(s0, k, v, eta, alpha, impl="reference")
    assert not fast.weights[0].requires_grad
    assert max_rel(fast.weights, ref.weights) < 1e-9


def test_dgd_fixed_point_is_two_thirds_of_the_value():
    """Paper-literal DGD with the ℓ2 loss (NL eq. 93) applies k kᵀ twice, once as the decay and once
    inside the gradient: for one pair written over and over, M k → (2/3) v, while delta → v."""
    k = torch.nn.functional.normalize(torch.randn(1, 1, 1, 4, dtype=torch.float64), dim=-1)
    v = torch.randn(1, 1, 1, 4, dtype=torch.float64)
    for rule, lr, want in (("dgd", 0.2, 2 / 3), ("gd", 0.2, 1.0), ("delta", 1.0, 1.0)):
        mem = LinearMemory(1, 4, 4, rule=rule, chunk_size=1).double()
        state = mem.init_state(1)
        for _ in range(200):
            state = mem.write(state, k, v, lr=lr)
        assert torch.allclose(mem.read(state, k), want * v, atol=1e-8), rule


@pytest.mark.parametrize("rule,momentum", [("dgd", True), ("gd", False), ("delta", True)])
def test_grouped_memory_equals_separate_memories(rule, momentum):
    """A grouped MLP memory is G memories that share keys and gates: its reads, its state after a
    write and the gradients to every input equal those of G separate memories."""
    G, H, D = 3, 2, 5
    grouped = make_memory("mlp_grouped", rule, 4, momentum, heads=H, dim=D)
    singles = []
    for g in range(G):
        mem = make_memory("mlp", rule, 4, momentum, heads=H, dim=D)
        with torch.no_grad():
            mem.init[0].copy_(grouped.init[0][..., g * 2 * D:(g + 1) * 2 * D])
            mem.init[1].copy_(grouped.init[1].view(H, G, 2 * D, D)[:, g])
        singles.append(mem)
    k, v, eta, alpha, beta = make_inputs(grouped, T=11, requires_grad=True)
    q = torch.randn(2, 7, H, D, dtype=torch.float64)
    st = grouped.write(grouped.init_state(2), k, v, eta, alpha, beta)
    y = grouped.read(st, q)
    parts = []
    for g, mem in enumerate(singles):
        s_g = mem.write(mem.init_state(2), k, v[..., g * D:(g + 1) * D], eta, alpha, beta)
        parts.append(mem.read(s_g, q))
        assert max_rel([st.weights[0][..., g * 2 * D:(g + 1) * 2 * D]], [s_g.weights[0]]) < 1e-12
        assert max_rel([st.weights[1].view(2, H, G, 2 * D, D)[:, :, g]], [s_g.weights[1]]) < 1e-12
    y_sep = torch.cat(parts, dim=-1)
    assert max_rel([y], [y_sep]) < 1e-12
    inputs = [t for t in (k, v, eta, alpha, beta) if t is not None]
    w = torch.randn_like(y)
    g1 = torch.autograd.grad((y * w).sum(), inputs)
    g2 = torch.autograd.grad((y_sep * w).sum(), inputs)
    assert max_rel(g1, g2) < 1e-10


def test_grouped_memory_rejects_bad_groups():
    from nestlearn.memory import MLPMemory

    with pytest.raises(ValueError, match="groups must be a positive int"):
        MLPMemory(2, 4, 4, groups=0)


@pytest.mark.parametrize("kind,momentum", [("mlp", False), ("mlp", True), ("mlp_grouped", True)])
def test_plain_mlp_step_equals_reference(kind, momentum):
    """``step="plain"`` (eq. 88 as printed, no D27 normalisation): the chunk path equals the token loop too,
    and differs from the proximal step."""
    mem = make_memory(kind, "dgd", 4, momentum)
    k, v, eta, alpha, beta = make_inputs(mem, T=11)
    prox = mem.write(mem.init_state(2), k, v, eta, alpha, beta)
    mem.step = "plain"
    fast = mem.write(mem.init_state(2), k, v, eta, alpha, beta)
    ref = mem.write(mem.init_state(2), k, v, eta, alpha, beta, impl="reference")
    assert max_rel(fast.weights, ref.weights) < 1e-9
    assert max_rel(fast.weights, prox.weights) > 1e-6
