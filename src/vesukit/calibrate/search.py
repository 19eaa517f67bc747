"""Choosing a threshold rule and a post-processing chain from evidence on labelled volumes.

A candidate is a rule with its parameters plus a post-processing chain. Its score is the mean
leaderboard score over the volumes (with the per-volume scores kept, for the spread). The
search is staged, because scoring is what costs:

1. every rule candidate of the grid, without post-processing;
2. for the ``top_k`` candidates and the best fixed threshold, coordinate descent over the
   post-processing steps (one step's options at a time, the others held; repeated while it
   improves);
3. every rule candidate again with the best chain found (a chain that removes small
   components can favour a lower threshold, and the reverse).

The winner is the best mean over everything scored (ties go to the earlier, simpler one;
with a ranking evaluator, over the finalists scored exactly: :class:`_Ledger`).
Masks are scored once per (volume, threshold, chain), so rules that land on the same
threshold cost nothing extra. With held-back volumes, the winner and the best fixed threshold
(chosen on the fit volumes, and the best one measured on the held-back volumes themselves)
are scored there too, and the result says whether the winner held up.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vesukit.decide import Calibration, ThresholdRule, binarize
from vesukit.decide.steps import apply_postprocess

# Rule candidates: name -> parameter sets. 0.26 (the winner's) through 0.6 for fixed.
RULE_GRID: dict[str, list[dict]] = {
    "fixed": [{"threshold": t} for t in (0.2, 0.26, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)],
    "foreground_fraction": [{"fraction": f} for f in (0.03, 0.05, 0.07, 0.09, 0.12)],
    "otsu": [{"floor": 0.02}, {"floor": 0.1}],
    "valley": [{}, {"lo": 0.25}],
    "uncertainty": [{"base": b, "gain": g} for b in (0.3, 0.4) for g in (0.2, 0.5)],
}

# Post-processing slots in chain order; each option is a step's parameters or None (off).
STEP_ORDER = ("zero_border", "drop_uncertain", "remove_small", "close", "fill_holes")
# With the winners' steps (`vesukit calibrate --steps winners`, the command's default).
# The faithful chains are whole steps (first_place, ninth_place) or remove_small + median_filter
# (tenth_place); the fixed rule's grid holds their thresholds (0.26, 0.3, 0.5).
WINNER_STEP_ORDER = ("zero_border", "drop_uncertain", "remove_small", "first_place", "ninth_place",
                     "sheet_close", "patch_holes", "plug_holes", "fill_tunnels", "close",
                     "median_filter", "fill_holes")


def postprocess_options(voxels: int, winners: bool = False,
                        disagreement: bool = True) -> dict[str, list[dict | None]]:
    """Options per step, in chain order, for volumes of ``voxels`` voxels.

    Component and hole sizes scale with the volume: on 320^3 the winners dropped components
    under 3k-20k voxels, i.e. about 1e-4 to 6e-4 of the volume, and patched holes under 64^2
    pixels, 0.04 of a 320^2 plane. ``winners`` adds the top solutions' steps;
    ``disagreement`` False (maps saved without the teachers' disagreement) leaves out
    ``drop_uncertain``.
    """
    def size(fraction: float) -> int:
        return max(2, int(round(fraction * voxels)))

    plane = voxels ** (2 / 3)
    options: dict[str, list[dict | None]] = {
        "zero_border": [None, {"width": 3}],
        "drop_uncertain": [None, {"max_disagreement": 0.5}, {"max_disagreement": 0.3}],
        "remove_small": [None] + [{"min_voxels": size(f)} for f in (1e-4, 3e-4, 1e-3)],
        "close": [None, {"radius": 1}],
        "fill_holes": [None, {"max_voxels": size(3e-5)}, {"max_voxels": 0}],
    }
    if not disagreement:
        options["drop_uncertain"] = [None]
    if not winners:
        return {slot: options[slot] for slot in STEP_ORDER}
    options["remove_small"] += [{"min_voxels": size(3e-4), "connectivity": 6},
                                {"min_voxels": size(3000 / 320 ** 3), "connectivity": 6}]
    options.update({
        # the teams' own chains, their dust sizes scaled from 320^3 to the volume
        "first_place": [None, {"min_voxels": size(20000 / 320 ** 3)}],
        "ninth_place": [None, {"min_voxels": size(5000 / 320 ** 3)}],
        "sheet_close": [None, {"radius": 3, "thin": 1.5}],
        "patch_holes": [None, {"max_area": max(4, int(0.04 * plane))}],
        "plug_holes": [None, {"passes": 2}],
        "fill_tunnels": [None, {"low": 0.15, "rounds": 13}],
        "median_filter": [None, {"rounds": 3}, {"rounds": 7, "size": 3, "connectivity": 6}],
    })
    return {slot: options[slot] for slot in WINNER_STEP_ORDER}


def whole_chains(voxels: int, winners: bool = False) -> list[Candidate]:
    """Chains that make their own mask from the probability, searched as candidates of their
    own: scored once per volume, never as a slot. A slot is tried with every rule, and these
    ignore the rule's mask, so each try would re-run the same costly chain (the 2nd place's
    sheet fits: tens of seconds per 320^3 volume) for the same mask.

    With ``winners``: the 2nd place's chain with the team's parameters (its own hysteresis
    0.2/0.83 and retries), dust and component sizes scaled from 320^3 to the volume. The rule
    (fixed at its low threshold 0.2, as the preset) does not change its mask.
    """
    from vesukit.decide.presets import PRESETS

    if not winners:
        return []
    preset = PRESETS["second_place"]
    (step,) = preset["postprocess"]
    scale = voxels / 320 ** 3
    step = {**step, "dust": max(2, round(step["dust"] * scale)),
            "min_voxels": max(2, round(step["min_voxels"] * scale))}
    return [Candidate(ThresholdRule("fixed", {"threshold": preset["threshold"]}), (step,))]


@dataclass(frozen=True)
class Candidate:
    rule: ThresholdRule
    postprocess: tuple[Mapping[str, Any], ...] = ()

    @property
    def rule_key(self) -> str:
        return json.dumps([self.rule.name, dict(self.rule.params)], sort_keys=True)

    @property
    def chain_key(self) -> str:
        return json.dumps([dict(step) for step in self.postprocess], sort_keys=True)

    @property
    def key(self) -> str:
        return self.rule_key + "|" + self.chain_key

    def calibration(self) -> Calibration:
        return Calibration(self.rule, tuple(dict(step) for step in self.postprocess))

    def describe(self) -> str:
        chain = " > ".join(
            step["step"] + "(" + ", ".join(f"{k}={v}" for k, v in step.items() if k != "step")
            + ")" for step in self.postprocess) or "no post-processing"
        return f"{self.rule.describe()} + {chain}"


def mean_score(scores: Mapping[str, float]) -> float:
    """The mean of per-volume scores (volume id -> score): what every table ranks by."""
    return float(np.mean(list(scores.values())))


@dataclass
class CandidateScore:
    candidate: Candidate
    scores: dict[str, float]        # volume id -> leaderboard score
    thresholds: dict[str, float]    # volume id -> threshold the rule chose
    stage: str = ""
    exact: bool = True              # False: screened, scores are upper bounds (calibrate/engine.py)

    @property
    def mean(self) -> float:
        return mean_score(self.scores)

    @property
    def std(self) -> float:
        return float(np.std(list(self.scores.values())))

    @property
    def worst(self) -> float:
        return float(min(self.scores.values()))

    def to_json(self) -> dict:
        return {
            "rule": self.candidate.rule.name,
            "params": dict(self.candidate.rule.params),
            "postprocess": [dict(step) for step in self.candidate.postprocess],
            "stage": self.stage,
            "mean": self.mean,
            "std": self.std,
            "min": self.worst,
            "scores": dict(self.scores),
            "thresholds": dict(self.thresholds),
            "exact": self.exact,
        }


@dataclass
class LabelledVolume:
    """One volume's ensemble maps and its prepared label (anything with ``score(mask)``
    returning an object with a ``score`` field, e.g. :class:`vesukit.metric.PreparedLabel`)."""

    volume_id: str
    maps: Any
    label: Any
    # rule key -> threshold, made on the whole map when ``maps`` is a crop of it
    # (:mod:`vesukit.calibrate.sample`); None: every rule reads ``maps``
    thresholds: dict[str, float] | None = None

    def rule_threshold(self, candidate: Candidate) -> float:
        """The threshold ``candidate``'s rule sets on this volume."""
        if self.thresholds is not None:
            if candidate.rule_key not in self.thresholds:
                raise KeyError(f"{self.volume_id}: no threshold of {candidate.rule_key} was made "
                               "on the whole map before cropping")
            return self.thresholds[candidate.rule_key]
        return float(candidate.rule(self.maps))

    def release(self) -> None:
        """Drop what was loaded or prepared lazily (a streamed volume done with)."""
        for part in (self.maps, self.label):
            release = getattr(part, "release", None)
            if release is not None:
                release()


