"""The one training loop: config → model → optimizer → data → loop with ``every(step, n)`` blocks.

    python -m nestlearn train configs/debug.yaml train.steps=20

Deterministic: batch ``s`` depends only on (seed, s), so a resumed run continues exactly (bitwise on
CPU). Checkpoints (weights as safetensors, optimizer + RNG, the train state with the early-stopping state,
the best weights and the logged rows) are written to a temporary folder and renamed; ``latest`` points at
the newest. A non-finite loss, or a finite loss with a non-finite gradient, skips the step and is
counted; ``train.max_bad_steps`` in a row stop the run with the step and the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
import yaml
from torch import nn

from ..data.registry import task_batch
from ..models import CausalLM
from ..optim import Optimizers, build_optimizer
from .config import RunConfig, to_dict
from .distributed import Dist


def every(step: int, n: int) -> bool:
    return n > 0 and step % n == 0


def early_stop(ref: float, stale: int, solved: int, step: int, loss: float, acc: float,
               rule) -> tuple[float, int, int, str | None]:
    """The early-stopping rule, one validation at a time: ``ref`` is the loss a gain is measured against (inf
    before the first validation), ``stale`` and ``solved`` the counters before this validation, ``loss`` and
    ``acc`` (a fraction) its own. ``rule`` has ``min_delta``, ``patience``, ``solved_patience``, ``min_steps``
    and ``patience_from`` (a :class:`TrainSettings`, or a synthetic recipe replaying a stored curve). Returns the
    new ``ref``, ``stale`` and ``solved`` and, when the run stops here, why (else None).

    A validation gains when its loss is below ``(1 − min_delta) × ref`` (the first finite one always does).
    ``patience_from="last_gain"`` (the default): ``ref`` is the loss of the last gain, so that a slow, steady
    decline adds up to a gain (``patience`` validations without a gain: less than ``min_delta`` gained in all
    of them together, Keras' and Lightning's rule). ``"best"``: ``ref`` is the lowest loss so far, so a
    decline of less than ``min_delta`` per validation never gains, however long it goes on (nestlearn's rule
    until 2026-12-01; it stopped runs still improving by several percent over their last ``patience``
    validations). A solved validation (accuracy 1) never resets ``stale``. ``solved_patience`` validations in
    a row at accuracy 1 stop the run at any step; ``patience`` validations without a gain stop it only from
    step ``min_steps`` on."""
    if rule.patience_from == "best":
        gained = ref == float("inf") or loss < ref * (1 - rule.min_delta)
        ref = loss if loss < ref else ref  # a NaN loss is never the best
    else:
        gained = (ref == float("inf") and loss == loss) or loss < ref * (1 - rule.min_delta)
        ref = loss if gained else ref
    stale = 0 if gained and acc < 1.0 else stale + 1
    solved = solved + 1 if acc >= 1.0 else 0
    if rule.solved_patience and solved >= rule.solved_patience:
        return ref, stale, solved, f"100% validation accuracy for {solved} checks"
    if rule.patience and stale >= rule.patience and step >= rule.min_steps:
        return ref, stale, solved, f"validation loss flat for {stale} checks"
    return ref, stale, solved, None


def replay_stop(history: list[dict], rule) -> tuple[float, int, int, int | None]:
    """:func:`early_stop` over the validations of ``history`` (rows with ``step``, ``val_loss`` and ``val_acc``
    as a fraction): the counters after the last one, and the step at which the rule stopped (None: it did
    not)."""
    ref, stale, solved = float("inf"), 0, 0
    for row in history:
        if row.get("val_loss") is None:
            continue
        ref, stale, solved, why = early_stop(ref, stale, solved, row["step"], row["val_loss"],
                                             row.get("val_acc", 0.0), rule)
        if why is not None:
            return ref, stale, solved, row["step"]
    return ref, stale, solved, None


def optimizer_from_config(cfg: RunConfig, model: nn.Module) -> Optimizers:
    o = cfg.optim
    return build_optimizer(model, o.name, lr=o.lr, matrix_lr=o.matrix_lr, weight_decay=o.weight_decay,
                                 betas=o.betas, momentum=o.momentum, alpha=o.alpha, slow_every=o.slow_every)


def lr_factor(cfg: RunConfig, step: int) -> float:
    """Warm-up, then cosine / warmup-stable-decay / constant, as a factor of the base rate."""
    o, total = cfg.optim, cfg.train.steps
    if o.warmup and step < o.warmup:
        return (step + 1) / o.warmup
    if o.schedule == "constant":
        return 1.0
    if o.schedule == "cosine":
        progress = (step - o.warmup) / max(1, total - o.warmup)
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    start = int(total * (1 - o.decay_fraction))  # wsd
    if step < start:
        return 1.0
    return 1.0 - (1.0 - o.min_lr_ratio) * (step - start) / max(1, total - start)


class Batches:
    """Training and evaluation batches as pure functions of the step."""

    def __init__(self, cfg: RunConfig, out_dir: Path):
        self.cfg = cfg
        d = cfg.data
        self.stream = self.val_stream = None
        if d.source == "recall":
            self.vocab_size = 1 + d.recall_keys + d.recall_values
            return
        from ..data.text import TokenStream, read_texts
        from ..data.tokenizer import BPETokenizer, ByteTokenizer, load_tokenizer

        tok_file = out_dir / "tokenizer.json"
        if tok_file.is_file():
            self.tokenizer = load_tokenizer(tok_file)
        elif d.tokenizer == "byte":
            self.tokenizer = ByteTokenizer()
        else:
            self.tokenizer = BPETokenizer.train(read_texts(d.train), d.vocab_size)
        self.tokenizer.save(tok_file)
        tok_id = f"{d.tokenizer}-{self.tokenizer.vocab_size}-{_sha(tok_file)}"
        self.vocab_size = self.tokenizer.vocab_size
        self.stream = TokenStream.build(d.train, self.tokenizer, d.cache_dir, tok_id)
        if d.val:
            self.val_stream = TokenStream.build(d.val, self.tokenizer, d.cache_dir, tok_id)
        else:  # the last 5% of the training stream is held out
            cut = int(len(self.stream) * 0.95)
            self.val_stream = TokenStream(self.stream.tokens[cut:])
            self.stream = TokenStream(self.stream.tokens[:cut])

    def _recall(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.cfg.data
        return task_batch("recall", self.cfg.train.batch_size, seed, n_pairs=d.recall_pairs,
                          n_queries=d.recall_queries, n_keys=d.recall_keys, n_values=d.recall_values)

    def train(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        c, d = self.cfg, self.cfg.data
        index = step * c.train.grad_accum + micro
        if self.stream is None:
            return self._recall(c.train.seed * 1_000_003 + index)
        return self.stream.batch(index, c.train.batch_size, d.seq_len, c.train.seed)

    def eval(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        c, d = self.cfg, self.cfg.data
        if self.val_stream is None:
            return self._recall(-(c.train.seed * 1_000_003 + i + 1) % (2 ** 62))
        return self.val_stream.batch(i, c.train.batch_size, d.seq_len, seed=12345)


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


class Trainer:
    """The one training loop. By default it trains the causal LM of ``cfg.model`` on ``cfg.data``;
    experiments plug in their own parts:

    - ``model``: any module (the synthetic suite's models, a ViT);
    - ``batches``: ``train(step, micro) -> batch`` (a tuple of tensors, a pure function of the step) and,
      for the default evaluation, ``eval(i) -> batch``;
    - ``loss``: ``loss(*batch) -> scalar`` (default: the LM's next-token loss on ``(ids, targets)``);
    - ``evaluate``: ``evaluate() -> {"val_loss": …, "val_acc": …, …}`` (default: the LM's held-out loss and
      accuracy on ``batches.eval``);
    - ``optimizer``: an ``Optimizers`` (default: ``cfg.optim`` through ``nestlearn.optim.build_optimizer``);
    - ``log``: called with every row the run logs (training and evaluation);
    - ``on_save``: ``on_save() -> dict`` (JSON), stored with every checkpoint and found in ``extra`` after
      ``load()`` (a caller's own bookkeeping, e.g. the time spent before an interruption).

    ``train.out_dir = ""`` writes nothing (no config, metrics or checkpoints). With ``train.patience``
    the run stops after that many evaluations without a ``train.min_delta`` relative gain in validation
    loss, or once the validation accuracy is 1; ``train.keep_best`` restores the weights of the best
    validation loss at the end.
    """

    def __init__(self, cfg: RunConfig, model: nn.Module | None = None, batches=None, loss=None, evaluate=None,
                 optimizer: Optimizers | None = None, log=None, on_save=None):
        self.cfg = cfg
        self.out = Path(cfg.train.out_dir) if cfg.train.out_dir else None
        self.device = torch.device(cfg.train.device)
        self.dist = Dist(self.device)
        if batches is None:  # rank 0 prepares the folder, tokenizer and token cache; the others then read them
            if self.dist.main:
                self.out.mkdir(parents=True, exist_ok=True)
                batches = Batches(cfg, self.out)
            self.dist.barrier()
            if not self.dist.main:
                batches = Batches(cfg, self.out)
            cfg.model.vocab_size = batches.vocab_size  # the data decides the vocabulary
        self.batches = batches
        torch.manual_seed(cfg.train.seed)
        if self.out is not None and self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        self.model = (CausalLM(cfg.model) if model is None else model).to(self.device)
        # a language model's head that is its embedding is not saved; another model's "head" (a ViT's
        # classifier) is a weight of its own, whatever cfg.model (unused then) says
        self._tied_head = isinstance(self.model, CausalLM) and cfg.model.tie_embeddings
        if cfg.train.activation_checkpointing:
            if not isinstance(self.model, CausalLM):
                raise ValueError("train.activation_checkpointing needs a CausalLM model (its blocks recompute); "
                                 f"got {type(self.model).__name__}")
            # recomputed segments are tested under DDP (a static graph: train/distributed.py), not under FSDP2,
            # whose per-parameter hooks would fire once per recomputed node: sharded runs recompute blocks
            sharded = self.dist.sharded(cfg.train.parallel)
            self.model.activation_checkpointing(unit="block" if sharded else "auto")
        self.rows = self.dist.shard(cfg.train.batch_size)
        self.forward = self.dist.wrap(self.model, cfg.train.parallel)
        if cfg.train.compile:
            # the in-context learning driver takes inner gradients with retain_graph=True inside the forward,
            # which compiled backwards with donated buffers refuse
            import torch._functorch.config as functorch_config

            functorch_config.donated_buffer = False
            self.forward = torch.compile(self.forward)
        self.opt = optimizer_from_config(cfg, self.model) if optimizer is None else optimizer
        if loss is not None:
            self.loss = loss
        if evaluate is not None:
            self.evaluate = evaluate
        self.on_log = log
        self.step = 0
        self.bad_in_a_row = 0
        self.bad_total = 0
        self.diverged_at: int | None = None  # the step at which max_bad_steps non-finite losses ended the run
        self.stopped_at: int | None = None  # the step at which early stopping ended the run
        self.stop_reason: str | None = None  # why early stopping ended it
        self.best_loss, self.best_step, self._best_weights, self._stale, self._solved = float("inf"), None, None, 0, 0
        self._ref = float("inf")  # the validation loss a gain is measured against (early_stop)
        self._best_whole = False  # whether _best_weights are whole tensors read from a checkpoint
        self.losses: list[float] = []  # every step's training loss, non-finite ones included
        self.last_ckpt: Path | None = None
        self.history: list[dict] = []
        self.on_save = on_save  # () -> dict saved with every checkpoint; ``extra`` holds it after load()
        self.extra: dict = {}
        self._tb = None  # a TensorBoard writer while run() is active, when tensorboard is installed

    # ---- one step ----------------------------------------------------------------------------
    def loss(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ids, targets = ids.to(self.device), targets.to(self.device)
        cuda = self.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
        with autocast, self.dist.forward_context(self.model, self.cfg.train.parallel):
            _, loss, _ = self.forward(ids, targets=targets)
        return loss

    def train_step(self) -> tuple[float, int]:
        """One optimizer step; returns its loss and how many tokens (or samples) it read."""
        c = self.cfg
        self.opt.set_lr_factor(lr_factor(c, self.step))
        total = torch.zeros((), device=self.device)
        items = 0
        for micro in range(c.train.grad_accum):
            batch = tuple(t[self.rows] for t in self.batches.train(self.step, micro))
            items += batch[0].numel() if not batch[0].is_floating_point() else batch[0].shape[0]
            loss = self.loss(*batch) / c.train.grad_accum
            loss.backward()
            total += loss.detach()
        # the gradient's norm (clipped in place when optim.clip is set) is checked with the loss: a finite loss
        # can have a non-finite gradient (a backward through a normalisation of a near-zero vector, an
        # inner loop's second-order terms), and one NaN entry would make every weight NaN through the
        # clipping and the optimizer's moments
        if c.optim.clip:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.optim.clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        if hasattr(norm, "full_tensor"):  # FSDP2's sharded gradients give a DTensor: the whole norm, every rank
            norm = norm.full_tensor()
        # the step's one host sync (logging, the finiteness checks); every rank then sees the same
        # loss and norm, so all skip or all step together
        loss_value, norm_value = torch.stack([total, norm.to(total)]).tolist()
        total, norm_value = self.dist.mean(loss_value), self.dist.mean(norm_value)
        self.losses.append(total)
        if not (math.isfinite(total) and math.isfinite(norm_value)):
            self.opt.zero_grad()
            self.bad_in_a_row += 1
            self.bad_total += 1
            what = f"loss ({total})" if not math.isfinite(total) else f"gradient (norm {norm_value}; loss {total:.4g})"
            print(f"step {self.step}: non-finite {what}; step skipped "
                  f"({self.bad_in_a_row} in a row, {self.bad_total} in all)", flush=True)
            if self.bad_in_a_row >= c.train.max_bad_steps:
                if c.train.on_nonfinite == "stop":
                    self.diverged_at = self.step
                    return total, items
                raise RuntimeError(f"the loss or its gradient was non-finite for {self.bad_in_a_row} steps in a row "
                                   f"(last at step {self.step}); stopping. Last good checkpoint: "
                                   f"{self.last_ckpt or 'none yet'}")
            return total, items
        self.bad_in_a_row = 0
        self.opt.step()
        self.opt.zero_grad()
        return total, items

    @torch.no_grad()
    def evaluate(self) -> dict:
        losses, correct, count = [], 0, 0
        for i in range(self.cfg.train.eval_batches):
            ids, targets = self.batches.eval(i)
            with self.dist.forward_context(self.model, self.cfg.train.parallel):
                logits, loss, _ = self.model(ids.to(self.device), targets=targets.to(self.device))
            losses.append(loss.item())
            mask = targets != -100
            correct += (logits.argmax(-1).cpu()[mask] == targets[mask]).sum().item()
            count += mask.sum().item()
        return {"val_loss": sum(losses) / len(losses), "val_acc": correct / max(1, count)}

    def _watch(self, row: dict) -> bool:
        """Early stopping and the best weights, after an evaluation; True when the run should stop."""
        t = self.cfg.train
        val, acc = row.get("val_loss"), row.get("val_acc", 0.0)
        if val is None:
            return False
        if val < self.best_loss:
            self.best_loss, self.best_step = val, self.step
            if t.keep_best:
                self._best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self._best_whole = False
        self._ref, self._stale, self._solved, why = early_stop(self._ref, self._stale, self._solved, self.step, val,
                                                               acc, t)
        if why is not None:
            self.stopped_at, self.stop_reason = self.step, why
            return True
        return False

    # ---- checkpoints -------------------------------------------------------------------------
    def save(self) -> Path | None:
        from safetensors.torch import save_file

        if self.out is None:  # train.out_dir = "": a run that writes nothing
            return None
        weights, optim = self.dist.full_state(self.model, list(self.opt.opts), self.cfg.train.parallel)
        best = None
        if self._best_weights is not None:  # keep_best: the weights of the best validation loss so far, whole
            # (a sharded model's are DTensors: gathering them is collective, so every rank takes part)
            best = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in self._best_weights.items()}
        if not self.dist.main:
            self.dist.barrier()
            return None
        root = self.out / "checkpoints"
        root.mkdir(exist_ok=True)
        final = root / f"step_{self.step:07d}"
        tmp = root / f".tmp_step_{self.step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file({k: v.detach().contiguous().cpu().clone() for k, v in weights.items()
                   if k != "head.weight" or not self._tied_head}, str(tmp / "model.safetensors"))
        torch.save({"optim": optim, "rng": torch.get_rng_state(), "losses": torch.tensor(self.losses,
                    dtype=torch.float64)}, tmp / "optim.pt")
        if best is not None:
            save_file({k: v.detach().contiguous().cpu().clone() for k, v in best.items()},
                      str(tmp / "best.safetensors"))
        # the early-stopping state and the logged rows travel with the checkpoint, so that a resumed run
        # stops, keeps its best weights and reports its history as the uninterrupted run would
        (tmp / "state.json").write_text(json.dumps({
            "step": self.step, "bad_total": self.bad_total, "bad_in_a_row": self.bad_in_a_row,
            "best_loss": self.best_loss, "best_step": self.best_step,
            "stopped_at": self.stopped_at, "stop_reason": self.stop_reason, "history": self.history,
            "extra": self.on_save() if self.on_save is not None else {}}, default=_plain))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        latest_tmp = root / ".latest.tmp"
        latest_tmp.write_text(final.name)
        latest_tmp.replace(root / "latest")
        self.last_ckpt = final
        self.dist.barrier()
        return final

    def load(self, ckpt: Path | None = None) -> None:
        from safetensors.torch import load_file

        root = self.out / "checkpoints"
        ckpt = latest_checkpoint(self.out) if ckpt is None else ckpt
        try:
            weights = load_file(str(ckpt / "model.safetensors"))
            extra = torch.load(ckpt / "optim.pt", weights_only=False)
            state = json.loads((ckpt / "state.json").read_text())
        except Exception as e:
            others = sorted(p.name for p in root.glob("step_*") if p != ckpt)
            raise ValueError(f"checkpoint {ckpt} is unreadable ({type(e).__name__}: {e}); the other checkpoints "
                             f"are untouched: {others or 'none'}") from e
        check_weights(self.model, weights, ckpt, self._tied_head)
        self.dist.load_full_state(self.model, list(self.opt.opts), weights, extra["optim"], self.cfg.train.parallel)
        torch.set_rng_state(extra["rng"])
        self.step, self.bad_total, self.bad_in_a_row = state["step"], state["bad_total"], state["bad_in_a_row"]
        # the best loss and step (absent from the oldest checkpoints: a fresh start)
        self.best_loss, self.best_step = state.get("best_loss", float("inf")), state.get("best_step")
        self.stopped_at, self.stop_reason = state.get("stopped_at"), state.get("stop_reason")
        self.history = state.get("history", [])
        # the early-stopping counters are rebuilt from the validations so far under this run's rule, so that a
        # checkpoint written under another rule (or before the counters were saved) resumes as this rule's run
        self._ref, self._stale, self._solved, _ = replay_stop(self.history, self.cfg.train)
        self.extra = state.get("extra", {})
        if "losses" in extra:
            self.losses = extra["losses"].tolist()
        self._best_weights, self._best_whole = None, False
        if (ckpt / "best.safetensors").is_file():  # whole tensors (also for a sharded model: see the end of run)
            self._best_weights = {k: v.to(self.device) for k, v in load_file(str(ckpt / "best.safetensors")).items()}
            self._best_whole = True
        self.last_ckpt = ckpt

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, until: int | None = None) -> list[dict]:
        """Train to ``train.steps`` (or stop after step ``until``, as an interruption would)."""
        c = self.cfg.train
        stop = c.steps if until is None else min(until, c.steps)
        files = self.out is not None and self.dist.main
        metrics = open(self.out / "metrics.jsonl", "a") if files else open(os.devnull, "w")
        self._tb = _tensorboard(self.out) if files else None
        bar = None
        if c.progress and self.dist.main:
            from tqdm import tqdm

            bar = tqdm(total=c.steps, initial=self.step, desc=self.cfg.model.block, dynamic_ncols=True)
        t0, tokens = time.perf_counter(), 0
        try:
            while self.step < stop and self.stopped_at is None:  # a run resumed after it stopped early is over
                loss, items = self.train_step()
                self.step += 1
                tokens += items
                if self.diverged_at is not None:
                    break
                if every(self.step, c.log_every) or self.step == c.steps:
                    rate = tokens / max(1e-9, time.perf_counter() - t0)
                    row = {"step": self.step, "loss": loss, "lr": self.opt.opts[0].param_groups[0]["lr"],
                           "tok_s": rate}
                    self._log(metrics, row)
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{row['lr']:.2e}", tok_s=f"{rate:,.0f}")
                stop_early = False
                if every(self.step, c.eval_every) or self.step == c.steps:
                    row = {"step": self.step, **self.evaluate()}
                    self._log(metrics, row)
                    stop_early = self._watch(row)
                if every(self.step, c.ckpt_every) or self.step == c.steps or stop_early:
                    self.save()
                if bar is not None:
                    bar.update(1)
                if stop_early:
                    break
            if self._best_weights is not None and (self.step >= c.steps or self.stopped_at is not None
                                                   or self.diverged_at is not None):
                # the run is over: keep its best weights (read from a checkpoint: whole tensors, which a
                # sharded model takes through its full-state path)
                if self._best_whole:
                    self.dist.load_full_state(self.model, [], self._best_weights, [], self.cfg.train.parallel)
                else:
                    self.model.load_state_dict(self._best_weights)
        except KeyboardInterrupt:
            path = self.save() or "nowhere (train.out_dir is empty)"
            print(f"\ninterrupted at step {self.step}: checkpoint written to {path}; resume with --resume")
            raise
        finally:
            metrics.close()
            if self._tb is not None:
                self._tb.close()
                self._tb = None
            if bar is not None:
                bar.close()
        return self.history

    def _log(self, fh, row: dict) -> None:
        self.history.append(row)
        if self.on_log is not None:
            self.on_log(row)
        if self.dist.main:
            fh.write(json.dumps(row, default=_plain) + "\n")
            fh.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step":
                    self._tb.add_scalar(key, value, row["step"])


def _plain(x):
    """JSON for what a plug-in's evaluation may log besides Python numbers (a 0-d tensor, a NumPy scalar)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def latest_checkpoint(out_dir: Path) -> Path:
    """The checkpoint folder ``out_dir/checkpoints/latest`` names."""
    root = Path(out_dir) / "checkpoints"
    if not (root / "latest").is_file():
        raise FileNotFoundError(f"no checkpoint to resume from in {root}")
    return root / (root / "latest").read_text().strip()


def check_weights(model: nn.Module, weights: dict, ckpt: Path, tied: bool) -> None:
    """A checkpoint's weights have exactly the model's keys; ``tied``: the head is the embedding and is not
    saved (``Trainer.save``)."""
    own = set(model.state_dict())
    missing, unexpected = own - set(weights) - ({"head.weight"} if tied else set()), set(weights) - own
    if missing or unexpected:
        raise ValueError(f"checkpoint {ckpt} does not match the model: missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)}")


def _tensorboard(out: Path):
    """A SummaryWriter in ``out/tensorboard`` when the ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def train(cfg: RunConfig, resume: bool = False) -> Trainer:
    """Run (or resume) a training run; returns the trainer (model, history, out folder)."""
    trainer = Trainer(cfg)
    if resume:
        trainer.load()
    elif (trainer.out is not None and (trainer.out / "checkpoints" / "latest").is_file()
          and os.environ.get("NESTLEARN_OVERWRITE") != "1"):
        raise FileExistsError(f"{trainer.out} already holds a run; pass --resume to continue it, or choose "
                              f"another train.out_dir")
    trainer.run()
    trainer.dist.close()
    return trainer
