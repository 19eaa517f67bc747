"""The map cache invalidates per entry: a changed teacher or volume loses only its own maps
(real tiny 3D teachers, real synthetic volumes)."""

import dataclasses
import os
import time

import numpy as np
import pytest

pytest.importorskip("numba")
torch = pytest.importorskip("torch")

from tests.fixtures import unet3d_ensemble  # noqa: E402
from vesukit.calibrate.cache import build_cache  # noqa: E402
from vesukit.calibrate.runner import labelled_ids  # noqa: E402
from vesukit.data import volume_path  # noqa: E402
from vesukit.synth import make_competition_root  # noqa: E402
from vesukit.teachers import load_manifest, save_manifest, write_preset  # noqa: E402


@pytest.fixture()
def setup(tmp_path):
    root = make_competition_root(tmp_path / "root", n_test=1, n_train=2,
                                 shapes=((16, 24, 24),), seed=8)
    folder = tmp_path / "teachers"
    return root, folder, unet3d_ensemble(folder)


def stamps(cache_dir):
    """Each stored map -> its identity on disk (a rewritten map is a new folder)."""
    return {p.relative_to(cache_dir).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in cache_dir.glob("*/*.zarr")}


def test_only_the_changed_teacher_or_volume_is_recomputed(setup, tmp_path):
    root, folder, specs = setup
    cache_dir = tmp_path / "cache"
    ids = labelled_ids(root)
    cache = build_cache(cache_dir, root, load_manifest(folder), ids)
    before = stamps(cache_dir)
    assert len(before) == 6
    old_map = np.array(cache.teacher_map(ids[0], "unet_1"))

    # a teacher retrained (new checkpoint): only its two maps are redone
    time.sleep(0.01)
    write_preset(folder / "seed1", "unet3d", "tiny", seed=7)
    save_manifest(folder, specs)
    cache = build_cache(cache_dir, root, load_manifest(folder), ids)
    after = stamps(cache_dir)
    changed = sorted(k for k in before if after[k] != before[k])
    assert changed == [f"{v}/unet_1.zarr" for v in ids]
    assert not np.array_equal(np.array(cache.teacher_map(ids[0], "unet_1")), old_map)
    assert cache.volume_ids == tuple(ids)

    # a new weight changes no map, only how they are combined
    save_manifest(folder, [dataclasses.replace(specs[0], weight=3.0), *specs[1:]])
    cache = build_cache(cache_dir, root, load_manifest(folder), ids)
    assert stamps(cache_dir) == after and cache.weight("unet_0") == 3.0

    # a volume replaced: only its maps are redone
    source = volume_path(root, ids[1], "train_images")
    os.utime(source, ns=(time.time_ns(), time.time_ns()))
    cache = build_cache(cache_dir, root, load_manifest(folder), ids)
    again = stamps(cache_dir)
    assert sorted(k for k in after if again[k] != after[k]) == \
        [f"{ids[1]}/unet_{i}.zarr" for i in range(3)]

    # a teacher removed: its maps go, the others stay
    save_manifest(folder, specs[:2])
    cache = build_cache(cache_dir, root, load_manifest(folder), ids)
    final = stamps(cache_dir)
    assert sorted(final) == sorted(k for k in again if "unet_2" not in k)
    assert all(final[k] == again[k] for k in final)
    assert cache.teacher_names == ("unet_0", "unet_1") and cache.volume_ids == tuple(ids)
