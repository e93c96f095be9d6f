"""M3 against AdamW and Muon on a small ViT (NL §9.7, at CPU scale).

    python experiments/optimizers/vit.py                      # both datasets, full grid, 3 seeds
    python experiments/optimizers/vit.py --quick              # a smoke run (minutes)
    python experiments/optimizers/vit.py --dataset cifar10 --steps 600

Every optimizer trains the same ViT (patch 4) for the same number of steps on the same batches.
The learning rate of each is chosen from one grid by the final training loss of seed 0; seeds
1 … n−1 then run at that rate. Muon and M3 update the 2-D matrices (attention, MLP); AdamW at a
fixed rate (``--rest-lr``) updates everything else (patch kernel, norms, biases, positions, class
token, head). The grid is wide because M3 divides its orthogonalised momentum by √V (Algorithm 1),
which makes its step far larger than Muon's at the same rate. Writes RESULTS.md (table + commands),
results.json and curves.png next to this file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nestlearn.data.images import load_cifar10_subset, load_fashion_mnist
from nestlearn.models.vit import ViT, ViTConfig
from nestlearn.optim import M3, Optimizers, split_params

HERE = Path(__file__).parent
GRID = (1e-5, 1e-4, 1e-3)
DATASETS = {"cifar10": ("cifar10_subset", load_cifar10_subset, 32, 3),
            "fashion_mnist": ("fashion_mnist", load_fashion_mnist, 28, 1)}


def make_optimizer(name: str, model, lr: float, args):
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=args.weight_decay)
    mats, others = split_params(model)
    # torch.optim.Muon takes 2-D parameters only: the patch kernel goes to AdamW for both Muon and M3
    others += [p for p in mats if p.dim() != 2]
    mats = [p for p in mats if p.dim() == 2]
    rest = torch.optim.AdamW(others, lr=args.rest_lr, weight_decay=args.weight_decay)
    if name == "muon":
        # "match_rms_adamw" puts Muon's update on AdamW's scale, so one learning-rate grid fits all
        main = torch.optim.Muon(mats, lr=lr, weight_decay=args.weight_decay, adjust_lr_fn="match_rms_adamw")
    else:
        main = M3(mats, lr=lr, betas=(0.95, 0.999, 0.9), alpha=args.alpha, slow_every=args.slow_every,
                  accumulate="ema", weight_decay=args.weight_decay, adjust_lr_fn="match_rms_adamw")
    return Optimizers(main, rest)


def evaluate(model, x, y, batch=1000):
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(x[i:i + batch])
            loss += F.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
            correct += (logits.argmax(-1) == y[i:i + batch]).sum().item()
    model.train()
    return loss / len(x), correct / len(x)


def run(name, lr, seed, data, args, image_size, channels):
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    model = ViT(ViTConfig(image_size=image_size, channels=channels, patch=4, dim=args.dim, depth=args.depth,
                          heads=4, classes=10))
    opt = make_optimizer(name, model, lr, args)
    order = torch.Generator().manual_seed(1000 + seed)  # the same batches for every optimizer
    curve, step_times = [], []
    n = len(x_train)
    perm = torch.randperm(n, generator=order)
    pos = 0
    for _ in range(args.steps):
        if pos + args.batch > n:
            perm, pos = torch.randperm(n, generator=order), 0
        idx = perm[pos:pos + args.batch]
        pos += args.batch
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step_times.append(time.perf_counter() - t0)
        curve.append(loss.item())
        if not torch.isfinite(loss):
            break
    train_loss = statistics.mean(curve[-max(1, args.steps // 20):])
    test_loss, test_acc = evaluate(model, x_test, y_test)
    return dict(optimizer=name, lr=lr, seed=seed, train_loss=train_loss, test_loss=test_loss, test_acc=test_acc,
                step_time=statistics.median(step_times[1:] or step_times), curve=curve)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=[*DATASETS, "both"], default="both")
    p.add_argument("--data-root", default=str(HERE.parents[1].parent / "shared" / "data"))
    p.add_argument("--optimizers", default="adamw,muon,m3")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--grid", default=",".join(str(g) for g in GRID))
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--alpha", type=float, default=0.1, help="M3 weight of the slow momentum")
    p.add_argument("--slow-every", type=int, default=25, help="M3 slow-momentum period f")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--rest-lr", type=float, default=1e-3, help="AdamW lr of the non-matrix parameters (Muon, M3)")
    p.add_argument("--quick", action="store_true", help="40 steps, 1 seed, the middle of the grid")
    p.add_argument("--out", default=str(HERE))
    args = p.parse_args()
    if args.quick:
        args.steps, args.seeds, args.grid = 40, 1, "3e-5,1e-3"
    grid = [float(g) for g in args.grid.split(",")]
    names = args.optimizers.split(",")
    sets = list(DATASETS) if args.dataset == "both" else [args.dataset]
    torch.set_num_threads(min(2, torch.get_num_threads()))
    results = {}
    for ds in sets:
        folder, loader, size, channels = DATASETS[ds]
        data = loader(Path(args.data_root) / folder)
        results[ds] = {}
        for name in names:
            tried = [run(name, lr, 0, data, args, size, channels) for lr in grid]
            for r in tried:
                print(f"{ds} {name} lr={r['lr']:g} seed 0: train {r['train_loss']:.3f} test {r['test_loss']:.3f} "
                      f"acc {r['test_acc']:.3f}", flush=True)
            best = min(tried, key=lambda r: r["train_loss"] if r["train_loss"] == r["train_loss"] else float("inf"))
            runs = [best] + [run(name, best["lr"], s, data, args, size, channels) for s in range(1, args.seeds)]
            results[ds][name] = dict(grid=[dict(lr=r["lr"], train_loss=r["train_loss"]) for r in tried], runs=runs)
    write_results(results, args, names, grid)
    return 0


def _ms(xs):
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)


def write_results(results, args, names, grid):
    out = Path(args.out)
    cmd = "python experiments/optimizers/vit.py " + " ".join(sys.argv[1:])
    lines = ["# M3 vs AdamW vs Muon on a small ViT", "",
             f"Command: `{cmd.strip()}`  ",
             f"ViT dim {args.dim}, depth {args.depth}, 4 heads, patch 4; batch {args.batch}; {args.steps} steps; "
             f"learning-rate grid {grid} (chosen per optimizer by the final training loss of seed 0); "
             f"{args.seeds} seed(s); M3: betas (0.95, 0.999, 0.9), alpha {args.alpha}, f = {args.slow_every}, "
             "accumulate='ema'. Muon and M3 use adjust_lr_fn='match_rms_adamw'; with them, AdamW at lr "
             f"{args.rest_lr:g} updates everything else (patch kernel, norms, biases, positions, class token, "
             "head). CPU, float32. Mean ± std over seeds; time per step relative to Muon measured in the same run.", ""]
    for ds, per in results.items():
        mu = _ms([r["step_time"] for r in per["muon"]["runs"]])[0] if "muon" in per else None
        lines += [f"## {ds}", "",
                  "| optimizer | lr | final train loss | test loss | test accuracy | time/step vs Muon |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name in names:
            runs = per[name]["runs"]
            tl, te, acc = (_ms([r[k] for r in runs]) for k in ("train_loss", "test_loss", "test_acc"))
            st = _ms([r["step_time"] for r in runs])[0]
            rel = f"{st / mu:.2f}×" if mu else "–"
            lines.append(f"| {name} | {runs[0]['lr']:g} | {tl[0]:.3f} ± {tl[1]:.3f} | {te[0]:.3f} ± {te[1]:.3f} | "
                         f"{100 * acc[0]:.1f} ± {100 * acc[1]:.1f}% | {rel} |")
        lines += ["", "Grid (seed 0, final train loss): " + "; ".join(
            f"{n}: " + ", ".join(f"{g['lr']:g} → {g['train_loss']:.3f}" for g in per[n]["grid"]) for n in names), ""]
    lines += ["![training curves](curves.png)", ""]
    (out / "RESULTS.md").write_text("\n".join(lines))
    slim = {ds: {n: dict(grid=v["grid"], runs=[{k: r[k] for k in r if k != "curve"} for r in v["runs"]])
                 for n, v in per.items()} for ds, per in results.items()}
    (out / "results.json").write_text(json.dumps(slim, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plot]'): no plot written")
        return
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (ds, per) in zip(axes[0], results.items(), strict=True):
        for name in names:
            curves = torch.tensor([r["curve"] for r in per[name]["runs"] if len(r["curve"]) == args.steps])
            if len(curves) == 0:
                continue
            k = max(1, args.steps // 50)
            smooth = curves.mean(0).unfold(0, k, k).mean(-1)
            ax.plot(torch.arange(len(smooth)) * k, smooth, label=f"{name} (lr {per[name]['runs'][0]['lr']:g})")
        ax.set_title(ds)
        ax.set_xlabel("step")
        ax.set_ylabel("train loss (mean over seeds)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)


if __name__ == "__main__":
    sys.exit(main())
