"""One ensemble pass over labelled volumes, kept on disk for calibration, ablation and distillation.

Running nine teachers over a volume is the expensive part; searching thresholds, post-
processing, teacher subsets and fusion weights is cheap once each teacher's probability map is
stored. The cache holds, per volume and teacher, the map as a chunked zarr array
``<volume>/<teacher>.zarr`` (fp16 by default: half the bytes; zstd-compressed chunks of up to
128^3) plus ``cache.json`` describing what made them (the teacher specs and checkpoint files,
TTA, overlap). Each map is written under a temporary name and renamed into place, so a crash
leaves no half entry. Reading loads whole maps: the last volume's stay in memory, so the
searches, which go volume by volume, read each map once per volume.

Ensembles of any teacher subset are recombined from the stored maps with the same
:class:`vesukit.infer.EnsembleAccumulator` that predict uses, so a subset's maps equal those
predict would compute from the same (stored-precision) teacher maps.

Invalidation is per entry: a teacher whose spec (its weight aside) or checkpoint changed loses
only its own maps, a volume whose source file changed (size, mtime) only its own; other
settings (TTA, overlap, dtype) clear the cache. A cache of an older format (format 1 stored
``<volume>/<teacher>.npy``) is not read: it is cleared and rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vesukit._optional import require
from vesukit.data import atomic_write_bytes
from vesukit.errors import VesukitError
from vesukit.infer.settings import DEFAULT_OVERLAP

CACHE_FORMAT = 2  # 2: zarr arrays; 1 (.npy files) is rebuilt
CACHE_DTYPES = ("float16", "float32")
CHUNK_EDGE = 128  # a 320^3 map is 27 chunks of 4 MiB (fp16)
MAP_SUFFIX = ".zarr"


class CacheError(VesukitError):
    """The map cache is missing a map or was made by other teachers."""


class OldCacheError(CacheError):
    """The folder holds a map cache of another format (it is rebuilt, not read)."""


def teachers_fingerprint(manifest, tta: str | Mapping[str, str], overlap: float, dtype: str) -> dict:
    """What the cached maps depend on: specs, checkpoint files (size, mtime), settings."""
    teachers = []
    for spec in manifest.teachers:
        path = Path(manifest.checkpoint_path(spec))
        if path.is_dir():
            stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                           for p in path.rglob("*") if p.is_file())
        else:
            stat = path.stat()
            stats = [(path.name, stat.st_size, stat.st_mtime_ns)]
        entry = {"spec": spec.to_json(), "checkpoint": stats}
        if isinstance(tta, Mapping):  # per teacher: a teacher whose TTA changed loses only its maps
            entry["tta"] = tta[spec.name]
        teachers.append(entry)
    fingerprint = {"teachers": teachers, "tta": "per teacher" if isinstance(tta, Mapping) else tta,
                   "overlap": float(overlap), "dtype": dtype}
    return json.loads(json.dumps(fingerprint))  # as it reads back from cache.json


@dataclass(frozen=True)
class CachedTeacher:
    name: str
    weight: float


class MapCache:
    """Per-volume, per-teacher probability maps on disk (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / "cache.json"
        if not meta_path.is_file():
            raise CacheError(f"{self.folder}: no map cache here (cache.json is missing); "
                             "build one with `vesukit calibrate` or `vesukit ablate`.")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != CACHE_FORMAT:
            raise OldCacheError(f"{self.folder}: a map cache of format {self.meta.get('format')}"
                                f" (this vesukit reads format {CACHE_FORMAT}); `vesukit "
                                "calibrate`, `ablate` and `distill` rebuild it.")
        self.teachers = tuple(CachedTeacher(t["name"], float(t["weight"]))
                              for t in self.meta["teachers"])
        self._in_memory: tuple[str, dict[str, np.ndarray]] = ("", {})

    @classmethod
    def create(cls, folder: str | Path, teachers: Sequence[tuple[str, float]],
               fingerprint: dict | None = None, dtype: str = "float16") -> MapCache:
        """A new, empty cache for ``teachers`` (name, weight); an old one there is cleared."""
        if dtype not in CACHE_DTYPES:
            raise CacheError(f"cache dtype must be one of {CACHE_DTYPES}, got {dtype!r}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in [*folder.glob("*/*.npy"), *folder.glob(f"*/*{MAP_SUFFIX}"),
                      *folder.glob("*/.*.tmp")]:
            _remove(stale)
        meta = {"format": CACHE_FORMAT, "fingerprint": fingerprint, "dtype": dtype,
                "volumes": {}, "teachers": [{"name": n, "weight": float(w)} for n, w in teachers]}
        atomic_write_bytes(folder / "cache.json", json.dumps(meta, indent=1).encode())
        return cls(folder)

    @property
    def volume_ids(self) -> tuple[str, ...]:
        """Volumes with every teacher's map stored."""
        return tuple(self.meta["volumes"])

    def store(self, volume_id: str, teacher: str, probability) -> None:
        """Keep one teacher's map of one volume (in the cache's dtype), atomically."""
        from vesukit._arrays import as_numpy

        (self.folder / volume_id).mkdir(exist_ok=True)
        array = as_numpy(probability).astype(self.meta.get("dtype", "float16"))
        _save_zarr(self.map_path(volume_id, teacher), array)
        if self._in_memory[0] == volume_id:
            self._in_memory[1].pop(teacher, None)

    def has_map(self, volume_id: str, teacher: str) -> bool:
        return self.map_path(volume_id, teacher).is_dir()

    def complete(self, volume_id: str) -> None:
        """Mark a volume done once every teacher's map is stored."""
        missing = [t for t in self.teacher_names if not self.has_map(volume_id, t)]
        if missing:
            raise CacheError(f"{self.folder}: volume '{volume_id}' lacks the maps of "
                             f"{', '.join(missing)}")
        zarr = require("zarr", f"reading the map cache {self.folder}")
        first = zarr.open_array(str(self.map_path(volume_id, self.teacher_names[0])), mode="r")
        self.meta["volumes"][volume_id] = [int(n) for n in first.shape]  # no chunk is read
        self._save_meta()

    @property
    def teacher_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.teachers)

    def weight(self, name: str) -> float:
        for teacher in self.teachers:
            if teacher.name == name:
                return teacher.weight
        raise CacheError(f"{self.folder}: teacher '{name}' is not in the cache "
                         f"(it holds {', '.join(self.teacher_names)}).")

    def _save_meta(self) -> None:
        atomic_write_bytes(self.folder / "cache.json", json.dumps(self.meta, indent=1).encode())

    def retarget(self, teachers: Sequence[tuple[str, float]], fingerprint: dict) -> list[str]:
        """Adopt a new teacher list and fingerprint with the same settings: the maps of
        teachers that changed or left are removed; returns their names."""
        old = {_name(t): _without_weight(t) for t in (self.meta.get("fingerprint") or {}).get(
            "teachers", [])}
        new = {_name(t): _without_weight(t) for t in fingerprint["teachers"]}
        stale = sorted(name for name, entry in old.items() if new.get(name) != entry)
        stale += sorted(name for name in self.teacher_names if name not in old and name not in new)
        for name in stale:
            for path in self.folder.glob(f"*/{name}{MAP_SUFFIX}"):
                _remove(path)
        self._in_memory = ("", {})
        self.meta["teachers"] = [{"name": n, "weight": float(w)} for n, w in teachers]
        self.teachers = tuple(CachedTeacher(n, float(w)) for n, w in teachers)
        self.meta["fingerprint"] = fingerprint
        self.meta["volumes"] = {v: shape for v, shape in self.meta["volumes"].items()
                                if all(self.has_map(v, t) for t in self.teacher_names)}
        self._save_meta()
        return stale

    def forget_volume(self, volume_id: str) -> None:
        """Remove every map of one volume (its source changed)."""
        for path in (self.folder / volume_id).glob(f"*{MAP_SUFFIX}"):
            _remove(path)
        if self._in_memory[0] == volume_id:
            self._in_memory = ("", {})
        self.meta["volumes"].pop(volume_id, None)
        self.meta.setdefault("sources", {}).pop(volume_id, None)
        self._save_meta()

    def map_path(self, volume_id: str, teacher: str) -> Path:
        return self.folder / volume_id / f"{teacher}{MAP_SUFFIX}"

    def map_shape(self, volume_id: str) -> tuple[int, ...]:
        """The shape of the volume's cached maps, from the first teacher's array header."""
        path = self.map_path(volume_id, self.teacher_names[0])
        if not path.is_dir():
            raise CacheError(f"{path}: no cached map for teacher '{self.teacher_names[0]}' on "
                             f"volume '{volume_id}'; rebuild the cache.")
        zarr = require("zarr", f"reading the map cache {self.folder}")
        return tuple(zarr.open_array(str(path), mode="r").shape)

    def teacher_map(self, volume_id: str, teacher: str) -> np.ndarray:
        """The stored map, read whole (read-only; this volume's maps stay in memory until
        another volume is read)."""
        current, maps = self._in_memory
        if current != volume_id:
            maps = {}
            self._in_memory = (volume_id, maps)
        if teacher not in maps:
            path = self.map_path(volume_id, teacher)
            if not path.is_dir():
                raise CacheError(f"{path}: no cached map for teacher '{teacher}' on volume "
                                 f"'{volume_id}'; rebuild the cache.")
            zarr = require("zarr", f"reading the map cache {self.folder}")
            array = zarr.open_array(str(path), mode="r")[...]
            array.flags.writeable = False
            maps[teacher] = array
        return maps[teacher]

    def ensemble(self, volume_id: str, teachers: Sequence[str] | None = None):
        """The ensemble maps (numpy) of ``teachers`` (default: all) on one volume."""
        import torch

        from vesukit.infer import EnsembleAccumulator

        names = tuple(teachers) if teachers is not None else self.teacher_names
        if not names:
            raise CacheError("an ensemble needs at least one teacher")
        first = self.teacher_map(volume_id, names[0])
        accumulator = EnsembleAccumulator(first.shape, "cpu")
        for name in names:
            stored = self.teacher_map(volume_id, name)
            accumulator.add(torch.from_numpy(np.array(stored, dtype=np.float32)),
                            self.weight(name), name=name)
        return accumulator.result().to_numpy()


