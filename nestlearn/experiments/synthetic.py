"""Synthetic experiments (NL Tables 4 and 5): formal-language recognition, MAD and MQAR, for several
block kinds at equal parameter and step budgets over several seeds.

A recipe is a YAML file (``experiments/synthetic/*.yaml``)::

    family: formal | mad | mqar
    tasks: {name: {generator arguments}}     # formal: {parity: {}, ...}; mqar: {pairs4: {n_pairs: 4, ...}}
    models: [hope, transformer, titans, delta]   # block kinds, or names of variants
    variants: {name: {block: hope, model: {dotted overrides}, lr: 1e-3, steps: 600}}   # optional
    seeds: [0, 1, 2]
    steps, batch_size, lr, weight_decay, warmup, eval_batches, eval_batch_size
    model: {ModelConfig fields shared by every block kind}
    quick: {any of the keys above, for --quick}

Every run (task × model × seed) trains from scratch with AdamW (cosine schedule after a linear warm-up,
clipping at 1) and is appended to ``<family>.jsonl`` in the output folder as soon as it ends, so an
interrupted suite resumes where it stopped. Each row records the commit, the version of the library's
code (a hash of ``nestlearn/`` as the run saw it) and its exact settings; a suite resumes only the runs
of the current code version, and a table refuses rows of several code versions. Non-finite logits at
evaluation score as wrong and are listed. Non-HOPE models get the SwiGLU width whose parameter count is
closest to HOPE's for the same task (equal parameter budgets). ``RESULTS.md`` is written from
``results.jsonl`` with the paper's numbers beside ours.

Formal languages are trained and scored as next-symbol-set prediction (``nestlearn.data.formal``):
a sigmoid per symbol, binary cross-entropy on the string's positions, and a string is recognised when
every position's predicted set equals the true one. The other tasks use next-token cross-entropy on the
answer positions, scored as the accuracy of the argmax there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data import formal, synthetic
from ..models import CausalLM, apply_overrides, from_dict

FAMILIES = ("formal", "mad", "mqar")
MODELS = ("hope", "transformer", "titans", "delta")

# generator, vocabulary size from its arguments
_MAD = {
    "compression": (synthetic.compression, lambda a: a.get("vocab", 16) + 2),
    "in_context_recall": (synthetic.in_context_recall, lambda a: 1 + a.get("n_keys", 16) + a.get("n_values", 16)),
    "fuzzy_in_context_recall": (synthetic.fuzzy_in_context_recall, lambda a: 1 + 2 * a.get("vocab", 16)),
    "selective_copying": (synthetic.selective_copying, lambda a: a.get("vocab", 16) + 3),
    "memorization": (synthetic.memorization, lambda a: 1 + a.get("n_keys", 64) + a.get("n_values", 64)),
}

# the paper's numbers (docs: ../shared/paper/NOTES.md, NL Tables 4 and 5)
PAPER_MAD = {  # Compression, ICR, Fuzzy ICR, Selective copying, Memorization
    "transformer": (49.4, 100, 47.9, 96.2, 83.7),
    "titans": (49.8, 100, 50.0, 99.4, 83.4),
    "hope": (51.2, 100, 52.1, 99.7, 85.2),
}
PAPER_FORMAL = {  # Bin0/Bin1 for parity, (aa)*, (abab)*, aⁿbⁿ, aⁿbⁿcⁿ, Shuffle-2
    "transformer": ("46.4/0.0", "0.0/0.0", "0.0/0.0", "100/100", "100/100", "100/100"),
    "delta": ("98.2/10.1", "0.0/0.0", "0.0/0.0", "100/100", "100/100", "100/100"),  # DeltaNet row
    "hope": ("100/100",) * 6,
}
FORMAL_BINS = ("bin0", "bin1", "bin2")
_MAD_ORDER = ("compression", "in_context_recall", "fuzzy_in_context_recall", "selective_copying", "memorization")


@dataclass
class Recipe:
    family: str
    tasks: dict[str, dict] = field(default_factory=dict)
    models: list[str] = field(default_factory=lambda: list(MODELS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup: int = 30
    eval_batches: int = 4
    eval_batch_size: int = 64
    max_len: int = 50  # formal: training / Bin0 lengths [1, max_len], Bin1 (max_len, 2·max_len]
    model: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES} (got {self.family!r})")
        if not self.tasks:
            raise ValueError("tasks is empty: name at least one task")
        for name, args in self.tasks.items():
            if not isinstance(args, dict):
                raise ValueError(f"tasks.{name} must be a mapping of generator arguments (got {args!r})")
            if self.family == "formal" and name not in formal.LANGUAGES:
                raise ValueError(f"unknown formal language {name!r}; choose from {formal.LANGUAGES}")
            if self.family == "mad" and name not in _MAD:
                raise ValueError(f"unknown MAD task {name!r}; choose from {tuple(_MAD)}")
            if self.family == "mqar" and "n_pairs" not in args:
                raise ValueError(f"tasks.{name} needs n_pairs (an MQAR task is a number of key–value pairs)")
        for name, spec in self.variants.items():
            bad = set(spec) - {"block", "model", "lr", "steps"}
            if bad or spec.get("block") not in MODELS:
                raise ValueError(f"variants.{name} needs block in {MODELS} and may set model, lr, steps "
                                 f"(got {sorted(spec)})")
        for m in self.models:
            if m not in MODELS and m not in self.variants:
                raise ValueError(f"unknown model {m!r}; choose from {MODELS} or a name in variants")
        for name in ("steps", "batch_size", "eval_batches", "eval_batch_size", "max_len"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int (got {getattr(self, name)!r})")
        if not self.seeds:
            raise ValueError("seeds is empty")


def load_recipe(path: str | Path, quick: bool = False) -> Recipe:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"recipe not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    known = set(Recipe.__dataclass_fields__)
    for key in data:
        if key not in known:
            raise ValueError(f"{path}: unknown recipe key {key!r}; valid keys: {sorted(known)}")
    recipe = Recipe(**data)
    if quick:
        for key, value in recipe.quick.items():
            if key not in known or key == "quick":
                raise ValueError(f"{path}: unknown key quick.{key}")
            if key == "tasks" and isinstance(value, list):  # a subset of the full tasks, by name
                value = {name: recipe.tasks[name] for name in value}
            setattr(recipe, key, value)
        if "steps" in recipe.quick:  # a quick run is short for every variant
            recipe.variants = {n: {k: v for k, v in spec.items() if k != "steps"}
                               for n, spec in recipe.variants.items()}
    recipe.validate()
    return recipe


# ---- tasks -------------------------------------------------------------------------------------

def vocab_size(recipe: Recipe, task: str) -> int:
    args = recipe.tasks[task]
    if recipe.family == "formal":
        return len(formal.SYMBOLS)
    if recipe.family == "mqar":
        return 1 + args.get("n_keys", 64) + args.get("n_values", 64)
    return _MAD[task][1](args)


def make_batch(recipe: Recipe, task: str, batch: int, seed: int, split: str = "train"):
    """Formal: ``(ids, multi-hot targets, mask)``; otherwise ``(ids, targets)`` with −100 off the answers."""
    args = recipe.tasks[task]
    if recipe.family == "formal":
        bins = formal.length_bins(recipe.max_len)
        return formal.formal_batch(task, batch, bins["bin0" if split == "train" else split], seed)
    g = torch.Generator().manual_seed(seed)
    if recipe.family == "mqar":
        return synthetic.mqar(batch, generator=g, **args)
    return _MAD[task][0](batch, generator=g, **args)


_VERSION: dict[str, str] = {}


def code_version() -> dict[str, str]:
    """``{"commit": …, "code": …}``: the checkout's commit, and a hash of the library's sources as this
    process runs them (``nestlearn/`` at the commit plus any uncommitted change), so that a docs-only
    commit keeps the code version and an uncommitted change makes a new one. ``unknown`` outside git.
    Read once per process (at import): edits made while a suite runs do not change what it runs."""
    if not _VERSION:
        _VERSION.update(_read_version())
    return dict(_VERSION)


def _read_version() -> dict[str, str]:
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        tree = git("rev-parse", "HEAD:nestlearn").strip()
        diff = git("diff", "HEAD", "--", "nestlearn")
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "code": "unknown"}
    code = tree[:12] if not diff else tree[:12] + "+" + hashlib.sha1(diff.encode()).hexdigest()[:8]
    return {"commit": commit[:12] + ("+dirty" if diff else ""), "code": code}


code_version()  # the sources as this process imported them


def _train_seed(seed: int, step: int) -> int:
    return 1_000_003 * (seed + 1) + step


def _eval_seed(i: int) -> int:
    return 987_654_321 + i  # disjoint from every training seed used here


# ---- models ------------------------------------------------------------------------------------

def model_config(recipe: Recipe, task: str, block: str, mlp_mult: float | None = None,
                 overrides: dict | None = None):
    data = {**recipe.model, "block": block, "vocab_size": vocab_size(recipe, task)}
    if mlp_mult is not None:
        data["mlp_mult"] = mlp_mult
    cfg = from_dict(data)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    cfg.validate()
    return cfg


def count_params(cfg) -> int:
    with torch.device("meta"):
        return CausalLM(cfg).num_parameters()


def matched_mlp_mult(recipe: Recipe, task: str, block: str, target: int) -> float:
    """The SwiGLU width (as a multiple of dim) whose model is closest to ``target`` parameters."""
    dim = from_dict(recipe.model).dim
    c1 = count_params(model_config(recipe, task, block, 1.0))
    c2 = count_params(model_config(recipe, task, block, 2.0))  # linear in the width
    hidden = max(1, round(dim * (1.0 + (target - c1) / (c2 - c1))))
    return hidden / dim


# ---- one run -----------------------------------------------------------------------------------

def _formal_loss(logits, targets, mask):
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none").sum(-1)
    return (loss * mask).sum() / mask.sum()


@torch.no_grad()
def evaluate(model: CausalLM, recipe: Recipe, task: str) -> dict[str, float]:
    """Accuracy per split; a sequence whose logits are not finite (at a scored position) counts as wrong,
    and ``nonfinite`` says how many such sequences there were."""
    model.eval()
    out: dict[str, float] = {}
    nonfinite = 0
    if recipe.family == "formal":
        for j, split in enumerate(FORMAL_BINS):
            good = total = 0
            for i in range(recipe.eval_batches):
                ids, targets, mask = make_batch(recipe, task, recipe.eval_batch_size, _eval_seed(i) + 10_000 * j,
                                                split)
                logits, _, _ = model(ids)
                bad = (~torch.isfinite(logits).all(-1) & mask).any(-1)
                wrong = ((logits > 0).float() != targets).any(-1) & mask
                good += int((~(wrong.any(-1) | bad)).sum())
                total += ids.shape[0]
                nonfinite += int(bad.sum())
            out[split] = 100.0 * good / total
    else:
        good = total = 0
        for i in range(recipe.eval_batches):
            ids, targets = make_batch(recipe, task, recipe.eval_batch_size, _eval_seed(i), "eval")
            logits, _, _ = model(ids)
            sel = targets != -100
            finite = torch.isfinite(logits).all(-1)
            good += int(((logits.argmax(-1) == targets) & finite)[sel].sum())
            total += int(sel.sum())
            nonfinite += int((~finite & sel).any(-1).sum())
        out["acc"] = 100.0 * good / max(total, 1)
    out["nonfinite"] = nonfinite
    model.train()
    return out


def run_one(recipe: Recipe, task: str, block: str, seed: int, mlp_mult: float | None = None,
            log=print, name: str | None = None, overrides: dict | None = None) -> dict[str, Any]:
    """Train one model from scratch and evaluate it; ``name`` labels a variant of ``block``."""
    cfg = model_config(recipe, task, block, mlp_mult, overrides)
    name = name or block
    torch.manual_seed(seed)
    model = CausalLM(cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < recipe.warmup:
            return recipe.lr * (step + 1) / recipe.warmup
        frac = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
        return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    t0 = time.perf_counter()
    losses, skipped, in_a_row, diverged_at = [], 0, 0, None
    for step in range(recipe.steps):
        batch = make_batch(recipe, task, recipe.batch_size, _train_seed(seed, step))
        if recipe.family == "formal":
            ids, targets, mask = batch
            logits, _, _ = model(ids)
            loss = _formal_loss(logits, targets, mask)
        else:
            ids, targets = batch
            _, loss, _ = model(ids, targets=targets)
        value = float(loss.detach())  # the step's one host sync: the log and the finiteness check
        if not math.isfinite(value):  # skipped and counted; 10 in a row end the run as diverged
            skipped, in_a_row = skipped + 1, in_a_row + 1
            if in_a_row >= 10:
                diverged_at = step
                if log:
                    log(f"  {task} {name} seed {seed}: non-finite loss 10 steps in a row, last at step {step}")
                break
            continue
        in_a_row = 0
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(value)
        if log and (step + 1) % max(1, recipe.steps // 5) == 0:
            log(f"  {task} {name} seed {seed} step {step + 1}/{recipe.steps} loss {losses[-1]:.4f}")
    train_s = time.perf_counter() - t0
    metrics = evaluate(model, recipe, task)
    settings = {k: getattr(recipe, k) for k in ("steps", "batch_size", "lr", "weight_decay", "warmup", "max_len",
                                                 "eval_batches", "eval_batch_size")}
    return {"task": task, "model": name, "block": block, "seed": seed, "params": model.num_parameters(),
            **code_version(), "config": dataclasses.asdict(cfg), "settings": settings,
            "mlp_mult": cfg.mlp_mult, "steps": recipe.steps, "final_loss": losses[-1] if losses else float("nan"),
            "skipped": skipped, "diverged_at": diverged_at, "lr": recipe.lr,
            "wall_s": time.perf_counter() - t0, "train_s": train_s, **metrics}


# ---- the suite ---------------------------------------------------------------------------------

def run_suite(recipe: Recipe, out: str | Path, command: str = "", log=print, report_only: bool = False) -> list[dict]:
    """Run every (task, model, seed) not yet in ``out``; ``report_only`` just rewrites the tables."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{recipe.family}.jsonl"
    done = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    done.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a crash: that run is redone
                    continue
    version = code_version()["code"]
    have = {(r["task"], r["model"], r["seed"], r["steps"]) for r in done if r.get("code") == version}
    for task in recipe.tasks:
        hope_params = count_params(model_config(recipe, task, "hope"))
        for seed in recipe.seeds:
            for name in ([] if report_only else recipe.models):
                spec = recipe.variants.get(name, {"block": name})
                block, over = spec["block"], spec.get("model")
                sub = dataclasses.replace(recipe, lr=spec.get("lr", recipe.lr), steps=spec.get("steps", recipe.steps))
                if (task, name, seed, sub.steps) in have:
                    continue
                mult = None if block in ("hope", "hope_attention") else matched_mlp_mult(recipe, task, block,
                                                                                         hope_params)
                r = run_one(sub, task, block, seed, mult, log, name=name, overrides=over)
                if r["diverged_at"] is not None:  # one retry at half the learning rate, recorded as such
                    first = r
                    r = run_one(dataclasses.replace(sub, lr=sub.lr / 2), task, block, seed, mult, log, name=name,
                                overrides=over)
                    r["first_try_diverged_at"] = first["diverged_at"]
                    r["wall_s"] += first["wall_s"]
                if log:
                    log(f"{task} {name} seed {seed}: " + ", ".join(
                        f"{k} {r[k]:.1f}" for k in ("acc", *FORMAL_BINS) if k in r) + f" ({r['wall_s']:.0f} s)")
                with path.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                done.append(r)
                _report(recipe, done, out, command)  # the tables so far, after every run
    return _report(recipe, done, out, command)


