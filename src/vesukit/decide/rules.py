"""Threshold rules: one volume's ensemble maps in, one threshold out, no labels needed.

Every rule is a pure function ``rule(maps, **params) -> float``; ``maps`` is anything with
``mean`` and ``disagreement`` maps (numpy arrays or torch tensors, (Z, Y, X)). The data-driven
rules clamp their answer to ``[lo, hi]`` so a strange volume cannot push the threshold to an
absurd value (an empty or an all-surface mask).

Histograms use fixed bins over [0, 1] (a voxel ``p`` lands in bin ``floor(p * bins)``), so
``mask = p >= edge`` selects exactly the voxels of the bins at and above ``edge``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from vesukit._arrays import map_array

# The winners' single global 0.26 was too low: 0.35-0.40 scored better on private
# (docs/competition.md). 0.4 is the default until a calibration file says otherwise.
DEFAULT_THRESHOLD = 0.4
HIST_BINS = 1024


def probability_histogram(probability: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Counts of ``probability`` in ``bins`` equal bins over [0, 1] (values outside are clipped)."""
    flat = np.asarray(probability).ravel()
    # one float32 temporary, clipped in place, then 16-bit bin indices: ~3 passes over 320^3
    scaled = np.multiply(flat, bins, dtype=np.float32)
    np.clip(scaled, 0, bins - 1, out=scaled)
    index = scaled.astype(np.uint16 if bins <= 65536 else np.int64)
    return np.bincount(index, minlength=bins).astype(np.float64)


def _clamp(value: float, lo: float, hi: float) -> float:
    return float(min(max(value, lo), hi))


def fixed_threshold(maps, threshold: float = DEFAULT_THRESHOLD) -> float:
    """The same threshold for every volume."""
    return float(threshold)


def foreground_fraction_threshold(maps, fraction: float = 0.06, lo: float = 0.1,
                                  hi: float = 0.7) -> float:
    """The threshold that marks ``fraction`` of the volume as surface.

    Labels hold roughly 4-9 % surface per volume (docs/competition.md), so a volume whose teachers
    are over- or under-confident still gets a mask of a plausible size.
    """
    counts = probability_histogram(map_array(maps, "mean"))
    total = counts.sum()
    if total == 0:
        return _clamp(DEFAULT_THRESHOLD, lo, hi)
    from_top = np.cumsum(counts[::-1])[::-1]  # from_top[i] = voxels with bin >= i
    wanted = fraction * total
    # the highest edge whose mask still holds at least the wanted number of voxels
    candidates = np.nonzero(from_top >= wanted)[0]
    edge = candidates[-1] / HIST_BINS if candidates.size else 0.0
    return _clamp(edge, lo, hi)


def otsu_threshold(maps, floor: float = 0.02, lo: float = 0.1, hi: float = 0.7,
                   bins: int = 256) -> float:
    """Otsu's threshold on the probability histogram, ignoring the sure background.

    Almost every voxel sits near 0; left in, those voxels would make Otsu separate "zero"
    from "anything". Only voxels with ``p >= floor`` take part.
    """
    counts = probability_histogram(map_array(maps, "mean"), bins)
    start = int(np.ceil(floor * bins))
    counts = counts[start:]
    centers = (np.arange(start, bins) + 0.5) / bins
    total = counts.sum()
    if total == 0 or counts.size < 2:
        return _clamp(DEFAULT_THRESHOLD, lo, hi)
    weight_below = np.cumsum(counts)[:-1]
    weight_above = total - weight_below
    sum_below = np.cumsum(counts * centers)[:-1]
    mean_below = sum_below / np.maximum(weight_below, 1e-12)
    mean_above = (np.sum(counts * centers) - sum_below) / np.maximum(weight_above, 1e-12)
    between = weight_below * weight_above * (mean_below - mean_above) ** 2
    split = int(np.argmax(between))  # threshold between bin split and split + 1
    return _clamp((start + split + 1) / bins, lo, hi)


def valley_threshold(maps, lo: float = 0.15, hi: float = 0.7, bins: int = 128,
                     smooth: float = 2.0) -> float:
    """The least-populated probability between the background pile and the surface mode.

    A confident ensemble piles voxels near 0 and around some surface level; the emptiest
    stretch between the two (searched within ``[lo, hi]``) is where a cut moves the fewest
    voxels. The background pile is the histogram's highest bin; the surface mode is the most
    populated local maximum of the smoothed histogram above both it and ``lo``; without one (a
    volume with no confident surface) the rule returns the default threshold, clamped.
    """
    counts = probability_histogram(map_array(maps, "mean"), bins)
    if smooth > 0:
        counts = ndimage.gaussian_filter1d(counts, smooth, mode="nearest")
    background = int(np.argmax(counts))  # the pile of sure background near 0
    first = max(int(np.ceil(lo * bins)), background + 1)
    last = min(bins - 1, max(first, int(np.floor(hi * bins))))
    inner = np.arange(max(first, 1), bins - 1)
    peaks = inner[(counts[inner] > counts[inner - 1]) & (counts[inner] >= counts[inner + 1])]
    if counts[bins - 1] > counts[bins - 2] and bins - 1 >= first:
        peaks = np.append(peaks, bins - 1)  # a pile at p = 1 is a mode too
    if peaks.size == 0:
        return _clamp(DEFAULT_THRESHOLD, lo, hi)
    peak = int(peaks[np.argmax(counts[peaks])])
    window = counts[first:min(peak, last) + 1]
    low = np.nonzero(window == window.min())[0]
    middle = low[len(low) // 2]  # the middle of a flat valley, not its edge
    return _clamp((first + middle) / bins, lo, hi)


def uncertainty_threshold(maps, base: float = 0.35, gain: float = 0.3, lo: float = 0.1,
                          hi: float = 0.7) -> float:
    """``base + gain * D``: lower where teachers agree, higher where they do not.

    ``D`` is the mean disagreement over the voxels the base threshold would mark. When the
    teachers agree on what they mark, a low threshold keeps thin sheets whole; when they
    disagree, a higher one keeps the voxels only some teachers believe in out of the mask.
    """
    mean = map_array(maps, "mean")
    provisional = mean >= base
    if not provisional.any():
        return _clamp(base, lo, hi)
    disagreement = map_array(maps, "disagreement")
    level = float(disagreement[provisional].mean())
    return _clamp(base + gain * level, lo, hi)


# name -> rule(maps, **params) -> threshold
THRESHOLD_RULES = {
    "fixed": fixed_threshold,
    "foreground_fraction": foreground_fraction_threshold,
    "otsu": otsu_threshold,
    "valley": valley_threshold,
    "uncertainty": uncertainty_threshold,
}
