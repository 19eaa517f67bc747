"""The predict-time decision: ensemble maps in, the mask to write out.

In data-flow order: a threshold rule picks one threshold per volume (:mod:`~.rules`), the
mask is binarised, then a post-processing chain of named steps cleans it (:mod:`~.steps`,
the winners' per-sheet steps in :mod:`~.sheets`, named chains in :mod:`~.presets`). The
calibration file (:mod:`~.calibration`) names the rule, the chain and the TTA choice; predict,
`vesukit postprocess` and the notebook apply it. :mod:`vesukit.calibrate` fits it offline.
Torch-free: everything here takes numpy arrays (tensors are converted).
"""

from vesukit.decide.calibration import (
    CALIBRATION_FORMAT,
    Calibration,
    CalibrationError,
    Fusion,
    ThresholdRule,
    binarize,
    check_rule_params,
    load_calibration,
)
from vesukit.decide.rules import DEFAULT_THRESHOLD, THRESHOLD_RULES, fixed_threshold

__all__ = [
    "CALIBRATION_FORMAT", "Calibration", "CalibrationError", "Fusion", "ThresholdRule", "binarize",
    "check_rule_params", "load_calibration", "DEFAULT_THRESHOLD", "THRESHOLD_RULES",
    "fixed_threshold",
]
