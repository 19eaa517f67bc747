"""`vesukit train`: train a student of any registered architecture from labels alone."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vesukit.commands._arguments import add_device_argument, add_labelled_data_argument
from vesukit.commands._output import progress_line

DESCRIPTION = """
Train a network of any registered architecture on patches of the labelled train volumes (label 2
ignored), with early stopping on the exact local score of held-back volumes. Writes a teacher
folder that `vesukit predict` loads."""


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by train and distill: data, the student, the stages, the loop."""
    add_labelled_data_argument(parser)
    parser.add_argument("--out", type=Path, required=True,
                        help="folder to write: student.safetensors + teachers.json (a teacher "
                        "folder for predict), training.json, train_log.jsonl/.png, checkpoint/")
    student = parser.add_argument_group("student")
    student.add_argument("--arch", default="smp.Unet",
                         help="any registered architecture (smp.Unet, smp.FPN, ..., transunet, "
                         "resenc_unet3d); default smp.Unet")
    student.add_argument("--size", default="small", choices=["tiny", "small"])
    student.add_argument("--encoder", default=None,
                         help="smp/timm encoder (default: a shrunken timm ResNet-18)")
    student.add_argument("--model-kwargs", default=None, metavar="JSON",
                         help="constructor arguments, e.g. '{\"decoder_channels\": [32,16,8,8,8]}'")
    student.add_argument("--patch", type=int, default=None, help="patch side (size default)")
    student.add_argument("--context", type=int, default=5, help="2.5D slices per input (5)")
    student.add_argument("--name", default="student", help="the student's teacher name")
    student.add_argument("--init", type=Path, default=None, metavar="FILE",
                         help="start from these weights (any checkpoint form predict loads)")
    loop = parser.add_argument_group("training")
    loop.add_argument("--epochs", type=int, default=4, help="epochs of the full-network stage (4)")
    loop.add_argument("--lr", type=float, default=2e-3, help="its learning rate (2e-3)")
    loop.add_argument("--finetune", default="", metavar="STAGE:EPOCHS:LR,...",
                      help="progressive unfreezing after it, e.g. "
                      "head:2:1e-3,decoder:2:5e-4,encoder:2:2e-4 (default: none)")
    loop.add_argument("--no-full-stage", action="store_true",
                      help="skip the full-network stage (only --finetune stages run)")
    loop.add_argument("--steps-per-epoch", type=int, default=40)
    loop.add_argument("--batch-size", type=int, default=8)
    loop.add_argument("--loss", default="bce=1,dice=1", metavar="TERM=W,...",
                      help="loss terms and weights from bce, dice (bce=1,dice=1)")
    loop.add_argument("--surface-fraction", type=float, default=0.5,
                      help="share of patches centred on surface voxels (0.5)")
    loop.add_argument("--no-augment", action="store_true", help="no flips/rot90/intensity")
    loop.add_argument("--holdout", type=float, default=0.25,
                      help="share of labelled volumes held back for early stopping (0.25)")
    loop.add_argument("--volumes", type=int, default=None, metavar="N",
                      help="use the first N labelled volumes (default: all)")
    loop.add_argument("--patience", type=int, default=3,
                      help="evaluations without improvement that end a stage (3)")
    loop.add_argument("--decline", type=int, default=2,
                      help="evaluations in a row that each fell that end a stage (2)")
    loop.add_argument("--eval-threshold", type=float, default=0.5)
    loop.add_argument("--seed", type=int, default=0)
    add_device_argument(loop)
    loop.add_argument("--no-amp", action="store_true", help="full precision on CUDA")
    loop.add_argument("--resume", action="store_true",
                      help="continue from OUT/checkpoint after an interruption")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a student from labels (a teacher folder for predict)", description=DESCRIPTION)
    add_training_arguments(parser)
    parser.set_defaults(handler=run)


def build_student(args):
    from vesukit.errors import UsageError
    from vesukit.train.student import student_spec

    kwargs = None
    if args.model_kwargs:
        try:
            kwargs = json.loads(args.model_kwargs)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--model-kwargs: not JSON ({exc})") from None
        if not isinstance(kwargs, dict):
            raise UsageError("--model-kwargs: must be a JSON object")
    return student_spec(args.arch, args.size, name=args.name, encoder=args.encoder,
                        context=args.context, patch=args.patch, model_kwargs=kwargs)


def build_config(args):
    from vesukit.errors import UsageError
    from vesukit.train import TrainError
    from vesukit.train.loop import Stage, TrainConfig
    from vesukit.train.sampling import Augment

    stages = [] if args.no_full_stage else [("all", args.epochs, args.lr)]
    for item in filter(None, (s.strip() for s in args.finetune.split(","))):
        try:
            name, epochs, lr = item.split(":")
            stages.append((name, int(epochs), float(lr)))
        except ValueError:
            raise UsageError(f"--finetune {item!r}: write STAGE:EPOCHS:LR, e.g. head:2:1e-3") from None
    weights = {}
    for item in filter(None, (s.strip() for s in args.loss.split(","))):
        term, _, value = item.partition("=")
        try:
            weights[term] = float(value or 1.0)
        except ValueError:
            raise UsageError(f"--loss {item!r}: write TERM=WEIGHT, e.g. bce=1,dice=1") from None
    if not 0 <= args.holdout < 1:
        raise UsageError(f"--holdout {args.holdout}: must be in [0, 1).")
    try:
        return TrainConfig(
            stages=tuple(Stage(*s) for s in stages), steps_per_epoch=args.steps_per_epoch,
            batch_size=args.batch_size, loss_weights=weights,
            surface_fraction=args.surface_fraction,
            augment=Augment.none() if args.no_augment else Augment(), seed=args.seed,
            patience=args.patience, decline=args.decline, eval_threshold=args.eval_threshold,
            amp=not args.no_amp)
    except TrainError as exc:
        raise UsageError(str(exc)) from None


def report(result, out: Path) -> None:
    best = "n/a (nothing held back)" if result.best_score is None else \
        f"{result.best_score:.4f} (epoch {result.best_epoch})"
    print(f"trained {result.epochs_run} epoch(s); best held-back score {best}")
    for line in result.stopped:
        print(f"early stop: {line}")
    for warning in result.warnings:
        print(f"WARNING {warning}")
    print(f"wrote {out} (teacher folder: use it with `vesukit predict --teachers {out}`)")


def run(args: argparse.Namespace) -> int:
    from vesukit.train.run import run_training

    spec = build_student(args)
    config = build_config(args)
    result = run_training(args.data, args.out, spec, config, volumes=args.volumes,
                          holdout=args.holdout, device=args.device, resume=args.resume,
                          initial_weights=args.init, progress=progress_line)
    report(result, args.out)
    return 0
