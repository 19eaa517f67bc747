"""Teacher folders the tests share, made with the real presets (random weights): one place
instead of a copy per test module."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

# An smp U-Net and a SegFormer: two different 2.5D families, quick on the CPU.
TWO_OF_SEED9 = ("v1_default", "v1_segformer_mit_b2")

# A registered architecture per input kind whose patch multiple divides 16, so tests can use
# 16-voxel windows on small volumes: the tiny preset's 3D U-Net (multiple 4) and TransUNet
# (multiple 16; an smp.* 2.5D patch must be a multiple of 32).
_ARCH_FOR_KIND = {"3d": dict(arch="resenc_unet3d", encoder=None,
                             model_kwargs={"widths": [4, 8, 16], "blocks": [1, 1, 1]}),
                  "2.5d": dict(arch="transunet", encoder="resnet34")}


def teacher_spec(name: str, input_kind: str = "3d", **fields):
    """A real, validated ``TeacherSpec`` for tests that hand the engine a small network of their
    own: the engine reads the spec's fields and runs the model it is given; it never builds
    ``arch``. Patch 16 (per axis), a normalisation that is not the identity (so a test sees it
    applied); ``fields`` override any of it."""
    from vesukit.teachers import Normalization, TeacherSpec

    settings = dict(name=name, input_kind=input_kind, patch=(16,) * (3 if input_kind == "3d" else 2),
                    checkpoint="model.safetensors", normalization=Normalization(1 / 255, 0.35, 0.2),
                    **_ARCH_FOR_KIND[input_kind])
    settings.update(fields)
    return TeacherSpec(**settings)


def unet3d_ensemble(folder: Path, seeds: Sequence[int] = (0, 1, 2),
                    weights: Sequence[float] | None = None) -> list:
    """Tiny 3D U-Nets of different seeds (so different weights) as one teachers folder named
    ``unet_<seed>``; returns their specs."""
    from vesukit.teachers import write_preset
    from vesukit.teachers.spec import save_manifest

    specs = []
    for index, seed in enumerate(seeds):
        manifest = write_preset(folder / f"seed{seed}", "unet3d", "tiny", seed=seed)
        spec = manifest.teachers[0]
        spec = dataclasses.replace(spec, name=f"unet_{seed}", checkpoint=str(
            manifest.checkpoint_path(spec).relative_to(folder)))
        if weights is not None:
            spec = dataclasses.replace(spec, weight=float(weights[index]))
        specs.append(spec)
    save_manifest(folder, specs)
    return specs


def seed9_teachers(folder: Path, keep: Sequence[str] | None = None) -> Path:
    """The tiny seed9 preset, optionally cut down to the teachers named in ``keep``."""
    from vesukit.teachers import write_preset

    write_preset(folder, preset="seed9", size="tiny", seed=0)
    if keep is not None:
        manifest = json.loads((folder / "teachers.json").read_text())
        manifest["teachers"] = [t for t in manifest["teachers"] if t["name"] in keep]
        (folder / "teachers.json").write_text(json.dumps(manifest, indent=2))
    return folder


def root_with_saved_maps(folder: Path, n_train: int, shape: Sequence[int], seed: int,
                         biases: Sequence[float], dust: int = 30) -> tuple[Path, Path]:
    """(root, maps): a competition root with ``n_train`` labelled train volumes and, in
    ``folder/maps``, a defective fp16 ``<id>.npy`` map of each (bias ``biases[i]`` in turn),
    as `vesukit predict --save-maps` writes them."""
    import numpy as np

    from vesukit.data import list_ids, read_volume
    from vesukit.synth import make_competition_root
    from vesukit.synth_defects import Defects, defective_map

    root = make_competition_root(folder / "root", n_test=1, n_train=n_train, shapes=[tuple(shape)],
                                 seed=seed)
    maps = folder / "maps"
    maps.mkdir()
    for index, volume_id in enumerate(list_ids(root, "train")):
        label = read_volume(root / "train_labels" / f"{volume_id}.tif")
        p = defective_map(label, index, Defects(bias=biases[index % len(biases)], dust=dust))
        np.save(maps / f"{volume_id}.npy", p.astype(np.float16))
    return root, maps
