"""Applying a decision: one volume's maps to its mask, and saved maps to a submission.zip.

:func:`decide` is the whole predict-time decision of one volume. :func:`postprocess_maps` is
`vesukit postprocess`: probability maps saved by `vesukit predict --save-maps` (or by nnU-Net,
or any tool writing .npy/.npz/.tif/zarr) through a calibration into a validated zip, with
predict's writer, validator and fallbacks: a test id without a usable map gets a flagged empty
mask, never a missing entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vesukit.decide.calibration import Calibration, binarize
from vesukit.decide.rules import DEFAULT_THRESHOLD
from vesukit.decide.steps import apply_postprocess

EXIT_DEGRADED = 3  # as predict: valid and complete, but some volumes got fallback masks


def decide(maps, calibration: Calibration) -> tuple[np.ndarray, float]:
    """(uint8 mask, threshold) of one volume's ensemble maps under ``calibration``."""
    threshold = float(calibration.rule(maps))
    mask = binarize(maps.mean, threshold)
    return apply_postprocess(mask, calibration.postprocess, maps), threshold


def decide_or_fall_back(maps, calibration: Calibration) -> tuple[np.ndarray, float, list[str]]:
    """:func:`decide` that costs at most the failing stage, as predict does: a rule that raises
    gives the fixed :data:`DEFAULT_THRESHOLD`, a chain that raises the unprocessed mask. Returns
    (mask, threshold, what was degraded and why)."""
    degraded = []
    try:
        threshold = float(calibration.rule(maps))
    except Exception as exc:  # noqa: BLE001 - a fixed threshold beats an empty mask
        threshold = DEFAULT_THRESHOLD
        degraded.append(f"fixed threshold {threshold:g}: the rule {calibration.rule.describe()} "
                        f"failed ({type(exc).__name__}: {exc})")
    mask = binarize(maps.mean, threshold)
    try:
        mask = apply_postprocess(mask, calibration.postprocess, maps)
    except Exception as exc:  # noqa: BLE001 - the unprocessed mask beats an empty one
        degraded.append(f"without post-processing ({type(exc).__name__}: {exc})")
    return mask, threshold, degraded


@dataclass
class MapVolume:
    volume_id: str
    status: str                      # "done", "degraded" (a fallback stage) or "fallback" (empty)
    threshold: float | None = None
    foreground: float = 0.0
    seconds: float = 0.0
    reason: str = ""


@dataclass
class PostprocessResult:
    zip_path: Path
    volumes: list[MapVolume]
    validation: object               # vesukit.submission.ValidationReport
    decision: str
    warnings: list[str] = field(default_factory=list)

    @property
    def fallbacks(self) -> list[MapVolume]:
        """Volumes that got an empty fallback mask."""
        return [v for v in self.volumes if v.status == "fallback"]

    @property
    def degraded(self) -> list[MapVolume]:
        """Volumes decided with less than the calibration: a fixed threshold or no chain."""
        return [v for v in self.volumes if v.status == "degraded"]

    @property
    def exit_code(self) -> int:
        if not self.validation.valid:
            return 1
        return EXIT_DEGRADED if self.fallbacks or self.degraded else 0


def postprocess_maps(maps_dir, calibration: Calibration, out, data=None, input_base=None,
                     progress: Callable[[str], None] | None = None) -> PostprocessResult:
    """Every test id's saved map -> decided mask -> ``out`` (validated against the root)."""
    from vesukit.data import find_competition_root, list_test_ids
    from vesukit.maps import find_maps, maps_from_probability, read_map
    from vesukit.runtime.pipeline import check_writable, scan_shapes
    from vesukit.submission import SubmissionWriter, validate_zip

    say = progress or (lambda text: None)
    out = Path(out)
    check_writable(out)
    root = find_competition_root(data, base=input_base)
    ids = list_test_ids(root)
    shapes, warnings, _guesses = scan_shapes(root, ids)  # each guess is also a warning
    found = find_maps(maps_dir)
    decision = calibration.describe()
    say(f"decision: {decision}")
    volumes = []
    with SubmissionWriter(out, shapes) as writer:
        for volume_id in ids:
            start = time.perf_counter()
            reason = ""
            if volume_id not in found:
                reason = f"no map for it in {maps_dir}"
            else:
                try:
                    probability = read_map(found[volume_id])
                    if tuple(probability.shape) != tuple(shapes[volume_id]):
                        reason = (f"its map {found[volume_id].name} has shape "
                                  f"{'x'.join(map(str, probability.shape))}, the volume "
                                  f"{'x'.join(map(str, shapes[volume_id]))}")
                    else:
                        mask, threshold, degraded = decide_or_fall_back(
                            maps_from_probability(probability), calibration)
                except Exception as exc:  # noqa: BLE001 - one bad map must not end the zip
                    reason = f"{type(exc).__name__}: {exc}"
            if reason:
                warnings.append(f"volume '{volume_id}' gets an empty fallback mask: {reason}")
                say(f"WARNING {warnings[-1]}")
                writer.add(volume_id, np.zeros(shapes[volume_id], np.uint8))
                volumes.append(MapVolume(volume_id, "fallback", reason=reason))
                continue
            for reason in degraded:
                warnings.append(f"volume '{volume_id}': {reason}")
                say(f"WARNING {warnings[-1]}")
            writer.add(volume_id, mask)
            seconds = time.perf_counter() - start
            volumes.append(MapVolume(volume_id, "degraded" if degraded else "done", threshold,
                                     float(mask.mean()), seconds, "; ".join(degraded)))
            say(f"{volume_id}: thr {threshold:.3f}, {100 * mask.mean():.2f} % surface, "
                f"{seconds:.2f} s")
        unused = sorted(set(found) - set(ids))
        if unused:
            warnings.append(f"{len(unused)} map(s) in {maps_dir} are not test volumes and were "
                            f"ignored: {', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}")
        zip_path = writer.finish()
    return PostprocessResult(zip_path, volumes, validate_zip(zip_path, root), decision, warnings)
