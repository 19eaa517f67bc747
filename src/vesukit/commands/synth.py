"""`vesukit synth OUT`: write a synthetic, Kaggle-like competition root."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic competition root (train/test csv, images, labels)",
        description="Write a Kaggle-like competition root with sheet-like volumes and 0/1/2 "
        "labels. Deterministic by --seed.",
    )
    parser.add_argument("out", help="folder to create")
    parser.add_argument("--test", type=int, default=2, metavar="N", help="test volumes (2)")
    parser.add_argument("--train", type=int, default=2, metavar="N",
                        help="labelled train volumes (2)")
    parser.add_argument("--shape", type=int, nargs=3, action="append", metavar=("Z", "Y", "X"),
                        help="volume shape; repeat to cycle through several "
                        "(default: 320^3 and 256^3 alternating, like the competition)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vesukit.errors import UsageError
    from vesukit.synth import DEFAULT_SHAPES, make_competition_root

    if args.test < 0 or args.train < 0 or args.test + args.train == 0:
        raise UsageError("--test and --train must be >= 0 and not both 0")
    shapes = [tuple(s) for s in args.shape] if args.shape else list(DEFAULT_SHAPES)
    for shape in shapes:
        if min(shape) < 2:
            raise UsageError(f"--shape {' '.join(map(str, shape))}: every axis needs >= 2 voxels")
    root = make_competition_root(args.out, n_test=args.test, n_train=args.train,
                                 shapes=shapes, seed=args.seed)
    print(f"wrote {root}: {args.train} train + {args.test} test volumes, shapes "
          + ", ".join("x".join(map(str, s)) for s in shapes))
    return 0
