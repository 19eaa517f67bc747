"""Options that several commands share, each defined once (flag, type, default, help), and the
checks of their values that argparse cannot express. ``parser`` is a parser or an argument
group; the checks raise :class:`UsageError` (exit 2) naming the flag and the allowed range."""

from __future__ import annotations

from pathlib import Path

from vesukit.errors import UsageError
from vesukit.infer.settings import DEFAULT_OVERLAP
from vesukit.infer.tta import PRESETS


def add_teachers_argument(parser, required: bool = True) -> None:
    parser.add_argument("--teachers", type=Path, required=required,
                        help="folder with teachers.json and the checkpoints")


def add_device_argument(parser, help_text: str = "auto (default), cpu, cuda, cuda:N") -> None:
    parser.add_argument("--device", default="auto", help=help_text)


def add_tta_argument(parser, default: str | None = "none", help_text: str | None = None) -> None:
    parser.add_argument("--tta", default=default, choices=PRESETS, help=help_text)


def add_overlap_argument(parser) -> None:
    """Default None: vesukit.run_settings resolves it (the calibration's, else the built-in)."""
    parser.add_argument("--overlap", type=float, default=None,
                        help=f"sliding-window overlap in [0, 1) (default: the calibration's, "
                        f"else {DEFAULT_OVERLAP})")


def add_map_cache_arguments(parser, cache_help: str) -> None:
    """Where the teachers' probability maps are cached and the settings they are made with
    (calibrate, ablate and distill share one cache; an entry is reused while these match)."""
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR", help=cache_help)
    parser.add_argument("--cache-dtype", default="float16", choices=["float16", "float32"])
    add_tta_argument(parser, default=None, help_text="test-time augmentation (default: each "
                     "teacher's own, e.g. an nnU-Net teacher's mirroring, else none)")
    add_overlap_argument(parser)


def add_labelled_data_argument(parser) -> None:
    parser.add_argument("--data", type=Path, default=None,
                        help="competition root with train_images/ and train_labels/ "
                        "(default: discovered under /kaggle/input)")


def add_root_arguments(parser) -> None:
    """``--data`` and ``--input-base``: where the competition root is, or where to find it."""
    parser.add_argument("--data", type=Path, default=None,
                        help="competition root (default: discovered under /kaggle/input)")
    parser.add_argument("--input-base", type=Path, default=None,
                        help="where to discover the root (default $VESUKIT_INPUT_BASE or "
                        "/kaggle/input)")


def check_overlap(overlap: float | None) -> None:
    if overlap is not None and not 0 <= overlap < 1:
        raise UsageError(f"--overlap {overlap}: must be in [0, 1).")


def check_workers(workers: int | None) -> None:
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: must be >= 1.")