class Evaluator:
    """Scores candidates on volumes, scoring each distinct mask once."""

    def __init__(self, volumes: Sequence[LabelledVolume], shared: Evaluator | None = None):
        self.volumes = list(volumes)
        # folds of one out-of-fold search share the caches: a mask is scored once in all
        self._thresholds: dict[tuple[str, str], float] = shared._thresholds if shared else {}
        self._scores: dict[tuple[str, float, str], float] = shared._scores if shared else {}
        self._root = shared._root if shared else self
        self.masks_scored = 0

    def threshold(self, volume: LabelledVolume, candidate: Candidate) -> float:
        key = (volume.volume_id, candidate.rule_key)
        if key not in self._thresholds:
            self._thresholds[key] = volume.rule_threshold(candidate)
        return self._thresholds[key]

    def score(self, candidate: Candidate, stage: str = "") -> CandidateScore:
        scores, thresholds = {}, {}
        for volume in self.volumes:
            threshold = self.threshold(volume, candidate)
            key = (volume.volume_id, round(threshold, 7), candidate.chain_key)
            if key not in self._scores:
                mask = binarize(volume.maps.mean, threshold)
                mask = apply_postprocess(mask, candidate.postprocess, volume.maps)
                self._scores[key] = float(volume.label.score(mask).score)
                self.masks_scored += 1
                if self._root is not self:
                    self._root.masks_scored += 1
            scores[volume.volume_id] = self._scores[key]
            thresholds[volume.volume_id] = threshold
        return CandidateScore(candidate, scores, thresholds, stage)

    def score_many(self, candidates: Sequence[Candidate], stage: str = "",
                   bounds: Sequence[Candidate] = ()) -> list[CandidateScore]:
        """Each of ``candidates`` scored, then an upper bound of each of ``bounds``' scores
        (here the exact score, its own tightest bound; an engine may bound them more cheaply
        and batch all of them per volume)."""
        return [self.score(candidate, stage) for candidate in [*candidates, *bounds]]

    def for_volumes(self, volumes: Sequence[LabelledVolume], exact: bool = False) -> Evaluator:
        """An evaluator of the same kind on ``volumes``, sharing this one's caches (``exact``:
        one that never screens, for judging)."""
        return Evaluator(volumes, self)

    def for_ablation(self, volumes: Sequence[LabelledVolume]) -> Evaluator:
        """Where a held fold's ablation is measured: ``volumes`` themselves, exactly (an engine
        searching on crops measures it on the held volumes' crops)."""
        return self.for_volumes(volumes, exact=True)

    def rescore_exactly(self, result: CandidateScore) -> CandidateScore:
        """``result`` with exact scores. Here every score already is; a screening evaluator
        (:class:`vesukit.calibrate.engine.SearchEngine`) returns upper bounds first."""
        return result

    def rescore_many(self, results: Sequence[CandidateScore]) -> list[CandidateScore]:
        """Each of ``results`` rescored exactly (an engine may batch them per volume)."""
        return [self.rescore_exactly(result) for result in results]