def _report(recipe: Recipe, done: list[dict], out: Path, command: str) -> list[dict]:
    def steps_of(name):
        return recipe.variants.get(name, {}).get("steps", recipe.steps)

    rows = [r for r in done if r["task"] in recipe.tasks and r["model"] in recipe.models
            and r["seed"] in recipe.seeds and r["steps"] == steps_of(r["model"])]
    version = code_version()["code"]
    current = [r for r in rows if r.get("code") == version]
    if rows and not current:
        found = sorted({r.get("code", "unrecorded") for r in rows})
        raise ValueError(f"{out}: no run of this code version ({version}); the rows there come from {found}. "
                         "Run the suite to redo them, or check out the code they were run with")
    write_results(recipe, current, out, command, left_out=len(rows) - len(current))
    return current


def _ms(xs: list[float]) -> str:
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.1f}"
    return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs):.1f}"


def write_results(recipe: Recipe, rows: list[dict], out: Path, command: str = "", left_out: int = 0) -> Path:
    """Write ``<family>.md`` and ``RESULTS.md``; refuses rows of more than one code version."""
    versions = sorted({r.get("code", "unrecorded") for r in rows})
    if len(versions) > 1:
        raise ValueError(f"refusing to write one table from {len(versions)} code versions {versions}: "
                         "every row of a table must come from the same code")

    def cell(task, model, key):
        return _ms([r[key] for r in rows if r["task"] == task and r["model"] == model])

    tasks = list(recipe.tasks)
    models = [m for m in recipe.models if any(r["model"] == m for r in rows)]
    lines = [f"# Synthetic experiments: {recipe.family}", ""]
    if command:
        lines += ["Command:", "", f"    {command}", ""]
    lines += [f"{recipe.steps} steps × batch {recipe.batch_size}, AdamW lr {recipe.lr} "
              f"(cosine, warm-up {recipe.warmup}), "
              f"seeds {recipe.seeds}; model {json.dumps(recipe.model)}. Mean ± std over seeds. "
              f"Wall times are on the machine that ran this (train + evaluation, per run).", ""]
    if recipe.variants:
        lines += ["Variants (changes from the settings above): " + json.dumps(recipe.variants), ""]
    if rows:
        commits = sorted({r.get("commit", "unrecorded") for r in rows})
        lines += [f"Code version {versions[0]} (commit {', '.join(commits)})"
                  + (f"; {left_out} rows of other code versions in {recipe.family}.jsonl are not in this table"
                     if left_out else "") + ".", ""]
    if recipe.family == "formal":
        bins = formal.length_bins(recipe.max_len)
        (l0, h0), (l1, h1), (l2, h2) = bins["bin0"], bins["bin1"], bins["bin2"]
        lines += [f"Recognition accuracy (% of strings whose every next-symbol set is predicted exactly), "
                  f"Bin0 / Bin1 / Bin2. Bin0: lengths {l0}–{h0}, the training range; Bin1: {l1}–{h1} and "
                  f"Bin2: {l2}–{h2} test length generalisation; "
                  f"{recipe.eval_batches * recipe.eval_batch_size} strings per bin. "
                  "Paper (NL Table 5, Bin0/Bin1) in brackets.", "",
                  "| model | params | " + " | ".join(tasks) + " | wall / run |",
                  "|---|---:|" + "---|" * len(tasks) + "---:|"]
        paper_idx = {lang: i for i, lang in enumerate(formal.LANGUAGES)}
        for m in models:
            cells = []
            for t in tasks:
                ours = " / ".join(cell(t, m, b) for b in FORMAL_BINS)
                paper = PAPER_FORMAL.get(m)
                cells.append(ours + (f" [{paper[paper_idx[t]]}]" if paper else ""))
            lines.append(f"| {m} | {_params(rows, m)} | " + " | ".join(cells) + f" | {_wall(rows, m)} |")
    else:
        metric = "token accuracy on the answer positions" if recipe.family == "mad" else "accuracy on the queries"
        lines += [f"Held-out {metric} (%), {recipe.eval_batches * recipe.eval_batch_size} sequences per task."
                  + (" Paper (NL Table 4) in brackets." if recipe.family == "mad" else ""), "",
                  "| model | params | " + " | ".join(tasks) + " | wall / run |",
                  "|---|---:|" + "---|" * len(tasks) + "---:|"]
        for m in models:
            cells = []
            for t in tasks:
                c = cell(t, m, "acc")
                if recipe.family == "mad" and m in PAPER_MAD and t in _MAD_ORDER:
                    c += f" [{PAPER_MAD[m][_MAD_ORDER.index(t)]}]"
                cells.append(c)
            lines.append(f"| {m} | {_params(rows, m)} | " + " | ".join(cells) + f" | {_wall(rows, m)} |")
    skips = [f"{r['task']}/{r['model']}/seed {r['seed']}: {r['skipped']}" for r in rows if r.get("skipped")]
    if skips:
        lines += ["", "Training steps skipped for a non-finite loss: " + "; ".join(skips) + "."]
    bad = [f"{r['task']}/{r['model']}/seed {r['seed']}: {r['nonfinite']}" for r in rows if r.get("nonfinite")]
    if bad:
        lines += ["", "Sequences with non-finite logits at evaluation (scored as wrong): " + "; ".join(bad) + "."]
    retried = [f"{r['task']}/{r['model']}/seed {r['seed']} (step {r['first_try_diverged_at']})" for r in rows
               if r.get("first_try_diverged_at") is not None]
    if retried:
        lines += ["", "Diverged (10 non-finite losses in a row) and retried once at half the learning rate; "
                  "the table holds the retry: " + "; ".join(retried) + "."]
    failed = [f"{r['task']}/{r['model']}/seed {r['seed']} (step {r['diverged_at']})" for r in rows
              if r.get("diverged_at") is not None]
    if failed:
        lines += ["", "Diverged again on the retry (scored as they ended): " + "; ".join(failed) + "."]
    lines += ["", "Task arguments: " + json.dumps(recipe.tasks), "",
              f"Total wall time of these runs: {sum(r['wall_s'] for r in rows) / 60:.1f} min."]
    if recipe.family == "mqar" and _plot_mqar(recipe, rows, out / "mqar.png"):
        lines += ["", "![MQAR accuracy vs number of pairs](mqar.png)"]
    _write(out / f"{recipe.family}.md", "\n".join(lines) + "\n")
    # RESULTS.md: every family's table found in this folder, in a fixed order
    parts = [(out / f"{f}.md").read_text() for f in FAMILIES if (out / f"{f}.md").is_file()]
    path = out / "RESULTS.md"
    _write(path, "# Synthetic experiments (NL Tables 4 and 5)\n\n"
           + "\n".join(p.replace("# Synthetic experiments: ", "## ", 1) for p in parts))
    return path


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _params(rows, m) -> str:
    ps = sorted({r["params"] for r in rows if r["model"] == m})
    return f"{ps[0]:,}" if len(ps) == 1 else f"{ps[0]:,}–{ps[-1]:,}"


