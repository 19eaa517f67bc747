"""The one place a run's settings are decided, for every command that runs or fits the ensemble.

predict, segment, postprocess, calibrate, ablate and distill each call
:func:`resolve_run_settings` and get the same answer for the same inputs: which teachers are
active (weight > 0, after a fitted fusion's weights), the TTA of each, the overlap, the fusion,
the threshold rule and the post-processing chain, and, for each, where it came from.

Precedence, per setting: an explicit command-line value; else what the calibration was fitted
with (its ``fitted_on`` block, else its ``tta``); else the teacher's own default (an imported
nnU-Net teacher mirrors unless its manifest entry says ``"mirroring": false``); else the built-in
default. The calibration comes before the teacher's default because `calibrate` itself resolved
the teacher's default when it fitted: applying what was fitted reproduces the fitted score.

The calibration records what it was fitted on (:func:`fitted_on`); :func:`fit_mismatches`
names every way a run differs from that, for one warning line and the run record.
Importable without torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vesukit.decide.calibration import Calibration, CalibrationError, ThresholdRule
from vesukit.errors import VesukitError
from vesukit.infer.settings import DEFAULT_OVERLAP
from vesukit.infer.tta import PRESETS as TTA_LEVELS

CLI = "cli"
CALIBRATION = "calibration"
TEACHER_DEFAULT = "teacher default"
BUILT_IN = "built-in default"
DEFAULT_TTA = "none"
MAPS_PROVENANCE = "maps.json"  # beside saved maps: the settings that made them
SAVED_MAP_DTYPE = "float16"    # vesukit.maps.save_map


@dataclass(frozen=True)
class RunSettings:
    """What a run applies, and where each value came from (``sources``: setting -> origin;
    the TTA is per teacher, as ``tta:<teacher>``)."""

    teachers: tuple[str, ...]            # the active teachers, manifest order
    weights: Mapping[str, float]         # active teacher -> weight (> 0)
    tta: Mapping[str, str]               # active teacher -> TTA level
    overlap: float
    fusion_mode: str
    rule: ThresholdRule
    chain: tuple[Mapping[str, Any], ...]
    sources: Mapping[str, str] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()        # teachers of weight 0 (never loaded)

    @property
    def run_tta(self) -> str:
        """The highest TTA level any active teacher runs (the time budget degrades from it)."""
        return max(self.tta.values(), key=TTA_LEVELS.index, default=DEFAULT_TTA)

    def to_json(self) -> dict:
        return {"teachers": list(self.teachers), "weights": dict(self.weights),
                "tta": dict(self.tta), "overlap": self.overlap, "fusion_mode": self.fusion_mode,
                "rule": self.rule.describe(), "chain": [dict(s) for s in self.chain],
                "sources": dict(self.sources), "skipped": list(self.skipped)}

    def lines(self, decision: bool = True) -> list[str]:
        """Log lines: each setting with its value and origin (``decision`` False: without the
        rule and chain, for calibrate, which is about to fit them)."""
        s = self.sources
        tta = ", ".join(f"{n}={self.tta[n]} ({s[f'tta:{n}']})" for n in self.teachers)
        weights = ", ".join(f"{n}={self.weights[n]:g}" for n in self.teachers)
        chain = " > ".join(step["step"] for step in self.chain) or "none"
        out = [f"settings: teachers {weights} ({s['weights']}); TTA {tta}",
               f"settings: overlap {self.overlap:g} ({s['overlap']}); fusion {self.fusion_mode} "
               f"mean ({s['fusion']})"
               + (f"; rule {self.rule.describe()} ({s['rule']}); post-processing {chain} "
                  f"({s['chain']})" if decision else "")]
        if self.skipped:
            out.append("settings: weight 0, skipped (never loaded): " + ", ".join(self.skipped))
        return out


def capped_tta(level: str, ceiling: str | None) -> str:
    """``level``, or ``ceiling`` when that is lower (a time budget lowers every teacher's TTA)."""
    if ceiling is not None and TTA_LEVELS.index(ceiling) < TTA_LEVELS.index(level):
        return ceiling
    return level


def teacher_default_tta(spec) -> str | None:
    """The TTA a teacher runs by its own default, or None when it has none of its own.

    An imported nnU-Net teacher mirrors as nnUNetPredictor does (``mirroring`` true): "flip"
    (nnU-Net's mirroring views are what any level above "none" gives it).
    """
    from vesukit.teachers.nnunet import NnUNetSpec

    if isinstance(spec, NnUNetSpec):
        return "flip" if spec.mirroring else "none"
    return None


def active_teachers(manifest, calibration: Calibration | None = None,
                    where: str = "calibration") -> tuple[list, list[str], list[str]]:
    """(active specs with the weights in force, names of weight-0 teachers, notes).

    The one decision of which teachers run, for every command: a fitted fusion's weights replace
    the manifest's (a teacher it does not name is left out); a teacher of weight 0 is never
    loaded. Raises if no teacher is left.
    """
    notes: list[str] = []
    weights = {spec.name: spec.weight for spec in manifest.teachers}
    if calibration is not None and calibration.fusion is not None:
        weights, notes = calibration.fusion.teacher_weights(weights)
    active = [dataclasses.replace(spec, weight=weights[spec.name]) for spec in manifest.teachers
              if weights[spec.name] > 0]
    skipped = [spec.name for spec in manifest.teachers if weights[spec.name] <= 0]
    if not active and calibration is not None and calibration.overrides_weights:
        raise CalibrationError(
            f"{where}: its fusion weighs teachers {', '.join(calibration.fusion.weights)}, but none "
            f"of them is in {manifest.root} (it holds {', '.join(weights)}); use the teachers the "
            "calibration was fitted on, or re-run `vesukit calibrate --fusion` with these.")
    if not active:
        raise VesukitError(f"{manifest.root}: no teacher has a weight > 0; give at least one a "
                           "weight > 0.")
    return active, skipped, notes


def active_manifest(manifest, calibration: Calibration | None = None):
    """The manifest of only the active teachers, with the weights in force."""
    active, _, _ = active_teachers(manifest, calibration)
    return dataclasses.replace(manifest, teachers=tuple(active))


def resolve_run_settings(manifest, calibration: Calibration | None = None, *,
                         tta: str | None = None, overlap: float | None = None,
                         where: str = "calibration") -> RunSettings:
    """The run's settings from the command line (``tta``, ``overlap``: None when not given),
    the calibration and the teachers' manifest (see the module docstring for the order)."""
    given = calibration is not None
    calibration = calibration if given else Calibration()
    active, skipped, _ = active_teachers(manifest, calibration, where)
    fitted = dict(calibration.fitted_on or {})
    sources: dict[str, str] = {}
    levels: dict[str, str] = {}
    fitted_tta = fitted.get("tta") if isinstance(fitted.get("tta"), Mapping) else {}
    for spec in active:
        key = f"tta:{spec.name}"
        if tta is not None:
            levels[spec.name], sources[key] = tta, CLI
        elif spec.name in fitted_tta:
            levels[spec.name], sources[key] = fitted_tta[spec.name], CALIBRATION
        elif calibration.tta is not None:
            levels[spec.name], sources[key] = calibration.tta, CALIBRATION
        elif teacher_default_tta(spec) is not None:
            levels[spec.name], sources[key] = teacher_default_tta(spec), TEACHER_DEFAULT
        else:
            levels[spec.name], sources[key] = DEFAULT_TTA, BUILT_IN
    if overlap is not None:
        run_overlap, sources["overlap"] = float(overlap), CLI
    elif fitted.get("overlap") is not None:
        run_overlap, sources["overlap"] = float(fitted["overlap"]), CALIBRATION
    else:
        run_overlap, sources["overlap"] = DEFAULT_OVERLAP, BUILT_IN
    fused = calibration.fusion is not None
    sources["fusion"] = CALIBRATION if fused else BUILT_IN
    sources["weights"] = CALIBRATION if calibration.overrides_weights else "teachers' manifest"
    sources["rule"] = sources["chain"] = CALIBRATION if given else BUILT_IN
    return RunSettings(tuple(s.name for s in active), {s.name: s.weight for s in active}, levels,
                       run_overlap, calibration.fusion_mode, calibration.rule,
                       tuple(calibration.postprocess), sources, tuple(skipped))


def checkpoint_stamps(manifest, names: Sequence[str]) -> dict[str, str]:
    """teacher -> its checkpoint's size, mtime and content hash (what `fitted_on` records)."""
    from vesukit.runtime.state import file_stamp

    out = {}
    for name in names:
        try:
            out[name] = file_stamp(manifest.checkpoint_path(manifest[name]), content=True)
        except OSError as exc:
            out[name] = f"unreadable: {exc}"
    return out


def fitted_on(settings: RunSettings, manifest, maps: str | None = None) -> dict:
    """The calibration's record of what it was fitted on: teachers with their checkpoint
    stamps, TTA per teacher, overlap, fusion mode and weights, and the maps' source
    (``"teachers"`` for a cached ensemble pass, else the folder of saved maps)."""
    return {"teachers": checkpoint_stamps(manifest, settings.teachers) if manifest else {},
            "tta": dict(settings.tta), "overlap": settings.overlap,
            "fusion": {"mode": settings.fusion_mode, "weights": dict(settings.weights)},
            "maps": maps or "teachers"}


def fit_mismatches(calibration: Calibration, settings: RunSettings, manifest) -> list[str]:
    """Each way this run differs from what ``calibration`` was fitted on (empty: none, or the
    calibration records nothing to compare)."""
    if not calibration.fitted_on:
        return []
    return compare_fitted(calibration.fitted_on, fitted_on(settings, manifest))


def compare_fitted(fitted: Mapping, now: Mapping) -> list[str]:
    """How ``now`` (a :func:`fitted_on` record of this run, or a maps.json) differs from
    ``fitted``: teachers, their checkpoints, TTA, overlap, fusion."""
    problems = []
    stamps, current = dict(fitted.get("teachers") or {}), dict(now.get("teachers") or {})
    if stamps and current:
        if set(stamps) != set(current):
            problems.append(f"teachers {', '.join(sorted(stamps))} (fitted) vs "
                            f"{', '.join(sorted(current))} (now)")
        else:
            changed = sorted(n for n in stamps if not same_checkpoint(stamps[n], current[n]))
            if changed:
                problems.append("checkpoint(s) of " + ", ".join(changed) + " changed since the fit")
    fitted_tta, tta = dict(fitted.get("tta") or {}), dict(now.get("tta") or {})
    differ = [f"{n} {fitted_tta[n]}->{tta[n]}" for n in sorted(tta) if n in fitted_tta
              and fitted_tta[n] != tta[n]]
    if differ:
        problems.append("TTA " + ", ".join(differ))
    if fitted.get("overlap") is not None and now.get("overlap") is not None \
            and float(fitted["overlap"]) != float(now["overlap"]):
        problems.append(f"overlap {fitted['overlap']:g}->{now['overlap']:g}")
    fitted_fusion, fusion = dict(fitted.get("fusion") or {}), dict(now.get("fusion") or {})
    if fitted_fusion and fusion and (fitted_fusion.get("mode"), fitted_fusion.get("weights")) \
            != (fusion.get("mode"), fusion.get("weights")):
        problems.append(f"fusion {_fusion_text(fitted_fusion)}->{_fusion_text(fusion)}")
    return problems


def _fusion_text(fusion: Mapping) -> str:
    weights = ", ".join(f"{n}={w:g}" for n, w in (fusion.get("weights") or {}).items())
    return f"{fusion.get('mode')} mean of {weights}"


def same_checkpoint(stamp: str, other: str) -> bool:
    """Whether two :func:`checkpoint_stamps` entries are one checkpoint: size and content
    hash agree (the mtime may differ: a copied checkpoint is the same one)."""
    def core(text: str) -> str:
        parts = str(text).split(":")
        return ":".join([parts[0], *parts[2:]]) if len(parts) >= 3 else str(text)

    return core(stamp) == core(other)


def mismatch_line(calibration_file, problems: Sequence[str]) -> str:
    """The one warning line for a calibration applied to other teachers or settings."""
    return (f"calibration {calibration_file} was fitted on other teachers or settings: "
            + "; ".join(problems) + ". Its score does not carry over; re-run `vesukit calibrate`"
            " with these teachers and settings.")


def needs_disagreement(calibration: Calibration) -> list[str]:
    """The calibration's rule and steps that read the teachers' disagreement."""
    out = []
    if calibration.rule.name == "uncertainty":
        out.append(f"threshold rule {calibration.rule.describe()}")
    out += [f"step {step['step']}" for step in calibration.postprocess
            if step["step"] in DISAGREEMENT_STEPS]
    return out


DISAGREEMENT_STEPS = ("drop_uncertain",)


def check_disagreement(calibration: Calibration, where: str, maps: str) -> None:
    """Refuse a calibration that needs disagreement on maps that carry none (saved maps hold
    only the mean): its uncertainty rule would silently become its base threshold."""
    needing = needs_disagreement(calibration)
    if needing:
        raise CalibrationError(
            f"{where}: {' and '.join(needing)} read(s) the teachers' disagreement, which the "
            f"saved maps in {maps} do not carry (they hold the ensemble mean only). Fit the "
            "calibration on these maps (`vesukit calibrate --maps`), or apply it with "
            "`vesukit predict`, which has every teacher's map.")


def fitted_precision(calibration: Calibration) -> dict:
    """The precision of the maps the calibration was fitted on, for predict to decide on the
    same numbers: ``teacher_maps`` (calibrate's cache, fp16 by default) and/or ``mean`` (saved
    maps, fp16). Without it, a voxel within fp16 rounding of the threshold could flip."""
    precision = (calibration.fitted_on or {}).get("precision")
    return dict(precision) if isinstance(precision, Mapping) else {}


MADE_OTHERWISE = "made_otherwise"  # maps.json: volume id -> how its map differs from the settings


def write_maps_provenance(folder, settings: RunSettings, manifest,
                          made_otherwise: Mapping[str, str] | None = None) -> Path:
    """``maps.json`` beside saved maps: what made them (calibrate --maps records it).

    ``made_otherwise`` names the volumes whose map was not made with these settings (a teacher
    failed on it or the time budget lowered TTA or dropped a teacher), and how: calibrate
    leaves them out, since predict would not make such a map when all goes well.
    """
    import json

    from vesukit.data import atomic_write_bytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MAPS_PROVENANCE
    made = {**fitted_on(settings, manifest), "precision": {"mean": SAVED_MAP_DTYPE}}
    if made_otherwise:
        made[MADE_OTHERWISE] = dict(made_otherwise)
    atomic_write_bytes(path, json.dumps(made, indent=1).encode())
    return path


def read_maps_provenance(folder) -> dict | None:
    """The settings saved maps were made with, or None (maps from elsewhere, e.g. nnU-Net)."""
    import json

    path = Path(folder) / MAPS_PROVENANCE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VesukitError(f"{path}: not readable JSON ({exc}); delete it if the maps did not "
                           "come from `vesukit predict --save-maps`.") from exc
    return data if isinstance(data, dict) else None
