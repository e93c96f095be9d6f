"""MAD's compression read-out (Poli et al. 2024): a sequence model as the encoder of an autoencoder.

The causal LM reads the whole sequence (its last token is the compression token); the final normed hidden
state at the last position is the sequence's code. A fixed-width MLP decodes every position from the code
plus that position's sinusoidal embedding, and an unembedding scores the vocabulary:

    c = norm(x_T)                                        (the LM's final norm at the last position)
    logits_t = U(g(g(c + p_t)))   with g(y) = GELU(W · rmsnorm(y)), U(y) = W_U · rmsnorm(y)

so everything the decoder knows about the sequence must pass through one d-wide vector. The LM runs as it
always does, its in-context learning included (HOPE's CMS levels learn from the LM's own next-token loss
while they read); its logits are not used. The interface is the LM's: ``logits, loss, state = model(ids,
targets)``, with logits ``[B, T, V]`` for the T positions to reconstruct.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..modules import RMSNorm
from .lm import CausalLM
from .state import cross_entropy


def sincos(length: int, dim: int) -> Tensor:
    """Fixed sinusoidal position embeddings ``[length, dim]`` (sin on the first half, cos on the second)."""
    half = dim // 2
    freq = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / max(1, half - 1))
    angle = torch.arange(length, dtype=torch.float32)[:, None] * freq[None]
    out = torch.zeros(length, dim)
    out[:, :half], out[:, half:2 * half] = angle.sin(), angle.cos()
    return out


class LastTokenAutoencoder(nn.Module):
    def __init__(self, lm: CausalLM, max_len: int | None = None):
        super().__init__()
        self.lm, d = lm, lm.cfg.dim
        self.decoder = nn.Sequential(RMSNorm(d), nn.Linear(d, d), nn.GELU(), RMSNorm(d), nn.Linear(d, d), nn.GELU())
        self.unembed = nn.Sequential(RMSNorm(d), nn.Linear(d, lm.cfg.vocab_size))
        self.register_buffer("positions", sincos(max_len or lm.cfg.max_seq_len, d), persistent=False)
        self._code: Tensor | None = None
        lm.norm.register_forward_hook(self._keep_last)

    def _keep_last(self, module, args, out: Tensor) -> None:
        self._code = out[:, -1]  # the LM's final norm runs once per segment; the last call ends the sequence

    @property
    def cfg(self):
        return self.lm.cfg

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, ids: Tensor, targets: Tensor | None = None, state=None):
        T = ids.shape[1]
        if T > self.positions.shape[0]:
            raise ValueError(f"sequence of {T} tokens is longer than the decoder's {self.positions.shape[0]} positions")
        self.lm(ids, state=state)
        code, self._code = self._code, None
        logits = self.unembed(self.decoder(code[:, None] + self.positions[:T].to(code.dtype)))
        loss = None if targets is None else cross_entropy(logits, targets, reduction="mean")
        return logits, loss, None


__all__ = ["LastTokenAutoencoder", "sincos"]
