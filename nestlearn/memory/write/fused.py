"""The fused CPU chunk step (``chunk_cpu.cpp``): ``chunk.chunk_step`` in one pass per batch entry.

``chunk_step`` in ``chunk.py`` is written in PyTorch ops: each chunk sweeps the state-sized tensors
a dozen times (forward and backward), and its backward is several times its forward. The C++ kernel
does the same arithmetic per batch entry with that entry's state in cache, calling the BLAS that
PyTorch links for the products, and its backward recomputes the chunk's ``n × D`` panels instead of
saving them. ``chunk.chunk_step`` stays the reference: the tests compare values and gradients.

The kernel is compiled on first use (about 30–60 s, once per machine, torch version and kernel source)
into ``$NESTLEARN_KERNEL_DIR`` (default ``~/.cache/nestlearn``); checkouts with the same source share
the binary. ``NESTLEARN_KERNELS=torch`` turns it off; if it cannot be built (no C++ compiler, a torch
without the BLAS symbols), a warning says so once and the PyTorch ops run instead.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

_SOURCE = Path(__file__).with_name("chunk_cpu.cpp")
_state: dict = {"module": None, "tried": False}


def mode() -> str:
    """``NESTLEARN_KERNELS``: ``auto`` (the fused kernel where it applies) or ``torch`` (PyTorch ops only)."""
    value = os.environ.get("NESTLEARN_KERNELS", "auto")
    if value not in ("auto", "torch"):
        raise ValueError(f"NESTLEARN_KERNELS must be 'auto' or 'torch' (got {value!r})")
    return value


def _cpu_tag() -> str:
    """A short hash of this CPU's feature flags: the kernel is built with ``-march=native``, so a build
    directory shared between machines must not hand one CPU's binary to another."""
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor() or platform.machine()
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


# -fopenmp: at::parallel_for is OpenMP in the header; without the flag it would run serially
_CFLAGS = ["-O3", "-march=native", "-fopenmp"]
_LDFLAGS = ["-fopenmp"]
STALE_LOCK_S = 600  # a build takes about a minute; a build lock older than this was left by a killed process


def _staged_source(build: Path, text: str) -> Path:
    """The kernel's source, copied into its build folder (rewritten only when it differs), so that every
    checkout with the same source compiles the same ``build.ninja`` and shares one binary: with the source's
    own path in it, each checkout (a CI clone in /tmp, a worktree) rebuilt the kernel for the others."""
    staged = build / _SOURCE.name
    if not staged.is_file() or staged.read_text() != text:
        tmp = build / f".{_SOURCE.name}.{os.getpid()}.tmp"
        tmp.write_text(text)
        tmp.replace(staged)
    return staged


def _clear_stale_lock(build: Path, max_age_s: float = STALE_LOCK_S) -> bool:
    """Remove ``build/lock`` when it is older than ``max_age_s``: torch's build lock is a plain file that a
    process killed while compiling never removes, and every later process would wait on it forever."""
    lock = build / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age < max_age_s:
        return False
    warnings.warn(f"nestlearn: removing the kernel build lock {lock}, left {age / 60:.0f} min ago by a build that "
                  "did not finish (a killed process)", RuntimeWarning, stacklevel=2)
    lock.unlink(missing_ok=True)
    return True


def _build():
    from torch.utils.cpp_extension import load

    name = "nestlearn_chunk_cpu"
    tag = torch.__version__.replace("+", "_")
    text = _SOURCE.read_text()
    source = hashlib.sha1("\n".join([text, *_CFLAGS, *_LDFLAGS]).encode()).hexdigest()[:8]
    root = Path(os.environ.get("NESTLEARN_KERNEL_DIR", Path.home() / ".cache" / "nestlearn"))
    build = root / f"{name}-torch{tag}-cpu{_cpu_tag()}-src{source}"
    build.mkdir(parents=True, exist_ok=True)
    staged = _staged_source(build, text)
    _clear_stale_lock(build)
    if not any(build.glob(f"{name}*.so")):
        print(f"nestlearn: compiling the fused CPU chunk kernel into {build} (once)", file=sys.stderr, flush=True)
    return load(name=name, sources=[str(staged)], extra_cflags=_CFLAGS, extra_ldflags=_LDFLAGS,
                build_directory=str(build), verbose=False)


