"""Post-processing of binary masks: an ordered chain of named steps.

A step is a mapping like ``{"step": "remove_small", "min_voxels": 5000}``; the chain runs in
the given order. Each step is a pure function ``(mask, maps, **params) -> mask`` over a uint8
(Z, Y, X) 0/1 mask; ``maps`` are the volume's ensemble maps (for steps that need the
probabilities). Named chains that reproduce the top solutions are in :mod:`vesukit.decide.presets`.

The steps, each with the solution it follows (docs/winners.md):

- ``zero_border``, ``remove_small`` (6- or 26-connected dust; 1st, 5th, 9th, 10th),
  ``keep_sheets`` (at most N sheets by size; 1st), ``fill_holes`` (enclosed cavities only),
  ``close`` (a diamond), ``drop_uncertain`` (vesukit's own: uses the teachers' disagreement);
- ``hysteresis`` and ``split_merged`` (per-component threshold escalation; 2nd);
- per sheet, pasted without merging sheets (:mod:`vesukit.decide.sheets`; 1st):
  ``sheet_close`` (oriented ellipsoid), ``patch_holes`` (height map), ``plug_holes`` (2x2x2
  lookup with an Euler-number guard);
- ``fill_tunnels``: topology-guided tunnel filling (5th; :mod:`vesukit.decide.tunnels`);
- ``slice_gaps``, ``gaussian_rethreshold`` and ``diagonal_bridge`` (vesukit's own, after the
  9th place's ablation); ``median_filter`` per component (10th, as its code);
- ``first_place``, ``second_place`` and ``ninth_place``: those teams' whole chains as their code
  runs them (:mod:`vesukit.decide.first_place`, :mod:`vesukit.decide.second_place`,
  :mod:`vesukit.decide.ninth_place`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from vesukit._arrays import map_array
from vesukit.decide.components import (  # noqa: F401 - label_components is used by report.py
    clear_faces,
    component_boxes,
    component_sizes,
    faces_touched,
    grow_box,
    keep_labels,
    label_background,
    label_components,
    main_axis,
)
from vesukit.decide.first_place import first_place
from vesukit.decide.ninth_place import ninth_place
from vesukit.decide.second_place import second_place
from vesukit.decide.sheets import kernels, padded_scratch, patch_holes, plug_holes, sheet_close
from vesukit.decide.tunnels import close_tunnels
from vesukit.errors import VesukitError

_keep = keep_labels


def zero_border(mask: np.ndarray, maps=None, width: int = 3) -> np.ndarray:
    """Clear ``width`` voxels at every face (the volumes carry a ~3-voxel zero border)."""
    out = mask.copy()
    clear_faces(out, width)
    return out


def remove_small(mask: np.ndarray, maps=None, min_voxels: int = 1000, connectivity: int = 26,
                 keep_faces: int = 0) -> np.ndarray:
    """Drop components smaller than ``min_voxels`` (dust).

    ``connectivity`` 6 or 26: the 9th place found 6-connected dust removal better (.6096
    against .6027 with 26), the 1st and 10th used 26. ``keep_faces`` > 0 keeps a small
    component anyway when it touches at least that many volume faces (the 5th place kept dust
    touching 3 faces: a sheet clipped by the crop, not noise).
    """
    if connectivity not in (6, 26):
        raise PostprocessError(f"postprocess step 'remove_small': connectivity must be 6 or 26, "
                               f"got {connectivity}.")
    labels, count = label_components(mask, int(connectivity))
    if count == 0:
        return np.zeros_like(mask, dtype=np.uint8)
    keep = component_sizes(labels, count) >= min_voxels
    if keep_faces > 0:
        keep |= faces_touched(labels, count) >= keep_faces
    return _keep(labels, keep)


def keep_sheets(mask: np.ndarray, maps=None, count: int = 40) -> np.ndarray:
    """Keep the ``count`` largest 26-connected components (the 1st place handled at most 40)."""
    labels, found = label_components(mask)
    if found <= count:
        return (labels > 0).astype(np.uint8)
    sizes = component_sizes(labels, found)
    sizes[0] = -1
    order = np.argsort(-sizes, kind="stable")[:int(count)]
    keep = np.zeros(found + 1, dtype=bool)
    keep[order] = True
    return _keep(labels, keep)


def hysteresis(mask: np.ndarray, maps=None, low: float = 0.3, high: float = 0.7) -> np.ndarray:
    """Hysteresis thresholding (2nd place): components of ``p >= low`` holding a voxel ``>= high``.

    Replaces the rule's mask: the weak parts of a sheet that is confident somewhere are kept,
    weak blobs with no confident voxel go.
    """
    probability = _probability(maps, "hysteresis")
    labels, count = label_components(probability >= low)
    if count == 0:
        return np.zeros(probability.shape, dtype=np.uint8)
    seeded = np.zeros(count + 1, dtype=bool)
    seeded[np.unique(labels[probability >= high])] = True
    return _keep(labels, seeded)


def split_merged(mask: np.ndarray, maps=None, max_layered: float = 0.2,
                 increment: float = 0.05, rounds: int = 6, min_voxels: int = 100) -> np.ndarray:
    """Per-component threshold escalation to split merged sheets (2nd place).

    A single sheet crosses each column along its main axis once; two sheets merged by a bridge
    cross many columns twice. A component with more than ``max_layered`` of its projected
    columns holding two or more runs is re-thresholded at its lowest probability plus
    ``increment``, ``2 * increment``... (at most ``rounds``) until it falls apart into pieces
    of at least ``min_voxels``; the pieces then replace it. A component that never splits stays as it was.
    """
    probability = _probability(maps, "split_merged")
    out = np.asarray(mask, dtype=np.uint8).copy()
    labels, count = label_components(out)
    for index, box in enumerate(component_boxes(labels, count), start=1):
        if box is None:
            continue
        box = grow_box(box, 1, out.shape)
        component = labels[box] == index
        if _layered_share(component) <= max_layered:
            continue
        p = np.where(component, probability[box], 0)
        start = float(p[component].min())
        for round_ in range(1, int(rounds) + 1):
            pieces, found = label_components(p >= start + round_ * increment)
            sizes = component_sizes(pieces, found)
            big = sizes >= min_voxels
            big[0] = False
            if big.sum() >= 2:
                region = out[box]
                region[component] = 0
                region |= _keep(pieces, big)
                break
    return out


def _layered_share(component: np.ndarray) -> float:
    """Share of the projected columns (along the main axis) crossed by two or more runs."""
    axis = main_axis(component)
    along = np.moveaxis(component, axis, 0).astype(np.int8)
    starts = np.count_nonzero(np.diff(along, axis=0, prepend=0) == 1, axis=0)
    covered = np.count_nonzero(starts)
    return float(np.count_nonzero(starts >= 2)) / covered if covered else 0.0


def _probability(maps, step: str) -> np.ndarray:
    if maps is None:
        raise PostprocessError(
            f"postprocess step '{step}' needs the ensemble maps (the mean probability); call "
            "apply_postprocess(mask, steps, maps) with the volume's maps.")
    return np.asarray(map_array(maps, "mean"), dtype=np.float32)


def drop_uncertain(mask: np.ndarray, maps=None, max_disagreement: float = 0.5) -> np.ndarray:
    """Drop components whose mean teacher disagreement is above ``max_disagreement``.

    A component that only some teachers believe in is more often a false sheet than a real
    one; averaging over the component judges it as a whole rather than voxel by voxel.
    """
    if maps is None:
        raise PostprocessError(
            "postprocess step 'drop_uncertain' needs the ensemble maps (the disagreement map); "
            "call apply_postprocess(mask, steps, maps) with the volume's maps."
        )
    labels, count = label_components(mask)
    if count == 0:
        return np.zeros_like(mask, dtype=np.uint8)
    disagreement = map_array(maps, "disagreement")
    inside = labels != 0  # only the marked voxels (a few % of the volume) are summed
    flat = labels[inside].astype(np.intp, copy=False)
    sizes = np.bincount(flat, minlength=count + 1)
    totals = np.bincount(flat, weights=disagreement[inside], minlength=count + 1)
    means = totals / np.maximum(sizes, 1)
    return _keep(labels, means <= max_disagreement)


def fill_holes(mask: np.ndarray, maps=None, max_voxels: int = 0) -> np.ndarray:
    """Fill enclosed cavities: background pockets that reach none of the volume's faces.

    This is 3D ``binary_fill_holes`` (the 1st place's last step): background is 6-connected
    (the dual of 26-connected foreground), so a pocket counts as enclosed only if no
    face-to-face path leads out. A hole *through* a sheet is connected to the background on
    both sides, so it is not filled here: ``patch_holes`` and ``plug_holes`` do that.
    ``max_voxels`` > 0 fills only pockets up to that size; 0 fills every enclosed pocket.
    """
    out = mask.astype(np.uint8, copy=True)
    background, count = label_background(out)
    if count == 0:
        return out
    sizes = component_sizes(background, count)
    outside = np.zeros(count + 1, dtype=bool)
    for axis in range(out.ndim):
        for end in (0, -1):
            outside[np.unique(np.take(background, end, axis=axis))] = True
    fill = ~outside
    if max_voxels > 0:
        fill &= sizes <= max_voxels
    out |= _keep(background, fill)
    return out


def close(mask: np.ndarray, maps=None, radius: int = 1) -> np.ndarray:
    """Light morphological closing with a diamond of ``radius`` (bridges 1-voxel gaps).

    The structuring element is the 6-neighbour cross iterated ``radius`` times: the voxels
    within city-block distance ``radius`` (a diamond, not a Euclidean ball; ``sheet_close``
    uses an ellipsoid). The volume is padded first so the faces do not erode what the dilation reached, and the
    result keeps every voxel of the input (closing only adds).
    """
    out = mask.astype(bool)
    if radius <= 0 or not out.any():
        return out.astype(np.uint8)
    ball = ndimage.generate_binary_structure(3, 1)
    if radius > 1:
        ball = ndimage.iterate_structure(ball, radius)
    if kernels() is not None:  # the same closing from the mask's voxels only (a few % of the volume)
        return _close_sparse(out, ball, radius)
    padded = np.pad(out, radius + 1)
    closed = ndimage.binary_erosion(ndimage.binary_dilation(padded, ball), ball)
    core = tuple(slice(radius + 1, -(radius + 1)) for _ in range(out.ndim))
    return (closed[core] | out).astype(np.uint8)


def _close_sparse(mask: np.ndarray, ball: np.ndarray, radius: int) -> np.ndarray:
    """:func:`close` with numba: the dilation scattered from the mask's voxels and the erosion
    tested only where the dilation added a voxel, in a scratch volume framed wide enough that
    the dilation past a face is kept as the zero padding keeps it (the sheet kernels' closing)."""
    compiled = kernels()
    pad = 2 * radius + 1
    scratch = padded_scratch(mask.shape, pad)
    padded_shape = np.array([n + 2 * pad for n in mask.shape])
    strides = np.array([padded_shape[1] * padded_shape[2], padded_shape[2], 1])
    offsets = (np.argwhere(ball) - radius) @ strides
    voxels = compiled.reframe(np.flatnonzero(mask), np.array(mask.shape), pad)
    added = compiled.close_added(voxels, offsets, scratch)
    out = mask.astype(np.uint8)
    out.reshape(-1)[compiled.reframe(added, padded_shape, -pad)] = 1
    return out


def fill_tunnels(mask: np.ndarray, maps=None, low: float = 0.15, rounds: int = 13,
                 min_radius: float = 3.5, max_radius: float = 7.0) -> np.ndarray:
    """Topology-guided tunnel filling, after the 5th place's write-up (docs/winners.md: 13 rounds,
    balls of radius clip(EDT + 1, 3.5, 7), guards against bridges and component-count changes).

    A hole through a sheet whose voxels have probability just under the threshold (at least
    ``low``; not published, 0.15 here) is filled with a ball where the probability filtration
    closes it, kept only if the ball touches a single sheet (two sheets are never bridged, no
    component is added) and the Euler number says a tunnel closed. Repeats for up to
    ``rounds`` rounds. See :mod:`vesukit.decide.tunnels`; needs the maps and numba.
    """
    probability = _probability(maps, "fill_tunnels")
    if not 0 < min_radius <= max_radius:
        raise PostprocessError(f"postprocess step 'fill_tunnels': need 0 < min_radius <= max_radius, "
                               f"got {min_radius} and {max_radius}.")
    compiled = kernels()
    if compiled is None:
        raise PostprocessError("postprocess step 'fill_tunnels' needs numba (pip install "
                               "'vesukit[metric]'); drop the step from the chain where numba is missing.")
    return close_tunnels(mask, probability, low, rounds, min_radius, max_radius, compiled)


def slice_gaps(mask: np.ndarray, maps=None, passes: int = 5, axis: int = 0) -> np.ndarray:
    """Fill gaps and diagonal "sandwiches" within each slice (9th place, 5 passes).

    In every slice normal to ``axis``, a background voxel whose two neighbours on opposite
    sides (left/right, up/down, or either diagonal) are both foreground is set: 1-voxel gaps in
    a sheet's trace close; the passes (up to ``passes``, until nothing changes) catch the gaps
    that earlier fills create. Nothing away from the mask's own gaps is touched.
    """
    out = np.moveaxis(np.asarray(mask, dtype=bool), int(axis), 0).copy()
    for _ in range(int(passes)):
        padded = np.pad(out, ((0, 0), (1, 1), (1, 1)))
        sandwich = np.zeros_like(out)
        for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
            sandwich |= _shifted(padded, dy, dx) & _shifted(padded, -dy, -dx)
        added = sandwich & ~out
        if not added.any():
            break
        out |= added
    return np.moveaxis(out, 0, int(axis)).astype(np.uint8)


def _shifted(padded: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The in-slice neighbour at (dy, dx) of every voxel of a volume padded by 1 in-plane."""
    return padded[:, 1 + dy:padded.shape[1] - 1 + dy, 1 + dx:padded.shape[2] - 1 + dx]


def diagonal_bridge(mask: np.ndarray, maps=None, axis: int = 0) -> np.ndarray:
    """Bridge pixels that touch only at a corner, in each slice (9th place's 2x2 diagonal bridge).

    In every slice normal to ``axis``, a 2x2 square holding exactly one diagonal pair (the two
    set pixels meet at a corner only) gets one of its two empty pixels set, so the pair becomes
    edge-connected: the one with the higher probability when the maps are given, otherwise the
    one in the square's upper row. Only adds; one pass.
    """
    out = np.moveaxis(np.asarray(mask, dtype=bool), int(axis), 0).copy()
    a, b = out[:, :-1, :-1], out[:, :-1, 1:]          # the square's upper row ...
    c, d = out[:, 1:, :-1], out[:, 1:, 1:]            # ... and lower row
    falling = a & d & ~b & ~c                          # set: upper left, lower right
    rising = b & c & ~a & ~d                           # set: upper right, lower left
    if not (falling.any() or rising.any()):
        return np.asarray(mask, dtype=np.uint8).copy()
    if maps is None:
        upper_b, upper_a = falling, rising             # the empty pixel of the upper row
        lower_c = lower_d = np.zeros_like(falling)
    else:
        p = np.moveaxis(np.asarray(map_array(maps, "mean"), dtype=np.float32), int(axis), 0)
        upper_wins = p[:, :-1, 1:] >= p[:, 1:, :-1]    # falling: b against c
        upper_b, lower_c = falling & upper_wins, falling & ~upper_wins
        upper_wins = p[:, :-1, :-1] >= p[:, 1:, 1:]    # rising: a against d
        upper_a, lower_d = rising & upper_wins, rising & ~upper_wins
    out[:, :-1, 1:] |= upper_b
    out[:, 1:, :-1] |= lower_c
    out[:, :-1, :-1] |= upper_a
    out[:, 1:, 1:] |= lower_d
    return np.moveaxis(out, 0, int(axis)).astype(np.uint8)


def gaussian_rethreshold(mask: np.ndarray, maps=None, sigma: float = 1.0,
                         level: float = 0.5) -> np.ndarray:
    """Smooth the mask with a Gaussian of ``sigma`` and threshold it again at ``level`` (9th).

    Rounds ragged sheet surfaces and closes pinholes narrower than the kernel; with level 0.5
    a flat sheet keeps its thickness.
    """
    smooth = ndimage.gaussian_filter(np.asarray(mask, dtype=np.float32), float(sigma))
    return (smooth >= level).astype(np.uint8)


def median_filter(mask: np.ndarray, maps=None, rounds: int = 7, size: int = 3,
                  connectivity: int = 6) -> np.ndarray:
    """A ``size``^3 median filter, ``rounds`` times, on each component alone (10th place).

    As the 10th place's ``postprocess_mask_voxel`` does it: components are ``connectivity``-
    connected (6, scipy's default); each is filtered as if it were alone in the volume, the
    volume mirrored at its faces (scipy's default ``reflect``), and the results are united (two
    filtered components may touch). On a 0/1 mask the median is the window's majority.
    """
    if connectivity not in (6, 26):
        raise PostprocessError(f"postprocess step 'median_filter': connectivity must be 6 or 26, "
                               f"got {connectivity}.")
    if int(size) < 1 or int(size) % 2 == 0:
        raise PostprocessError(f"postprocess step 'median_filter': size must be odd and >= 1, got {size}.")
    out = np.zeros(mask.shape, dtype=np.uint8)
    labels, count = label_components(mask, int(connectivity))
    reach = int(size) // 2
    compiled = kernels()  # numba: the same majority about 3x faster than numpy's (benchmarks)
    for index, box in enumerate(component_boxes(labels, count), start=1):
        if box is None:
            continue
        box = grow_box(box, int(rounds) * reach + 1, mask.shape)
        faces = [(b.start == 0, b.stop == n) for b, n in zip(box, mask.shape)]
        component = labels[box] == index
        if compiled is None:
            for _ in range(int(rounds)):
                component = _majority(component, reach, faces)
        else:
            component = compiled.sparse_majority(component.view(np.uint8), reach,
                                                 np.array([f[0] for f in faces]),
                                                 np.array([f[1] for f in faces]), int(rounds))
        out[box] |= component.view(np.uint8)
    return out


def _majority(block: np.ndarray, reach: int, faces) -> np.ndarray:
    """The majority of each voxel's (2 * reach + 1)^3 window; the block mirrored (edge voxel
    repeated) where it meets a volume face, empty elsewhere (the component never gets there)."""
    counts = block.astype(np.int16)
    for axis, (low_face, high_face) in enumerate(faces):
        widths = [(0, 0)] * block.ndim
        widths[axis] = (reach, reach)
        padded = np.pad(counts, widths, mode="symmetric")
        if not low_face:
            np.moveaxis(padded, axis, 0)[:reach] = 0
        if not high_face:
            np.moveaxis(padded, axis, 0)[padded.shape[axis] - reach:] = 0
        running = np.cumsum(padded, axis=axis, dtype=np.int16)
        running = np.concatenate([np.zeros_like(np.take(running, [0], axis=axis)), running], axis=axis)
        window = 2 * reach + 1
        counts = np.take(running, np.arange(window, running.shape[axis]), axis=axis) - \
            np.take(running, np.arange(0, running.shape[axis] - window), axis=axis)
    return counts > ((2 * reach + 1) ** block.ndim) // 2


# name -> step
STEPS: dict[str, Callable[..., np.ndarray]] = {
    "zero_border": zero_border,
    "remove_small": remove_small,
    "drop_uncertain": drop_uncertain,
    "fill_holes": fill_holes,
    "close": close,
    "keep_sheets": keep_sheets,
    "hysteresis": hysteresis,
    "split_merged": split_merged,
    "sheet_close": sheet_close,
    "patch_holes": patch_holes,
    "plug_holes": plug_holes,
    "fill_tunnels": fill_tunnels,
    "slice_gaps": slice_gaps,
    "gaussian_rethreshold": gaussian_rethreshold,
    "diagonal_bridge": diagonal_bridge,
    "median_filter": median_filter,
    "first_place": first_place,
    "ninth_place": ninth_place,
    "second_place": second_place,
}


class PostprocessError(VesukitError):
    """A post-processing chain names an unknown step or bad parameters."""


def check_steps(steps: Sequence[Mapping[str, Any]], where: str = "postprocess") -> tuple[dict, ...]:
    """The chain with each step's parameters checked against :mod:`vesukit.decide.parameters`
    (type and range) and normalised (an integral 3.0 becomes 3); raises
    :class:`PostprocessError` naming the step, the parameter and what is expected."""
    import inspect

    from vesukit.decide.parameters import STEP_PARAMETERS, checked_params

    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
        raise PostprocessError(f"{where}: 'postprocess' must be a list of steps like "
                               '{"step": "remove_small", "min_voxels": 1000}, or a preset\'s name.')
    checked = []
    for index, step in enumerate(steps):
        if not isinstance(step, Mapping):
            raise PostprocessError(f"{where}: postprocess step {index} is {step!r}; each step is an "
                                   'object like {"step": "remove_small", "min_voxels": 1000}.')
        name = step.get("step")
        if name not in STEPS:
            raise PostprocessError(
                f"{where}: postprocess step {index} is '{name}', which is unknown. Known steps: "
                f"{', '.join(sorted(STEPS))}."
            )
        defaults = {key: p.default for key, p in inspect.signature(STEPS[name]).parameters.items()
                    if key not in ("mask", "maps")}
        params, problem = checked_params(name, STEP_PARAMETERS[name],
                                         {k: v for k, v in step.items() if k != "step"},
                                         f"postprocess step {index} ('{name}')", defaults)
        if params is None:
            raise PostprocessError(f"{where}: {problem}.")
        checked.append({"step": name, **params})
    return tuple(checked)


def apply_postprocess(mask: np.ndarray, steps: Sequence[Mapping[str, Any]], maps=None) -> np.ndarray:
    """Run the chain in order; an empty chain returns the mask unchanged."""
    for step in steps:
        params = {k: v for k, v in step.items() if k != "step"}
        mask = STEPS[step["step"]](mask, maps, **params)
    return np.asarray(mask, dtype=np.uint8)
