"""Titans' neural long-term memory (Titans §3–4) as a sequence mixer: the LMM layer.

    q, k, v = conv(silu(x W_q)), conv(silu(x W_k)), conv(silu(x W_v));  q, k ℓ2-normalised
    S_t = β_t S_{t−1} − θ_t ∇ℓ(M₀; k_t, v_t),   M_t = α_t M_{t−1} + S_t        (Titans eq. 13–14)
    y_t = M_t(q_t)  (read="token", Titans eqs. 16–17's dual form; "chunk_start" reads M₀, D21)

with a deep (2-layer residual MLP) memory, data-dependent θ (lr), α (retention = 1 − forget) and β
(momentum), persistent memory tokens prepended at the start of a sequence (Titans eq. 19), and
output norm + gate before the output projection (Titans §4.4). The chunked write is the memory
core's (``rule="gd"`` with momentum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..memory import LR_BOUND, READS, MemoryState, MLPMemory, stable_eta_max
from ..memory.mlp import STEPS as MLP_STEPS
from ..memory.schedule import slices, spans_at
from ..modules import RMSNorm, ShortConv
from .attention import Attention, KVCache


@dataclass
class TitansConfig:
    heads: int = 4
    hidden_mult: int = 2  # memory MLP hidden = hidden_mult · head_dim
    chunk_size: int = 16
    persistent_tokens: int = 4
    max_lr: float | None = None  # θ_t = max_lr · sigmoid(·), in (0, 2]; None: stable_eta_max(chunk_size) (D26)
    conv_width: int = 4
    window: int = 64  # sliding window of the attention branch (MAG, MAL)
    read: str = "token"  # the LMM's read (LMM, MAG, MAL): "token" or "chunk_start" (D21); MAC reads per segment
    step: str = "proximal"  # the memory's gradient step: "proximal" (D27) or "plain" (Titans eq. 13 as printed)
    weight_decay: bool = True  # False = Titans Table 5's "w/o Weight Decay": α = 1, the memory never forgets

    def validate(self, dim: int) -> None:
        if self.read not in READS:
            raise ValueError(f"titans.read must be one of {READS} (got {self.read!r})")
        if self.step not in MLP_STEPS:
            raise ValueError(f"titans.step must be one of {MLP_STEPS} (got {self.step!r})")
        if dim % self.heads:
            raise ValueError(f"titans.heads must divide model.dim (got dim={dim}, heads={self.heads})")
        for name in ("chunk_size", "conv_width", "hidden_mult", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"titans.{name} must be a positive int (got {getattr(self, name)})")
        if self.persistent_tokens < 0:
            raise ValueError(f"titans.persistent_tokens must be ≥ 0 (got {self.persistent_tokens})")
        if not 0 < self.resolved_max_lr() <= LR_BOUND:  # after chunk_size: the default bound divides by it
            raise ValueError(f"titans.max_lr must be in (0, {LR_BOUND:g}] or None (got {self.max_lr}): past "
                             f"{LR_BOUND:g} one step along a unit key overshoots its target by more than the error "
                             f"it corrects")

    def resolved_max_lr(self) -> float:
        return stable_eta_max(self.chunk_size) if self.max_lr is None else self.max_lr

    def retention(self, g_forget: Tensor) -> Tensor:
        """The memory's α = 1 − σ(forget gate), or 1 everywhere without weight decay."""
        return 1 - torch.sigmoid(g_forget) if self.weight_decay else torch.ones_like(g_forget)


class TitansState(NamedTuple):
    conv: Tensor
    memory: MemoryState