def rule_candidates(grid: Mapping[str, Sequence[Mapping]] = RULE_GRID,
                    chain: Sequence[Mapping] = ()) -> list[Candidate]:
    return [Candidate(ThresholdRule(name, dict(params)), tuple(chain))
            for name, options in grid.items() for params in options]


def chain_from(choice: Mapping[str, Mapping | None]) -> tuple[dict, ...]:
    """The chain of the steps switched on in ``choice`` (slot -> params or None), in the
    choice's (chain) order."""
    return tuple({"step": name, **option} for name, option in choice.items()
                 if option is not None)


@dataclass
class SearchResult:
    winner: CandidateScore
    evaluated: list[CandidateScore]
    best_fixed: CandidateScore | None
    masks_scored: int
    held_back: dict | None = None

    def calibration(self) -> Calibration:
        return self.winner.candidate.calibration()

    def to_json(self) -> dict:
        out = {
            "winner": self.winner.to_json(),
            "winner_description": self.winner.candidate.describe(),
            "best_fixed": self.best_fixed.to_json() if self.best_fixed else None,
            "volumes": sorted(self.winner.scores),
            "masks_scored": self.masks_scored,
            "candidates": [c.to_json() for c in self.evaluated],
        }
        if self.held_back is not None:
            out["held_back"] = self.held_back
        return out


