"""What every memory kind shares: the state, argument checks, and the read/write entry points.

Shapes (one alphabet): ``B`` batch, ``T`` tokens, ``H`` heads, ``D`` features. Public tensors are
``[B, T, H, D]``; inside, heads move forward to ``[B, H, T, D]`` so that ``(B, H)`` are batch dims
of every matmul. Fast weights are ``[B, H, Dk, Dv]`` in the row convention (``y = x @ S``); the
paper's matrix is ``M = Sᵀ``.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from .schedule import slices, spans
from .state import MemoryState
from .write import write_chunked, write_reference


def _state_precision(fn):
    """Under autocast a memory runs in its state's dtype: lower-precision inputs (q, k, v, gates) are cast
    up to it and autocast is off inside, so that the fast weights and the chunk recurrence stay in full
    precision whatever the surrounding layers compute in. Without autocast a dtype mismatch stays an error."""

    @functools.wraps(fn)
    def wrapped(self, state, *args, **kwargs):
        ref = state.weights[0] if isinstance(state, MemoryState) else None
        if ref is None or not torch.is_autocast_enabled(ref.device.type):
            return fn(self, state, *args, **kwargs)

        def up(t):
            low = isinstance(t, Tensor) and t.is_floating_point() and t.itemsize < ref.itemsize
            return t.to(ref.dtype) if low else t

        with torch.autocast(ref.device.type, enabled=False):
            return fn(self, state, *map(up, args), **{key: up(v) for key, v in kwargs.items()})

    return wrapped


RULES = ("gd", "dgd", "delta")
READS = ("token", "chunk_start")  # where a sequence mixer's memory is read: see ``Memory.read_write``
OBJECTIVES = ("l2", "dot")


class Memory(nn.Module):
    """A parametric associative memory written in context by an inner rule, chunk by chunk.

    Subclasses define the map (``_map``), the chunk form of each rule (``_plan``), and its token-by-
    token reference in the paper's symbols (``nestlearn.memory.write.naive``). Their initial weights
    ``self.init`` are meta-learned ``nn.Parameter``s, one per head.
    """

    kind: str
    init: nn.ParameterList

    def __init__(self, heads: int, dim_in: int, dim_out: int, rule: str, chunk_size: int,
                 objective: str, momentum: bool):
        super().__init__()
        if heads < 1 or dim_in < 1 or dim_out < 1:
            raise ValueError(f"heads, dim_in, dim_out must be positive (got {heads}, {dim_in}, {dim_out})")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES} (got {rule!r})")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES} (got {objective!r})")
        if rule == "delta" and objective != "l2":
            raise ValueError("rule='delta' is the exact solution of the l2 regression (NL eq. 56); "
                             "it needs objective='l2'")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int (got {chunk_size!r})")
        self.heads, self.dim_in, self.dim_out = heads, dim_in, dim_out
        self.rule, self.chunk_size, self.objective, self.momentum = rule, chunk_size, objective, momentum

    def extra_repr(self) -> str:
        return (f"heads={self.heads}, dim_in={self.dim_in}, dim_out={self.dim_out}, rule={self.rule!r}, "
                f"chunk_size={self.chunk_size}, objective={self.objective!r}, momentum={self.momentum}")

    # ---- state --------------------------------------------------------------------------------
    def init_state(self, batch_size: int) -> MemoryState:
        """Fast weights at the meta-learned initial value; gradients flow back to ``self.init``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive (got {batch_size})")
        w = tuple(p.unsqueeze(0).expand(batch_size, *p.shape) for p in self.init)
        mom = tuple(torch.zeros_like(t) for t in w) if self.momentum else None
        return MemoryState(w, w, mom, 0)

    # ---- read / write -------------------------------------------------------------------------
    @_state_precision
    def read(self, state: MemoryState, q: Tensor, at: str = "current") -> Tensor:
        """``y = M(q)``: q ``[B, T, H, Din]`` → ``[B, T, H, Dout]``, no write.

        ``at="chunk_start"`` reads the weights at the start of the current chunk (NL eq. 90 reads).
        """
        if at not in ("current", "chunk_start"):
            raise ValueError(f"at must be 'current' or 'chunk_start' (got {at!r})")
        weights = state.weights if at == "current" else state.anchor
        self._check_state(state)
        self._check_seq("q", q, state, self.dim_in)
        return self._map(weights, q.transpose(1, 2)).transpose(1, 2)

    @_state_precision
    def read_write(self, state: MemoryState, q: Tensor, k: Tensor, v: Tensor, lr: Tensor | float,
                   decay: Tensor | float | None = None, momentum: Tensor | float | None = None,
                   read: str = "token", impl: str = "chunk", validate: bool = True) -> tuple[Tensor, MemoryState]:
        """The sequence mixer's pass: write the T pairs and read ``q`` ``[B, T, H, Din]`` on the way.
        Returns ``(y [B, T, H, Dout], state)``.

        ``read="token"`` (the dual form): ``y_t = M_t(q_t)``, the state after writing tokens ≤ t, while
        the gradients of a chunk stay at its start state (NL eq. 90; Titans eqs. 16–17). The reads come
        out of the same chunk pass as the write (masked ``n × n`` products; write/README.md).
        ``read="chunk_start"``: ``y_t`` reads the state at the start of t's chunk (eq. 90 as printed,
        deviation D21): a position sees the earlier tokens of its own chunk only through what came before.
        """
        if read not in READS:
            raise ValueError(f"read must be one of {READS} (got {read!r})")
        if read == "chunk_start":
            outs = []
            for span in slices(spans(q.shape[1], [self.chunk_size], [state.offset])):
                lr_, decay_, mom_ = (g[:, span] if isinstance(g, Tensor) else g for g in (lr, decay, momentum))
                outs.append(self.read(state, q[:, span], at="chunk_start"))
                state = self.write(state, k[:, span], v[:, span], lr_, decay_, mom_, impl=impl, validate=validate)
            return torch.cat(outs, dim=1), state
        self._check_seq("q", q, state, self.dim_in)
        if q.shape[1] != k.shape[1]:
            raise ValueError(f"q has {q.shape[1]} tokens but k has {k.shape[1]}; read='token' reads at every write")
        state, y = self._run(state, k, v, lr, decay, momentum, impl, validate, q=q)
        return y.transpose(1, 2), state

    @_state_precision
    def write(self, state: MemoryState, k: Tensor, v: Tensor, lr: Tensor | float,
              decay: Tensor | float | None = None, momentum: Tensor | float | None = None,
              impl: str = "chunk", validate: bool = True) -> MemoryState:
        """Write T key→value pairs in context and return the new state.

        k ``[B, T, H, Din]``, v ``[B, T, H, Dout]``; ``lr`` (η), ``decay`` (α, retention; default 1)
        and ``momentum`` (β, required iff the memory has momentum) are ``[B, T, H]`` or floats.
        ``impl="reference"`` runs the token loop of ``write/naive.py`` with the same semantics.
        ``validate=False`` skips the one host sync (the finiteness check of the gates).
        """
        return self._run(state, k, v, lr, decay, momentum, impl, validate)[0]

    def _run(self, state, k, v, lr, decay, momentum, impl, validate, q=None):

        if impl not in ("chunk", "reference"):
            raise ValueError(f"impl must be 'chunk' or 'reference' (got {impl!r})")
        self._check_state(state)
        self._check_seq("k", k, state, self.dim_in)
        self._check_seq("v", v, state, self.dim_out)
        B, T, H, _ = k.shape
        if v.shape[:3] != k.shape[:3]:
            raise ValueError(f"v must be [B, T, H, {self.dim_out}] = [{B}, {T}, {H}, {self.dim_out}] "
                             f"like k (got {list(v.shape)})")
        ref = state.weights[0]
        eta = self._gate("lr", lr, k, ref, validate)
        alpha = self._gate("decay", 1.0 if decay is None else decay, k, ref, validate)
        if self.momentum and momentum is None:
            raise ValueError("momentum: this memory was built with momentum=True; pass momentum=[B, T, H]")
        if not self.momentum and momentum is not None:
            raise ValueError("momentum: this memory was built with momentum=False; build it with "
                             "momentum=True to pass a momentum gate")
        beta = None if momentum is None else self._gate("momentum", momentum, k, ref, validate)
        # Heads forward, made contiguous once so that every per-chunk matmul reads plain memory.
        k, v = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
        q = None if q is None else q.transpose(1, 2).contiguous()
        fn = write_chunked if impl == "chunk" else write_reference
        return fn(self, state, k, v, eta, alpha, beta, q)

    # ---- checks -------------------------------------------------------------------------------
    def _check_state(self, state: MemoryState) -> None:
        if not isinstance(state, MemoryState):
            raise ValueError(f"state must be a MemoryState from init_state (got {type(state).__name__})")
        shapes = [tuple(p.shape) for p in self.init]
        got = [tuple(w.shape[1:]) for w in state.weights]
        if got != shapes:
            raise ValueError(f"state weights must be [B, *{shapes}] for this memory (got {got})")
        if not 0 <= state.offset < self.chunk_size:
            raise ValueError(f"state.offset must be in [0, {self.chunk_size}) (got {state.offset})")

    def _check_seq(self, name: str, x: Tensor, state: MemoryState, dim: int) -> None:
        ref = state.weights[0]
        B = ref.shape[0]
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] != B or x.shape[2] != self.heads \
                or x.shape[3] != dim:
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be [B, T, H, D] = [{B}, T, {self.heads}, {dim}] (got {got})")
        if x.shape[1] == 0:
            raise ValueError(f"{name} has T = 0 tokens; write at least one token")
        if x.dtype != ref.dtype:
            raise ValueError(f"{name} has dtype {x.dtype} but the memory state is {ref.dtype}; "
                             f"cast one of them")
        if x.device != ref.device:
            raise ValueError(f"{name} is on {x.device} but the memory state is on {ref.device}")

    def _gate(self, name: str, g: Tensor | float, k: Tensor, ref: Tensor, validate: bool) -> Tensor:
        B, T, H, _ = k.shape
        if not isinstance(g, Tensor):
            if validate and not math.isfinite(float(g)):  # a Python number: no tensor round trip
                raise ValueError(f"{name} must be finite (got {g})")
            return torch.full((B, H, T), float(g), dtype=ref.dtype, device=ref.device)
        if tuple(g.shape) != (B, T, H):
            raise ValueError(f"{name} must be [B, T, H] = [{B}, {T}, {H}] (got {list(g.shape)})")
        if g.dtype != ref.dtype:
            raise ValueError(f"{name} has dtype {g.dtype} but the memory state is {ref.dtype}")
        if g.device != ref.device:
            raise ValueError(f"{name} is on {g.device} but the memory state is on {ref.device}")
        if validate and not bool(torch.isfinite(g).all()):
            raise ValueError(f"{name} contains NaN or inf; every gate value must be finite")
        return g.transpose(1, 2).contiguous()

    # ---- implemented by each kind -------------------------------------------------------------
    def _map(self, weights: tuple[Tensor, ...], x: Tensor) -> Tensor:
        """The map itself: x ``[B, H, T, Din]`` → ``[B, H, T, Dout]``."""
        raise NotImplementedError

    def _token_read(self, q: Tensor, step) -> Tensor:
        """The per-token read ``y_t = M_t(q_t)`` of one chunk, q ``[B, H, n, Din]``, composed from
        ``step(i, Q)``: matrix i advanced over the chunk, returning ``Q_t S_t`` for its per-token
        queries Q (every matrix is stepped exactly once, in order)."""
        raise NotImplementedError

    def _plan(self, anchor: tuple[Tensor, ...], k: Tensor, v: Tensor, eta: Tensor, alpha: Tensor):
        """The rule in chunk form: for each weight, ``(K, W, b, KS)`` for ``chunk.chunk_step``, where
        ``KS = K @ anchor`` if the rule computed it anyway (else ``None``). A weight whose batch has
        more heads than the gates (a grouped memory's per-memory weights, ``H·G``) gets each gate
        repeated ``G`` times (``ChunkGates.repeat_heads``)."""
        raise NotImplementedError