class ConvQKV(nn.Module):
    """The projections shared by the LMM and the delta-rule mixer: ``q, k, v = conv(silu(x W))``
    per head, with q and k ℓ2-normalised."""

    def __init__(self, dim: int, cfg: TitansConfig):  # or a DeltaConfig: heads, conv_width, validate
        super().__init__()
        cfg.validate(dim)
        self.cfg = cfg
        self.dim, self.heads, self.head_dim, self.conv_width = dim, cfg.heads, dim // cfg.heads, cfg.conv_width
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.conv = ShortConv(3 * dim, cfg.conv_width)

    def blank_conv(self, batch_size: int, ref: Tensor) -> Tensor:
        return ref.new_zeros(batch_size, self.conv_width - 1, 3 * self.dim)

    def project(self, x: Tensor, conv_state: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        B, T, _ = x.shape
        qkv, conv_state = self.conv(F.silu(self.qkv(x)), conv_state)
        q, k, v = qkv.view(B, T, 3, self.heads, self.head_dim).unbind(2)
        return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, conv_state

    def output(self, o: Tensor, x: Tensor) -> Tensor:
        """The memory's read ``o`` ``[B, T, H, Dh]`` through the output norm, the gate of ``x`` and the
        projection (Titans §4.4)."""
        return self.proj(self.out_norm(o).reshape(*x.shape[:2], self.dim) * F.silu(self.gate(x)))


class TitansLMM(ConvQKV):
    def __init__(self, dim: int, cfg: TitansConfig):
        super().__init__(dim, cfg)
        H, Dh = self.heads, self.head_dim
        self.persistent = nn.Parameter(torch.randn(cfg.persistent_tokens, dim) * 0.02)
        self.gates = nn.Linear(dim, 3 * H)  # θ (lr), forget, β (momentum)
        with torch.no_grad():
            self.gates.bias.copy_(torch.cat([torch.zeros(H), torch.full((H,), -4.0), torch.zeros(H)]))
        self.memory = MLPMemory(H, Dh, cfg.hidden_mult * Dh, rule="gd", chunk_size=cfg.chunk_size, momentum=True,
                                step=cfg.step)
        self.out_norm = RMSNorm(Dh)
        self.gate = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def init_state(self, batch_size: int, ref: Tensor) -> TitansState:  # deviation D13
        """A fresh sequence: Titans eq. 19's learnable, data-independent tokens come first; they are
        written into the memory here and their outputs dropped."""
        blank = TitansState(self.blank_conv(batch_size, ref), self.memory.init_state(batch_size))
        if self.cfg.persistent_tokens == 0:
            return blank
        prefix = self.persistent.unsqueeze(0).expand(batch_size, -1, -1).to(ref.dtype)
        return self(prefix, blank)[1]

    def forward(self, x: Tensor, state: TitansState | None = None) -> tuple[Tensor, TitansState]:
        B, T, _ = x.shape
        H = self.heads
        if state is None:
            state = self.init_state(B, x)
        q, k, v, conv = self.project(x, state.conv)
        g_lr, g_forget, g_mom = self.gates(x).view(B, T, 3, H).unbind(2)
        lr = self.cfg.resolved_max_lr() * torch.sigmoid(g_lr)
        alpha = self.cfg.retention(g_forget)
        beta = torch.sigmoid(g_mom)
        o, ms = self.memory.read_write(state.memory, q, k, v, lr, alpha, beta, read=self.cfg.read, validate=False)
        return self.output(o, x), TitansState(conv, ms)


class MACState(NamedTuple):
    conv: Tensor
    memory: MemoryState
    k: Tensor  # attention keys of the current segment so far: retrieved h_j and inputs x_j, [B, 2m, H, D]
    v: Tensor
    pos: int


class TitansMAC(nn.Module):
    """Memory as Context (Titans eqs. 21–25), causal.

    The sequence is cut into segments of ``chunk_size`` tokens (absolute positions). In a segment,
    ``h_t = M*(q_t)`` is retrieved from the memory as it was at the segment start; position ``i``
    attends to the persistent tokens and to ``h_j, x_j`` for ``j ≤ i`` of its segment (the paper's
    ``[p] ‖ h ‖ S`` with a causal mask: deviation D14); the attention output ``y`` is written into
    the memory, and ``o = y ⊗ σ(M*(y))`` with the segment-start memory.
    """

    def __init__(self, dim: int, attn_heads: int, cfg: TitansConfig):
        super().__init__()
        cfg.validate(dim)
        if dim % attn_heads:
            raise ValueError(f"model.heads must divide model.dim (got dim={dim}, heads={attn_heads})")
        self.cfg, self.dim = cfg, dim
        self.mh, self.md = cfg.heads, dim // cfg.heads
        self.ah, self.ad = attn_heads, dim // attn_heads
        self.persistent = nn.Parameter(torch.randn(cfg.persistent_tokens, dim) * 0.02)
        self.q_mem = nn.Linear(dim, dim, bias=False)
        self.conv = ShortConv(dim, cfg.conv_width)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_proj = nn.Linear(dim, dim, bias=False)
        self.kv_mem = nn.Linear(dim, 2 * dim, bias=False)
        self.gates = nn.Linear(dim, 3 * self.mh)
        with torch.no_grad():
            self.gates.bias.copy_(torch.cat([torch.zeros(self.mh), torch.full((self.mh,), -4.0),
                                             torch.zeros(self.mh)]))
        self.memory = MLPMemory(self.mh, self.md, cfg.hidden_mult * self.md, rule="gd", chunk_size=cfg.chunk_size,
                                momentum=True, step=cfg.step)
        self.out_norm = RMSNorm(dim)
        self.proj = nn.Linear(dim, dim, bias=False)

    def init_state(self, batch_size: int, ref: Tensor) -> MACState:
        empty = ref.new_zeros(batch_size, 0, self.ah, self.ad)
        return MACState(ref.new_zeros(batch_size, self.cfg.conv_width - 1, self.dim),
                        self.memory.init_state(batch_size), empty, empty, 0)

    def _heads(self, x: Tensor, h: int) -> Tensor:
        return x.view(*x.shape[:2], h, -1)

    def forward(self, x: Tensor, state: MACState | None = None) -> tuple[Tensor, MACState]:
        B, T, _ = x.shape
        state = self.init_state(B, x) if state is None else state
        C = self.cfg.chunk_size
        xc, conv = self.conv(x, state.conv)
        qm = F.normalize(self._heads(F.silu(self.q_mem(xc)), self.mh), dim=-1)
        ms, ck, cv, pos = state.memory, state.k, state.v, state.pos
        P = self.persistent.unsqueeze(0).expand(B, -1, -1).to(x.dtype)
        _, kp, vp = (self._heads(t, self.ah) for t in self.qkv(P).chunk(3, dim=-1))
        outs = []
        for span in slices(spans_at(pos, T, C)):
            n = span.stop - span.start
            if pos % C == 0:  # a new segment: its context starts empty
                ck, cv = ck[:, :0], cv[:, :0]
            h = self.memory.read(ms, qm[:, span], at="chunk_start").reshape(B, n, self.dim)
            q, kx, vx = (self._heads(t, self.ah) for t in self.qkv(x[:, span]).chunk(3, dim=-1))
            _, kh, vh = (self._heads(t, self.ah) for t in self.qkv(h).chunk(3, dim=-1))
            K = torch.cat([kp, ck, kh, kx], dim=1)
            V = torch.cat([vp, cv, vh, vx], dim=1)
            causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            mask = torch.cat([torch.ones(n, kp.shape[1] + ck.shape[1], dtype=torch.bool, device=x.device),
                              causal, causal], dim=1)
            y = F.scaled_dot_product_attention(q.transpose(1, 2), K.transpose(1, 2), V.transpose(1, 2),
                                               attn_mask=mask)
            y = self.attn_proj(y.transpose(1, 2).reshape(B, n, self.dim))
            # write the attention output into the memory (Titans eq. 24)
            kw, vw = (self._heads(F.silu(t), self.mh) for t in self.kv_mem(y).chunk(2, dim=-1))
            g_lr, g_forget, g_mom = self.gates(y).view(B, n, 3, self.mh).unbind(2)
            read_y = self.memory.read(ms, F.normalize(kw, dim=-1), at="chunk_start").reshape(B, n, self.dim)
            ms = self.memory.write(ms, F.normalize(kw, dim=-1), vw, self.cfg.resolved_max_lr() * torch.sigmoid(g_lr),
                                   self.cfg.retention(g_forget), torch.sigmoid(g_mom), validate=False)
            outs.append(y * torch.sigmoid(self.out_norm(read_y)))  # o = y ⊗ M*(y) (eq. 25)
            ck, cv = torch.cat([ck, kh, kx], dim=1), torch.cat([cv, vh, vx], dim=1)
            pos += n
        return self.proj(torch.cat(outs, dim=1)), MACState(conv, ms, ck, cv, pos)


class HybridState(NamedTuple):
    memory: TitansState
    attention: KVCache


class _Hybrid(nn.Module):
    """The LMM beside a sliding-window attention whose prefix is the LMM's persistent tokens under the
    block's pre-norm; called with the residual stream and that norm (``models/blocks.py``)."""

    takes_residual = True

    def __init__(self, dim: int, heads: int, max_seq_len: int, cfg: TitansConfig):
        super().__init__()
        self.memory = TitansLMM(dim, cfg)
        self.attn = Attention(dim, heads, max_seq_len, cfg.window)
        self.norm_mid = RMSNorm(dim)

    def init_state(self, batch_size: int, ref: Tensor) -> HybridState:
        return HybridState(self.memory.init_state(batch_size, ref), self.attn.init_state(batch_size, ref))


class TitansMAG(_Hybrid):
    """Memory as Gate (Titans eqs. 26–28): ``x + norm(SWA(n)) ⊙ σ(norm(LMM(n)))``, ``n = norm₁ x``; the
    attention sees the persistent tokens as a prefix (eq. 26)."""

    def __init__(self, dim: int, heads: int, max_seq_len: int, cfg: TitansConfig):
        super().__init__(dim, heads, max_seq_len, cfg)
        self.norm_mem = RMSNorm(dim)

    def forward(self, x: Tensor, state: HybridState, norm: nn.Module) -> tuple[Tensor, HybridState]:
        n = norm(x)
        a, s_attn = self.attn(n, state.attention, prefix=norm(self.memory.persistent))
        m, s_mem = self.memory(n, state.memory)
        return self.norm_mid(a) * torch.sigmoid(self.norm_mem(m)), HybridState(s_mem, s_attn)


class TitansMAL(_Hybrid):
    """Memory as Layer (Titans eqs. 29–31): ``x₁ = x + LMM(norm₁ x)``, then ``x₁ + SWA(norm x₁)`` with the
    persistent tokens as the attention's prefix (eq. 29); returns what is added to ``x``."""

    def forward(self, x: Tensor, state: HybridState, norm: nn.Module) -> tuple[Tensor, HybridState]:
        h, s_mem = self.memory(norm(x), state.memory)
        a, s_attn = self.attn(self.norm_mid(x + h), state.attention, prefix=self.norm_mid(self.memory.persistent))
        return h + a, HybridState(s_mem, s_attn)
