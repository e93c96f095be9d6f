"""The fused CPU chunk step (``write/chunk_cpu.cpp``) against its reference in PyTorch ops
(``ChunkGates``, ``ChunkCoefficients``, ``chunk_step``).

Every other memory test runs through the fused kernel when it is available (``write_chunked`` uses it
on a CPU); these compare the two paths directly, values and the gradients of every input (state,
momentum, writes, keys, every gate), and check the switch and the fallback.
"""

import itertools
import shutil
import warnings

import pytest
import torch

from nestlearn.memory.write import chunk as C
from nestlearn.memory.write import fused

from .conftest import make_inputs, make_memory, max_rel

needs_kernel = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                  reason="no C++ compiler on this machine: the fused kernel cannot be built")


def _case(mom: bool, pre: bool, ks: bool, dtype=torch.float64, batch=(2, 3), n=5, Dk=4, Dv=6, expand=False,
          read=False):
    g = torch.Generator().manual_seed(0)

    def rnd(*shape, scale=1.0, lo=0.0):
        return (torch.rand(*shape, generator=g, dtype=dtype) * scale + lo).requires_grad_()

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()

    if expand:  # a fresh state: one matrix per head, expanded over the batch (a stride-0 view)
        S0 = randn(*batch[1:], Dk, Dv)
        S = S0.unsqueeze(0).expand(*batch, Dk, Dv)
    else:
        S0 = S = randn(*batch, Dk, Dv)
    m = randn(*batch, Dk, Dv) if mom else None
    W, K = randn(*batch, n, Dv), randn(*batch, n, Dk)
    a = rnd(*batch, n, scale=0.5, lo=0.5)
    beta = rnd(*batch, n) if mom else None
    b = rnd(*batch, n, scale=0.3) if pre else None
    KS = (K @ S).detach().requires_grad_() if ks and pre else None
    Q = randn(*batch, n, Dk) if read else None
    leaves = [t for t in (S0, m, W, K, a, beta, b, KS, Q) if t is not None]
    return S, m, W, K, a, beta, b, KS, Q, leaves


def _torch(S, m, W, K, a, beta, b, KS, Q):
    return C.chunk_step(S, m, W, C.ChunkCoefficients(K, a, b, beta), KS, Q)


def _fused(S, m, W, K, a, beta, b, KS, Q):
    return fused.chunk_step_fused(S, m, W, K, fused.RawGates(a, beta), b, KS, Q)


def _run(impl, S, m, W, K, a, beta, b, KS, Q, leaves):
    Sn, mn, Y = impl(S, m, W, K, a, beta, b, KS, Q)
    weight = torch.linspace(-1, 1, Sn.numel(), dtype=Sn.dtype).view_as(Sn)
    loss = (Sn * weight).sum() + (0 if mn is None else (mn * weight.flip(-1)).sum())
    if Y is not None:
        loss = loss + (Y * torch.linspace(2, -1, Y.numel(), dtype=Y.dtype).view_as(Y)).sum()
    return Sn, mn, Y, torch.autograd.grad(loss, leaves)


CASES = list(itertools.product((False, True), (False, True), (False, True)))


@needs_kernel
@pytest.mark.parametrize("mom,pre,ks", CASES)
@pytest.mark.parametrize("expand", [False, True])
@pytest.mark.parametrize("read", [False, True])
def test_fused_equals_torch(mom, pre, ks, expand, read):
    """Values and gradients of every input, with and without momentum, preconditioner, given K S, and
    per-token reads."""
    assert fused.kernel() is not None, "a C++ compiler is present, so the fused kernel must build"
    args = _case(mom, pre, ks, expand=expand, read=read)
    S0, m0, Y0, g0 = _run(_torch, *args)
    S1, m1, Y1, g1 = _run(_fused, *args)
    assert max_rel([S0], [S1]) < 1e-12
    if mom:
        assert max_rel([m0], [m1]) < 1e-12
    if read:
        assert max_rel([Y0], [Y1]) < 1e-12
    assert max_rel(g0, g1) < 1e-12


def test_torch_token_reads_equal_the_states_they_read():
    """``chunk_step``'s per-token reads equal reading the state after each prefix of the chunk."""
    S, m, W, K, a, beta, b, _, Q, _ = _case(True, True, False, read=True)
    _, _, Y = _torch(S, m, W, K, a, beta, b, None, Q)
    for t in range(1, W.shape[-2] + 1):
        sl = slice(0, t)
        St, _, _ = _torch(S, m, W[..., sl, :], K[..., sl, :], a[..., sl], beta[..., sl], b[..., sl], None, None)
        assert max_rel([Y[..., t - 1, :]], [(Q[..., t - 1:t, :] @ St).squeeze(-2)]) < 1e-12


