"""Which teachers earn their place: each alone, and the ensemble without each, on labelled
volumes, all recombined from one cached ensemble pass (:mod:`vesukit.calibrate.cache`).

A teacher's gain on a volume is the full ensemble's score minus the score of the ensemble
without it. A teacher is recommended for dropping unless its gain is *stable*: positive on
average and larger than its standard error over the volumes (with one volume: positive). Every
ensemble is thresholded and post-processed with the same calibration, so the numbers are what
predict would score with that calibration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vesukit.calibrate.search import mean_score
from vesukit.decide import Calibration, binarize
from vesukit.decide.steps import apply_postprocess


def score_ensemble(cache, volume_id: str, teachers: Sequence[str], label,
                   calibration: Calibration) -> tuple[float, float]:
    """(score, threshold) of the ensemble of ``teachers`` on one volume."""
    maps = cache.ensemble(volume_id, teachers)
    threshold = float(calibration.rule(maps))
    mask = apply_postprocess(binarize(maps.mean, threshold), calibration.postprocess, maps)
    return float(label.score(mask).score), threshold


@dataclass
class Ablation:
    teachers: list[str]
    volumes: list[str]
    calibration: dict
    full: dict[str, float]                  # volume -> score of the whole ensemble
    alone: dict[str, dict[str, float]]      # teacher -> volume -> score of it alone
    without: dict[str, dict[str, float]]    # teacher -> volume -> score of the others

    def gain(self, teacher: str) -> dict[str, float]:
        return {v: self.full[v] - self.without[teacher][v] for v in self.volumes}

    def stable_gain(self, teacher: str) -> bool:
        gains = np.array(list(self.gain(teacher).values()))
        mean = float(gains.mean())
        if len(gains) < 2:
            return mean > 0
        error = float(gains.std(ddof=1)) / math.sqrt(len(gains))
        return mean > 0 and mean > error

    def recommendation(self) -> dict:
        if len(self.teachers) < 2:
            return {"drop": [], "keep": list(self.teachers),
                    "why": "a single teacher cannot be left out"}
        drop = [t for t in self.teachers if not self.stable_gain(t)]
        keep = [t for t in self.teachers if t not in drop]
        if not keep:  # never recommend an empty ensemble: keep the best one alone
            best = max(self.teachers, key=lambda t: mean_score(self.alone[t]))
            drop.remove(best)
            keep = [best]
        return {"drop": drop, "keep": keep,
                "why": "dropped teachers give no stable gain: the ensemble without them "
                       "scores as well or better on average, or the gain is within its "
                       "standard error over the volumes"}

    def to_json(self) -> dict:
        def summary(scores: Mapping[str, float]) -> dict:
            values = list(scores.values())
            return {"mean": float(np.mean(values)), "std": float(np.std(values)),
                    "scores": dict(scores)}

        return {
            "teachers": self.teachers,
            "volumes": self.volumes,
            "calibration": self.calibration,
            "full": summary(self.full),
            "alone": {t: summary(s) for t, s in self.alone.items()},
            "without": {t: summary(s) for t, s in self.without.items()},
            "gain": {t: summary(self.gain(t)) for t in self.teachers},
            "stable_gain": {t: self.stable_gain(t) for t in self.teachers},
            "recommendation": self.recommendation(),
        }

    def table(self) -> str:
        """A plain-text table, one row per teacher."""
        lines = [f"full ensemble ({len(self.teachers)} teachers, {len(self.volumes)} volumes): "
                 f"{mean_score(self.full):.4f}",
                 f"{'teacher':<28} {'alone':>8} {'without':>8} {'gain':>8}  verdict"]
        drop = set(self.recommendation()["drop"])
        for teacher in self.teachers:
            gain = mean_score(self.gain(teacher))
            lines.append(f"{teacher:<28} {mean_score(self.alone[teacher]):>8.4f} "
                         f"{mean_score(self.without.get(teacher, self.full)):>8.4f} {gain:>+8.4f}  "
                         + ("drop" if teacher in drop else "keep"))
        return "\n".join(lines)


def ablate(cache, labels: Mapping[str, object], calibration: Calibration,
           teachers: Sequence[str] | None = None,
           progress: Callable[[str], None] | None = None) -> Ablation:
    """Score the full ensemble, each teacher alone and each leave-one-out ensemble.

    ``labels`` maps volume id -> prepared label (``score(mask).score``).
    """
    names = list(teachers) if teachers is not None else list(cache.teacher_names)
    volumes = list(labels)
    full, alone, without = {}, {t: {} for t in names}, {t: {} for t in names}
    for volume_id in volumes:
        if progress:
            progress(f"{volume_id}: {1 + 2 * len(names)} ensembles")
        label = labels[volume_id]
        full[volume_id] = score_ensemble(cache, volume_id, names, label, calibration)[0]
        for teacher in names:
            alone[teacher][volume_id] = score_ensemble(cache, volume_id, [teacher], label,
                                                       calibration)[0]
            others = [t for t in names if t != teacher]
            without[teacher][volume_id] = (
                score_ensemble(cache, volume_id, others, label, calibration)[0] if others
                else 0.0)
    return Ablation(names, volumes, calibration.to_json(), full, alone, without)
