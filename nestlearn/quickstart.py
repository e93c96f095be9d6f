"""The quickstart: a tiny HOPE and a Transformer of the same size trained on generated in-context
recall (no download, no ../shared), then a side-by-side table and a plot of the loss curves."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .models import CausalLM
from .train import Trainer, from_dict

BASE = {
    "model": {"dim": 32, "layers": 2, "heads": 2,
              "selfmod": {"heads": 2, "chunk_size": 8, "chunk_size_other": 4},
              "cms": {"levels": [{"chunk_size": 4, "lr": 0.01}, {"chunk_size": 16, "lr": 0.001}],  # 20-token sequences
                      "hidden_mult": 4 / 3}},
    "data": {"source": "recall", "recall_pairs": 6, "recall_queries": 4, "recall_keys": 16, "recall_values": 16},
    "optim": {"name": "adamw", "lr": 3e-3, "schedule": "cosine"},
    "train": {"batch_size": 16, "log_every": 10, "eval_every": 50, "eval_batches": 8},
}


def matched_mlp_mult(target: int, model: dict) -> float:
    """The Transformer MLP width whose parameter count is closest to ``target`` (same size models)."""
    vocab = 1 + BASE["data"]["recall_keys"] + BASE["data"]["recall_values"]

    def count(mult: float) -> int:
        cfg = from_dict({**BASE, "model": {**model, "block": "transformer", "mlp_mult": mult, "vocab_size": vocab}})
        return CausalLM(cfg.model).num_parameters()

    dim = model["dim"]
    c1, c2 = count(1.0), count(2.0)  # parameters grow linearly with the MLP width
    hidden = round(dim * (1.0 + (target - c1) / (c2 - c1)))
    return max(1, hidden) / dim


def main(steps: int = 1000, out: str = "runs/quickstart", blocks: tuple[str, ...] = ("hope", "transformer")) -> dict:
    root = Path(out)
    results = {}
    for block in blocks:
        shutil.rmtree(root / block, ignore_errors=True)
        model = {**BASE["model"], "block": block}
        if block == "transformer" and "hope" in results:
            model["mlp_mult"] = matched_mlp_mult(results["hope"]["params"], BASE["model"])
        cfg = from_dict({**BASE, "model": model,
                         "train": {**BASE["train"], "steps": steps, "ckpt_every": steps, "out_dir": str(root / block)}})
        trainer = Trainer(cfg)
        t0 = time.perf_counter()
        history = trainer.run()
        wall = time.perf_counter() - t0
        train_rows = [h for h in history if "loss" in h]
        final = trainer.evaluate()
        results[block] = {"params": trainer.model.num_parameters(), "train_loss": train_rows[-1]["loss"],
                          "val_loss": final["val_loss"], "val_acc": final["val_acc"],
                          "tok_s": train_rows[-1]["tok_s"], "wall": wall, "curve": train_rows}
    lines = [f"In-context associative recall (6 pairs, 4 queries; 16 keys, 16 values; chance accuracy 6.2%), "
             f"{steps} steps, batch 16, AdamW, CPU:", "",
             "| model | parameters | final train loss | held-out loss | held-out accuracy | train tokens/s | wall |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for block, r in results.items():
        lines.append(f"| {block} | {r['params']:,} | {r['train_loss']:.3f} | {r['val_loss']:.3f} | "
                     f"{100 * r['val_acc']:.1f}% | {r['tok_s']:,.0f} | {r['wall']:.0f} s |")
    table = "\n".join(lines)
    print("\n" + table)
    (root / "RESULTS.md").write_text(table + "\n\n![loss curves](loss.png)\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for block, r in results.items():
            ax.plot([h["step"] for h in r["curve"]], [h["loss"] for h in r["curve"]], label=block)
        ax.set_xlabel("step")
        ax.set_ylabel("train loss (answers only)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(root / "loss.png", dpi=100)
        print(f"wrote {root / 'RESULTS.md'} and {root / 'loss.png'}")
    except ImportError:
        print(f"wrote {root / 'RESULTS.md'} (install matplotlib for the plot)")
    return results
