"""`vesukit train` and `vesukit distill` as library calls: volumes from a competition root,
targets (labels, or the teachers' cached maps mixed with labels), the loop, and the output
teacher folder (``student.safetensors`` + ``teachers.json`` + ``training.json``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from vesukit.data import atomic_write_bytes
from vesukit.train.loop import HeldBack, TrainConfig, TrainResult, train_student
from vesukit.train.sampling import TrainVolume
from vesukit.train.targets import confidence_weights, distill_targets, label_targets

TRAINING_NAME = "training.json"


def split_ids(root, volumes: int | None, holdout: float) -> tuple[list[str], list[str]]:
    """(train ids, held-back ids) of the labelled volumes, split as `vesukit calibrate` does."""
    from vesukit.calibrate.runner import labelled_ids
    from vesukit.calibrate.search import split_volumes

    return split_volumes(labelled_ids(root, volumes), holdout)


def held_back_volumes(root, ids: Sequence[str],
                      progress: Callable[[str], None] | None = None) -> list[HeldBack]:
    from vesukit.data import read_volume, volume_path
    from vesukit.metric import PreparedLabel

    items = []
    for volume_id in ids:
        if progress:
            progress(f"{volume_id}: held back for scoring")
        label = read_volume(volume_path(root, volume_id, "train_labels"))
        items.append(HeldBack(volume_id, read_volume(volume_path(root, volume_id, "train_images")),
                              label, PreparedLabel(label, name=volume_id)))
    return items


def label_volumes(root, ids: Sequence[str]) -> list[TrainVolume]:
    """Training volumes with targets from the labels alone (label 2 weighs 0)."""
    from vesukit.data import read_volume, volume_path

    volumes = []
    for volume_id in ids:
        target, weight = label_targets(read_volume(volume_path(root, volume_id, "train_labels")))
        volumes.append(TrainVolume(volume_id, read_volume(volume_path(root, volume_id, "train_images")),
                                   target, weight))
    return volumes


def distill_volumes(root, ids: Sequence[str], cache, *, label_weight: float = 0.5,
                    gamma: float = 1.0) -> list[TrainVolume]:
    """Training volumes with soft targets from the cached ensemble maps (see targets.py)."""
    from vesukit.data import read_volume, volume_path

    volumes = []
    for volume_id in ids:
        maps = cache.ensemble(volume_id)
        label = read_volume(volume_path(root, volume_id, "train_labels"))
        confidence = confidence_weights(maps.variance, maps.disagreement, gamma)
        target, weight = distill_targets(maps.mean, confidence, label, label_weight)
        volumes.append(TrainVolume(volume_id, read_volume(volume_path(root, volume_id, "train_images")),
                                   target, weight))
    return volumes


def write_student(out: str | Path, spec, model, result: TrainResult, config: TrainConfig,
                  provenance: dict) -> Path:
    """The student as a teacher folder `predict` loads, with what made it beside it."""
    from vesukit.teachers import save_checkpoint, save_manifest

    out = Path(out)
    save_checkpoint(model, out / spec.checkpoint)
    save_manifest(out, [spec])
    summary = {"provenance": provenance, "config": config.fingerprint(),
               "best_score": result.best_score, "best_epoch": result.best_epoch,
               "epochs_run": result.epochs_run, "stopped": result.stopped,
               "warnings": result.warnings,
               "parameters": sum(p.numel() for p in model.parameters())}
    atomic_write_bytes(out / TRAINING_NAME, json.dumps(summary, indent=1).encode())
    return out


def run_training(data, out, spec, config: TrainConfig, *, teachers=None, volumes: int | None = None,
                 holdout: float = 0.25, device: str = "auto", resume: bool = False,
                 initial_weights=None, cache_dir=None, tta: str | None = None,
                 overlap: float | None = None,
                 dtype: str = "float16", label_weight: float = 0.5, gamma: float = 1.0,
                 progress: Callable[[str], None] | None = None, on_epoch=None):
    """Train from labels (``teachers=None``) or distil from ``teachers``; write ``out``.

    The teachers run as predict runs them (vesukit.run_settings: active teachers, TTA per
    teacher, overlap; ``tta``/``overlap`` None: resolved)."""
    from vesukit.data import find_competition_root
    from vesukit.devices import resolve_device

    root = find_competition_root(data)
    device = resolve_device(device)
    out = Path(out)
    train_ids, held_ids = split_ids(root, volumes, holdout)
    provenance = {"data": str(root), "train_volumes": train_ids, "held_back": held_ids,
                  "device": str(device)}
    if teachers is None:
        train_volumes = label_volumes(root, train_ids)
        provenance["targets"] = "labels"
    else:
        from vesukit.calibrate.cache import build_cache
        from vesukit.run_settings import active_manifest, resolve_run_settings
        from vesukit.teachers import load_manifest

        declared = load_manifest(teachers)
        settings = resolve_run_settings(declared, None, tta=tta, overlap=overlap)
        manifest = active_manifest(declared)
        cache_dir = Path(cache_dir) if cache_dir else out / "distill-cache"
        cache = build_cache(cache_dir, root, manifest, train_ids, device=str(device),
                            tta=dict(settings.tta), overlap=settings.overlap, dtype=dtype,
                            progress=progress)
        train_volumes = distill_volumes(root, train_ids, cache, label_weight=label_weight,
                                        gamma=gamma)
        provenance.update(targets="ensemble", teachers=str(Path(teachers).resolve()),
                          teacher_names=[s.name for s in manifest.teachers], tta=dict(settings.tta),
                          overlap=settings.overlap,
                          label_weight=label_weight, confidence_gamma=gamma, cache=str(cache_dir))
    held = held_back_volumes(root, held_ids, progress)
    result, model = train_student(spec, train_volumes, out, config, held_back=held, device=device,
                                  resume=resume, initial_weights=initial_weights,
                                  progress=progress, on_epoch=on_epoch)
    write_student(out, spec, model.cpu(), result, config, provenance)
    return result
