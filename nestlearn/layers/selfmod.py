"""Self-modifying Titans (NL §8.1–8.2, eqs. 83–93): memories that generate their own keys, values,
learning rates, retention gates and targets, written in context with DGD.

Per head, with x the (conv-ed, channel-mixed) input, gradients at the start of each chunk (NL eq. 90):

    k = M_k(x), v = M_v(x), η = M_η(x), α = M_α(x), q = x W_q          (eq. 83; q adaptive optionally)
    v̂_□ = M_□(v)                                                       (eq. 84, each memory's own target)
    M_□ ← M_□(α I − η k kᵀ) − η ∇L(M_□; k, v̂_□),  □ ∈ {k, v, q, η, α, memory}   (eq. 88)
    o_t = M_memory,t(q_t)   (read="token": the state after writing tokens ≤ t, the dual form)

The generator memories M_k, M_v, M_η, M_α (and their targets) are read at the start of their chunk:
their reads are the keys and gates that parametrize the chunk's write, so a per-token read would make
the chunk a sequential nonlinear recurrence (deviation D22). ``read="chunk_start"`` reads M_memory at
the chunk start too (eq. 90 as printed, D21). The token is mixed across channels before it is split
into heads, so every head's memories map the whole token (D23). η and α are per-head scalars read out
of M_η(x), M_α(x) (η_max·sigmoid, deviation D20; sigmoid). The non-output memories are one grouped
``Memory`` (``MLPMemory(groups=…)``): they share their input, their targets' input and their key and
gates, so one product reads all of them and one write per chunk updates all of them. Two chunk sizes:
one for ``M_memory``, one for the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..memory import LR_BOUND, READS, LinearMemory, MemoryState, MLPMemory, spans, stable_eta_max
from ..memory.mlp import STEPS as MLP_STEPS
from ..modules import RMSNorm, ShortConv


@dataclass
class SelfModConfig:
    """Self-modifying Titans. Every row of the paper's ablation (Table 6) is a switch here."""

    heads: int = 4
    memory: str = "mlp"  # "mlp" (x + W1 σ(W2 x), eq. 89) or "linear"
    hidden_mult: int = 1  # MLP memory hidden = hidden_mult · head_dim (the paper gives no width)
    rule: str = "dgd"  # "gd" = the ablation "w/o DGD"
    momentum: bool = True  # False = "w/o Momentum"
    # β = momentum_max · sigmoid(·) (deviation D30): a repeated gradient accumulates to a step of up to η/(1 − β), so
    # a bound below 1 keeps momentum from undoing η's bound (D20) by at most 1/(1 − momentum_max); 1: unbounded
    momentum_max: float = 1.0
    weight_decay: bool = True  # False = "w/o weight decay" (α = 1)
    adaptive_k: bool = True  # False = "w/o inner-projection k" (plain projection)
    adaptive_v: bool = True  # False = "w/o inner-projection v"
    adaptive_q: bool = False  # the paper's default: q is the only non-adaptive projection
    chunk_size: int = 16  # M_memory's chunk
    chunk_size_other: int = 8  # the other memories' chunk
    conv_width: int = 4
    read: str = "token"  # M_memory's output: "token" (dual form) or "chunk_start" (eq. 90 as printed, D21)
    mix_input: bool = True  # mix channels before the per-head memories (each maps the whole token, D23)
    step: str = "proximal"  # the MLP memories' gradient step: "proximal" (D27) or "plain" (eq. 88 as printed)
    eta_scale: float | None = None  # the initial η, below eta_max; None: eta_max / 2
    eta_max: float | None = None  # η = eta_max · sigmoid(·), in (0, 2]; None: stable_eta_max(larger chunk) (D20)
    alpha_init: float = 0.995  # initial retention α

    def validate(self, dim: int) -> None:
        if dim % self.heads:
            raise ValueError(f"selfmod.heads must divide model.dim (got dim={dim}, heads={self.heads})")
        if self.memory not in ("mlp", "linear"):
            raise ValueError(f"selfmod.memory must be 'mlp' or 'linear' (got {self.memory!r})")
        for name in ("chunk_size", "chunk_size_other", "conv_width", "hidden_mult"):
            if getattr(self, name) < 1:
                raise ValueError(f"selfmod.{name} must be a positive int (got {getattr(self, name)})")
        if self.read not in READS:
            raise ValueError(f"selfmod.read must be one of {READS} (got {self.read!r})")
        if self.step not in MLP_STEPS:
            raise ValueError(f"selfmod.step must be one of {MLP_STEPS} (got {self.step!r})")
        eta_max = self.resolved_eta_max()
        if not 0 < eta_max <= LR_BOUND:
            raise ValueError(f"selfmod.eta_max must be in (0, {LR_BOUND}] (got {eta_max}): past "
                             f"{LR_BOUND} the DGD factor αI − ηkkᵀ has an eigenvalue α − η < −1 along a unit "
                             f"key for every α ≤ 1, so a write expands the memory")
        if self.eta_scale is not None and not 0 < self.eta_scale < eta_max:
            raise ValueError(f"selfmod.eta_scale (the initial η) must be in (0, eta_max = {eta_max:.6g}) "
                             f"(got {self.eta_scale})")
        if not 0.0 < self.momentum_max <= 1.0:
            raise ValueError(f"selfmod.momentum_max must be in (0, 1] (got {self.momentum_max}): the momentum gate "
                             f"is β = momentum_max · sigmoid(·), and 1 leaves it unbounded")
        if not 0.0 < self.alpha_init < 1.0:
            raise ValueError(f"selfmod.alpha_init must be in (0, 1) (got {self.alpha_init})")

    def resolved_eta_max(self) -> float:
        return stable_eta_max(max(self.chunk_size, self.chunk_size_other)) if self.eta_max is None else self.eta_max


