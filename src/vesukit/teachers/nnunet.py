"""nnU-Net v2 teachers: a trained results folder used as it is, or imported into a slim one.

A results folder is ``<Trainer>__<Plans>__<configuration>/`` with ``plans.json``,
``dataset.json`` and ``fold_<f>/checkpoint_{final,best}.pth``. The teacher entry in
``teachers.json`` names the folder, the folds (``[0, 1, ...]`` or ``"all"``) and the
checkpoint; everything else (network, patch, normalisation, transposition, mirroring axes)
is read from the folder. The network is built by ``dynamic-network-architectures`` from the
plans, so state-dict names are nnU-Net's own. nnU-Net checkpoints are read with
``torch.load(weights_only=True)`` and the numpy scalar/dtype allowlist of
:mod:`vesukit.teachers.checkpoint`; a slim folder (``vesukit teachers import-nnunet``) holds
safetensors weights, the two json files and :data:`META_NAME`, and loads with no pickle.

The spec and the folder reading here are torch-free; building, loading and importing are in
:mod:`vesukit.teachers.nnunet_model`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from vesukit.teachers.base import NAME_RE, TeacherError, check_entry_fields, is_int, is_number

KIND = "nnunetv2"
CHECKPOINTS = ("final", "best")
# Written by import-nnunet beside the weights: what the checkpoint said besides its weights.
META_NAME = "nnunet.json"
# Normalisation schemes reproduced here (nnU-Net's names, from plans.json).
SCHEMES = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization",
           "RGBTo01Normalization")


@dataclass(frozen=True)
class NnUNetSpec:
    """One nnU-Net v2 model (one or more folds) as a teacher.

    ``model`` is the results folder (relative to the manifest's folder, or absolute);
    ``folds`` ints and/or ``"all"``; ``checkpoint`` ``final`` or ``best``; ``tile_step``
    overrides nnU-Net's step (None: ``1 - overlap`` of the run, 0.5 by default, nnU-Net's own);
    ``mirroring`` false turns nnU-Net's mirroring TTA off; ``label`` names the foreground label
    whose probability is the surface (None: the only foreground label).
    """

    name: str
    model: str
    folds: tuple = (0,)
    checkpoint: str = "final"
    tile_step: float | None = None
    mirroring: bool = True
    label: str | None = None
    weight: float = 1.0
    kind: str = KIND

    # What the rest of vesukit asks any teacher.
    input_kind = "3d"
    arch = KIND
    encoder = None

    @property
    def tta(self) -> tuple[str, ...]:
        return ("flip",) if self.mirroring else ()

    def __post_init__(self) -> None:
        folds = self.folds
        if isinstance(folds, (str, int)):
            folds = (folds,)
        if isinstance(folds, list):
            folds = tuple(folds)
        object.__setattr__(self, "folds", folds)
        if is_int(self.weight):
            object.__setattr__(self, "weight", float(self.weight))
        self._validate()

    def _fail(self, field_name: str, problem: str) -> TeacherError:
        return TeacherError(f"teacher '{self.name}': field '{field_name}': {problem}")

    def _validate(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise TeacherError(f"teacher {self.name!r}: field 'name': must be a non-empty name of "
                               "letters, digits, '_', '-', '.'")
        if self.kind != KIND:
            raise self._fail("kind", f"must be {KIND!r}, got {self.kind!r}")
        if not isinstance(self.model, str) or not self.model:
            raise self._fail("model", "must be the nnU-Net results folder "
                             f"(<Trainer>__<Plans>__<configuration>), got {self.model!r}")
        if (not isinstance(self.folds, tuple) or not self.folds
                or not all((is_int(f) and f >= 0) or f == "all" for f in self.folds)
                or len(set(self.folds)) != len(self.folds)):
            raise self._fail("folds", f"must be a list of fold numbers and/or \"all\", "
                             f"got {list(self.folds) if isinstance(self.folds, tuple) else self.folds!r}")
        if self.checkpoint not in CHECKPOINTS:
            raise self._fail("checkpoint", f"must be one of {list(CHECKPOINTS)} "
                             f"(checkpoint_final.pth / checkpoint_best.pth), got {self.checkpoint!r}")
        if self.tile_step is not None and (not is_number(self.tile_step)
                                           or not 0 < self.tile_step <= 1):
            raise self._fail("tile_step", f"must be null or a number in (0, 1], got {self.tile_step!r}")
        if not isinstance(self.mirroring, bool):
            raise self._fail("mirroring", f"must be true or false, got {self.mirroring!r}")
        if self.label is not None and (not isinstance(self.label, str) or not self.label):
            raise self._fail("label", f"must be null or a label name of dataset.json, got {self.label!r}")
        if not is_number(self.weight) or self.weight < 0:
            raise self._fail("weight", f"must be a finite number >= 0, got {self.weight!r}")

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["folds"] = list(self.folds)
        return out

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> NnUNetSpec:
        who = check_entry_fields(d, {f.name for f in fields(cls)}, ("name", "model"), where, KIND)
        try:
            return cls(**d)
        except TypeError as exc:
            raise TeacherError(f"{where}: {who}: {exc}") from None
        except TeacherError as exc:
            raise TeacherError(f"{where}: {exc}") from None


# -- the folder ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NnUNetPlan:
    """What vesukit needs from a results folder to run it as nnU-Net does."""

    folder: Path
    configuration: str
    patch: tuple[int, ...]
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    scheme: str
    use_mask_for_norm: bool
    intensity: dict
    network_class: str
    arch_kwargs: dict
    requires_import: tuple[str, ...]
    heads: int
    channel: int
    weights: tuple[Path, ...]


def _read_json(path: Path, who: str) -> dict:
    if not path.is_file():
        raise TeacherError(f"{who}: {path} is missing; an nnU-Net results folder holds "
                           "plans.json, dataset.json and fold_<f>/checkpoint_<final|best>.pth")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TeacherError(f"{who}: cannot read {path} as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TeacherError(f"{who}: {path} must hold a JSON object")
    return data


def _configuration(plans: dict, name: str, path: Path, who: str) -> dict:
    """A configuration of plans.json with its ``inherits_from`` chain resolved."""
    configs = plans.get("configurations", {})
    if name not in configs:
        raise TeacherError(f"{who}: {path} has no configuration {name!r} (has: "
                           f"{', '.join(configs) or 'none'})")
    config = dict(configs[name])
    parent = config.pop("inherits_from", None)
    if parent is not None:
        base = _configuration(plans, parent, path, who)
        base.update(config)
        config = base
    return config


def fold_dir(fold) -> str:
    return f"fold_{fold}"


def configuration_name(folder: Path, who: str) -> str:
    """From the slim folder's meta file, else from nnU-Net's folder name Trainer__Plans__config."""
    meta = folder / META_NAME
    if meta.is_file():
        value = _read_json(meta, who).get("configuration")
        if isinstance(value, str):
            return value
    parts = folder.name.split("__")
    if len(parts) != 3:
        raise TeacherError(f"{who}: {folder} is not named <Trainer>__<Plans>__<configuration> as "
                           f"nnU-Net names its results folders, and holds no {META_NAME}")
    return parts[2]


def weight_file(folder: Path, fold, checkpoint: str, who: str) -> Path:
    """A fold's weights: the slim folder's safetensors, else nnU-Net's .pth."""
    stem = f"checkpoint_{checkpoint}"
    for suffix in (".safetensors", ".pth"):
        path = folder / fold_dir(fold) / f"{stem}{suffix}"
        if path.is_file():
            return path
    have = sorted(p.name for p in folder.glob("fold_*"))
    raise TeacherError(f"{who}: field 'folds': {folder / fold_dir(fold) / (stem + '.pth')} does "
                       f"not exist (folds here: {', '.join(have) or 'none'}; checkpoint "
                       f"{checkpoint!r})")


