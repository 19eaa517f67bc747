"""Connected components, sheet crops and the Euler number: what the post-processing steps share.

Foreground is 26-connected by default, as in the metric's VOI term (6-connected on request,
as the 9th and 5th places removed dust); cc3d labels when installed (it is not on the Kaggle
image), scipy.ndimage otherwise, with the same result.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from vesukit._optional import optional_import

CONNECTIVITIES = (6, 26)


def label_components(mask: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Components of ``mask`` (6- or 26-connected): (labels 1..count, 0 = background), count."""
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be 6 or 26, got {connectivity}")
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    cc3d = optional_import("cc3d")
    if cc3d is not None:
        labels, count = cc3d.connected_components(mask, connectivity=connectivity, return_N=True)
        return labels, int(count)
    structure = ndimage.generate_binary_structure(3, 3 if connectivity == 26 else 1)
    labels, count = ndimage.label(mask, structure=structure)
    return labels, int(count)


def label_background(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """6-connected components of the background (the dual of 26-connected foreground)."""
    return label_components(mask == 0, connectivity=6)


def keep_labels(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """uint8 mask of the labels marked in ``keep`` (index 0 = background, never kept)."""
    keep = keep.astype(np.uint8)
    keep[0] = 0
    return keep[labels]


def component_sizes(labels: np.ndarray, count: int) -> np.ndarray:
    """Voxels per label, index 0 = background."""
    return np.bincount(labels.ravel().astype(np.intp, copy=False), minlength=count + 1)


def faces_touched(labels: np.ndarray, count: int) -> np.ndarray:
    """How many of the volume's six faces each label touches (index 0 = background)."""
    touched = np.zeros(count + 1, dtype=np.int64)
    for axis in range(labels.ndim):
        for end in (0, -1):
            present = np.zeros(count + 1, dtype=bool)
            present[np.unique(np.take(labels, end, axis=axis))] = True
            touched += present
    return touched


def component_boxes(labels: np.ndarray, count: int) -> list[tuple[slice, ...] | None]:
    """Bounding box of each label 1..count (index i holds label i + 1), as ndimage finds them."""
    return ndimage.find_objects(labels, max_label=count)


def grow_box(box: tuple[slice, ...], margin: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape))


def main_axis(sheet: np.ndarray) -> int:
    """The axis along which the sheet's projection covers the most area (1st place)."""
    return int(np.argmax([np.count_nonzero(sheet.any(axis=a)) for a in range(sheet.ndim)]))


def euler_number(mask: np.ndarray) -> int:
    """Euler number of the 26-connected foreground: components - tunnels + cavities.

    Counted on the cubical complex of the foreground voxels (vertices - edges - faces +
    cubes, each present when any voxel sharing it is set), which is exact for 26/6
    connectivity. A sheet with ``h`` holes has 1 - h, so plugging a hole raises it by one.
    """
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    cubes = int(np.count_nonzero(m))
    # a lattice point at the corner shared by voxels [i-1..i] along each axis
    a, b = m[:-1], m[1:]
    faces_0 = a | b                                           # faces normal to axis 0
    faces_1 = m[:, :-1] | m[:, 1:]
    faces_2 = m[:, :, :-1] | m[:, :, 1:]
    edges_0 = faces_1[:, :, :-1] | faces_1[:, :, 1:]          # edges along axis 0
    edges_1 = faces_0[:, :, :-1] | faces_0[:, :, 1:]          # along axis 1
    edges_2 = faces_0[:, :-1] | faces_0[:, 1:]                # along axis 2
    vertices = edges_2[:, :, :-1] | edges_2[:, :, 1:]
    faces = int(np.count_nonzero(faces_0) + np.count_nonzero(faces_1) + np.count_nonzero(faces_2))
    edges = int(np.count_nonzero(edges_0) + np.count_nonzero(edges_1) + np.count_nonzero(edges_2))
    return int(np.count_nonzero(vertices)) - edges + faces - cubes


def _euler_block_table() -> np.ndarray:
    """256 entries: each 2x2x2 block's share of the Euler number (bit ``4z + 2y + x``).

    Every cell of the cubical complex (vertex, edge, face, cube) is owned by its lowest
    corner; the block whose centre is that corner owns the cells there: the vertex (present
    when any of the 8 voxels is), the 3 edges leaving it upwards (each shared by the 4 voxels
    with offset 1 along the edge's axis), the 3 faces (each shared by the 2 voxels with offset 1
    along both of the face's axes) and the cube of voxel (1, 1, 1). Summed over every block of
    a zero-padded mask this is :func:`euler_number`, so adding a voxel changes it only through
    the 8 blocks that hold the voxel.
    """
    table = np.zeros(256, dtype=np.int64)
    offsets = [(z, y, x) for z in (0, 1) for y in (0, 1) for x in (0, 1)]
    for pattern in range(256):
        on = [d for k, d in enumerate(offsets) if pattern >> k & 1]
        vertex = int(bool(on))
        edges = sum(any(d[axis] == 1 for d in on) for axis in range(3))
        faces = sum(any(d[a] == 1 and d[b] == 1 for d in on) for a, b in ((1, 2), (0, 2), (0, 1)))
        cube = int((1, 1, 1) in on)
        table[pattern] = vertex - edges + faces - cube
    return table


EULER_BLOCK_TABLE = _euler_block_table()


def clear_faces(volume: np.ndarray, width: int) -> None:
    """Zero ``width`` voxels at every face of ``volume``, in place."""
    if width <= 0:
        return
    for axis in range(volume.ndim):
        index = [slice(None)] * volume.ndim
        index[axis] = slice(0, width)
        volume[tuple(index)] = 0
        index[axis] = slice(max(volume.shape[axis] - width, 0), None)
        volume[tuple(index)] = 0