class SelfModState(NamedTuple):
    conv: Tensor
    group: MemoryState  # M_k, M_v, (M_q), M_η, M_α
    memory: MemoryState  # M_memory


def _make_memory(cfg: SelfModConfig, heads: int, dim: int, chunk: int, groups: int = 1):
    """``groups`` memories per head that share keys and gates, their reads side by side ``[…, groups·dim]``."""
    if cfg.memory == "mlp":
        return MLPMemory(heads, dim, cfg.hidden_mult * dim, rule=cfg.rule, chunk_size=chunk,
                         momentum=cfg.momentum, groups=groups, step=cfg.step)
    # a matrix memory with ``groups·dim`` outputs is exactly ``groups`` memories that share their keys
    mem = LinearMemory(heads, dim, groups * dim, rule=cfg.rule, chunk_size=chunk, momentum=cfg.momentum)
    with torch.no_grad():  # start as the identity so that self-generated targets M(v) are not zero
        eye = torch.eye(dim).repeat(1, groups).expand(heads, dim, groups * dim)
        mem.init[0].copy_(eye + 0.02 * torch.randn(heads, dim, groups * dim))
    return mem


class SelfModifyingTitans(nn.Module):
    def __init__(self, dim: int, cfg: SelfModConfig):
        super().__init__()
        cfg.validate(dim)
        self.cfg, self.dim = cfg, dim
        H, Dh = cfg.heads, dim // cfg.heads
        self.heads, self.head_dim = H, Dh
        self.conv = ShortConv(dim, cfg.conv_width)
        # deviation D23: channel mixing, so that every head's memories see the whole token
        self.mix = nn.Linear(dim, dim, bias=False) if cfg.mix_input else None
        self.names = [n for n in ("k", "v", "q") if getattr(cfg, f"adaptive_{n}")] + ["eta", "alpha"]
        self.static = nn.ModuleDict({n: nn.Linear(dim, dim, bias=False)
                                     for n in ("k", "v", "q") if not getattr(cfg, f"adaptive_{n}")})
        # M_k, M_v, (M_q), M_η, M_α read the same x, target their reads of the same v and write the same
        # key with the same gates: one grouped memory, written once per chunk for all of them
        self.group = _make_memory(cfg, H, Dh, cfg.chunk_size_other, groups=len(self.names))
        self.memory = _make_memory(cfg, H, Dh, cfg.chunk_size)
        self.eta_read = nn.Parameter(torch.randn(H, Dh) * Dh ** -0.5 * 0.1)
        # deviation D20: η = η_max · sigmoid(·), bounded so that the write's factor αI − ηkkᵀ contracts
        self.eta_max = cfg.resolved_eta_max()
        eta0 = self.eta_max / 2 if cfg.eta_scale is None else cfg.eta_scale
        self.eta_bias = nn.Parameter(torch.full((H,), math.log(eta0 / (self.eta_max - eta0))))
        self.alpha_read = nn.Parameter(torch.randn(H, Dh) * Dh ** -0.5 * 0.1)
        self.alpha_bias = nn.Parameter(torch.full((H,), math.log(cfg.alpha_init / (1 - cfg.alpha_init))))
        self.beta_proj = nn.Linear(dim, H) if cfg.momentum else None
        self.out_norm = RMSNorm(Dh)
        self.gate = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def _step(self, gs, ms, x, static, beta):
        """One segment of n tokens inside both memories' current chunks: read, then write."""
        B, n = x.shape[:2]
        H, Dh, G = self.heads, self.head_dim, len(self.names)
        read = self.group.read(gs, x, at="chunk_start").view(B, n, H, G, Dh)
        gen = {name: read[:, :, :, i] for i, name in enumerate(self.names)}
        k = F.normalize(gen["k"] if "k" in gen else static["k"], dim=-1)
        v = F.normalize(gen["v"] if "v" in gen else static["v"], dim=-1)  # deviation D9
        q = F.normalize(gen["q"] if "q" in gen else static["q"], dim=-1)
        eta = torch.sigmoid((gen["eta"] * self.eta_read).sum(-1) + self.eta_bias) * self.eta_max
        if self.cfg.weight_decay:
            alpha = torch.sigmoid((gen["alpha"] * self.alpha_read).sum(-1) + self.alpha_bias)
        else:
            alpha = torch.ones_like(eta)
        # NL eq. 84: each memory's own target; constant inside its inner loss (deviation D6), so it is
        # read where the inner gradient is taken: at the chunk start (NL eq. 90)
        vhat_g = self.group.read(gs, v, at="chunk_start")
        if self.cfg.read == "token":  # o_t = M_memory,t(q_t): the state after writing tokens ≤ t
            vhat_m = self.memory.read(ms, v, at="chunk_start")
            o, ms = self.memory.read_write(ms, q, k, vhat_m, eta, alpha, beta, validate=False)
        else:  # deviation D21: one read of M_memory at the chunk start for its target M(v) and its output M(q)
            vhat_m, o = self.memory.read(ms, torch.cat([v, q], dim=1), at="chunk_start").split(n, dim=1)
            ms = self.memory.write(ms, k, vhat_m, eta, alpha, beta, validate=False)
        gs = self.group.write(gs, k, vhat_g, eta, alpha, beta, validate=False)
        return o, gs, ms

    def init_state(self, batch_size: int, ref: Tensor) -> SelfModState:
        conv = ref.new_zeros(batch_size, self.cfg.conv_width - 1, self.dim)
        return SelfModState(conv, self.group.init_state(batch_size), self.memory.init_state(batch_size))

    def forward(self, x: Tensor, state: SelfModState | None = None) -> tuple[Tensor, SelfModState]:
        B, T, _ = x.shape
        H, Dh = self.heads, self.head_dim
        if state is None:
            state = self.init_state(B, x)
        xc, conv = self.conv(x, state.conv)
        xh = (xc if self.mix is None else self.mix(xc)).view(B, T, H, Dh)
        static = {n: lin(xc).view(B, T, H, Dh) for n, lin in self.static.items()}
        beta_all = None
        if self.beta_proj is not None:  # deviation D30: β ≤ momentum_max (1: the sigmoid alone, as before)
            beta_all = torch.sigmoid(self.beta_proj(xc))
            if self.cfg.momentum_max < 1.0:
                beta_all = beta_all * self.cfg.momentum_max
        gs, ms = state.group, state.memory
        # pieces end where either memory's chunk ends (absolute positions); split once, so that the
        # backward joins the pieces' gradients once instead of padding each slice to the full length
        sizes = spans(T, [self.group.chunk_size, self.memory.chunk_size], [gs.offset, ms.offset])
        pieces = lambda t: [None] * len(sizes) if t is None else t.split(sizes, dim=1)  # noqa: E731
        statics = {name: pieces(t) for name, t in static.items()}
        outs = []
        for i, (x_i, beta_i) in enumerate(zip(pieces(xh), pieces(beta_all), strict=True)):
            o, gs, ms = self._step(gs, ms, x_i, {name: t[i] for name, t in statics.items()}, beta_i)
            outs.append(o)
        o = self.out_norm(torch.cat(outs, dim=1)).reshape(B, T, self.dim)
        y = self.proj(o * F.silu(self.gate(xc)))
        return y, SelfModState(conv, gs, ms)
