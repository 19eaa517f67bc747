"""What a teacher is: a frozen, JSON round-tripping description, and the manifest listing them.

This module is torch-free: reading and validating ``teachers.json`` must work where torch is
not installed (e.g. `vesukit validate` on a bare image). Every validation error names the
teacher and the field, says what was found and what is allowed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vesukit.teachers.base import NAME_RE, FrozenMap, TeacherError, check_entry_fields, check_object, thaw
from vesukit.teachers.base import is_int as _is_int
from vesukit.teachers.base import is_json_value as _is_json_value
from vesukit.teachers.base import is_number as _is_number
from vesukit.teachers.nnunet import KIND as NNUNET_KIND
from vesukit.teachers.nnunet import NnUNetSpec
from vesukit.teachers.registry import ARCHITECTURES, patch_multiple

MANIFEST_NAME = "teachers.json"
MANIFEST_FORMAT = 1

INPUT_KINDS = ("2.5d", "3d")
OUTPUT_KINDS = ("logit", "probability")
TTA_FAMILIES = ("flip", "rot90")
PLANE_MODES = ("tile", "whole")
# Constructor arguments that the spec (not model_kwargs) decides, or that would download.
RESERVED_MODEL_KWARGS = ("encoder_name", "encoder_weights", "in_channels", "classes",
                         "pretrained")


@dataclass(frozen=True)
class Normalization:
    """``x = (uint8_voxels * scale - mean) / std``, applied before the network sees a patch."""

    scale: float = 1 / 255
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        for name in ("scale", "mean", "std"):
            if not _is_number(getattr(self, name)):
                raise TeacherError(f"field 'normalization.{name}': must be a finite number, "
                                   f"got {getattr(self, name)!r}")
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.scale <= 0:
            raise TeacherError(f"field 'normalization.scale': must be > 0, got {self.scale}")
        if self.std <= 0:
            raise TeacherError(f"field 'normalization.std': must be > 0, got {self.std}")

    def to_json(self) -> dict[str, float]:
        return {"scale": self.scale, "mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, data: Any) -> Normalization:
        check_object(data, ("scale", "mean", "std"),
                     not_object=f"field 'normalization': must be an object with scale/mean/std, got {data!r}",
                     unknown_field=lambda name: f"field 'normalization.{name}': unknown field "
                     "(allowed: scale, mean, std)")
        return cls(**data)


@dataclass(frozen=True)
class TeacherSpec:
    """One trained network and everything needed to run it on a uint8 volume.

    ``patch`` is the in-plane tile (H, W) for ``2.5d`` and (D, H, W) for ``3d``; the network
    takes ``(B, in_channels, *patch)`` float32 and returns ``(B, out_channels, *patch)``.
    For ``2.5d`` the ``context`` neighbouring slices along each of ``axes`` are the channels
    and the centre slice is predicted; predictions along several axes are averaged.
    """

    name: str
    arch: str
    encoder: str | None
    input_kind: str
    patch: tuple[int, ...]
    checkpoint: str
    axes: tuple[int, ...] = (0,)
    context: int = 1
    normalization: Normalization = field(default_factory=Normalization)
    output: str = "logit"
    out_channels: int = 1
    channel: int = 0
    weight: float = 1.0
    tta: tuple[str, ...] = ("flip", "rot90")
    # 2.5d in-plane: "tile" cuts each slice into `patch` windows (blended); "whole" pads the
    # slice to a multiple of the network's stride and runs it in one piece (fewer pixels on
    # 320^2 planes with 256^2 tiles; for networks that accept any such size, e.g. smp's).
    plane: str = "tile"
    model_kwargs: Mapping[str, Any] = field(default_factory=FrozenMap)
    # Where the weights sit inside a wrapped checkpoint (dotted, e.g. "state_dict_ema");
    # None = found automatically (plain weights preferred over EMA when both exist).
    checkpoint_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("patch", "axes", "tta"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.normalization, Mapping):
            object.__setattr__(self, "normalization",
                               self._named(Normalization.from_json, self.normalization))
        if isinstance(self.model_kwargs, Mapping) and not isinstance(self.model_kwargs,
                                                                     FrozenMap):
            if _is_json_value(self.model_kwargs):
                object.__setattr__(self, "model_kwargs", FrozenMap(self.model_kwargs))
        if _is_int(self.weight):
            object.__setattr__(self, "weight", float(self.weight))
        self._validate()

    # -- validation ------------------------------------------------------------------------
    def _fail(self, field_name: str, problem: str) -> TeacherError:
        who = f"teacher '{self.name}'" if isinstance(self.name, str) and self.name else "teacher"
        return TeacherError(f"{who}: field '{field_name}': {problem}")

    def _named(self, fn, *args):
        try:
            return fn(*args)
        except TeacherError as exc:
            who = f"teacher '{self.name}'" if isinstance(self.name, str) else "teacher"
            raise TeacherError(f"{who}: {exc}") from None

    def _validate(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise self._fail("name", f"must be a non-empty name of letters, digits, '_', '-', "
                             f"'.' (it names files and report rows), got {self.name!r}")
        if self.arch not in ARCHITECTURES:
            raise self._fail("arch", f"unknown architecture {self.arch!r}; known: "
                             + ", ".join(sorted(ARCHITECTURES)))
        arch = ARCHITECTURES[self.arch]
        if self.input_kind not in INPUT_KINDS:
            raise self._fail("input_kind", f"must be one of {list(INPUT_KINDS)}, "
                             f"got {self.input_kind!r}")
        if self.input_kind != arch.input_kind:
            raise self._fail("input_kind", f"architecture {self.arch!r} takes "
                             f"{arch.input_kind!r} input, not {self.input_kind!r}")
        if arch.needs_encoder:
            if not isinstance(self.encoder, str) or not self.encoder:
                raise self._fail("encoder", f"architecture {self.arch!r} needs an encoder name "
                                 f"(e.g. 'resnet34', 'mit_b2'), got {self.encoder!r}")
        elif self.encoder is not None:
            raise self._fail("encoder", f"architecture {self.arch!r} has no encoder; "
                             f"use null, got {self.encoder!r}")
        ndim = 2 if self.input_kind == "2.5d" else 3
        if (not isinstance(self.patch, tuple) or len(self.patch) != ndim
                or not all(_is_int(p) and p > 0 for p in self.patch)):
            shape = "(H, W)" if ndim == 2 else "(D, H, W)"
            raise self._fail("patch", f"{self.input_kind} needs {ndim} positive integers "
                             f"{shape}, got {self.patch!r}")
        if not isinstance(self.checkpoint, str) or not self.checkpoint:
            raise self._fail("checkpoint", f"must be a file or folder name, got "
                             f"{self.checkpoint!r}")
        if not isinstance(self.axes, tuple) or not all(_is_int(a) for a in self.axes):
            raise self._fail("axes", f"must be a list of volume axes (0, 1, 2), got "
                             f"{self.axes!r}")
        if self.input_kind == "2.5d":
            if not self.axes or any(a not in (0, 1, 2) for a in self.axes) \
                    or len(set(self.axes)) != len(self.axes):
                raise self._fail("axes", "2.5d needs distinct volume axes from 0, 1, 2 "
                                 f"(slices are cut along them), got {list(self.axes)}")
        if not _is_int(self.context) or self.context < 1:
            raise self._fail("context", f"must be an integer >= 1, got {self.context!r}")
        if self.input_kind == "2.5d" and self.context % 2 == 0:
            raise self._fail("context", f"2.5d needs an odd number of slices (the centre one "
                             f"is predicted), got {self.context}")
        if self.input_kind == "3d" and self.context != 1:
            raise self._fail("context", f"3d teachers take one channel; context must be 1, "
                             f"got {self.context}")
        if not isinstance(self.normalization, Normalization):
            raise self._fail("normalization", f"must be a Normalization, got "
                             f"{self.normalization!r}")
        if self.output not in OUTPUT_KINDS:
            raise self._fail("output", f"must be one of {list(OUTPUT_KINDS)}, "
                             f"got {self.output!r}")
        if not _is_int(self.out_channels) or self.out_channels < 1:
            raise self._fail("out_channels", f"must be an integer >= 1, "
                             f"got {self.out_channels!r}")
        if not _is_int(self.channel) or not 0 <= self.channel < self.out_channels:
            raise self._fail("channel", f"must be an integer in [0, {self.out_channels - 1}] "
                             f"(out_channels={self.out_channels}), got {self.channel!r}")
        if not _is_number(self.weight) or self.weight < 0:
            raise self._fail("weight", f"must be a finite number >= 0, got {self.weight!r}")
        if not isinstance(self.tta, tuple) or any(t not in TTA_FAMILIES for t in self.tta) \
                or len(set(self.tta)) != len(self.tta):
            raise self._fail("tta", f"must be a list drawn from {list(TTA_FAMILIES)} "
                             f"(no repeats), got {self.tta!r}")
        if self.plane not in PLANE_MODES:
            raise self._fail("plane", f"must be one of {list(PLANE_MODES)}, got {self.plane!r}")
        if not isinstance(self.model_kwargs, FrozenMap):
            raise self._fail("model_kwargs", "must be an object of JSON values (strings, "
                             f"numbers, lists, objects), got {self.model_kwargs!r}")
        for key in self.model_kwargs:
            if key in RESERVED_MODEL_KWARGS:
                raise self._fail(f"model_kwargs.{key}", "is set by vesukit (encoder, "
                                 "context -> in_channels, out_channels; weights are never "
                                 "downloaded); remove it")
        if self.checkpoint_key is not None and (not isinstance(self.checkpoint_key, str)
                                                or not self.checkpoint_key):
            raise self._fail("checkpoint_key", f"must be null or a dotted key such as "
                             f"'state_dict_ema', got {self.checkpoint_key!r}")
        multiple = patch_multiple(self)
        if any(p % multiple for p in self.patch):
            raise self._fail("patch", f"{list(self.patch)}: every size must be a multiple of "
                             f"{multiple} for {self.arch!r} with these settings")

    # -- derived ---------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return self.context if self.input_kind == "2.5d" else 1

    @property
    def stride(self) -> int:
        """Every input size must be a multiple of this (the network's total down-sampling)."""
        return patch_multiple(self)

    # -- JSON ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Normalization):
                value = value.to_json()
            out[f.name] = thaw(value)
        return out

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> TeacherSpec:
        """Build a spec from parsed JSON; ``where`` (e.g. "teachers.json, teacher #2")
        starts every error message. Unknown and missing fields are errors."""
        if not isinstance(d, Mapping):
            raise TeacherError(f"{where}: a teacher must be a JSON object, got {d!r}")
        who = check_entry_fields(d, {f.name for f in fields(cls)},
                                 ("name", "arch", "encoder", "input_kind", "patch", "checkpoint"), where)
        kwargs = dict(d)
        if "model_kwargs" in kwargs and not (isinstance(kwargs["model_kwargs"], Mapping)
                                             and _is_json_value(kwargs["model_kwargs"])):
            raise TeacherError(f"{where}: {who}: field 'model_kwargs': must be an object of "
                               f"JSON values, got {kwargs['model_kwargs']!r}")
        try:
            return cls(**kwargs)
        except TeacherError as exc:
            raise TeacherError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Manifest:
    """The ensemble: teachers described in ``root / MANIFEST_NAME``; checkpoints are relative
    to ``root``."""

    root: Path
    teachers: tuple[TeacherSpec | NnUNetSpec, ...]

    def checkpoint_path(self, spec: TeacherSpec) -> Path:
        return resolve_checkpoint(self.root, spec)

    def __getitem__(self, name: str) -> TeacherSpec:
        for spec in self.teachers:
            if spec.name == name:
                return spec
        raise KeyError(name)


def resolve_checkpoint(root: str | Path, spec: TeacherSpec | NnUNetSpec) -> Path:
    """The teacher's weights on disk: its checkpoint file or folder, or an nnU-Net model folder."""
    path = Path(spec.model if isinstance(spec, NnUNetSpec) else spec.checkpoint)
    return path if path.is_absolute() else Path(root) / path


def _check_ensemble(teachers: tuple[TeacherSpec, ...], where: str) -> None:
    if not teachers:
        raise TeacherError(f"{where}: field 'teachers': the list is empty; add at least one "
                           "teacher (or run `vesukit teachers init DIR --preset seed9`)")
    seen: set[str] = set()
    for spec in teachers:
        if spec.name in seen:
            raise TeacherError(f"{where}: teacher '{spec.name}': field 'name': used twice; "
                               "names must be unique")
        seen.add(spec.name)
    if not any(spec.weight > 0 for spec in teachers):
        raise TeacherError(f"{where}: field 'weight': every teacher has weight 0, so the "
                           "ensemble would predict nothing; give at least one a weight > 0")


def _teacher_from_json(item: Any, *, where: str) -> TeacherSpec | NnUNetSpec:
    """A teacher entry: ``"kind": "nnunetv2"`` is an nnU-Net results folder, else a TeacherSpec."""
    if isinstance(item, Mapping) and "kind" in item:
        if item["kind"] != NNUNET_KIND:
            raise TeacherError(f"{where}: field 'kind': unknown teacher kind {item['kind']!r} "
                               f"(known: {NNUNET_KIND!r}; leave it out for a network + checkpoint)")
        return NnUNetSpec.from_json(item, where=where)
    return TeacherSpec.from_json(item, where=where)


def manifest_from_json(data: Any, root: str | Path, *, where: str) -> Manifest:
    check_object(data, ("format", "teachers", "notes"),
                 not_object=f"{where}: must be a JSON object {{\"format\": 1, \"teachers\": [...]}}, "
                 f"got {type(data).__name__}",
                 unknown_field=lambda name: f"{where}: field '{name}': unknown top-level field "
                 "(allowed: format, teachers, notes)")
    if data.get("format") != MANIFEST_FORMAT:
        raise TeacherError(f"{where}: field 'format': expected {MANIFEST_FORMAT}, got "
                           f"{data.get('format')!r}; this vesukit reads manifest format "
                           f"{MANIFEST_FORMAT}")
    items = data.get("teachers")
    if not isinstance(items, list):
        raise TeacherError(f"{where}: field 'teachers': must be a list of teacher objects, "
                           f"got {items!r}")
    teachers = tuple(_teacher_from_json(item, where=f"{where}, teacher #{i + 1}")
                     for i, item in enumerate(items))
    _check_ensemble(teachers, where)
    return Manifest(root=Path(root), teachers=teachers)


def manifest_to_json(teachers) -> dict[str, Any]:
    return {"format": MANIFEST_FORMAT, "teachers": [spec.to_json() for spec in teachers]}


def load_manifest(folder: str | Path, require_files: bool = True) -> Manifest:
    """Read and validate ``folder/teachers.json``: every field and that every checkpoint of a
    teacher with a weight > 0 exists (weight 0 switches a teacher off: its file may be
    absent). Raises :class:`TeacherError` naming the teacher and the field.

    ``require_files=False`` (predict) skips the existence check: a missing checkpoint then
    fails that teacher's load, which drops it with a warning, as a corrupt one."""
    given = Path(folder)
    path = given if given.is_file() else given / MANIFEST_NAME
    folder = path.parent
    if not path.is_file():
        raise TeacherError(f"{path}: no teacher manifest here. A teachers folder holds "
                           f"{MANIFEST_NAME} next to the checkpoints; create one with "
                           "`vesukit teachers init DIR --preset seed9`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TeacherError(f"{path}: cannot read the manifest as JSON ({exc})") from None
    manifest = manifest_from_json(data, folder, where=str(path))
    for i, spec in enumerate(manifest.teachers):
        if not require_files or spec.weight == 0:
            continue
        ckpt = manifest.checkpoint_path(spec)
        field_name = "model" if isinstance(spec, NnUNetSpec) else "checkpoint"
        if not ckpt.exists():
            raise TeacherError(f"{path}, teacher #{i + 1}: teacher '{spec.name}': field "
                               f"'{field_name}': {ckpt} does not exist (paths are relative to "
                               f"{folder})")
    return manifest


def save_manifest(folder: str | Path, teachers) -> Path:
    """Write ``folder/teachers.json`` atomically; the teachers are validated first."""
    from vesukit.data import atomic_write_bytes

    teachers = tuple(teachers)
    folder = Path(folder)
    _check_ensemble(teachers, str(folder / MANIFEST_NAME))
    text = json.dumps(manifest_to_json(teachers), indent=2) + "\n"
    path = folder / MANIFEST_NAME
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
