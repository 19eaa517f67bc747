"""Fusion fitted, not guessed: the teachers' ensemble weights and the fusion mode (mean of
probabilities or of logits) chosen from the cached per-teacher maps, out-of-fold.

Candidates: equal weights, the manifest's, weights growing with each teacher's own score
(linear and sharpened), each teacher favoured x2, and each one left out; each in both modes.
Every candidate is scored with the exact local metric after the same threshold rule. The
choice is made on all volumes; the *procedure* is checked out-of-fold (leave one volume out:
choose on the others, score on it), next to equal-weight probability fusion on the same
volumes, so the evidence says whether fitting helped at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODES = ("probability", "logit")


@dataclass(frozen=True)
class FusionCandidate:
    label: str
    mode: str
    weights: tuple[float, ...]  # per cached teacher, in cache order; 0 = left out

    def to_json(self, names: Sequence[str]) -> dict:
        return {"label": self.label, "mode": self.mode,
                "weights": dict(zip(names, self.weights))}


def fuse(cache, volume_id: str, weights: Sequence[float], mode: str):
    """The ensemble maps (numpy) of the teachers with weight > 0 in ``mode``."""
    import torch

    from vesukit.infer import EnsembleAccumulator

    names = cache.teacher_names
    first = cache.teacher_map(volume_id, names[0])
    accumulator = EnsembleAccumulator(first.shape, "cpu", mode=mode)
    for name, weight in zip(names, weights):
        if weight > 0:
            stored = cache.teacher_map(volume_id, name)
            accumulator.add(torch.from_numpy(np.array(stored, dtype=np.float32)), weight, name)
    return accumulator.result().to_numpy()


def candidates(names: Sequence[str], manifest_weights: Sequence[float],
               solo: Mapping[str, float]) -> list[FusionCandidate]:
    """The weight vectors tried (see the module docstring), in both modes."""
    n = len(names)
    vectors: list[tuple[str, tuple[float, ...]]] = [("equal", (1.0,) * n),
                                                    ("manifest", tuple(manifest_weights))]
    scores = np.array([max(solo[name], 1e-3) for name in names])
    for label, power in (("score", 1), ("score^4", 4)):
        w = scores ** power
        vectors.append((label, tuple(float(x) for x in np.round(w / w.max(), 4))))
    if n > 1:
        for i, name in enumerate(names):
            vectors.append((f"favour {name}", tuple(2.0 if j == i else 1.0 for j in range(n))))
            vectors.append((f"without {name}", tuple(0.0 if j == i else 1.0 for j in range(n))))
    seen, out = set(), []
    for label, weights in vectors:
        for mode in MODES:
            if (weights, mode) not in seen and any(w > 0 for w in weights):
                seen.add((weights, mode))
                out.append(FusionCandidate(label, mode, weights))
    return out


def fit_fusion(cache, labels: Mapping[str, object], volume_ids: Sequence[str], rule,
               progress: Callable[[str], None] | None = None) -> dict:
    """Choose weights and mode for ``rule`` (a ThresholdRule) on ``volume_ids``; returns the
    JSON block written into the calibration (chosen, every candidate's scores, out-of-fold)."""
    from vesukit.decide import binarize

    names = cache.teacher_names
    ids = list(volume_ids)
    memo: dict[tuple, float] = {}

    def score(weights: tuple[float, ...], mode: str, volume_id: str) -> float:
        key = (weights, mode, volume_id)
        if key not in memo:
            maps = fuse(cache, volume_id, weights, mode)
            memo[key] = labels[volume_id].score(binarize(maps.mean, rule(maps))).score
        return memo[key]

    def score_all(keys: Sequence[tuple[tuple[float, ...], str]], on: Sequence[str]) -> None:
        # volume by volume: the cache keeps one volume's maps in memory, and a label read from
        # its file is released after (a hundred prepared 320^3 labels would not fit)
        for volume_id in on:
            for weights, mode in keys:
                score(weights, mode, volume_id)
            release = getattr(labels[volume_id], "release", None)
            if release is not None:
                release()

    def solo_scores(on: Sequence[str]) -> dict[str, float]:
        alone = {name: tuple(1.0 if m == name else 0.0 for m in names) for name in names}
        score_all([(w, "probability") for w in alone.values()], on)
        return {name: float(np.mean([score(alone[name], "probability", v) for v in on]))
                for name in names}

    def best(on: Sequence[str]) -> tuple[FusionCandidate, list[dict]]:
        tried = candidates(names, [cache.weight(n) for n in names], solo_scores(on))
        score_all([(c.weights, c.mode) for c in tried], on)
        table = []
        for cand in tried:
            per_volume = {v: score(cand.weights, cand.mode, v) for v in on}
            table.append({**cand.to_json(names), "mean": float(np.mean(list(per_volume.values()))),
                          "per_volume": per_volume})
        top = max(range(len(table)), key=lambda i: table[i]["mean"])  # first of equals wins
        return tried[top], table

    if progress:
        progress(f"fusion: weights and mode over {len(names)} teachers on {len(ids)} volume(s)")
    chosen, table = best(ids)
    evidence: dict = {"rule": rule.describe(), "candidates": sorted(table, key=lambda c: -c["mean"])}
    if len(ids) > 1:
        folds, oof, equal = [], [], []
        for held in ids:
            fold_choice, _ = best([v for v in ids if v != held])
            oof.append(score(fold_choice.weights, fold_choice.mode, held))
            equal.append(score((1.0,) * len(names), "probability", held))
            folds.append({"held_out": held, "chosen": fold_choice.to_json(names),
                          "score": oof[-1], "equal_probability": equal[-1]})
        evidence["out_of_fold"] = {"score": float(np.mean(oof)),
                                   "equal_probability": float(np.mean(equal)), "folds": folds}
    else:
        evidence["out_of_fold"] = None  # one volume: nothing to hold out
    # predict --calibration (and the notebook) apply mode and weights from this block
    return {**chosen.to_json(names), "evidence": evidence,
            "applied_by_predict": "mode and weights, from this file (they override the manifest's)"}


def fused_manifest(manifest, fusion: Mapping) -> dict:
    """A teachers.json (dict) with the fitted weights; left-out teachers dropped, checkpoints
    made absolute so the file works from anywhere."""
    from dataclasses import replace

    from vesukit.teachers.spec import manifest_to_json

    specs = []
    for spec in manifest.teachers:
        weight = float(fusion["weights"].get(spec.name, 0.0))
        if weight > 0:
            specs.append(replace(spec, weight=weight,
                                 checkpoint=str(manifest.checkpoint_path(spec).resolve())))
    return manifest_to_json(specs)


FUSED_MANIFEST = "teachers.fused.json"


def fuse_weights(cache, block: Mapping) -> tuple[float, ...]:
    """The fitted block's weights in the cache's teacher order (0 for a teacher left out)."""
    return tuple(float(block["weights"].get(name, 0.0)) for name in cache.teacher_names)


def write_fused_manifest(manifest, block: dict, calibration_path) -> Path:
    """``teachers.fused.json`` beside the calibration, for tools that read only a manifest
    (predict itself applies the fusion from the calibration); the block records its path."""
    from vesukit.data import atomic_write_bytes

    path = Path(calibration_path).parent / FUSED_MANIFEST
    atomic_write_bytes(path, (json.dumps(fused_manifest(manifest, block), indent=2) + "\n").encode())
    return path
