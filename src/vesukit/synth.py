"""Synthetic competition data: sheet-like CT volumes with 0/1/2 labels, in Kaggle's layout.

The real data (docs/competition.md): uint8 volumes, mean ~88, sd ~48, a ~3-voxel zero border in
Y/X; papyrus sheets whose recto surface is labelled 1 (~2 voxels thick), 0 background, and 2
for unlabeled regions covering roughly half of each volume. The generator reproduces that
structure: wavy, roughly parallel sheets (some touching or merging), a bright papyrus layer
under each labelled surface, blur and noise, large unlabeled blobs. It feeds the dry run,
the tests and the benchmarks, so it is deterministic by seed and fast at 320^3.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from vesukit.data import write_volume

DEFAULT_SHAPES: tuple[tuple[int, int, int], ...] = ((320, 320, 320), (256, 256, 256))
BORDER = 3  # zero border in Y and X, as in the real volumes


@dataclass(frozen=True)
class SheetStyle:
    """Knobs of the generator; the defaults match the competition's statistics."""

    spacing: float = 11.0          # mean distance between neighbouring sheets (voxels)
    spacing_jitter: float = 0.35   # relative spread of the spacing
    surface_thickness: float = 2.0  # labelled recto surface
    papyrus_thickness: float = 5.0  # bright layer that starts at the surface
    warp: float = 6.0              # amplitude of the shared 3D warp (curvature)
    sheet_wobble: float = 3.5      # amplitude of each sheet's own wobble (makes sheets touch)
    papyrus_level: float = 150.0
    air_level: float = 45.0
    blur_sigma: float = 1.0
    noise_sd: float = 14.0
    unlabeled_fraction: float = 0.55


def synth_volume(
    shape: tuple[int, int, int], seed: int | np.random.SeedSequence, style: SheetStyle = SheetStyle()
) -> tuple[np.ndarray, np.ndarray]:
    """One (image, label) pair of uint8 (Z, Y, X) arrays; the same seed gives the same pair."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    axis = int(rng.integers(0, 3))  # the direction the sheets are stacked along
    plane_shape = tuple(s for i, s in enumerate(shape) if i != axis)

    # Depth coordinate along `axis`, bent by a smooth 3D warp shared by all sheets.
    depth = np.arange(shape[axis], dtype=np.float32).reshape(
        [-1 if i == axis else 1 for i in range(3)]
    )
    depth = depth + style.warp * _smooth_field(shape, 48.0, rng)

    papyrus = np.zeros(shape, dtype=bool)
    surface = np.zeros(shape, dtype=bool)
    position = -style.spacing * rng.uniform(0.0, 1.0)
    extent = shape[axis] + 2 * style.warp
    while position < extent:
        wobble = style.sheet_wobble * _smooth_field(plane_shape, 40.0, rng)
        offset = np.expand_dims(wobble, axis) + position
        signed = depth - offset  # >= 0 on the recto side
        surface |= (signed >= 0) & (signed < style.surface_thickness)
        papyrus |= (signed >= 0) & (signed < style.papyrus_thickness)
        step = style.spacing * (1 + style.spacing_jitter * rng.uniform(-1, 1))
        position += max(step, style.surface_thickness + 1)

    image = np.where(papyrus, np.float32(style.papyrus_level), np.float32(style.air_level))
    image += 25.0 * _smooth_field(shape, 64.0, rng)  # slow density variation
    image = ndimage.gaussian_filter(image, style.blur_sigma, output=np.float32)
    image += rng.normal(0.0, style.noise_sd, size=shape).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)

    label = surface.astype(np.uint8)
    unlabeled = _smooth_field(shape, 56.0, rng)
    cut = np.quantile(unlabeled[::4, ::4, ::4], 1.0 - style.unlabeled_fraction)
    label[unlabeled > cut] = 2

    for array, fill in ((image, 0), (label, 0)):
        array[:, :BORDER, :] = fill
        array[:, -BORDER:, :] = fill
        array[:, :, :BORDER] = fill
        array[:, :, -BORDER:] = fill
    return image, label


def _smooth_field(shape: tuple[int, ...], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise of unit-ish amplitude varying over ``scale`` voxels (cheap at 320^3)."""
    coarse_shape = tuple(max(2, int(np.ceil(s / scale)) + 2) for s in shape)
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    factors = [s / c for s, c in zip(shape, coarse_shape)]
    # Cubic in 2D (cheap, smooth sheets); linear in 3D, where cubic would cost seconds.
    order = 3 if len(shape) == 2 else 1
    field = ndimage.zoom(coarse, factors, order=order, grid_mode=True, mode="grid-constant")
    field = field[tuple(slice(0, s) for s in shape)]
    if field.shape != shape:  # zoom rounding: pad by edge values
        pad = [(0, s - f) for s, f in zip(shape, field.shape)]
        field = np.pad(field, pad, mode="edge")
    return field.astype(np.float32, copy=False)


def make_competition_root(
    out: str | Path,
    n_test: int = 2,
    n_train: int = 2,
    shapes: tuple[tuple[int, int, int], ...] | list[tuple[int, int, int]] = DEFAULT_SHAPES,
    seed: int = 0,
    style: SheetStyle = SheetStyle(),
    workers: int = 1,
) -> Path:
    """Write a Kaggle-like root: train.csv, test.csv, train_images/, train_labels/, test_images/.

    Volumes are LZW-compressed like the real ones. Within each split, shapes cycle through
    ``shapes``. Ids are
    numeric strings like Kaggle's, derived from the seed; the same seed gives the same root,
    whatever ``workers`` (processes making volumes at once: each volume has its own seed).
    """
    out = Path(out)
    for folder in ("train_images", "train_labels", "test_images"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    root_seq = np.random.SeedSequence(seed)
    id_rng = np.random.default_rng(root_seq.spawn(1)[0])
    ids = _unique_ids(id_rng, n_train + n_test)
    volume_seeds = root_seq.spawn(n_train + n_test + 1)[1:]
    scroll_ids = ["26002", "35360", "34117"]

    rows = {"train": [], "test": []}
    jobs = []
    for index, (volume_id, volume_seed) in enumerate(zip(ids, volume_seeds)):
        split = "train" if index < n_train else "test"
        index_in_split = index if split == "train" else index - n_train
        shape = tuple(shapes[index_in_split % len(shapes)])
        jobs.append((out, split, volume_id, shape, volume_seed, style))
        rows[split].append((volume_id, scroll_ids[index % len(scroll_ids)]))
    if workers > 1 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
            list(pool.map(_write_synth_volume, jobs))
    else:
        for job in jobs:
            _write_synth_volume(job)

    for split, split_rows in rows.items():
        with open(out / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "scroll_id"])
            writer.writerows(split_rows)
    return out


def _write_synth_volume(job) -> None:
    out, split, volume_id, shape, volume_seed, style = job
    image, label = synth_volume(shape, volume_seed, style)
    write_volume(out / f"{split}_images" / f"{volume_id}.tif", image, compression="lzw")
    if split == "train":
        write_volume(out / "train_labels" / f"{volume_id}.tif", label, compression="lzw")


def _unique_ids(rng: np.random.Generator, count: int) -> list[str]:
    ids: list[str] = []
    while len(ids) < count:
        candidate = str(int(rng.integers(10**8, 4 * 10**9)))
        if candidate not in ids:
            ids.append(candidate)
    return ids