def build_cache(folder: str | Path, root: str | Path, manifest, volume_ids: Sequence[str], *,
                device: str = "cpu", tta: str | Mapping[str, str] = "none",
                overlap: float = DEFAULT_OVERLAP,
                dtype: str = "float16",
                progress: Callable[[str], None] | None = None) -> MapCache:
    """Run every teacher once on each labelled volume (``train_images/<id>.tif``) and store
    the maps; volumes already cached by the same teachers and settings are kept. ``tta``: one
    level for all, or teacher -> level (vesukit.run_settings resolves it per teacher)."""
    import torch

    from vesukit.data import read_volume, volume_path
    from vesukit.infer import predict_teacher
    from vesukit.teachers import load_teacher

    folder = Path(folder)
    fingerprint = teachers_fingerprint(manifest, tta, overlap, dtype)
    teachers = [(s.name, s.weight) for s in manifest.teachers]
    try:
        cache = MapCache(folder)
    except OldCacheError:
        if progress:
            progress(f"cache: {folder} is of an older format; rebuilt")
        cache = None
    except CacheError:
        cache = None
    old = (cache.meta.get("fingerprint") or {}) if cache is not None else {}
    if cache is None or any(old.get(k) != fingerprint[k] for k in ("tta", "overlap", "dtype")):
        cache = MapCache.create(folder, teachers, fingerprint, dtype)
    elif old != fingerprint or cache.teacher_names != tuple(n for n, _ in teachers):
        stale = cache.retarget(teachers, fingerprint)
        if stale and progress:
            progress(f"cache: teacher(s) {', '.join(stale)} changed; only their maps are redone")
    sources = {v: _source_stamp(volume_path(root, v, "train_images")) for v in volume_ids}
    for volume_id, stamp in sources.items():
        known = cache.meta.get("sources", {}).get(volume_id)
        if known is not None and known != stamp:
            if progress:
                progress(f"cache: volume {volume_id} changed; its maps are redone")
            cache.forget_volume(volume_id)
    for leftover in folder.glob("*/.*.tmp"):  # a map whose writer died before its rename
        _remove(leftover)
    todo = {v: [s for s in manifest.teachers if not cache.has_map(v, s.name)]
            for v in volume_ids if v not in cache.volume_ids}
    if not todo:
        return cache
    device = torch.device(device)
    needed = {s.name for specs in todo.values() for s in specs}
    models = {spec.name: load_teacher(spec, manifest.root, device) for spec in manifest.teachers
              if spec.name in needed}
    for volume_id, specs in todo.items():
        volume = read_volume(volume_path(root, volume_id, "train_images"))
        for spec in specs:
            if progress:
                progress(f"{volume_id}: teacher {spec.name}")
            with torch.inference_mode():
                level = tta[spec.name] if isinstance(tta, Mapping) else tta
                probability = predict_teacher(volume, models[spec.name], spec, device=device,
                                              tta=level, overlap=overlap)
            cache.store(volume_id, spec.name, probability.float())
        cache.meta.setdefault("sources", {})[volume_id] = sources[volume_id]
        cache.complete(volume_id)
    return cache


def _name(entry: dict) -> str:
    return entry["spec"]["name"]


def _without_weight(entry: dict) -> dict:
    """A teacher's fingerprint entry minus its weight (weights are applied when combining)."""
    return {**entry, "spec": {k: v for k, v in entry["spec"].items() if k != "weight"}}


def _source_stamp(path: Path) -> list[int]:
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def _save_zarr(path: Path, array: np.ndarray) -> None:
    """Write a chunked zarr array under a temporary name, then rename it into place, so a
    crash leaves either the old entry, none, or the whole new one (never a half one)."""
    zarr = require("zarr", "the map cache (chunked fp16 maps)")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _remove(temporary)
    chunks = tuple(min(int(n), CHUNK_EDGE) for n in array.shape)
    zarr.create_array(store=str(temporary), data=np.ascontiguousarray(array), chunks=chunks)
    _remove(path)
    os.replace(temporary, path)


def _remove(path: Path) -> None:
    """Delete a map entry (a zarr folder, or an old format's file) if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