def _wall(rows, m) -> str:
    ws = [r["wall_s"] for r in rows if r["model"] == m]
    return f"{statistics.mean(ws):.0f} s" if ws else "–"


def _plot_mqar(recipe: Recipe, rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m in recipe.models:
        xs, ys, es = [], [], []
        for t, args in recipe.tasks.items():
            accs = [r["acc"] for r in rows if r["task"] == t and r["model"] == m]
            if accs:
                xs.append(args["n_pairs"])
                ys.append(statistics.mean(accs))
                es.append(statistics.stdev(accs) if len(accs) > 1 else 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=m)
    ax.set_xlabel("key–value pairs")
    ax.set_ylabel("query accuracy (%)")
    ax.set_ylim(0, 102)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(recipe_path: str, quick: bool = False, out: str | None = None, threads: int | None = None,
         command: str = "", report_only: bool = False) -> list[dict]:
    if threads:
        torch.set_num_threads(threads)
    recipe = load_recipe(recipe_path, quick=quick)
    if out is None:
        out = "runs/synthetic-quick" if quick else str(Path(recipe_path).parent / "results")
    return run_suite(recipe, out, command=command, report_only=report_only)


__all__ = ["FAMILIES", "MODELS", "Recipe", "evaluate", "load_recipe", "main", "make_batch", "run_one",
           "run_suite", "write_results"]
