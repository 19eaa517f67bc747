"""Out-of-fold calibration: every candidate is judged on volumes it was not fitted on.

The volumes are dealt into ``folds`` folds (sorted ids, round robin). For each fold the staged
search (:func:`~vesukit.calibrate.search.search`) runs on the other folds, and its winner is
scored on the held fold; so is the baseline a competitor without calibration would pick (the
best fixed threshold without post-processing, chosen on the same fit volumes). Each winner's
chain is then scored on its held fold with each step removed: the per-step ablation table.
The calibration written is the search on all volumes; the out-of-fold figures are its evidence.

All folds share one mask cache, so a (volume, threshold, chain) mask is scored once however
many folds meet it: the out-of-fold search costs little more than one search on all volumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from vesukit.calibrate.search import (
    RULE_GRID,
    Candidate,
    Evaluator,
    LabelledVolume,
    SearchResult,
    mean_score,
    search,
)


def deal_folds(volume_ids: Sequence[str], folds: int) -> list[list[str]]:
    """Sorted ids dealt round robin into ``min(folds, len(ids))`` folds."""
    ids = sorted(volume_ids)
    count = max(1, min(int(folds), len(ids)))
    return [ids[i::count] for i in range(count)]


@dataclass
class OutOfFold:
    folds: list[list[str]]
    fold_winners: list[str]                      # each fold's winner, described
    winner_scores: dict[str, float]              # volume -> score of its fold's winner
    baseline_scores: dict[str, float]            # volume -> best fixed, no post-processing
    ablation: list[dict]                         # per step: with, without, delta, folds
    final: SearchResult
    masks_scored: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    budget: dict | None = None
    fold_decisions: list[dict] = field(default_factory=list)  # each fold winner's calibration

    @property
    def winner_mean(self) -> float:
        return mean_score(self.winner_scores)

    @property
    def baseline_mean(self) -> float:
        return mean_score(self.baseline_scores)

    def to_json(self) -> dict:
        return {
            "folds": self.folds,
            "fold_winners": self.fold_winners,
            "fold_decisions": self.fold_decisions,
            "oof_winner_mean": self.winner_mean,
            "oof_best_fixed_no_postprocess_mean": self.baseline_mean,
            "oof_gain": self.winner_mean - self.baseline_mean,
            "oof_winner_scores": self.winner_scores,
            "oof_baseline_scores": self.baseline_scores,
            "ablation": self.ablation,
            "masks_scored": self.masks_scored,
            "seconds": self.seconds,
            "seconds_per_mask": self.seconds / max(self.masks_scored, 1),
        }


def _best_plain_fixed(result: SearchResult) -> Candidate | None:
    pool = [c for c in result.evaluated
            if c.exact and c.candidate.rule.name == "fixed" and not c.candidate.postprocess]
    return max(pool, key=lambda c: c.mean).candidate if pool else None


def out_of_fold(volumes: Sequence[LabelledVolume], folds: int = 3,
                grid: Mapping[str, Sequence[Mapping]] = RULE_GRID,
                options: Mapping[str, list] | None = None, top_k: int = 3,
                progress: Callable[[str], None] | None = None,
                engine: Evaluator | None = None,
                whole: Sequence[Candidate] = ()) -> OutOfFold:
    """The out-of-fold search described in the module docstring (``engine``: an evaluator on
    ``volumes`` whose kind the searches use, e.g. a screening SearchEngine; default: exact
    scoring)."""
    say = progress or (lambda text: None)
    start = time.perf_counter()
    by_id = {v.volume_id: v for v in volumes}
    dealt = deal_folds(list(by_id), folds)
    root = engine if engine is not None else Evaluator(list(volumes))
    winner_scores: dict[str, float] = {}
    baseline_scores: dict[str, float] = {}
    fold_winners: list[str] = []
    fold_decisions: list[dict] = []
    removed: dict[str, list[tuple[float, float, int]]] = {}
    notes = []
    if len(dealt) < 2:
        notes.append("one volume: no out-of-fold check possible; scores are in-sample")
    for index, held_ids in enumerate(dealt):
        fit_ids = [i for i in by_id if i not in held_ids] or held_ids
        say(f"fold {index + 1}/{len(dealt)}: search on {len(fit_ids)} volume(s), judge on "
            f"{len(held_ids)}")
        result = search([by_id[i] for i in fit_ids], grid, options, top_k, shared=root,
                        whole=whole)
        held_volumes = [by_id[i] for i in held_ids]
        winner = result.winner.candidate
        fold_winners.append(winner.describe())
        fold_decisions.append(winner.calibration().to_json())
        baseline = _best_plain_fixed(result)
        # the fold's winner and baseline on the whole held volumes (each read once for both)
        judged, *rest = root.for_volumes(held_volumes, exact=True).score_many(
            [winner] + ([baseline] if baseline is not None else []), "out_of_fold")
        winner_scores.update(judged.scores)
        if rest:
            baseline_scores.update(rest[0].scores)
        # the ablation: the winner with each step removed (on a sample: the held crops)
        ablated = root.for_ablation(held_volumes)
        with_all = ablated.score(winner, "ablation")  # the judged scores, unless on crops
        for position, step in enumerate(winner.postprocess):
            without = Candidate(winner.rule, winner.postprocess[:position]
                                + winner.postprocess[position + 1:])
            less = ablated.score(without, "ablation")
            removed.setdefault(step["step"], []).append(
                (with_all.mean, less.mean, len(ablated.volumes)))
        if winner.postprocess:
            plain = ablated.score(Candidate(winner.rule, ()), "ablation")
            removed.setdefault("(all post-processing)", []).append(
                (with_all.mean, plain.mean, len(ablated.volumes)))
    ablation = []
    for step, rows in removed.items():
        weights = np.array([n for _, _, n in rows], dtype=float)
        with_step = float(np.average([w for w, _, _ in rows], weights=weights))
        without = float(np.average([o for _, o, _ in rows], weights=weights))
        ablation.append({"step": step, "folds": len(rows), "with": with_step,
                         "without": without, "delta": with_step - without})
    say(f"final: search on all {len(by_id)} volume(s)")
    final = search(list(volumes), grid, options, top_k, shared=root, whole=whole)
    return OutOfFold(dealt, fold_winners, winner_scores, baseline_scores, ablation, final,
                     root.masks_scored, time.perf_counter() - start, notes,
                     fold_decisions=fold_decisions)


def masks_per_volume_bound(grid: Mapping[str, Sequence[Mapping]], options: Mapping[str, list],
                           top_k: int, folds: int, passes: int = 2, whole: int = 0) -> int:
    """An upper bound on the masks one volume costs in :func:`out_of_fold`.

    A volume is fitted in ``folds - 1`` fold searches plus the final one; each search scores
    at most every rule twice (alone, then with the chain) and, per started candidate and pass,
    every option of every slot, and the ``whole`` chains once. Rules landing on one threshold share a mask, so the real
    count is lower (docs/benchmarks.md has measured counts).
    """
    rules = sum(len(v) for v in grid.values())
    slots = sum(len(v) for v in options.values())
    per_search = 2 * rules + (top_k + 1) * passes * slots + whole
    return max(folds, 1) * per_search


def exact_masks_per_volume_bound(options: Mapping[str, list], folds: int, finalists: int) -> int:
    """An upper bound on the masks one volume gets the full scorer for in a ranked search
    (:class:`~vesukit.calibrate.engine.SearchEngine` with ``finalists``): in each of its
    ``folds`` searches the finalists and the best fixed threshold with and without
    post-processing; once as a held fold, the fold's winner, its baseline and the winner's
    chain with each step and with every step removed."""
    per_search = finalists + 2
    judged = 2 + len(options) + 1
    return max(folds, 1) * per_search + judged

