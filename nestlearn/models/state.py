"""What a model carries between calls, and the loss every part of the model package computes."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class ModelState(NamedTuple):
    """Everything a model carries between calls (see docs/STATE.md).

    blocks:  per block, a ``BlockState(mixer, mlp)`` (the MLP's is a ``CMSState`` or None), as of
             absolute position ``pos``.
    pos:     tokens committed into ``blocks``.
    pending: token ids seen after ``pos`` whose CMS segment is not complete ([B, n], n may be 0);
             they are replayed from ``blocks`` by the call that completes the segment.
    cursor:  inference only: the blocks' states after ``pending`` (or None), so that a call whose tokens
             stay inside the pending segment runs only its own tokens (a decoded token costs one
             token's forward); never saved, rebuilt by the next replay.
    """

    blocks: tuple
    pos: int
    pending: Tensor
    cursor: tuple | None = None


def cross_entropy(logits: Tensor, targets: Tensor, reduction: str) -> Tensor:
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction=reduction)
