"""Threshold rules and the calibration file that selects one (plus post-processing).

A rule turns a volume's ensemble maps into one threshold, without labels. The calibration
file (``calibration.json``, written by `vesukit calibrate` or by hand) names the rule, its
parameters, the post-processing chain (a list of steps, or a preset's name), optionally the
TTA it was fitted with and the fusion (`vesukit calibrate --fusion`: the teachers' weights and
whether their probabilities or logits are averaged); `vesukit predict --calibration FILE`,
`vesukit postprocess` and the notebook apply it.
Without a file, predict uses :data:`DEFAULT_THRESHOLD`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vesukit.decide.presets import PRESETS
from vesukit.decide.rules import DEFAULT_THRESHOLD, THRESHOLD_RULES
from vesukit.errors import VesukitError

CALIBRATION_FORMAT = 1
TTA_CHOICES = ("none", "flip", "full")
FUSION_MODES = ("probability", "logit")  # vesukit.infer.ensemble.MODES (not imported: torch)


class CalibrationError(VesukitError):
    """A calibration file is unreadable or names an unknown rule or step."""


@dataclass(frozen=True)
class ThresholdRule:
    name: str = "fixed"
    params: Mapping[str, Any] = field(default_factory=lambda: {"threshold": DEFAULT_THRESHOLD})

    def __post_init__(self):
        # A rule that exists, with parameters of the right type and range (normalised): a
        # calibration that could not run is refused where it is made, not on Kaggle.
        if self.name not in THRESHOLD_RULES:
            raise CalibrationError(f"calibration: unknown threshold rule '{self.name}'. Known rules: "
                                   f"{', '.join(sorted(THRESHOLD_RULES))}.")
        if not isinstance(self.params, Mapping):
            raise CalibrationError(f"calibration: threshold rule '{self.name}' parameters must be an "
                                   f"object, got {self.params!r}.")
        object.__setattr__(self, "params", check_rule_params(self.name, self.params))

    def __call__(self, maps) -> float:
        return THRESHOLD_RULES[self.name](maps, **dict(self.params))

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({args})"


@dataclass(frozen=True)
class Fusion:
    """How the teachers' maps are combined: the mean of probabilities or of logits, and each
    teacher's weight by name (``None``: the manifest's weights). Fitted by
    `vesukit calibrate --fusion`; weights here override the manifest's, and a teacher they do
    not name (or weigh 0) is left out, as it was when the fusion was fitted."""

    mode: str = "probability"
    weights: Mapping[str, float] | None = None

    def to_json(self) -> dict:
        out: dict[str, Any] = {"mode": self.mode}
        if self.weights is not None:
            out["weights"] = dict(self.weights)
        return out

    def describe(self) -> str:
        weights = ("manifest weights" if self.weights is None else
                   "weights " + ", ".join(f"{n}={w:g}" for n, w in self.weights.items()))
        return f"{self.mode} mean, {weights}"

    def teacher_weights(self, manifest: Mapping[str, float]) -> tuple[dict[str, float], list[str]]:
        """(name -> weight for each manifest teacher, notes on what differs from the manifest)."""
        if self.weights is None:
            return dict(manifest), []
        weights = {name: float(self.weights.get(name, 0.0)) for name in manifest}
        notes = [f"teacher '{name}' is left out: the calibration's fusion does not name it"
                 for name in manifest if name not in self.weights]
        notes += [f"the calibration's fusion names teacher '{name}', which the manifest lacks"
                  for name in self.weights if name not in manifest]
        return weights, notes

    @classmethod
    def from_json(cls, data: Any, where: str = "calibration") -> Fusion:
        """The ``fusion`` block (extra keys, e.g. calibrate's evidence, are ignored)."""
        if not isinstance(data, Mapping):
            raise CalibrationError(f"{where}: 'fusion' must be an object with 'mode' and "
                                   "optionally 'weights'.")
        mode = data.get("mode", "probability")
        if mode not in FUSION_MODES:
            raise CalibrationError(f"{where}: fusion 'mode' is {mode!r}; expected one of "
                                   f"{', '.join(FUSION_MODES)}.")
        weights = data.get("weights")
        if weights is None:
            return cls(mode)
        if not isinstance(weights, Mapping) or not weights:
            raise CalibrationError(f"{where}: fusion 'weights' must map teacher names to "
                                   "numbers, e.g. {\"unet_0\": 1.0, \"unet_1\": 0.5}.")
        for name, weight in weights.items():
            if (not isinstance(weight, (int, float)) or isinstance(weight, bool)
                    or not np.isfinite(weight) or weight < 0):
                raise CalibrationError(f"{where}: fusion weight of teacher '{name}' is "
                                       f"{weight!r}; expected a number >= 0.")
        if not any(w > 0 for w in weights.values()):
            raise CalibrationError(f"{where}: every fusion weight is 0, so no teacher would "
                                   "predict; give at least one a weight > 0.")
        return cls(mode, {str(n): float(w) for n, w in weights.items()})


@dataclass(frozen=True)
class Calibration:
    """What predict does between the ensemble maps and the written mask."""

    rule: ThresholdRule = field(default_factory=lambda: ThresholdRule())
    postprocess: tuple[Mapping[str, Any], ...] = ()
    tta: str | None = None          # the TTA the calibration was fitted with; None: predict's own
    fusion: Fusion | None = None    # fitted fusion; None: probability mean, manifest weights
    # what it was fitted on (teachers + checkpoint stamps, TTA per teacher, overlap, fusion,
    # maps' source): vesukit.run_settings writes it and compares each run against it
    fitted_on: Mapping[str, Any] | None = None

    def __post_init__(self):
        from vesukit.decide.steps import check_steps

        object.__setattr__(self, "postprocess", check_steps(self.postprocess, "calibration"))
        if self.tta is not None and self.tta not in TTA_CHOICES:
            raise CalibrationError(f"calibration: 'tta' is {self.tta!r}; expected one of "
                                   f"{', '.join(TTA_CHOICES)}.")

    @property
    def fusion_mode(self) -> str:
        """Mean of probabilities (the default) or of logits, as the fitted fusion says."""
        return self.fusion.mode if self.fusion is not None else "probability"

    @property
    def overrides_weights(self) -> bool:
        """Whether the fitted fusion's weights replace the manifest's."""
        return self.fusion is not None and self.fusion.weights is not None

    def to_json(self) -> dict:
        out = {
            "format": CALIBRATION_FORMAT,
            "threshold": {"rule": self.rule.name, **dict(self.rule.params)},
            "postprocess": [dict(step) for step in self.postprocess],
        }
        if self.tta is not None:
            out["tta"] = self.tta
        if self.fusion is not None:
            out["fusion"] = self.fusion.to_json()
        if self.fitted_on is not None:
            out["fitted_on"] = dict(self.fitted_on)
        return out

    def describe(self) -> str:
        """One line for logs: rule, chain, TTA and fusion."""
        chain = " > ".join(
            step["step"] + "(" + ", ".join(f"{k}={v}" for k, v in step.items() if k != "step")
            + ")" for step in self.postprocess) or "none"
        fusion = self.fusion.describe() if self.fusion else "probability mean, manifest weights"
        return (f"threshold {self.rule.describe()}; post-processing {chain}; "
                f"TTA {self.tta or 'as requested'}; fusion {fusion}")

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "calibration") -> Calibration:
        from vesukit.decide.steps import check_steps

        if not isinstance(data, Mapping) or "threshold" not in data:
            raise CalibrationError(f"{where}: expected an object with a 'threshold' entry.")
        if data.get("format", CALIBRATION_FORMAT) != CALIBRATION_FORMAT:
            raise CalibrationError(
                f"{where}: format {data.get('format')} is not supported (this vesukit reads "
                f"format {CALIBRATION_FORMAT}). Re-run `vesukit calibrate` with this version."
            )
        threshold = data["threshold"]
        if not isinstance(threshold, Mapping):
            raise CalibrationError(
                f"{where}: 'threshold' is {threshold!r}; it is an object naming the rule and its "
                'parameters, e.g. {"rule": "fixed", "threshold": 0.4}.')
        threshold = dict(threshold)
        name = threshold.pop("rule", "fixed")
        if name not in THRESHOLD_RULES:
            raise CalibrationError(
                f"{where}: unknown threshold rule '{name}'. Known rules: "
                f"{', '.join(sorted(THRESHOLD_RULES))}."
            )
        threshold = check_rule_params(name, threshold, where)
        chain = data.get("postprocess", ())
        if isinstance(chain, str):  # a preset's name: its published chain
            chain = preset_chain(chain, where)
        steps = check_steps(chain, where)
        tta = data.get("tta")
        if tta is not None and tta not in TTA_CHOICES:
            raise CalibrationError(f"{where}: 'tta' is {tta!r}; expected one of "
                                   f"{', '.join(TTA_CHOICES)}.")
        fusion = Fusion.from_json(data["fusion"], where) if data.get("fusion") is not None else None
        fitted_on = data.get("fitted_on")
        if fitted_on is not None:
            check_fitted_on(fitted_on, where)
        return cls(ThresholdRule(name, threshold), steps, tta, fusion, fitted_on)


