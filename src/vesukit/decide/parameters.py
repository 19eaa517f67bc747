"""Every threshold rule's and post-processing step's parameters: type and valid range.

One table, checked whenever a calibration is read (`predict`, `postprocess`, the notebook) or
built (`calibrate`, `teachers pack`), so a file with ``"threshold": NaN`` or a median filter of
size 0 is refused before any compute, with a message naming the rule or step and the parameter,
instead of silently giving empty masks. A rule or step added to
:data:`vesukit.decide.rules.THRESHOLD_RULES` or :data:`vesukit.decide.steps.STEPS` needs its row
here (a test checks that every function parameter has one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One parameter: ``int`` or ``float``, within ``[lo, hi]`` (``lo_open``: ``lo`` excluded),
    or one of ``choices``."""

    kind: type
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[int, ...] | None = None

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        noun = "an integer" if self.kind is int else "a number"
        if self.lo is not None and self.hi is not None:
            return f"{noun} in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"
        if self.lo is not None:
            return f"{noun} {'>' if self.lo_open else '>='} {self.lo:g}"
        return f"{noun}"

    def normalise(self, value: Any) -> int | float | None:
        """The value as this parameter's type, or None when it is not valid."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        if self.kind is int:  # 3.0 (a JSON writer's) is 3; a float parameter keeps its form
            if float(value) != int(value):
                return None
            value = int(value)
        if self.choices is not None:
            return value if value in self.choices else None
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return None
        if self.hi is not None and value > self.hi:
            return None
        return value


PROBABILITY = Param(float, 0.0, 1.0)
COUNT = Param(int, 0)            # sizes, passes, rounds: 0 allowed (no-op or "any size")
POSITIVE_COUNT = Param(int, 1)
AXIS = Param(int, choices=(0, 1, 2))
BINS = Param(int, 4, 65536)

# name -> parameter -> Param; ORDERED: pairs that must satisfy first <= second.
RULE_PARAMETERS: dict[str, dict[str, Param]] = {
    "fixed": {"threshold": PROBABILITY},
    "foreground_fraction": {"fraction": Param(float, 0.0, 1.0, lo_open=True),
                            "lo": PROBABILITY, "hi": PROBABILITY},
    "otsu": {"floor": PROBABILITY, "lo": PROBABILITY, "hi": PROBABILITY, "bins": BINS},
    "valley": {"lo": PROBABILITY, "hi": PROBABILITY, "bins": BINS, "smooth": Param(float, 0.0, 100.0)},
    "uncertainty": {"base": PROBABILITY, "gain": Param(float, -1.0, 1.0),
                    "lo": PROBABILITY, "hi": PROBABILITY},
}

STEP_PARAMETERS: dict[str, dict[str, Param]] = {
    "zero_border": {"width": COUNT},
    "remove_small": {"min_voxels": COUNT, "connectivity": Param(int, choices=(6, 26)),
                     "keep_faces": Param(int, 0, 6)},
    "drop_uncertain": {"max_disagreement": PROBABILITY},
    "fill_holes": {"max_voxels": COUNT},
    "close": {"radius": COUNT},
    "keep_sheets": {"count": POSITIVE_COUNT},
    "hysteresis": {"low": PROBABILITY, "high": PROBABILITY},
    "split_merged": {"max_layered": PROBABILITY, "increment": Param(float, 0.0, 1.0, lo_open=True),
                     "rounds": COUNT, "min_voxels": COUNT},
    "sheet_close": {"radius": Param(float, 0.0, 64.0, lo_open=True),
                    "thin": Param(float, 0.0, 64.0, lo_open=True), "max_sheets": POSITIVE_COUNT},
    "patch_holes": {"max_area": COUNT, "max_sheets": POSITIVE_COUNT},
    "plug_holes": {"passes": COUNT, "max_sheets": POSITIVE_COUNT},
    "fill_tunnels": {"low": PROBABILITY, "rounds": COUNT,
                     "min_radius": Param(float, 0.0, 64.0, lo_open=True),
                     "max_radius": Param(float, 0.0, 64.0, lo_open=True)},
    "slice_gaps": {"passes": COUNT, "axis": AXIS},
    "gaussian_rethreshold": {"sigma": Param(float, 0.0, 64.0, lo_open=True), "level": PROBABILITY},
    "diagonal_bridge": {"axis": AXIS},
    "median_filter": {"rounds": COUNT, "size": Param(int, 1, 63), "connectivity": Param(int, choices=(6, 26))},
    # the teams' whole chains (decide/first_place.py, second_place.py, ninth_place.py)
    "second_place": {"low": PROBABILITY, "high": PROBABILITY, "retry_low_1": PROBABILITY,
                     "retry_low_2": PROBABILITY, "retry_low_3": PROBABILITY, "dust": COUNT,
                     "face": POSITIVE_COUNT, "min_voxels": COUNT, "seed": Param(int, 0, 2 ** 32 - 1)},
    "first_place": {"border_width": COUNT, "min_voxels": COUNT, "max_sheets": POSITIVE_COUNT,
                    "max_patch": COUNT, "close_par": Param(int, 1, 63), "close_perp": Param(int, 1, 63)},
    "ninth_place": {"min_voxels": COUNT, "line_radius": Param(float, 0.0, 64.0, lo_open=True),
                    "max_link": Param(float, 0.0, 10000.0, lo_open=True),
                    "max_angle": Param(float, 0.0, 180.0, lo_open=True),
                    "sandwich_rounds": COUNT, "max_gap": COUNT, "min_support": Param(int, 0, 24),
                    "sigma": Param(float, 0.0, 64.0, lo_open=True), "level": PROBABILITY,
                    "final_dust": COUNT},
}

ORDERED: dict[str, tuple[tuple[str, str], ...]] = {
    "foreground_fraction": (("lo", "hi"),),
    "otsu": (("lo", "hi"),),
    "valley": (("lo", "hi"),),
    "uncertainty": (("lo", "hi"),),
    "hysteresis": (("low", "high"),),
    "second_place": (("low", "high"), ("retry_low_1", "high"), ("retry_low_2", "high"),
                     ("retry_low_3", "high")),
    "fill_tunnels": (("min_radius", "max_radius"),),
}


def checked_params(name: str, table: Mapping[str, Param], params: Mapping[str, Any], what: str,
                   defaults: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(``params`` of rule or step ``name`` normalised to their types, "") or (None, the reason,
    naming ``what`` and the parameter). ``defaults`` (the function's own) fill what ``params``
    leaves out for the order checks (``lo`` <= ``hi`` and the like)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in table:
            return None, (f"{what} has unknown parameter(s) ['{key}']; it accepts "
                          f"{sorted(table)}")
        normalised = table[key].normalise(value)
        if normalised is None:
            return None, f"{what} parameter '{key}' is {value!r}; expected {table[key].describe()}"
        out[key] = normalised
    merged = {**defaults, **out}
    for first, second in ORDERED.get(name, ()):
        if merged[first] > merged[second]:
            return None, (f"{what} has '{first}' = {merged[first]!r} above '{second}' = "
                          f"{merged[second]!r}; '{first}' must be <= '{second}'")
    return out, ""
