"""Teacher folders the tests share, made with the real presets (random weights): one place
instead of a copy per test module."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

# An smp U-Net and a SegFormer: two different 2.5D families, quick on the CPU.
TWO_OF_SEED9 = ("v1_default", "v1_segformer_mit_b2")


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