def _reason(e: Exception) -> str:
    """The line of a failed build that says why (the compiler's first error), else the exception's last line."""
    text = str(e).strip()
    lines = text.splitlines() or [type(e).__name__]
    return next((ln.strip() for ln in lines if "error:" in ln), lines[-1].strip())


def kernel():
    """The compiled module, or ``None`` when it is turned off or cannot be built."""
    if mode() == "torch":
        return None
    if not _state["tried"]:
        _state["tried"] = True
        try:
            _state["module"] = _build()
        except Exception as e:  # no compiler, no BLAS symbols, …: the PyTorch ops still work
            warnings.warn(f"nestlearn: the fused CPU chunk kernel could not be built ({type(e).__name__}: "
                          f"{_reason(e)}); using PyTorch ops (set NESTLEARN_KERNELS=torch to skip the attempt)",
                          RuntimeWarning, stacklevel=3)
    return _state["module"]


def applies(S: Tensor) -> bool:
    """Whether the fused kernel runs for this state: CPU, float32/float64, and the kernel available."""
    return S.device.type == "cpu" and S.dtype in (torch.float32, torch.float64) and kernel() is not None


class RawGates(NamedTuple):
    """A chunk's gates as the kernel takes them, ``[..., n]`` (it forms their products itself)."""

    a: Tensor
    beta: Tensor | None

    def repeat_heads(self, groups: int) -> RawGates:
        """The same gates for weights batched ``[B, H·G, …]`` (as ``ChunkGates.repeat_heads``)."""
        return RawGates(*(None if t is None else t.repeat_interleave(groups, dim=1) for t in self))


class FusedChunkStep(torch.autograd.Function):
    """Inputs flattened to one batch dim ``N``; absent ones are empty tensors (see ``chunk_cpu.cpp``)."""

    @staticmethod
    def forward(ctx, *inputs):
        ctx.save_for_backward(*inputs)
        S_new, m_new, Y = kernel().forward(*inputs)
        return S_new, (m_new if m_new.numel() else None), (Y if Y.numel() else None)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gS, gm, gY):
        inputs = ctx.saved_tensors
        S, m, W, Q = inputs[0], inputs[1], inputs[2], inputs[-1]
        gS = torch.zeros_like(S) if gS is None else gS.contiguous()
        gm = (torch.zeros_like(m) if gm is None else gm.contiguous()) if m.numel() else m
        gY = (torch.zeros_like(W) if gY is None else gY.contiguous()) if Q.numel() else Q
        grads = kernel().backward(*inputs, gS, gm, gY)
        return tuple(g if t.numel() and need else None
                     for g, t, need in zip(grads, inputs, ctx.needs_input_grad, strict=True))


def chunk_step_fused(S: Tensor, m: Tensor | None, W: Tensor, K: Tensor, gates: RawGates, b: Tensor | None,
                     KS: Tensor | None = None, Q: Tensor | None = None
                     ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``chunk.chunk_step(S, m, W, ChunkCoefficients(K, ChunkGates(a, beta), b), KS, Q)`` in the fused kernel.

    Shapes: ``S, m`` ``[..., Dk, Dv]``, ``W`` ``[..., n, Dv]``, ``K`` and the queries ``Q`` ``[..., n, Dk]``,
    gates ``a, beta`` and ``b`` ``[..., n]`` (``beta``: momentum, ``b``: the preconditioner, ``Q``: the
    per-token reads; ``None`` when absent). Returns ``(S_n, m_n, Y)`` like ``chunk_step``.
    """
    a, beta = gates
    shape = S.shape
    n, Dk, Dv = W.shape[-2], shape[-2], shape[-1]
    empty = S.new_empty(0)

    def flat(t: Tensor | None, *tail: int) -> Tensor:
        return empty if t is None else t.reshape(-1, *tail).contiguous()

    pre = b is not None
    S_new, m_new, Y = FusedChunkStep.apply(flat(S, Dk, Dv), flat(m, Dk, Dv), flat(W, n, Dv), flat(K, n, Dk),
                                           flat(KS if pre else None, n, Dv), flat(a, n),
                                           flat(beta if m is not None else None, n), flat(b, n), flat(Q, n, Dk))
    return (S_new.view(shape), None if m_new is None else m_new.view(shape),
            None if Y is None else Y.view(W.shape))
