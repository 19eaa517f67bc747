"""`vesukit distill`: distil the teacher ensemble into one student (phases B and C)."""

from __future__ import annotations

import argparse

from vesukit.commands._arguments import add_map_cache_arguments, add_teachers_argument, check_overlap
from vesukit.commands._output import progress_line
from vesukit.commands.train import add_training_arguments, build_config, build_student, report

DESCRIPTION = """
Run the teachers once over the labelled train volumes (maps cached), then train a student on the
ensemble mean weighted by the teachers' confidence and mixed with the hard labels (label 2
ignored); optional progressive unfreezing (--finetune head:E:LR,decoder:E:LR,encoder:E:LR) with
early stopping on the exact local score of held-back volumes. Writes a teacher folder that
`vesukit predict` loads."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "distill", help="distil the teachers into one student (a teacher folder for predict)", description=DESCRIPTION)
    add_teachers_argument(parser)
    add_training_arguments(parser)
    teachers = parser.add_argument_group("teachers' maps")
    add_map_cache_arguments(teachers, "the teachers' map cache (default OUT/distill-cache; a calibration-cache "
                            "made by the same teachers and settings is reused)")
    teachers.add_argument("--label-weight", type=float, default=0.5,
                          help="pull toward the hard label where it is 0/1 (0.5; 0 = teachers only)")
    teachers.add_argument("--confidence-gamma", type=float, default=1.0,
                          help="confidence = (1 - variance/0.25)^gamma * (1 - disagreement) (1)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vesukit.errors import UsageError
    from vesukit.train.run import run_training

    if not 0 <= args.label_weight <= 1:
        raise UsageError(f"--label-weight {args.label_weight}: must be in [0, 1].")
    check_overlap(args.overlap)
    spec = build_student(args)
    config = build_config(args)
    result = run_training(args.data, args.out, spec, config, teachers=args.teachers,
                          volumes=args.volumes, holdout=args.holdout, device=args.device,
                          resume=args.resume, initial_weights=args.init, cache_dir=args.cache,
                          tta=args.tta, overlap=args.overlap, dtype=args.cache_dtype,
                          label_weight=args.label_weight, gamma=args.confidence_gamma,
                          progress=progress_line)
    report(result, args.out)
    return 0