def read_plan(spec: NnUNetSpec, root: str | Path, *, weights: bool = True) -> NnUNetPlan:
    """Read and check a results (or slim) folder for ``spec``; torch-free. ``weights=False``
    skips looking for the folds' checkpoints (for a folder still being written)."""
    who = f"teacher '{spec.name}'"
    folder = Path(spec.model)
    folder = folder if folder.is_absolute() else Path(root) / folder
    if not folder.is_dir():
        raise TeacherError(f"{who}: field 'model': {folder} is not a folder (give the nnU-Net "
                           "results folder <Trainer>__<Plans>__<configuration>)")
    plans_path, dataset_path = folder / "plans.json", folder / "dataset.json"
    plans, dataset = _read_json(plans_path, who), _read_json(dataset_path, who)
    name = configuration_name(folder, who)
    config = _configuration(plans, name, plans_path, who)
    patch = tuple(config.get("patch_size", ()))
    if len(patch) != 3 or not all(is_int(p) and p > 0 for p in patch):
        raise TeacherError(f"{who}: configuration {name!r} of {plans_path} has patch_size "
                           f"{list(patch)}; vesukit runs 3D nnU-Net configurations only")
    if config.get("previous_stage") or "cascade" in name:
        raise TeacherError(f"{who}: configuration {name!r} is a cascade stage (it needs the "
                           "previous stage's segmentation); use a 3d_fullres model")
    spacing = config.get("spacing", [])
    if not all(is_number(s) and math.isclose(s, 1.0, rel_tol=1e-6) for s in spacing):
        raise TeacherError(f"{who}: configuration {name!r} of {plans_path} works at spacing "
                           f"{spacing}; competition volumes are on a 1-voxel grid and vesukit "
                           "does not resample, so only models planned at spacing 1 run here")
    channels = dataset.get("channel_names", dataset.get("modality", {}))
    if len(channels) != 1:
        raise TeacherError(f"{who}: {dataset_path} lists {len(channels)} input channels "
                           f"({channels}); the volumes have one")
    labels = dataset.get("labels", {})
    if any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise TeacherError(f"{who}: {dataset_path} defines regions (region-based training, "
                           "sigmoid outputs); vesukit runs label-based (softmax) models")
    values = {k: v for k, v in labels.items() if is_int(v)}
    heads = len([k for k in values if k != "ignore"])
    foreground = [k for k, v in values.items() if v != 0 and k != "ignore"]
    label = spec.label or (foreground[0] if len(foreground) == 1 else None)
    if label is None or label not in foreground:
        raise TeacherError(f"{who}: field 'label': name the surface label; {dataset_path} has "
                           f"foreground labels {foreground}")
    channel = sorted(v for k, v in values.items() if k != "ignore").index(values[label])
    scheme = config.get("normalization_schemes", [None])[0]
    if scheme not in SCHEMES:
        raise TeacherError(f"{who}: {plans_path}: normalisation {scheme!r} is not one vesukit "
                           f"reproduces ({', '.join(SCHEMES)})")
    intensity = plans.get("foreground_intensity_properties_per_channel", {}).get("0", {})
    if scheme == "CTNormalization" and not all(
            k in intensity for k in ("mean", "std", "percentile_00_5", "percentile_99_5")):
        raise TeacherError(f"{who}: {plans_path}: CT normalisation needs mean, std, percentile_00_5 "
                           "and percentile_99_5 in foreground_intensity_properties_per_channel")
    transpose = tuple(plans.get("transpose_forward", (0, 1, 2)))
    back = tuple(plans.get("transpose_backward", (0, 1, 2)))
    if sorted(transpose) != [0, 1, 2] or tuple(transpose[i] for i in back) != (0, 1, 2):
        raise TeacherError(f"{who}: {plans_path}: transpose_forward {list(transpose)} / "
                           f"transpose_backward {list(back)} are not inverse permutations")
    arch = config.get("architecture")
    if not isinstance(arch, dict) or "network_class_name" not in arch:
        raise TeacherError(f"{who}: configuration {name!r} of {plans_path} has no 'architecture' "
                           "(plans from nnU-Net < 2.4 are not supported; re-plan with a recent "
                           "nnU-Net)")
    files = tuple(weight_file(folder, f, spec.checkpoint, who) for f in spec.folds) if weights else ()
    return NnUNetPlan(folder=folder, configuration=name, patch=patch,
                      transpose_forward=transpose, transpose_backward=back, scheme=scheme,
                      use_mask_for_norm=bool(config.get("use_mask_for_norm", [False])[0]),
                      intensity=dict(intensity), network_class=arch["network_class_name"],
                      arch_kwargs=dict(arch.get("arch_kwargs", {})),
                      requires_import=tuple(arch.get("_kw_requires_import", ())),
                      heads=heads, channel=channel, weights=files)
