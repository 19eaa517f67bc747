"""Topology-guided tunnel filling (5th place): close holes through a sheet that the
probability map says are nearly surface, without ever joining two sheets.

The 5th place of the Vesuvius Surface Detection competition (docs/winners.md: 13 rounds of
tunnel filling; persistent homology on 2x2x2 tiles keeps the 1-dimensional features that
straddle the threshold and fills balls of radius clip(EDT + 1, 3.5, 7), with guards against
bridges and component-count changes; about +0.08 topology score) is reimplemented here from
that description, without a persistent-homology library:

1. the filtration: the background voxels with probability at least ``low`` are added to the
   mask from the most to the least probable; a voxel whose addition closes a loop of a single
   component (the Euler number rises, no components join) is where a tunnel dies. A tunnel
   that dies there and exists in the mask straddles the threshold;
2. at each such voxel a ball of radius clip(d + 1, 3.5, 7), d the distance to the mask, is
   filled, and kept only when every mask voxel next to it belongs to one sheet (no bridge, no
   new component) and the mask's Euler number rises (a tunnel of the mask closed). A tunnel
   may die off its centre (the near-threshold fringe beside a sheet can cap it first); when
   the ball there does not close it, one more is tried at the candidate voxel nearby that lies
   deepest in the background (farthest from the mask: the hole's middle);
3. that is one round; rounds repeat (13 published) until one fills nothing. A ball's test
   reads only its neighbourhood, so after the first round the filtration and the tests run
   only near the previous round's balls (elsewhere the mask is as it was when they ran).

Needs numba (:mod:`vesukit.decide._kernels`).
"""

from __future__ import annotations

import numpy as np

from vesukit.decide.components import EULER_BLOCK_TABLE, label_components


def close_tunnels(mask: np.ndarray, probability: np.ndarray, low: float, rounds: int,
                  min_radius: float, max_radius: float, kernels) -> np.ndarray:
    """The mask with the tunnels the probability supports filled by balls (see the module)."""
    framed = np.pad(np.asarray(mask, dtype=np.uint8), 1)   # the kernels' one-voxel frame
    inner = (slice(1, -1),) * 3
    # Labelled once: a kept ball touches one sheet, so giving its voxels that sheet's label
    # keeps the labels a labelling of the mask's components, round after round.
    labels, count = label_components(framed)               # the frame is empty: framed labels
    if count == 0:
        return framed[inner].copy()
    labels = labels.view(np.int32) if labels.dtype == np.uint32 else labels.astype(np.int32)
    probability = np.ascontiguousarray(probability, dtype=np.float32)
    # The filtration's order, sorted once: a round's candidates are a subset, in the same order.
    flat = probability.ravel()
    order = np.flatnonzero((framed[inner] == 0) & (probability >= low))
    order = order[np.argsort(-flat[order], kind="stable")]
    in_frame = np.ravel_multi_index(tuple(i + 1 for i in np.unravel_index(order, mask.shape)), framed.shape)
    changed = None                                         # round 1 looks everywhere
    for _ in range(int(rounds)):
        open_now = framed.ravel()[in_frame] == 0
        if changed is not None:
            open_now &= changed.ravel()[order]
        candidates = order[open_now]
        if candidates.size == 0:
            break
        changed = _one_round(framed, labels, count, candidates, probability, float(low),
                             float(min_radius), float(max_radius), kernels)
        if not changed.any():
            break
    return framed[inner].copy()


def _one_round(framed: np.ndarray, labels: np.ndarray, count: int, candidates: np.ndarray,
               probability: np.ndarray, low: float, min_radius: float, max_radius: float,
               kernels) -> np.ndarray:
    """Fill the tunnels found in one filtration of ``candidates`` (flat volume indices, most
    probable first), in place. Returns where a ball's test can have changed (around this
    round's balls); the next round's filtration and tests are limited to those places:
    elsewhere the mask, and so each test's answer, is as before. (A loop through voxels outside
    them is then not proposed again; a tunnel of the mask is, since the mask's own components
    are labelled whole.)"""
    zs, ys, xs = np.unravel_index(candidates, probability.shape)
    deaths = kernels.tunnel_deaths(zs, ys, xs, labels, count, EULER_BLOCK_TABLE)
    changed = np.zeros(probability.shape, dtype=np.bool_)
    kernels.fill_deaths(zs[deaths], ys[deaths], xs[deaths], framed, labels, probability, low,
                        min_radius, max_radius, EULER_BLOCK_TABLE, changed)
    return changed