@needs_kernel
@pytest.mark.parametrize("mom,pre", [(True, True), (False, True), (True, False)])
def test_fused_float32_close_to_torch(mom, pre):
    args = _case(mom, pre, False, dtype=torch.float32, batch=(4, 4), n=16, Dk=24, Dv=40, read=True)
    S0, _, Y0, g0 = _run(_torch, *args)
    S1, _, Y1, g1 = _run(_fused, *args)
    assert max_rel([S0], [S1]) < 1e-5
    assert max_rel([Y0], [Y1]) < 1e-5
    assert max_rel(g0, g1) < 1e-4


@needs_kernel
def test_fused_gradcheck():
    S, m, W, K, a, beta, b, _, Q, leaves = _case(True, True, False, batch=(1, 2), n=3, Dk=2, Dv=3, read=True)

    def f(S, m, W, K, a, beta, b, Q):
        return _fused(S, m, W, K, a, beta, b, None, Q)

    assert torch.autograd.gradcheck(f, (S, m, W, K, a, beta, b, Q))


@needs_kernel
@pytest.mark.parametrize("kind,rule", [("mlp_grouped", "dgd"), ("linear", "delta"), ("mlp", "gd")])
def test_memory_write_same_with_either_path(kind, rule, monkeypatch):
    """A whole write (every chunk) and its gradients agree between NESTLEARN_KERNELS=auto and =torch."""
    mem = make_memory(kind, rule, 4, momentum=True)
    k, v, eta, alpha, beta = make_inputs(mem, T=11)
    inputs = [t.detach().requires_grad_() for t in (k, v, eta, alpha, beta)]
    out = {}
    for mode in ("auto", "torch"):
        monkeypatch.setenv("NESTLEARN_KERNELS", mode)
        state = mem.write(mem.init_state(2), *inputs)
        loss = sum((w * w).sum() for w in state.weights)
        out[mode] = (state.weights, torch.autograd.grad(loss, inputs + list(mem.parameters())))
    assert max_rel(out["auto"][0], out["torch"][0]) < 1e-12
    assert max_rel(out["auto"][1], out["torch"][1]) < 1e-12


def test_kernel_switch(monkeypatch):
    monkeypatch.setenv("NESTLEARN_KERNELS", "torch")
    assert fused.kernel() is None and not fused.applies(torch.zeros(1, 2, 2))
    monkeypatch.setenv("NESTLEARN_KERNELS", "fast")
    with pytest.raises(ValueError, match="NESTLEARN_KERNELS must be 'auto' or 'torch'"):
        fused.kernel()


def test_failed_build_falls_back_with_a_warning(monkeypatch):
    """No compiler (or any build error): one warning naming the cause, then the PyTorch ops."""
    monkeypatch.setenv("NESTLEARN_KERNELS", "auto")
    monkeypatch.setattr(fused, "_state", {"module": None, "tried": False})

    def broken():
        raise RuntimeError("Error building extension\nchunk_cpu.cpp:1:1: error: no compiler here\n")

    monkeypatch.setattr(fused, "_build", broken)
    mem = make_memory("linear", "dgd", 4, momentum=True)
    k, v, eta, alpha, beta = make_inputs(mem, T=9)
    with pytest.warns(RuntimeWarning, match="could not be built.*no compiler here"):
        state = mem.write(mem.init_state(2), k, v, eta, alpha, beta)
    ref = mem.write(mem.init_state(2), k, v, eta, alpha, beta, impl="reference")
    assert max_rel(state.weights, ref.weights) < 1e-9
    with warnings.catch_warnings():  # warned once, not on every chunk
        warnings.simplefilter("error")
        mem.write(mem.init_state(2), k, v, eta, alpha, beta)


def test_a_build_lock_left_by_a_killed_build_is_cleared_and_a_fresh_one_kept(tmp_path):
    """torch's build lock is a plain file: a process killed while compiling left it, and every later process
    waited on it forever (seen on 2026-11-30). A lock older than ``STALE_LOCK_S`` is removed with a warning;
    a fresh one (a build in progress elsewhere) is left alone."""
    import os
    import time

    lock = tmp_path / "lock"
    lock.touch()
    assert not fused._clear_stale_lock(tmp_path) and lock.exists()
    old = time.time() - fused.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match="removing the kernel build lock"):
        assert fused._clear_stale_lock(tmp_path)
    assert not lock.exists() and not fused._clear_stale_lock(tmp_path)


def test_the_source_is_staged_in_its_build_folder_once(tmp_path):
    """Every checkout compiles the copy in the build folder (one ``build.ninja`` for all): the copy is rewritten
    only when the source differs, so a second checkout with the same source does not touch it."""
    import os

    text = fused._SOURCE.read_text()
    staged = fused._staged_source(tmp_path, text)
    assert staged.read_text() == text and staged.parent == tmp_path
    os.utime(staged, (1, 1))
    assert fused._staged_source(tmp_path, text) == staged and staged.stat().st_mtime == 1
    assert fused._staged_source(tmp_path, text + "\n// changed\n").read_text().endswith("// changed\n")
    assert [p.name for p in tmp_path.iterdir()] == [staged.name]  # no temporary file left
