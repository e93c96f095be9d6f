"""One causal language model whose blocks can be any architecture the paper compares.

    logits, loss, state = model(ids, targets=None, state=None)

The blocks are compositions of a sequence mixer and an MLP (``blocks.py``: ``x + mixer(norm x)``, then
``x + mlp(norm x)``); ``cfg.block`` names one of them.

In-context CMS learning needs the task loss, so the model drives it through ``icl.py`` (the
segments, the inner gradient and the levels' steps; see there). Pieces with the carried state equal
one call, and generation equals a full forward, with every in-context write on.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from ..layers import CMS
from ..modules import RMSNorm
from .blocks import Block, BlockState
from .config import ModelConfig
from .icl import forward_in_context
from .state import ModelState, cross_entropy


class CausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        nn.init.normal_(self.embed.weight, std=cfg.dim ** -0.5)
        self.blocks = nn.ModuleList(Block(cfg.for_layer(i)) for i in range(cfg.layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        cms = [b.mlp for b in self.blocks if b.learns_in_context]
        chunks = [lv.chunk_size for c in cms for lv in c.cfg.levels if CMS.learns(lv)]
        self.segment = min(chunks) if chunks else 0  # 0: no in-context CMS learning
        self.recompute_segments = False  # training: in-context segments run again in the backward (icl.py) …
        self.recompute_group = 1  # … this many at a time
        # under DDP's static graph (train/distributed.py): the recompute layout of the first training forward,
        # which every later one must repeat (None: not under a static graph; () : not recorded yet)
        self.static_layout: tuple | None = None
        self._warned: set = set()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def activation_checkpointing(self, enable: bool = True, unit: str = "auto", group: int = 2) -> CausalLM:
        """Recompute in the backward instead of keeping activations: the same gradients for less memory and
        about one more forward (benchmarks/results/activation_memory.md).

        ``unit="segment"`` (a model whose CMS learns in context) recomputes each in-context segment whole (its
        forward, inner gradient and level steps; ``icl.py``), keeping only the state at each segment's start;
        ``"block"`` recomputes each block (``Block``: a CMS block its mixer alone); ``group`` segments are
        recomputed together (fewer saved states, a larger graph in the backward: 2 kept the least at the
        ``small`` preset, 1,357 MB against 1,974 with 1, 1,430 with 3 and 1,448 with 4). ``"auto"``: segments
        for a model that learns in context, blocks otherwise. A recomputed segment runs a backward inside the
        backward (reentrant), so a parameter's gradient hook fires once per node: under DDP the Trainer's wrapper
        uses a static graph, and every training step must then recompute the same nodes (a fixed sequence
        length and start position; another layout is refused, ``icl._check_static``)."""
        if unit not in ("auto", "segment", "block"):
            raise ValueError(f"unit must be 'auto', 'segment' or 'block' (got {unit!r})")
        if not isinstance(group, int) or group < 1:
            raise ValueError(f"group (segments recomputed together) must be an int ≥ 1 (got {group!r})")
        if unit == "segment" and enable and not self.segment:
            raise ValueError("unit='segment' needs a model whose CMS learns in context (it has no segments); "
                             "use 'block' or 'auto'")
        if unit == "auto":
            unit = "segment" if self.segment else "block"
        self.recompute_segments, self.recompute_group = enable and unit == "segment", group
        for block in self.blocks:
            block.recompute = enable and unit == "block"
        return self

    @property
    def gradient_checkpointing(self) -> bool:
        """Whether anything recomputes (transformers' switch: ``gradient_checkpointing_enable`` sets this)."""
        return self.recompute_segments or any(b.recompute for b in self.blocks)

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, enable: bool) -> None:
        self.activation_checkpointing(enable)

    # ---- state ---------------------------------------------------------------------------------
    def init_state(self, batch_size: int) -> ModelState:
        ref = self.embed.weight
        blocks = tuple(b.init_state(batch_size, ref) for b in self.blocks)
        return ModelState(blocks, 0, torch.zeros(batch_size, 0, dtype=torch.long, device=ref.device))

    def new_sequence_state(self, state: ModelState) -> ModelState:
        """The state for the next sequence: mixers start afresh, CMS levels follow their ``reset``
        policy (``persistent`` levels keep what they learned)."""
        fresh = self.init_state(state.pending.shape[0])
        blocks = []
        for b, old, new in zip(self.blocks, state.blocks, fresh.blocks, strict=True):
            blocks.append(BlockState(new.mixer, b.mlp.reset_for_new_sequence(old.mlp) if b.learns_in_context else None))
        return ModelState(tuple(blocks), 0, fresh.pending)

    # ---- forward -------------------------------------------------------------------------------
    def _check(self, ids: Tensor, targets: Tensor | None, state: ModelState | None) -> None:
        if not isinstance(ids, Tensor) or ids.dtype != torch.long or ids.dim() != 2:
            got = f"{ids.dtype} {list(ids.shape)}" if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(f"ids must be a LongTensor [B, T] (got {got})")
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ValueError(f"ids is empty (shape {list(ids.shape)}); pass at least one token per row")
        lo, hi = torch.aminmax(ids)
        bad = f"token ids must be in [0, {self.cfg.vocab_size}) for vocab_size={self.cfg.vocab_size}"
        if ids.device.type != "cpu":  # no host sync per call (a decode loop would wait on every token)
            torch._assert_async((lo >= 0) & (hi < self.cfg.vocab_size), bad)
        elif lo < 0 or hi >= self.cfg.vocab_size:
            raise ValueError(f"{bad} (got min {int(lo)}, max {int(hi)})")
        if targets is not None and targets.shape != ids.shape:
            raise ValueError(f"targets must have the shape of ids {list(ids.shape)} (got {list(targets.shape)})")
        if state is not None:
            if not isinstance(state, ModelState) or len(state.blocks) != len(self.blocks):
                raise ValueError(f"state does not belong to this model (expected a ModelState with "
                                 f"{len(self.blocks)} blocks)")
            if state.pending.shape[0] != ids.shape[0]:
                raise ValueError(f"state was made for batch size {state.pending.shape[0]} but ids has "
                                 f"batch size {ids.shape[0]}")

    def _run(self, ids: Tensor, blocks: tuple, traces: list[list] | None = None) -> tuple[Tensor, tuple]:
        """The blocks over ``ids`` from their states; ``traces`` (one list per block) receive the CMS
        activations of this forward, for the in-context learning driver."""
        x = self.embed(ids)
        new = []
        for i, (block, s) in enumerate(zip(self.blocks, blocks, strict=True)):
            x, s = block(x, s) if traces is None else block(x, s, trace=traces[i])
            new.append(s)
        return self.head(self.norm(x)), tuple(new)

    def forward(self, ids: Tensor, targets: Tensor | None = None, state: ModelState | None = None):
        self._check(ids, targets, state)
        if targets is not None and state is None:
            self._warn_idle_levels(ids.shape[1])
        if state is None:  # blocks build their own fresh state inside their forward (FSDP2: see Block.own_state)
            state = ModelState((None,) * len(self.blocks), 0, ids.new_zeros(ids.shape[0], 0))
        if self.segment == 0:
            logits, blocks = self._run(ids, state.blocks)
            new = ModelState(blocks, state.pos + ids.shape[1], state.pending)
        else:
            logits, new = forward_in_context(self, ids, state)
        if new.blocks[0] is None:  # no segment completed yet: the fresh state, built here
            new = new._replace(blocks=self.init_state(ids.shape[0]).blocks)
        loss = None
        if targets is not None:
            loss = cross_entropy(logits, targets, reduction="mean")
        return logits, loss, new

    def _warn_idle_levels(self, T: int) -> None:
        """A CMS level steps just before token b = C, 2C, … is processed: trained on sequences of T ≤ C
        tokens it never steps, and is a plain MLP there. Said once per level and length (every block
        has the same levels)."""
        cms = next((b.mlp for b in self.blocks if b.learns_in_context), None)
        for j, lv in enumerate([] if cms is None else cms.cfg.levels):
            if CMS.learns(lv) and lv.chunk_size >= T and (j, T) not in self._warned:
                self._warned.add((j, T))
                warnings.warn(f"cms.levels[{j}] (chunk_size={lv.chunk_size}) never steps inside sequences of {T} "
                              f"tokens: it steps just before token {lv.chunk_size} is processed, so here it is a "
                              f"plain MLP; use a chunk_size below {T}", RuntimeWarning, stacklevel=3)

    # ---- generation ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, ids: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 state: ModelState | None = None, generator: torch.Generator | None = None,
                 on_token: Callable[[Tensor], None] | None = None):
        """Sample ``max_new_tokens`` after ``ids`` carrying the state; ``temperature=0`` is greedy.

        Returns ``(ids + new tokens, state)``; the state has seen every returned token. ``on_token``
        is called with each new token ``[B, 1]`` as soon as it is chosen (streaming output).
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be ≥ 0 (got {max_new_tokens})")
        if temperature < 0:
            raise ValueError(f"temperature must be ≥ 0 (0 is greedy; got {temperature})")
        logits, _, state = self(ids, state=state)
        out = [ids]
        for _ in range(max_new_tokens):
            last = logits[:, -1].float()
            if temperature == 0:
                nxt = last.argmax(-1, keepdim=True)
            else:
                last = last / temperature
                if top_k is not None:
                    kth = torch.topk(last, min(top_k, last.shape[-1])).values[:, -1:]
                    last = last.masked_fill(last < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(last, -1), 1, generator=generator)
            out.append(nxt)
            if on_token is not None:
                on_token(nxt)
            logits, _, state = self(nxt, state=state)
        return torch.cat(out, dim=1), state

    # ---- saving the in-context memory ----------------------------------------------------------
    def save_state(self, state: ModelState, path: str | Path) -> None:
        """Write the in-context state (fast weights, caches, positions) to a safetensors file,
        atomically (temporary file, then rename)."""
        from safetensors.torch import save_file

        state = state._replace(cursor=None)  # rebuilt by the next call's replay
        leaves, _ = pytree.tree_flatten(state)
        # clones: leaves may share storage (a chunk-start anchor is the weights themselves)
        tensors = {f"{i}": t.detach().clone().contiguous() for i, t in enumerate(leaves) if isinstance(t, Tensor)}
        meta = {"ints": {i: t for i, t in enumerate(leaves) if isinstance(t, int)},
                "batch_size": state.pending.shape[0], "n_leaves": len(leaves), "block": self.cfg.block}
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"nestlearn_state": json.dumps(meta)})
        tmp.replace(path)

    def load_state(self, path: str | Path) -> ModelState:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"state file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads(f.metadata()["nestlearn_state"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # a truncated or foreign file
            raise ValueError(f"{path} is not a readable nestlearn state file ({e})") from e
        if meta["block"] != self.cfg.block:
            raise ValueError(f"{path} holds a state of a '{meta['block']}' model, not '{self.cfg.block}'")
        leaves, spec = pytree.tree_flatten(self.init_state(meta["batch_size"]))  # the layout, not the values
        if len(leaves) != meta["n_leaves"]:
            raise ValueError(f"{path} does not match this model's state layout")
        ints = {int(k): v for k, v in meta["ints"].items()}
        device = self.embed.weight.device
        # fresh storage: safetensors hands out views at arbitrary offsets of the file's buffer, and a BLAS
        # may take another code path for unaligned data (MKL on AMD: last-bit differences in float64)
        new = [tensors[f"{i}"].to(device).clone() if f"{i}" in tensors else ints.get(i) for i in range(len(leaves))]
        return pytree.tree_unflatten(new, spec)
