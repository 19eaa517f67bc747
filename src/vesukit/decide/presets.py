"""Named chains that reproduce the top solutions' post-processing in one word.

Parameters are the published ones (docs/winners.md) for 320^3 volumes; where a solution did not
publish a value, the one chosen here is marked "not published". Steps a solution used that
vesukit does not have yet are listed under ``missing``, so a preset never claims more than it
runs. Use one in a calibration file as ``"postprocess": "first_place"``, or with
``vesukit postprocess --preset first_place``. :func:`vesukit.decide.calibration.preset_chain` resolves a
name to its chain.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "first_place": {
        "source": "1st place (0.627 private): border, dust < 20k, at most 40 sheets, per sheet "
                  "oriented closing, height-map patching (< 64^2), closing, 2x2x2 plugging with "
                  "an Euler guard, pasted without merging; fill holes; border again",
        "threshold": 0.26,
        "postprocess": [
            {"step": "zero_border", "width": 3},
            {"step": "remove_small", "min_voxels": 20000},
            {"step": "keep_sheets", "count": 40},
            {"step": "sheet_close", "radius": 3, "thin": 1.5},
            {"step": "patch_holes", "max_area": 4096},
            {"step": "sheet_close", "radius": 3, "thin": 1.5},
            {"step": "plug_holes", "passes": 2},
            {"step": "fill_holes", "max_voxels": 0},
            {"step": "zero_border", "width": 3},
        ],
        "missing": [],
    },
    "second_place": {
        "source": "2nd place (0.6225 private): hysteresis, anisotropic closing, dust < 1000, "
                  "3 face voxels zeroed, per-component threshold escalation; hysteresis low/high "
                  "not published (0.2-0.7 tried): 0.3/0.6 here",
        "threshold": 0.3,
        "postprocess": [
            {"step": "hysteresis", "low": 0.3, "high": 0.6},
            {"step": "sheet_close", "radius": 3, "thin": 1.5},
            {"step": "remove_small", "min_voxels": 1000},
            {"step": "zero_border", "width": 3},
            {"step": "split_merged", "max_layered": 0.2, "increment": 0.05},
        ],
        "missing": ["per-component PCA height map, thickened to 5 and eroded to 3",
                    "Euler-number window tunnel check"],
    },
    "fifth_place": {
        "source": "5th place (0.619): threshold 0.3, dust < 50k (6-connected) unless it touches "
                  "3 faces, 13 rounds of tunnel filling with balls of radius clip(EDT + 1, 3.5, 7); "
                  "the lowest probability a tunnel may be filled at is not published: 0.15 here",
        "threshold": 0.3,
        "postprocess": [
            {"step": "remove_small", "min_voxels": 50000, "connectivity": 6, "keep_faces": 3},
            {"step": "fill_tunnels", "low": 0.15, "rounds": 13, "min_radius": 3.5, "max_radius": 7.0},
        ],
        "missing": [],
    },
    "ninth_place": {
        "source": "9th place (0.6164): dust < 5000 (6-connected), gap and diagonal sandwich "
                  "filling (5 passes), Gaussian sigma 1 re-thresholded at 0.5, 2x2 diagonal "
                  "bridge; threshold not published: nnU-Net's argmax, 0.5",
        "threshold": 0.5,
        "postprocess": [
            {"step": "remove_small", "min_voxels": 5000, "connectivity": 6},
            {"step": "slice_gaps", "passes": 5},
            {"step": "gaussian_rethreshold", "sigma": 1.0, "level": 0.5},
            {"step": "diagonal_bridge", "axis": 0},
        ],
        "missing": ["per-slice skeleton line reinforcement"],
    },
    "tenth_place": {
        "source": "10th place: threshold 0.3, dust < 3000, 7 rounds of a 3x3x3 median filter "
                  "per component",
        "threshold": 0.3,
        "postprocess": [
            {"step": "remove_small", "min_voxels": 3000},
            {"step": "median_filter", "rounds": 7, "size": 3},
        ],
        "missing": [],
    },
}