class _Ledger:
    """Every candidate scored so far, once each, in order.

    Two ways to use an evaluator that screens (returns cheap scores first,
    :class:`vesukit.calibrate.engine.SearchEngine`): with ``finalists`` 0 its screened scores
    are upper bounds, rescored wherever they could change a decision (the exhaustive search's
    decisions); with ``finalists`` N > 0 the search decides on the screened scores alone and
    only the N best of each pool are scored exactly, at the end (a heuristic, measured in
    docs/benchmarks.md).
    """

    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator
        self.results: dict[str, CandidateScore] = {}
        self.finalists = int(getattr(evaluator, "finalists", 0) or 0)

    def score(self, candidate: Candidate, stage: str) -> CandidateScore:
        if candidate.key not in self.results:
            self.results[candidate.key] = self.evaluator.score(candidate, stage)
        return self.results[candidate.key]

    def exact(self, result: CandidateScore) -> CandidateScore:
        """``result`` rescored exactly if it was screened (its ledger entry replaced); while
        ranking by screened scores (``finalists``), ``result`` as it is."""
        if not result.exact and not self.finalists:
            result = self._rescore(result)
        return result

    def _rescore(self, result: CandidateScore) -> CandidateScore:
        result = self.evaluator.rescore_exactly(result)
        self.results[result.candidate.key] = result
        return result

    def exact_if_above(self, result: CandidateScore, floor: float) -> CandidateScore:
        """Exact when its (upper-bound) mean exceeds ``floor``; at or below, it loses to
        ``floor`` whether screened or exact, so the search decides as if all were exact."""
        return self.exact(result) if result.mean > floor else result

    def settle(self, predicate: Callable[[CandidateScore], bool] = lambda c: True,
               count: int = 1) -> None:
        """Rescore screened entries, highest bound first, until ``count`` exact means are at
        least every remaining bound: the top ``count`` are then those of an all-exact search.
        While ranking (``finalists``): rescore the ``count`` highest screened means only."""
        exact_means: list[float] = []
        for key in sorted((k for k, c in self.results.items() if predicate(c)),
                          key=lambda k: -self.results[k].mean):
            if self.finalists and len(exact_means) >= count:
                break
            if len(exact_means) >= count and \
                    self.results[key].mean < sorted(exact_means)[-count]:
                break
            exact_means.append(self._rescore(self.results[key]).mean)

    def prefetch(self, pools: Sequence[tuple[Callable[[CandidateScore], bool], int]]) -> None:
        """While ranking: rescore at once the heads of ``pools`` (predicate, count) by their
        current means, as :meth:`settle` would one by one, so an engine can score them in one
        pass per volume."""
        heads: dict[str, CandidateScore] = {}
        for predicate, count in pools:
            pool = sorted((c for c in self.results.values() if predicate(c)), key=lambda c: -c.mean)
            heads.update((c.candidate.key, c) for c in pool[:count] if not c.exact)
        for result in self.evaluator.rescore_many(list(heads.values())):
            self.results[result.candidate.key] = result

    def best(self, predicate: Callable[[CandidateScore], bool] = lambda c: True):
        pool = [c for c in self.results.values() if predicate(c)]
        # max keeps the first of equal means: earlier (simpler) candidates win ties
        return max(pool, key=lambda c: c.mean) if pool else None


def _descend(ledger: _Ledger, rule: ThresholdRule, options: Mapping[str, list],
             start: Mapping[str, Mapping | None], passes: int = 2) -> dict:
    """Coordinate descent over the post-processing slots for one rule."""
    choice = dict(start)
    best = ledger.exact(ledger.score(Candidate(rule, chain_from(choice)), "postprocess"))
    for _ in range(passes):
        improved = False
        for slot in options:
            for option in options[slot]:
                trial = {**choice, slot: option}
                result = ledger.exact_if_above(
                    ledger.score(Candidate(rule, chain_from(trial)), "postprocess"), best.mean + 1e-12)
                if result.mean > best.mean + 1e-12:
                    best, choice, improved = result, trial, True
        if not improved:
            break
    return choice


