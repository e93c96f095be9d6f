"""``nestlearn <verb>`` (also ``python -m nestlearn <verb>``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nestlearn", description="Nested Learning in PyTorch")
    sub = parser.add_subparsers(dest="verb", required=True)
    demo = sub.add_parser("demo", help="memories learning key→value pairs in context, as a table")
    demo.add_argument("--passes", type=int, default=6, help="passes over the pairs (default 6)")
    args = parser.parse_args(argv)
    if args.verb == "demo":
        if args.passes < 1:
            parser.error(f"--passes must be a positive integer (got {args.passes})")
        from .demo import main as run_demo

        run_demo(args.passes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
