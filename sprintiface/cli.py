"""Command line: ``python -m sprintiface <command>`` (also the ``sprintiface`` script)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from sprintiface.errors import SprintifaceError


def _demo(args: argparse.Namespace) -> int:
    if getattr(args, "trainer", False):
        from sprintiface.demo import run_training_demo

        run_training_demo()
        return 0
    from sprintiface.demo import run_scorer_demo

    run_scorer_demo(num_segments=args.segments, num_frames=args.frames, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sprintiface", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="replay RASR's scorer protocol on the shipped model")
    demo.add_argument("--segments", type=int, default=3, help="segments to score (default 3)")
    demo.add_argument("--frames", type=int, default=500, help="frames per segment (default 500)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic features")
    demo.add_argument("--trainer", action="store_true",
                      help="replay a RASR training run (segment list over 2 epochs, dump trainer) instead")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SprintifaceError as error:
        print(f"sprintiface {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
