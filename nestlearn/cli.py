"""``nestlearn <verb>`` (also ``python -m nestlearn <verb>``).

    nestlearn train CONFIG [key=value ...] [--resume]
    nestlearn eval RUN_DIR                     # held-out loss / accuracy of the latest checkpoint
    nestlearn generate RUN_DIR --prompt TEXT   # streams tokens, carrying the model's state
    nestlearn quickstart                       # HOPE vs Transformer on generated data, table + plot
    nestlearn synthetic RECIPE [--quick]       # formal languages / MAD / MQAR, every model × seed → RESULTS.md
    nestlearn optimizers [--quick]             # M3 vs AdamW vs Muon on a ViT (Fig. 11) → experiments/optimizers
    nestlearn bench                            # a quick throughput check of every block kind
    nestlearn demo                             # memories learning key→value pairs in context
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _run_trainer(run_dir: str):
    from .train import Trainer, load_config

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise SystemExit(f"error: {run} is not a run folder (no config.yaml); pass the train.out_dir of a run")
    cfg = load_config(run / "config.yaml")
    cfg.train.progress = False
    trainer = Trainer(cfg)
    trainer.load()
    return trainer


def main(argv: list[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["optimizers"]:  # its own argument parser (nestlearn/experiments/optimizers.py)
        from .experiments.optimizers import main as optimizers

        return optimizers(words[1:])
    parser = argparse.ArgumentParser(prog="nestlearn", description="Nested Learning in PyTorch")
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("optimizers", help="M3 vs AdamW vs Muon on a small ViT (Fig. 11); --help lists its options")
    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", help="a YAML file (configs/debug.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.dim=128 train.steps=20")
    p.add_argument("--resume", action="store_true", help="continue the run in train.out_dir")
    p = sub.add_parser("eval", help="evaluate the latest checkpoint of a run")
    p.add_argument("run_dir")
    p = sub.add_parser("generate", help="generate text from the latest checkpoint of a text run")
    p.add_argument("run_dir")
    p.add_argument("--prompt", default="")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p = sub.add_parser("quickstart", help="HOPE vs Transformer on generated recall data: a table and a plot")
    p.add_argument("--max-steps", type=int, default=10_000,
                   help="the step cap of every model (each stops earlier once its accuracy plateaus)")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate of every model (default 1e-3)")
    p.add_argument("--models", nargs="+", default=None,
                   help="a subset of: hope, 'hope (CMS frozen in context)', transformer")
    p = sub.add_parser("synthetic", help="a synthetic-task suite (experiments/synthetic/*.yaml) → RESULTS.md")
    p.add_argument("recipe", help="experiments/synthetic/formal.yaml, mad.yaml or mqar.yaml")
    p.add_argument("--quick", action="store_true", help="the recipe's quick settings (a smoke run in minutes)")
    p.add_argument("--out", default=None,
                   help="output folder (default: results/ beside the recipe; runs/synthetic-quick with --quick); "
                        "runs already in it are kept, so an interrupted suite resumes")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--report", action="store_true", help="only rewrite RESULTS.md from the runs already done")
    p.add_argument("--models", nargs="+", default=None, dest="only_models",
                   help="run only these of the recipe's models (processes sharing a suite take disjoint parts)")
    p.add_argument("--tasks", nargs="+", default=None, dest="only_tasks", help="run only these of its tasks")
    p.add_argument("--device", default=None, help="train and score on this device (default: the recipe's, cpu)")
    p.add_argument("--left", action="store_true",
                   help="print the next run the suite would start ('left: …') or 'nothing left'; train nothing")
    p.add_argument("--keep-weights", default=None, metavar="DIR",
                   help="keep each finished run's scored weights under DIR/<family>/ (load with "
                        "nestlearn.experiments.synthetic.load_weights)")
    sub.add_parser("bench", help="training tokens/s of every block kind (debug preset), vs the Transformer")
    p = sub.add_parser("demo", help="memories learning key→value pairs in context, as a table")
    p.add_argument("--passes", type=int, default=6, help="passes over the pairs (default 6)")
    args = parser.parse_args(argv)

    try:
        if args.verb == "train":
            from .train import load_config, train

            trainer = train(load_config(args.config, args.overrides), resume=args.resume)
            print(f"done: {trainer.out} (step {trainer.step})")
        elif args.verb == "eval":
            trainer = _run_trainer(args.run_dir)
            result = trainer.evaluate()
            print(f"step {trainer.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
        elif args.verb == "generate":
            _generate(args)
        elif args.verb == "quickstart":
            from .quickstart import main as quickstart

            if args.max_steps < 1:
                parser.error(f"--max-steps must be a positive integer (got {args.max_steps})")
            from .quickstart import MODELS

            quickstart(max_steps=args.max_steps, out=args.out, lr=args.lr,
                       blocks=tuple(args.models) if args.models else MODELS)
        elif args.verb == "synthetic":
            from .experiments.synthetic import main as synthetic

            command = "nestlearn " + " ".join(_suite_words(argv if argv is not None else sys.argv[1:]))
            synthetic(args.recipe, quick=args.quick, out=args.out, threads=args.threads, command=command,
                      report_only=args.report, only_models=args.only_models, only_tasks=args.only_tasks,
                      device=args.device, left=args.left, keep_weights=args.keep_weights)
        elif args.verb == "bench":
            _bench()
        elif args.verb == "demo":
            if args.passes < 1:
                parser.error(f"--passes must be a positive integer (got {args.passes})")
            from .demo import main as run_demo

            run_demo(args.passes)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _suite_words(words: list[str]) -> list[str]:
    """The command line that runs (and resumes) the whole suite: without --report, --models, --tasks, --left and
    --keep-weights (which change no result)."""
    out, skipping, one = [], False, False
    for w in words:
        if w.startswith("--"):
            key = w.split("=", 1)[0]
            skipping = key in ("--models", "--tasks") and "=" not in w  # their values follow
            one = key == "--keep-weights" and "=" not in w  # its value follows
            if key in ("--models", "--tasks", "--report", "--left", "--keep-weights"):
                continue
        elif one:
            one = False
            continue
        elif skipping:
            continue
        out.append(w)
    return out


def _generate(args) -> None:
    import torch

    trainer = _run_trainer(args.run_dir)
    tok = getattr(trainer.batches, "tokenizer", None)
    if tok is None:
        raise ValueError(f"{args.run_dir} was trained on generated recall data: there is no text to generate")
    model = trainer.model.eval()
    ids = tok.encode(args.prompt) or [0]
    print(args.prompt, end="", flush=True)
    model.generate(torch.tensor([ids]), args.max_new_tokens, temperature=args.temperature, top_k=args.top_k or None,
                   on_token=lambda t: print(tok.decode(t[0].tolist()), end="", flush=True))
    print()


def _bench() -> None:
    """Training and inference tokens/s of every block kind at the ``debug`` preset, as benchmarks/model_step.py
    measures them (``nestlearn.benchmarking.throughput``); that script is the full benchmark."""
    import torch

    from .benchmarking import machine, throughput
    from .models import BLOCKS, CausalLM, preset

    rates = {}
    for block in BLOCKS:
        torch.manual_seed(0)
        model = CausalLM(preset("debug", block=block))
        rates[block] = throughput(model, torch.randint(0, model.cfg.vocab_size, (4, 128)), repeats=1)
    print(f"debug preset, B=4, T=128; {machine()}")
    for block, (train, infer) in rates.items():
        print(f"{block:15s} train {train:>10,.0f} tok/s ({rates['transformer'][0] / train:5.2f}x the Transformer's "
              f"time/token)   infer {infer:>10,.0f} tok/s")


if __name__ == "__main__":
    sys.exit(main())
