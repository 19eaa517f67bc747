"""`vesukit teachers init|check|import-nnunet`: make a teachers folder from a preset or from an
nnU-Net v2 results folder; load and run one."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "teachers", help="create (init) or verify (check) a teachers folder",
        description="A teachers folder holds teachers.json (the ensemble) beside the "
        "checkpoints.")
    sub = parser.add_subparsers(dest="teachers_command", metavar="<init|check|pack|import-nnunet>")
    init = sub.add_parser("init", help="write a preset ensemble with random weights",
                          description="Write a preset's teachers with random weights and "
                          "the manifest. seed9: the nine 2.5D teachers; unet3d: one 3D "
                          "ResEnc U-Net. tiny = same families shrunk (fast on CPU); full = "
                          "real architectures and sizes.")
    init.add_argument("dir", help="folder to write")
    init.add_argument("--preset", default="seed9", choices=("seed9", "unet3d"))
    init.add_argument("--size", default="tiny", choices=("tiny", "full"))
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--force", action="store_true",
                      help="overwrite a folder that already has a teachers.json")
    init.set_defaults(handler=run_init)
    check = sub.add_parser("check", help="load every teacher and run one dummy forward",
                           description="Load every teacher of DIR (strictly), run one "
                           "forward on a dummy patch and print a table. Exit 1 if any fails.")
    check.add_argument("dir", help="teachers folder (holding teachers.json)")
    check.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto (cpu)")
    check.set_defaults(handler=run_check)
    pack = sub.add_parser("pack", help="make the Kaggle teachers dataset: slim weights, "
                          "manifest, calibration, dataset-metadata.json",
                          description="Write DATASET_DIR for `kaggle datasets create -p "
                          "DATASET_DIR`: each checkpoint reduced to its weights (safetensors), "
                          "teachers.json pointing at them, the calibration (--calibration, or "
                          "DIR/calibration.json) that the notebook applies, and "
                          "dataset-metadata.json owned by $KAGGLE_USERNAME.")
    pack.add_argument("dir", help="teachers folder (holding teachers.json)")
    pack.add_argument("--out", required=True, help="dataset folder to write")
    pack.add_argument("--calibration", default=None,
                      help="calibration.json to ship (default: DIR/calibration.json if present)")
    pack.add_argument("--half", action="store_true", help="store floating weights as float16")
    pack.set_defaults(handler=run_pack)
    nnunet = sub.add_parser(
        "import-nnunet", help="make a slim teachers folder from an nnU-Net v2 results folder",
        description="Read an nnU-Net v2 results folder (<Trainer>__<Plans>__<configuration>, as "
        "nnUNetv2_train writes it or as a model is downloaded), load every fold into its network, "
        "and write OUT/teachers.json with OUT/<name>/: plans.json, dataset.json, nnunet.json and "
        "fold_<f>/checkpoint_<final|best>.safetensors. The folder loads with no pickle at all.")
    nnunet.add_argument("results", help="nnU-Net results folder (holding plans.json, fold_<f>/)")
    nnunet.add_argument("--out", required=True, help="teachers folder to write")
    nnunet.add_argument("--folds", nargs="+", default=None, metavar="F",
                        help="fold numbers and/or 'all' (default: every fold with the checkpoint)")
    nnunet.add_argument("--checkpoint", default="final", choices=("final", "best"))
    nnunet.add_argument("--name", default=None,
                        help="teacher name (default: from the dataset and plans names)")
    nnunet.add_argument("--force", action="store_true",
                        help="overwrite an OUT that already has a teachers.json")
    nnunet.set_defaults(handler=run_import_nnunet)
    parser.set_defaults(handler=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    return args.handler(args)


def run_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vesukit.errors import UsageError
    from vesukit.teachers import MANIFEST_NAME
    from vesukit.teachers.presets import write_preset

    if (Path(args.dir) / MANIFEST_NAME).exists() and not args.force:
        raise UsageError(f"{Path(args.dir) / MANIFEST_NAME} already exists; pass --force to "
                         "overwrite it and the preset's checkpoints")
    manifest = write_preset(args.dir, preset=args.preset, size=args.size, seed=args.seed)
    print(f"wrote {len(manifest.teachers)} teacher(s) ({args.preset}, {args.size}, seed "
          f"{args.seed}) and {manifest.root / MANIFEST_NAME}")
    for spec in manifest.teachers:
        print(f"  {spec.name:24s} {spec.arch:16s} {spec.encoder or '-':22s} {spec.checkpoint}")
    return 0


def format_table(rows) -> str:
    header = ("name", "architecture", "parameters", "input", "patch", "weight", "load",
              "forward")
    lines = [header]
    for row in rows:
        arch = row.arch + (f"/{row.encoder}" if row.encoder else "")
        lines.append((row.name, arch, f"{row.parameters / 1e6:.2f}M" if row.parameters else "-",
                      row.input, "x".join(map(str, row.patch)), f"{row.weight:g}",
                      f"{row.load_seconds:.2f}s",
                      f"{row.forward_seconds:.3f}s" if row.ok else "FAILED"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
           for line in lines]
    for row in rows:
        if not row.ok:
            out.append(f"\n{row.name}: {row.error}")
    return "\n".join(out)


def run_check(args: argparse.Namespace) -> int:
    from vesukit.devices import resolve_device
    from vesukit.teachers.check import check_teachers

    device = str(resolve_device(args.device))
    rows = check_teachers(args.dir, device=device)
    print(format_table(rows))
    failed = [row.name for row in rows if not row.ok]
    total = sum(row.parameters for row in rows)
    if failed:
        print(f"\n{len(failed)} of {len(rows)} teacher(s) failed: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    print(f"\nall {len(rows)} teacher(s) OK on {device}: {total / 1e6:.1f}M parameters")
    return 0


def run_pack(args: argparse.Namespace) -> int:
    from vesukit.kernelgen import DEFAULT_OWNER, missing_owner_warning
    from vesukit.teachers.pack import pack_teachers

    summary = pack_teachers(args.dir, args.out, calibration=args.calibration, half=args.half)
    if summary["dataset_id"].startswith(f"{DEFAULT_OWNER}/"):
        print(f"vesukit teachers pack: warning: {missing_owner_warning()}", file=sys.stderr)
    for row in summary["teachers"]:
        print(f"  {row['teacher']:24s} {row['bytes_before'] / 1e6:9.2f} MB -> "
              f"{row['bytes_after'] / 1e6:9.2f} MB  {row['to']}")
    print(f"decision: {summary['calibration'] or 'none (predict uses a fixed 0.4)'}")
    print(f"wrote {summary['out']} (dataset {summary['dataset_id']}); upload with "
          f"`kaggle datasets create -p {summary['out']}`")
def run_import_nnunet(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vesukit.errors import UsageError
    from vesukit.teachers import MANIFEST_NAME
    from vesukit.teachers.nnunet_model import import_nnunet

    if (Path(args.out) / MANIFEST_NAME).exists() and not args.force:
        raise UsageError(f"{Path(args.out) / MANIFEST_NAME} already exists; pass --force to "
                         "overwrite it")
    folds = None
    if args.folds is not None:
        folds = [int(f) if f.isdigit() else f for f in args.folds]
        if any(f != "all" and not isinstance(f, int) for f in folds):
            raise UsageError(f"--folds takes fold numbers and/or 'all', got {args.folds}")
    manifest, spec = import_nnunet(args.results, args.out, folds=folds,
                                   checkpoint=args.checkpoint, name=args.name)
    print(f"wrote {manifest} with nnU-Net teacher '{spec.name}': folds "
          f"{', '.join(map(str, spec.folds))}, checkpoint_{spec.checkpoint}, weights as "
          f"safetensors in {Path(args.out) / spec.model}")
    return 0