def check_fitted_on(fitted_on: Any, where: str) -> None:
    """The ``fitted_on`` values predict applies (TTA per teacher, overlap) are well formed."""
    fix = "remove 'fitted_on' from a hand-written file, or re-run `vesukit calibrate`."
    if not isinstance(fitted_on, Mapping):
        raise CalibrationError(f"{where}: 'fitted_on' must be an object; {fix}")
    tta = fitted_on.get("tta") or {}
    if not isinstance(tta, Mapping) or any(level not in TTA_CHOICES for level in tta.values()):
        raise CalibrationError(f"{where}: fitted_on 'tta' must map teachers to one of "
                               f"{', '.join(TTA_CHOICES)}; {fix}")
    overlap = fitted_on.get("overlap")
    if overlap is not None and (not isinstance(overlap, (int, float)) or isinstance(overlap, bool)
                                or not 0 <= overlap < 1):
        raise CalibrationError(f"{where}: fitted_on 'overlap' is {overlap!r}; expected a number "
                               f"in [0, 1); {fix}")


def check_rule_params(name: str, params: Mapping[str, Any], where: str = "calibration") -> dict:
    """``params`` of threshold rule ``name`` checked against :mod:`vesukit.decide.parameters`
    (type and range) and normalised; raises :class:`CalibrationError` naming the parameter."""
    import inspect

    from vesukit.decide.parameters import RULE_PARAMETERS, checked_params

    defaults = {key: p.default for key, p in inspect.signature(THRESHOLD_RULES[name]).parameters.items()
                if key != "maps"}
    checked, problem = checked_params(name, RULE_PARAMETERS[name], params,
                                      f"threshold rule '{name}'", defaults)
    if checked is None:
        raise CalibrationError(f"{where}: {problem}.")
    return checked


