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
        "source": "1st place (0.627 private), its code: jermmy19998/Vesuvius-Challenge-1st-reproduce, "
                  "infer.py, _postprocess_cpu (the team's final notebook reproduced) with parse_args' "
                  "defaults; reproduced voxel for voxel by the step first_place "
                  "(vesukit.decide.first_place)",
        "threshold": 0.26,
        "postprocess": [
            {"step": "first_place", "border_width": 3, "min_voxels": 20000, "max_sheets": 40,
             "max_patch": 64, "close_par": 7, "close_perp": 7},
        ],
        "missing": [],
    },
    "second_place": {
        "source": "2nd place (0.6225 private), its code: mariuskern/spiral_fitting, "
                  "surface_detection/original_code/local-interpolation-interference.ipynb, "
                  "run_inference's chain from the probability map (hysteresis 0.2/0.83 with "
                  "retries at 0.5/0.6/0.7, Z-line closing, dust, faces, Euler-checked 80^3 cubes "
                  "refitted by a PCA/griddata sheet); reproduced by the step second_place "
                  "(vesukit.decide.second_place): the team's random subsample is drawn from a "
                  "seeded generator (seed 0), as its code after numpy.random.seed(0). The rule's "
                  "threshold is not used: the step thresholds the probability itself",
        "threshold": 0.2,
        "postprocess": [
            {"step": "second_place", "low": 0.2, "high": 0.83, "retry_low_1": 0.5, "retry_low_2": 0.6,
             "retry_low_3": 0.7, "dust": 100, "face": 3, "min_voxels": 1000, "seed": 0},
        ],
        "missing": [],
    },
    "fifth_place": {
        "source": "5th place (0.619), from the write-up only (no public code): dust < 50k "
                  "(6-connected) unless it touches 3 faces, 13 rounds of tunnel filling with balls "
                  "of radius clip(EDT + 1, 3.5, 7). Its 0.3 thresholded a regressed signed "
                  "distance, not a probability: the 0.3 here is a placeholder to calibrate, not "
                  "the team's threshold. The lowest probability a tunnel may be filled at is not "
                  "published: 0.15 here",
        "threshold": 0.3,
        "postprocess": [
            {"step": "remove_small", "min_voxels": 50000, "connectivity": 6, "keep_faces": 3},
            {"step": "fill_tunnels", "low": 0.15, "rounds": 13, "min_radius": 3.5, "max_radius": 7.0},
        ],
        "missing": ["the team's signed-distance output, which its 0.3 thresholds"],
    },
    "ninth_place": {
        "source": "9th place (0.6164), its code: TingYi028/Kaggle-vesuvius-9th, Inference.ipynb, "
                  "apply_post_processing with the main cell's keywords (min_size 5000, line_norm, "
                  "sandwich with 5 iterations, gaussian, dig2x2) after nnU-Net's argmax "
                  "(probability 0.5 for two classes); reproduced voxel for voxel by the step "
                  "ninth_place (vesukit.decide.ninth_place)",
        "threshold": 0.5,
        "postprocess": [
            {"step": "ninth_place", "min_voxels": 5000, "line_radius": 1.5, "max_link": 30.0,
             "max_angle": 45.0, "sandwich_rounds": 5, "max_gap": 3, "min_support": 9,
             "sigma": 1.0, "level": 0.5, "final_dust": 10},
        ],
        "missing": [],
    },
    "tenth_place": {
        "source": "10th place, its code: Sersasj/vesuvius-challenge-10th-solution, generate_oof.py, "
                  "postprocess_mask_voxel (min_cc_volume 3000, median_iters 7) on probability > 0.3 "
                  "(PRED_THRESHOLD_4TH_STAGE): 6-connected components under 3000 voxels dropped, "
                  "each other one median-filtered 7 times (3^3, faces mirrored) alone, the results "
                  "united",
        "threshold": 0.3,
        "postprocess": [
            {"step": "remove_small", "min_voxels": 3000, "connectivity": 6},
            {"step": "median_filter", "rounds": 7, "size": 3, "connectivity": 6},
        ],
        "missing": [],
    },
}