def search(volumes: Sequence[LabelledVolume], grid: Mapping[str, Sequence[Mapping]] = RULE_GRID,
           options: Mapping[str, list] | None = None, top_k: int = 3, passes: int = 2,
           progress: Callable[[str], None] | None = None,
           shared: Evaluator | None = None,
           whole: Sequence[Candidate] = ()) -> SearchResult:
    """The staged search described in the module docstring, on ``volumes``; ``whole``:
    candidates scored once beside the stages (:func:`whole_chains`)."""
    if not volumes:
        raise ValueError("the search needs at least one labelled volume")
    if options is None:
        voxels = int(np.median([np.prod(np.shape(v.maps.mean)) for v in volumes]))
        options = postprocess_options(voxels)
    evaluator = shared.for_volumes(volumes) if shared is not None else Evaluator(volumes)
    ledger = _Ledger(evaluator)
    say = progress or (lambda text: None)

    say(f"stage 1: {sum(len(v) for v in grid.values())} rule candidates")
    stage1 = [ledger.score(c, "rules") for c in rule_candidates(grid)]
    if not ledger.finalists:  # screened bounds: make the ranking's head exact
        ledger.settle(count=top_k)
        ledger.settle(lambda c: c.candidate.rule.name == "fixed")
    stage1 = [ledger.results[c.candidate.key] for c in stage1]
    ranked = sorted(stage1, key=lambda c: -c.mean)
    starts = ranked[:top_k]
    fixed = [c for c in ranked if c.candidate.rule.name == "fixed"]
    if fixed and fixed[0] not in starts:
        starts.append(fixed[0])
    say(f"stage 2: post-processing for {len(starts)} candidates")
    empty = dict.fromkeys(options)
    best_choice, best_mean = empty, -math.inf
    for start in starts:
        choice = _descend(ledger, start.candidate.rule, options, empty, passes)
        mean = ledger.score(Candidate(start.candidate.rule, chain_from(choice)), "").mean
        if mean > best_mean:
            best_choice, best_mean = choice, mean
    say("stage 3: every rule with the best chain")
    for candidate in rule_candidates(grid, chain_from(best_choice)):
        ledger.score(candidate, "rules+chain")
    if whole:
        say(f"whole chains: {len(whole)}")
    for candidate in whole:
        ledger.score(candidate, "whole chain")
    # the winners below (and out-of-fold's baseline) are exact; while ranking, the winner is
    # the best exact score of the ``finalists`` best screened candidates
    pools = ((lambda c: True, ledger.finalists or 1),
             (lambda c: c.candidate.rule.name == "fixed", 1),
             (lambda c: c.candidate.rule.name == "fixed" and not c.candidate.postprocess, 1))
    if ledger.finalists:
        # settling the first pool while ranking rescores its head by bound: all at once here,
        # so an engine scores them in one pass per volume (settling it again would re-sort
        # by the new exact means and rescore more)
        ledger.prefetch(pools[:1])
        pools = pools[1:]
    for pool, count in pools:
        ledger.settle(pool, count)
    winner = ledger.best(lambda c: c.exact)
    best_fixed = ledger.best(lambda c: c.exact and c.candidate.rule.name == "fixed")
    return SearchResult(winner, list(ledger.results.values()), best_fixed,
                        evaluator.masks_scored)


def split_volumes(volume_ids: Sequence[str], holdout: float) -> tuple[list[str], list[str]]:
    """(fit, held back): every ``1/holdout``-th volume of the sorted ids is held back.

    At least one volume is always fitted; with two or more volumes and ``holdout > 0`` at
    least one is held back.
    """
    ids = sorted(volume_ids)
    if holdout <= 0 or len(ids) < 2:
        return ids, []
    count = min(len(ids) - 1, max(1, int(round(holdout * len(ids)))))
    step = len(ids) / count
    held = {ids[min(len(ids) - 1, int(i * step + step / 2))] for i in range(count)}
    return [i for i in ids if i not in held], [i for i in ids if i in held]


def held_back_masks_per_volume(grid: Mapping[str, Sequence[Mapping]] = RULE_GRID
                               ) -> tuple[int, int]:
    """(exact, bounded) masks :func:`check_held_back` makes on each held volume at most: the
    winner and the fit's best fixed threshold exactly, every fixed threshold of ``grid`` with
    the winner's chain bounded and, at most, exactly (what the progress line and
    ``--budget-hours`` count)."""
    thresholds = len(grid.get("fixed", []))
    return 2 + thresholds, thresholds