def load_calibration(path: str | Path | None) -> Calibration:
    """Read ``calibration.json``; ``None`` gives the default (fixed threshold, no post-processing)."""
    if path is None:
        return Calibration()
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(
            f"{path}: no such calibration file. Write one with `vesukit calibrate`, or drop "
            "--calibration to use the default threshold."
        ) from None
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{path}: not a readable JSON calibration file ({exc}).") from exc
    return Calibration.from_json(data, str(path))


def binarize(probability, threshold: float) -> np.ndarray:
    """uint8 0/1 mask of ``probability >= threshold`` (tensor or array in, numpy out).

    An fp16 array (saved maps) is compared in float32, as predict compares its maps: numpy
    would round the threshold to fp16 first (0.4 -> 0.39990234) and set the voxels there."""
    if isinstance(probability, np.ndarray) and probability.dtype == np.float16:
        threshold = np.float32(threshold)  # promotes the comparison, without a float32 copy
    mask = probability >= threshold
    if hasattr(mask, "cpu"):
        mask = mask.cpu().numpy()
    return np.asarray(mask).astype(np.uint8)


def preset_chain(name: str, where: str = "postprocess") -> tuple[dict, ...]:
    """The chain of preset ``name``; raises CalibrationError naming the known presets."""
    if name not in PRESETS:
        raise CalibrationError(f"{where}: unknown post-processing preset '{name}'. Known presets: "
                               f"{', '.join(sorted(PRESETS))}.")
    return tuple(dict(step) for step in PRESETS[name]["postprocess"])


def preset_calibration(name: str):
    """The preset's published threshold (fixed) and chain as a Calibration."""
    chain = preset_chain(name)
    return Calibration(ThresholdRule("fixed", {"threshold": PRESETS[name]["threshold"]}), chain)
