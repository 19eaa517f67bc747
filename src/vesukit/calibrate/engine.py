"""The calibration search's evaluation engine: screened scoring, chain-prefix reuse, Dask.

:class:`SearchEngine` is an :class:`~vesukit.calibrate.search.Evaluator` for the staged search.
Every mask is first scored with :meth:`vesukit.metric.PreparedLabel.bound`, the leaderboard
score with every term exact but the dimension-1 matches (most of the full scorer's time),
bounded by Betti numbers. What happens next is the engine's mode:

- **ranked** (``finalists`` N > 0, the default, N = :data:`FINALISTS`): the search decides on
  the bounds alone (which rules start the descent, which steps it keeps) and only the N best
  candidates of each search (and the best fixed threshold) get the full scorer; the winner is
  the best of those exact scores. A heuristic: measured against the exhaustive search in
  docs/benchmarks.md ("Calibration at scale").
- **screened** (``finalists=0``; while screening pays: :meth:`SearchEngine.screening_pays`):
  a candidate is rescored with the full scorer only when its bound could change a decision:
  a descent trial whose bound does not beat the current best loses either way, and rankings
  are settled best bound first until the exact head beats every bound left. The decisions are
  those of the exhaustive search by construction.
- **exhaustive** (``exhaustive=True``): every mask through the full scorer.

Whatever the mode:

- **chain prefixes**: the masks after each step of a chain are kept (bit-packed, per volume)
  so candidates that differ in a late step do not rerun the early, costly ones, and a
  screened mask rescored exactly is not made again;
- **Dask**: with a client, each volume lives on one worker (scattered once) and a candidate is
  scored on all volumes at once; the per-volume function is the same as in one process and
  the mean is taken in volume order, so the results are identical.

A progress line with an ETA (masks done of volumes x candidates planned) is printed at most
every ``progress_every`` seconds.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vesukit.calibrate.sample import CropOf, SearchSample, make_crop, volume_shape
from vesukit.calibrate.search import Candidate, CandidateScore, Evaluator, LabelledVolume
from vesukit.decide import binarize
from vesukit.decide.steps import STEPS

FINALISTS = 3  # ranked mode: candidates per search given the full scorer (docs/benchmarks.md)
PREFIX_CACHE_BYTES = 1 << 30  # per process: about 250 bit-packed 320^3 masks
SCREEN_TRIAL = 40  # screened masks before judging whether screening pays
# At 320^3 a bound costs about 1/9 of an exact score, so rescoring half the screened masks
# still saves about 40 %; beyond that the saving shrinks to nothing (docs/benchmarks.md).
SCREEN_STOP_SHARE = 0.5


class PrefixCache:
    """Masks after each chain prefix, bit-packed, least recently used dropped first."""

    def __init__(self, max_bytes: int = PREFIX_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple[np.ndarray, tuple, np.dtype]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key) -> np.ndarray | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
        packed, shape, dtype = item
        bits = np.unpackbits(packed, count=int(np.prod(shape)))
        return bits.reshape(shape).astype(dtype, copy=False)

    def put(self, key, mask: np.ndarray) -> None:
        mask = np.asarray(mask)
        if not np.array_equal(mask, mask.astype(bool)):
            return  # not a 0/1 mask: bits would not restore it
        packed = np.packbits(mask.astype(bool).reshape(-1))
        with self._lock:
            if key in self._items:
                return
            self._items[key] = (packed, mask.shape, mask.dtype)
            self._bytes += packed.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, (old, _, _) = self._items.popitem(last=False)
                self._bytes -= old.nbytes


_PREFIXES = PrefixCache()  # one per process: the client's, or each Dask worker's


def chain_mask(volume: LabelledVolume, threshold: float, chain: Sequence[Mapping[str, Any]],
               token: str = "", cache: PrefixCache | None = None) -> np.ndarray:
    """``apply_postprocess(binarize(mean, threshold), chain, maps)``, reusing cached prefixes
    (``token`` names the search, so two searches never share a volume id's masks)."""
    cache = _PREFIXES if cache is None else cache
    chain = [dict(step) for step in chain]
    keys = [(token, volume.volume_id, float(threshold), repr(chain[:n]))
            for n in range(len(chain) + 1)]
    done, mask = 0, None
    for n in range(len(chain), 0, -1):  # the longest prefix already made (the whole chain
        mask = cache.get(keys[n])       # when a screened mask is rescored exactly)
        if mask is not None:
            done = n
            break
    if mask is None:
        mask = binarize(volume.maps.mean, threshold)
    for n in range(done, len(chain)):
        step = chain[n]
        mask = STEPS[step["step"]](mask, volume.maps,
                                   **{k: v for k, v in step.items() if k != "step"})
        cache.put(keys[n + 1], mask)
    return np.asarray(mask, dtype=np.uint8)  # as apply_postprocess returns it


def evaluate_volume(volume: LabelledVolume, candidate: Candidate, threshold: float | None,
                    exact: bool, token: str = "") -> tuple[float, float, float, float]:
    """(threshold, score, seconds, of which scoring) of one candidate on one volume: the
    exact leaderboard score, or the screening bound. Runs in this process or on a Dask
    worker; the same either way."""
    start = time.perf_counter()
    if threshold is None:
        threshold = volume.rule_threshold(candidate)
    mask = chain_mask(volume, threshold, candidate.postprocess, token)
    scoring = time.perf_counter()
    label = volume.label
    if exact or not hasattr(label, "bound"):
        value = float(label.score(mask).score)
    else:
        value = float(label.bound(mask).score)
    end = time.perf_counter()
    return threshold, value, end - start, end - scoring


def evaluate_batch(volume: LabelledVolume, items: Sequence[tuple[Candidate, float | None]],
                   exact: bool | Sequence[bool], token: str = ""
                   ) -> list[tuple[float, float, float, float]]:
    """:func:`evaluate_volume` for several candidates on one volume, which is then released:
    a streamed volume is read and prepared once per batch, and not kept. ``exact``: one flag
    for every item, or one per item (exact scores and bounds in one pass)."""
    flags = [exact] * len(items) if isinstance(exact, bool) else list(exact)
    try:
        return [evaluate_volume(volume, candidate, threshold, flag, token)
                for (candidate, threshold), flag in zip(items, flags)]
    finally:
        volume.release()


def _first(function, *args):
    return function(*args)[0]


class _Progress:
    """Masks done of masks planned, and an ETA, at most every ``every`` seconds.

    Screened masks (bounds, often on crops) and exact ones (the full scorer, often on whole
    volumes) cost very different times, so each kind has its own plan and its own rate: the
    wall time between two counts goes to the kind just counted. Before the first exact mask
    the ETA prices exact masks at the screened rate and says so ("exact masks not yet timed").
    The plans are upper bounds; the ETA is an estimate at the rates so far.
    """

    KINDS = ("screened", "exact")

    def __init__(self, say: Callable[[str], None] | None, every: float):
        self.say, self.every = say, every
        self.planned = dict.fromkeys(self.KINDS, 0)
        self.done = dict.fromkeys(self.KINDS, 0)
        self.spent = dict.fromkeys(self.KINDS, 0.0)
        self.start = self._mark = time.perf_counter()
        self._last = -1e9

    def add(self, count: int, exact: bool) -> None:
        kind = "exact" if exact else "screened"
        now = time.perf_counter()
        self.spent[kind] += now - self._mark
        self._mark = now
        self.done[kind] += count
        if self.say is None or now - self._last < self.every:
            return
        self._last = now
        self.say(self.line(now))

    def line(self, now: float) -> str:
        done = sum(self.done.values())
        planned = sum(max(self.planned[k], self.done[k]) for k in self.KINDS)
        rates = {k: self.spent[k] / self.done[k] for k in self.KINDS if self.done[k]}
        eta = sum(max(self.planned[k] - self.done[k], 0) * rates.get(k, max(rates.values()))
                  for k in self.KINDS)
        untimed = "exact" not in rates and self.planned["exact"] > 0
        return (f"search: {done}/{planned} masks (volumes x candidates, planned at most; "
                f"exact {self.done['exact']}/{max(self.planned['exact'], self.done['exact'])}), "
                f"{(now - self.start) / max(done, 1):.2f} s/mask, ETA ~{_clock(eta)}"
                + (" (exact masks not yet timed)" if untimed else ""))


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


class SearchEngine(Evaluator):
    """An Evaluator that screens, reuses chain prefixes and may run on a Dask client."""

    def __init__(self, volumes: Sequence[LabelledVolume], shared: SearchEngine | None = None, *,
                 exhaustive: bool = False, client=None,
                 progress: Callable[[str], None] | None = None, progress_every: float = 10.0,
                 screen: bool | None = None, finalists: int = FINALISTS,
                 sample: SearchSample | None = None, rules: Sequence[Candidate] = (),
                 sample_among: Sequence[str] | None = None):
        super().__init__(volumes, shared)
        if shared is not None:
            self.exhaustive, self.client = shared.exhaustive, shared.client
            self.finalists = shared.finalists
            self._bounds, self._progress = shared._bounds, shared._progress
            self._placed, self.token = shared._placed, shared.token
            self.sample = shared.sample
        else:
            # the search screens on crops of a sample of the volumes when that leaves anything
            # out
            shapes = [volume_shape(v) for v in self.volumes]
            self.sample = sample.used_for(shapes, exhaustive) if sample is not None else None
            # spread over ``sample_among`` where only those are searched (the fit volumes of a
            # held-back split): a sampled held volume would be a crop nobody screens on
            among = [v.volume_id for v in self.volumes] if sample_among is None else sample_among
            self._sample_ids = set(self.sample.ids(among)) if self.sample is not None else set()
            self._rules = list(rules)  # whose thresholds a crop takes from its whole map
            self._crops: dict[str, Any] = {}  # crop id -> CropOf, or the crop made here
            self.exhaustive, self.client = bool(exhaustive), client
            self.finalists = 0 if self.exhaustive else max(0, int(finalists))
            self._bounds: dict[tuple[str, float, str], float] = {}
            self._progress = _Progress(progress, progress_every)
            self._placed: dict[str, tuple[Any, str]] = {}  # volume id -> (future, worker)
            self.token = uuid.uuid4().hex
            self.rescored = 0  # candidates screened, then rescored with the full scorer
            # masks made and scored, and the seconds they took where they ran (worker time)
            self.work = {"screened_masks": 0, "exact_masks": 0, "screened_s": 0.0, "exact_s": 0.0,
                         "screened_scoring_s": 0.0, "rescored_masks": 0,
                         "screening_stopped_after": None}
        self.exact_volumes: list | None = None  # set by for_volumes on a ranked sample
        self.screen = (not self.exhaustive) if screen is None else screen
        if not self.screen:
            self.finalists = 0  # a judging engine (every score exact) ranks nothing

    @property
    def mode(self) -> str:
        """"exhaustive", "screened" (exact by construction) or "ranked" (finalists)."""
        return "exhaustive" if self.exhaustive else "ranked" if self.finalists else "screened"

    def for_volumes(self, volumes: Sequence[LabelledVolume], exact: bool = False):
        """An engine on ``volumes`` sharing this one's caches, cluster and progress (``exact``:
        one that never screens, for judging). A search engine on a sample
        (:mod:`vesukit.calibrate.sample`) searches on the crops of the sampled ones; a judging
        one scores the whole volumes, each read where it is scored and released after."""
        if self.sample is not None and self.screen and not exact:
            engine = SearchEngine(self._sampled(volumes), self, screen=True)
            if self.finalists and self.sample.crop > 0:
                # the ranked search's exact scores (its finalists, which pick the winner) are
                # taken on the sampled volumes whole: a step whose effect depends on the volume's
                # faces (fill_holes: background not reaching them) can act on a whole volume and
                # not on its crop (docs/benchmarks.md, "The sample")
                engine.exact_volumes = self._sampled(volumes, whole=True)
            return engine
        return SearchEngine(volumes, self, screen=self.screen and not exact)

    def for_ablation(self, volumes: Sequence[LabelledVolume]):
        """Exact scores on ``volumes``; on a sample, on the crops of the sampled ones (all of
        them when none is sampled)."""
        if self.sample is not None:
            volumes = self._sampled(volumes, fallback_all=True)
        return SearchEngine(volumes, self, screen=False)

    def _sampled(self, volumes: Sequence[LabelledVolume], fallback_all: bool = False,
                 whole: bool = False) -> list:
        root = self._root
        chosen = [v for v in volumes if v.volume_id in root._sample_ids]
        if not chosen:  # a fold without a sampled volume (few volumes, many folds)
            chosen = list(volumes) if fallback_all else list(volumes[:1])
        if self.sample.crop <= 0 or whole:
            return chosen
        handles = []
        for volume in chosen:
            handle = CropOf(volume, self.sample.crop)
            handles.append(root._crops.setdefault(handle.volume_id, handle))
        return handles

    @property
    def screened_ids(self) -> list[str]:
        """The ids of the sampled volumes whose crops the searches screen on (none unsampled)."""
        return sorted(self._root._sample_ids) if self.sample is not None else []

    def plan(self, screened: int, exact: int) -> None:
        """Add masks (volumes x candidates) to the progress line's totals: ``screened`` ones
        (bounds) and ``exact`` ones (the full scorer), each an upper bound."""
        self._progress.planned["screened"] += int(screened)
        self._progress.planned["exact"] += int(exact)

    @property
    def planned(self) -> int:
        """The masks planned so far: the progress line's total, an upper bound."""
        return sum(self._progress.planned.values())

    def rescore_exactly(self, result: CandidateScore) -> CandidateScore:
        if result.exact:
            return result
        self._root.rescored += 1
        return self.score(result.candidate, result.stage, exact=True)

    def screening_pays(self) -> bool:
        """Whether screening still spares the exact scorer: it stops once more than
        ``SCREEN_STOP_SHARE`` of the screened masks had to be rescored (judged after
        ``SCREEN_TRIAL`` of them), and the search then scores exactly up front. The rule
        counts masks, not seconds, so the same search stops at the same point in one process
        or on any cluster; the decisions are the same either way."""
        work = self._root.work
        if work["screening_stopped_after"] is not None:
            return False
        if work["screened_masks"] < SCREEN_TRIAL:
            return True
        if work["rescored_masks"] <= SCREEN_STOP_SHARE * work["screened_masks"]:
            return True
        work["screening_stopped_after"] = work["screened_masks"]
        return False

    def score(self, candidate: Candidate, stage: str = "", exact: bool | None = None
              ) -> CandidateScore:
        if exact is None:  # ranked: always screened first; screened: while it pays
            exact = not (self.screen and (self.finalists or self.screening_pays()))
        volumes = self._scored_on(exact)
        todo = self._todo(candidate, exact, volumes)
        for (volume, _), result in zip(todo, self._run(todo, candidate, exact)):
            self._record(volume, candidate, exact, result)
        self._progress.add(len(todo), exact)
        return self._known_score(candidate, stage, exact, volumes)

    def _scored_on(self, exact: bool) -> list:
        """The volumes a score is taken on: a ranked search on a sample screens on the crops
        and scores its finalists exactly on the sampled volumes whole."""
        return self.exact_volumes if exact and self.exact_volumes is not None else self.volumes

    def rescore_many(self, results: Sequence[CandidateScore]) -> list[CandidateScore]:
        """``results`` rescored exactly, those on whole volumes in one pass per volume."""
        if self.exact_volumes is None:
            return super().rescore_many(results)
        todo = [r for r in results if not r.exact]
        self._root.rescored += len(todo)
        rescored = iter(self.score_many([r.candidate for r in todo], todo[0].stage if todo else ""))
        return [r if r.exact else next(rescored) for r in results]

    def score_many(self, candidates: Sequence[Candidate], stage: str = "",
                   bounds: Sequence[Candidate] = ()) -> list[CandidateScore]:
        """Exact scores of ``candidates``, then upper bounds of ``bounds``' scores. On whole
        volumes of a sample (judging, or a ranked search's finalists), one task per volume
        scores all of them: each volume is read and prepared once, then released."""
        exactly = {c.key for c in candidates}  # a mask scored exactly needs no bound
        bounded = [c for c in bounds if c.key not in exactly]
        if self.sample is None or (self.screen and self.exact_volumes is None):
            scored = {c.key: s for c, s in zip(candidates, super().score_many(candidates, stage))}
            scored.update({c.key: self.score(c, stage, exact=False) for c in bounded})
            return [scored[c.key] for c in [*candidates, *bounds]]
        volumes = self._scored_on(True)
        per_volume: dict[str, list] = {}
        wanted = [(c, True) for c in candidates] + [(c, False) for c in bounded]
        for candidate, exact in wanted:
            for volume, threshold in self._todo(candidate, exact, volumes):
                items = per_volume.setdefault(volume.volume_id, [volume])
                if all((c.key, e) != (candidate.key, exact) for c, _, e in items[1:]):
                    items.append((candidate, threshold, exact))
        batches = list(per_volume.values())
        for volume, items, outcomes in self._batches_as_done(batches):
            for (candidate, _, exact), result in zip(items, outcomes):
                self._record(volume, candidate, exact, result)
            for exact in (True, False):  # per volume: a whole-volume batch takes minutes
                count = sum(e == exact for *_, e in items)
                if count:
                    self._progress.add(count, exact)
        scored = {c.key: self._known_score(c, stage, True, volumes) for c in candidates}
        scored.update({c.key: self._known_score(c, stage, False, volumes) for c in bounded})
        return [scored[c.key] for c in [*candidates, *bounds]]

    def _batches_as_done(self, batches):
        """(volume, items, outcomes) of each ``[volume, *(candidate, threshold, exact)]``
        batch, as each finishes: the progress line moves while a batch of whole volumes is
        scored."""
        def split(items):  # evaluate_batch's (candidate, threshold) items and exact flags
            return [(c, t) for c, t, _ in items], [e for *_, e in items]

        if self.client is None:
            for volume, *items in batches:
                yield volume, items, evaluate_batch(volume, *split(items), self.token)
            return
        from distributed import as_completed

        submitted = {self.client.submit(evaluate_batch, volume, *split(items), self.token,
                                        pure=False): (volume, items)
                     for volume, *items in batches}
        for future in as_completed(list(submitted)):
            volume, items = submitted[future]
            yield volume, items, future.result()

    def _todo(self, candidate: Candidate, exact: bool, volumes: Sequence) -> list:
        todo = []
        for volume in volumes:
            threshold = self._thresholds.get((volume.volume_id, candidate.rule_key))
            if threshold is None or self._known(volume, threshold, candidate, exact) is None:
                todo.append((volume, threshold))
        return todo

    def _record(self, volume, candidate: Candidate, exact: bool, result) -> None:
        threshold, value, seconds, scoring = result
        work = self._root.work
        kind = "exact" if exact else "screened"
        work[f"{kind}_masks"] += 1
        work[f"{kind}_s"] += seconds
        self._thresholds[(volume.volume_id, candidate.rule_key)] = threshold
        key = (volume.volume_id, round(threshold, 7), candidate.chain_key)
        if exact:
            work["rescored_masks"] += key in self._bounds
        else:
            work["screened_scoring_s"] += scoring
        (self._scores if exact else self._bounds)[key] = value
        self.masks_scored += 1
        if self._root is not self:
            self._root.masks_scored += 1

    def _known_score(self, candidate: Candidate, stage: str, exact: bool,
                     volumes: Sequence) -> CandidateScore:
        scores, thresholds, all_exact = {}, {}, True
        for volume in volumes:
            threshold = self._thresholds[(volume.volume_id, candidate.rule_key)]
            value, is_exact = self._known(volume, threshold, candidate, exact)
            scores[volume.volume_id], thresholds[volume.volume_id] = value, threshold
            all_exact &= is_exact
        return CandidateScore(candidate, scores, thresholds, stage, exact=all_exact)

    def _known(self, volume, threshold, candidate, exact):
        """(score, is_exact) already known for this mask, or None. An exact score serves as
        its own (tightest) bound, except while ranking: candidates are then compared on
        bounds only, whichever of them another fold happened to score exactly."""
        key = (volume.volume_id, round(threshold, 7), candidate.chain_key)
        if not exact and self.finalists:
            return (self._bounds[key], False) if key in self._bounds else None
        if key in self._scores:
            return self._scores[key], True
        if not exact and key in self._bounds:
            return self._bounds[key], False
        return None

    def _run(self, todo, candidate, exact) -> list[tuple[float, float, float, float]]:
        if not todo:
            return []
        streamed = self.sample is not None  # whole volumes of a sample are never kept
        if self.client is None:
            return [evaluate_batch(volume, [(candidate, threshold)], exact, self.token)[0]
                    if streamed and not isinstance(volume, CropOf) else
                    evaluate_volume(self._local(volume), candidate, threshold, exact, self.token)
                    for volume, threshold in todo]
        futures = []
        for volume, threshold in todo:
            if streamed and not isinstance(volume, CropOf):
                futures.append(self.client.submit(_first, evaluate_batch, volume,
                                                  [(candidate, threshold)], exact, self.token,
                                                  pure=False))
                continue
            remote, worker = self._place(volume)
            futures.append(self.client.submit(evaluate_volume, remote, candidate, threshold,
                                              exact, self.token, workers=[worker],
                                              allow_other_workers=False, pure=False))
        return self.client.gather(futures)

    def _local(self, volume):
        """The volume to score in this process: a crop is made once and kept."""
        if not isinstance(volume, CropOf):
            return volume
        crops = self._root._crops
        if isinstance(crops[volume.volume_id], CropOf):
            crops[volume.volume_id] = make_crop(volume, self._root._rules)
        return crops[volume.volume_id]

    def _place(self, volume: LabelledVolume):
        """The volume's copy on its worker, round robin over the workers: scattered once, or
        (a crop) made there once."""
        if volume.volume_id not in self._placed:
            workers = sorted(self.client.scheduler_info()["workers"])
            worker = workers[len(self._placed) % len(workers)]
            if isinstance(volume, CropOf):
                future = self.client.submit(make_crop, volume, self._root._rules,
                                            workers=[worker], allow_other_workers=False,
                                            pure=False)
            else:
                [future] = self.client.scatter([volume], workers=[worker], hash=False)
            self._placed[volume.volume_id] = (future, worker)
        return self._placed[volume.volume_id]


def connect(scheduler: str | None, workers: int | None):
    """(client, cluster): a local cluster of ``workers`` single-threaded processes (default:
    one per core), or the running scheduler at ``scheduler`` (tcp://host:8786)."""
    import logging
    import os

    from vesukit._optional import require

    distributed = require("distributed", "vesukit calibrate", "dask[distributed]")
    if scheduler not in (None, "local"):
        return distributed.Client(scheduler), None
    cluster = distributed.LocalCluster(n_workers=workers or max(1, os.cpu_count() or 1),
                                       threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=logging.ERROR)
    return distributed.Client(cluster), cluster


@contextlib.contextmanager
def dask_client(scheduler: str | None = "local", workers: int | None = None,
                progress: Callable[[str], None] | None = None):
    """``with dask_client(...) as client``: a Dask client for the search (None when
    ``scheduler`` is "none": everything in this process), closed with its cluster on exit."""
    if scheduler == "none":
        yield None
        return
    client, cluster = connect(scheduler, workers)
    try:
        if progress:
            progress(f"search on Dask: {worker_count(client)} worker(s), dashboard "
                     f"{client.dashboard_link}")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def worker_count(client) -> int:
    return 1 if client is None else max(1, len(client.scheduler_info()["workers"]))


def time_one_mask(volume: LabelledVolume, candidate: Candidate, exact: bool) -> float:
    """Seconds for one mask of ``candidate`` on ``volume`` from scratch (no cached prefix)."""
    return evaluate_volume(volume, candidate, None, exact, token=uuid.uuid4().hex)[2]