def check_held_back(result: SearchResult, held: Sequence[LabelledVolume],
                    grid: Mapping[str, Sequence[Mapping]] = RULE_GRID,
                    evaluator: Evaluator | None = None) -> dict:
    """Score the winner and the fixed-threshold baselines on held-back volumes.

    ``best_fixed_on_fit`` is what a competitor would have picked without per-volume rules;
    ``best_fixed_on_held_back`` is the best fixed threshold measured on the held-back volumes
    themselves: every fixed threshold of ``grid`` with the winner's chain, and the fit's best
    fixed threshold with its own. An oracle, so beating it is the stronger claim.

    The oracle is found by branch and bound, not by scoring every threshold exactly: in one
    pass per held volume the winner and the fit's best fixed threshold are scored exactly and
    every grid threshold is bounded from above (``PreparedLabel.bound``: all but the
    dimension-1 matches exact); then thresholds are scored exactly in order of their bound
    until the best exact mean beats every bound left. A threshold left out scores below the
    oracle, so the oracle is the one exhaustive scoring finds. (At 100 x 320^3 from teachers
    an exact whole-volume mask took 12-35 s, its bound 1-2 s, and exact oracles were most of
    the run.)
    """
    evaluator = Evaluator(held) if evaluator is None else evaluator
    if result.best_fixed is None:
        [winner] = evaluator.score_many([result.winner.candidate], "held_back")
        return {"volumes": [v.volume_id for v in held], "winner": winner.to_json()}
    chain = result.winner.candidate.postprocess
    grid_candidates = [Candidate(ThresholdRule("fixed", dict(p)), chain)
                       for p in grid.get("fixed", [])]
    # one pass per held volume: two exact scores and every grid threshold's bound
    winner, fixed, *bounds = evaluator.score_many(
        [result.winner.candidate, result.best_fixed.candidate], "held_back", bounds=grid_candidates)
    exact: dict[int, CandidateScore] = {}
    best = fixed.mean
    for index in sorted(range(len(bounds)), key=lambda i: -bounds[i].mean):
        if bounds[index].mean < best:
            break  # this bound and every one after it: below an exact mean already found
        exact[index] = bounds[index] if bounds[index].exact else \
            evaluator.score_many([grid_candidates[index]], "held_back")[0]
        best = max(best, exact[index].mean)
    # the first best in the exhaustive order (the fit's best fixed, then the grid's order)
    oracle = max([fixed, *(exact[i] for i in sorted(exact))], key=lambda c: c.mean)
    return {"volumes": [v.volume_id for v in held], "winner": winner.to_json(),
            "best_fixed_on_fit": fixed.to_json(), "best_fixed_on_held_back": oracle.to_json(),
            "winner_vs_fixed_on_fit": winner.mean - fixed.mean,
            "winner_vs_best_fixed_on_held_back": winner.mean - oracle.mean,
            "winner_holds_up": bool(winner.mean >= fixed.mean - 1e-12),
            "oracle_thresholds_scored_exactly": len(exact),
            "oracle_thresholds": len(grid_candidates)}


@dataclass
class CalibrationOutcome:
    """What `vesukit calibrate` writes: the chosen calibration and its evidence."""

    search: SearchResult
    fit_ids: list[str]
    held_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        data = self.search.calibration().to_json()
        data["evidence"] = {"fit_volumes": self.fit_ids, "held_back_volumes": self.held_ids,
                            **self.search.to_json()}
        return data


def calibrate_volumes(volumes: Sequence[LabelledVolume], holdout: float = 0.0,
                      grid: Mapping[str, Sequence[Mapping]] = RULE_GRID,
                      options: Mapping[str, list] | None = None, top_k: int = 3,
                      progress: Callable[[str], None] | None = None,
                      engine: Evaluator | None = None,
                      whole: Sequence[Candidate] = ()) -> CalibrationOutcome:
    """Search on the fit volumes, then check the winner on the held-back ones (``engine``:
    the evaluator whose kind and caches the search uses, e.g. a screening
    :class:`vesukit.calibrate.engine.SearchEngine`; default: every mask scored exactly)."""
    by_id = {v.volume_id: v for v in volumes}
    fit_ids, held_ids = split_volumes(list(by_id), holdout)
    result = search([by_id[i] for i in fit_ids], grid, options, top_k, progress=progress,
                    shared=engine, whole=whole)
    if held_ids:
        held = [by_id[i] for i in held_ids]
        result.held_back = check_held_back(
            result, held, grid, None if engine is None else engine.for_volumes(held, exact=True))
    return CalibrationOutcome(result, fit_ids, held_ids)
