"""Fusion fitted, not guessed: the teachers' ensemble weights and the fusion mode (mean of
probabilities or of logits) chosen from the cached per-teacher maps, out-of-fold.

Candidates: equal weights, the manifest's, weights growing with each teacher's own score
(linear and sharpened), each teacher favoured x2, and each one left out; each in both modes.
Every candidate is scored with the exact local metric after the same threshold rule. The
choice is made on all the volumes given; the *procedure* is checked out-of-fold (at most
:data:`FUSION_FOLDS` folds, leave one volume out when there are that few: choose on the others,
score on the held ones), next to equal-weight probability fusion on the same volumes, so the
evidence says whether fitting helped at all. The weights growing with the teachers' scores are
new vectors in every fold, so leaving each of n volumes out costs about n^2 masks: at 75
volumes of 320^3 that was some 20,000 whole-volume masks; five folds cost about 5n.

Each volume's candidates are scored in one task (its teacher maps and label read once, the
label released after); with a Dask client the volumes are scored in parallel.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODES = ("probability", "logit")
FUSION_FOLDS = 5  # out-of-fold folds of the fusion's procedure check (fewer volumes: one each)


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


def score_fusions(cache_folder, label, volume_id: str, keys, rule) -> list[float]:
    """Exact scores of one volume for each (weights, mode) of ``keys`` after ``rule``; the
    label (a LabelFile, or a prepared label) is released after. Runs here or on a worker."""
    from vesukit.calibrate.cache import MapCache
    from vesukit.decide import binarize

    cache = MapCache(cache_folder)
    try:
        scores = []
        for weights, mode in keys:
            maps = fuse(cache, volume_id, weights, mode)
            scores.append(float(label.score(binarize(maps.mean, rule(maps))).score))
        return scores
    finally:
        release = getattr(label, "release", None)
        if release is not None:
            release()


def fit_fusion(cache, labels: Mapping[str, object], volume_ids: Sequence[str], rule,
               progress: Callable[[str], None] | None = None, client=None,
               folds: int = FUSION_FOLDS) -> dict:
    """Choose weights and mode for ``rule`` (a ThresholdRule) on ``volume_ids``; returns the
    JSON block written into the calibration (chosen, every candidate's scores, out-of-fold).
    ``client``: a Dask client scoring the volumes in parallel (None: here, one by one)."""
    from vesukit.calibrate.oof import deal_folds

    names = cache.teacher_names
    ids = list(volume_ids)
    memo: dict[tuple, float] = {}

    def score(weights: tuple[float, ...], mode: str, volume_id: str) -> float:
        return memo[(weights, mode, volume_id)]

    def score_all(keys: Sequence[tuple[tuple[float, ...], str]], on: Sequence[str]) -> None:
        # one task per volume: its maps are read once for all its candidates, and a label
        # read from its file is released after (a hundred prepared 320^3 labels would not fit)
        todo = {v: [k for k in dict.fromkeys(keys) if (*k, v) not in memo] for v in on}
        todo = {v: k for v, k in todo.items() if k}
        if client is None:
            done = ((v, score_fusions(cache.folder, labels[v], v, k, rule)) for v, k in todo.items())
        else:
            from distributed import as_completed

            futures = {client.submit(score_fusions, cache.folder, labels[v], v, k, rule,
                                     pure=False): v for v, k in todo.items()}
            done = ((futures[f], f.result()) for f in as_completed(list(futures)))
        for volume_id, scores in done:
            memo.update({(*key, volume_id): value
                         for key, value in zip(todo[volume_id], scores)})

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
    evidence: dict = {"rule": rule.describe(), "volumes": ids,
                      "candidates": sorted(table, key=lambda c: -c["mean"])}
    if len(ids) > 1:
        equal = ((1.0,) * len(names), "probability")
        dealt, checked, oof, equal_scores = deal_folds(ids, folds), [], {}, {}
        for index, held in enumerate(dealt):
            if progress:
                progress(f"fusion: out-of-fold {index + 1}/{len(dealt)}, {len(held)} held")
            fold_choice, _ = best([v for v in ids if v not in held])
            score_all([(fold_choice.weights, fold_choice.mode), equal], held)
            scores = {v: score(fold_choice.weights, fold_choice.mode, v) for v in held}
            equals = {v: score(*equal, v) for v in held}
            oof.update(scores)
            equal_scores.update(equals)
            checked.append({"held_out": held, "chosen": fold_choice.to_json(names),
                            "score": float(np.mean(list(scores.values()))),
                            "equal_probability": float(np.mean(list(equals.values())))})
        evidence["out_of_fold"] = {"score": float(np.mean(list(oof.values()))),
                                   "equal_probability": float(np.mean(list(equal_scores.values()))),
                                   "per_volume": oof, "folds": checked}
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
