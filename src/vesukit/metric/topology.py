"""TopoScore: Betti matching of binary volumes per octant block (docs/metric.md, part 2).

Per block, p_k/g_k come from Betti numbers, m_0 from a raster-order Kruskal, m_2 from cavity
keys, and m_1 from two GF(2) image reductions (one per input). Everything that depends on
the label only (its counts and cavity labelling) lives in :class:`InputBlock` and is reused.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from vesukit.metric._numba import kernels

Counts = dict[int, tuple[int, int, int]]


class _Workspace:
    """Work buffers of one block's kernels."""

    def __init__(self, nvox: int):
        self.nvox = nvox
        self.vox_i32 = np.empty(nvox + 1, dtype=np.int32)
        self.vox_u8 = np.empty(nvox + 1, dtype=np.uint8)
        self.sq_u8 = [np.empty(3 * nvox, dtype=np.uint8) for _ in range(3)]
        self.owners = np.empty(6 * nvox, dtype=np.int32)  # two per edge: pred, label


_spare: list[_Workspace] = []  # workspaces not lent out now, kept for the next blocks and calls
_spare_lock = threading.Lock()


@contextmanager
def workspace(nvox: int):
    """Lends work buffers of at least ``nvox`` voxels for the ``with`` block. They outlive
    the threads of a call's pool, so a warm score reuses the pages of the call before it:
    fresh multi-megabyte arrays cost page faults that were a large share of the kernels' time."""
    with _spare_lock:
        ws = next((w for w in _spare if w.nvox >= nvox), None)
        if ws is not None:
            _spare.remove(ws)
    if ws is None:
        ws = _Workspace(nvox)
    try:
        yield ws
    finally:
        with _spare_lock:
            _spare.append(ws)
            _spare.sort(key=lambda w: -w.nvox)
            del _spare[max(2, os.cpu_count() or 1):]  # as many as threads can borrow at once


def octant_slices(shape: tuple[int, ...]) -> list[tuple[slice, slice, slice]]:
    """The 8 blocks: each axis split in two, the first part larger by at most one."""
    halves = []
    for n in shape:
        cut = (n + 1) // 2
        halves.append((slice(0, cut), slice(cut, n)))
    return [(a, b, c) for a in halves[0] for b in halves[1] for c in halves[2]]


@dataclass
class InputBlock:
    """One input (pred or label) restricted to one block, with its own Betti numbers."""

    mask: np.ndarray  # flat uint8 0/1
    shape: tuple[int, int, int]
    betti: tuple[int, int, int]  # (max(c6-1,0), beta1, beta2)
    z1_dim: int  # dim Z_1(K(A)): pivots on K(A) rows when the reduction is complete
    cavities: tuple  # background_runs(...) of the block

    @classmethod
    def build(cls, block: np.ndarray) -> InputBlock:
        k = kernels()
        block = np.asarray(block)
        if block.dtype == bool:  # already 0/1 bytes: one copy, no comparison
            mask = np.array(block, order="C").view(np.uint8).reshape(-1)
        else:
            mask = np.ascontiguousarray(block != 0, dtype=np.uint8).reshape(-1)
        n0, n1, n2 = block.shape
        with workspace(n0 * n1 * n2) as ws:
            c6, nv, ne, ns, nc = k.complex_counts(mask, n0, n1, n2, ws.vox_i32)
        cavities = k.background_runs(mask, n0, n1, n2)
        beta2 = int(cavities[4].sum())
        beta1 = c6 + beta2 - (nv - ne + ns - nc)
        return cls(mask, (n0, n1, n2), (max(c6 - 1, 0), int(beta1), beta2),
                   int(ne - nv + c6), cavities)


class Timings:
    """Thread-safe accumulation of CPU seconds per named stage, counted on the thread that
    runs it (the kernels release the GIL but run on the calling thread): unlike wall time,
    this does not grow when other processes share the cores."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def timed(self, name, fn):
        t0 = time.thread_time()
        out = fn()
        dt = time.thread_time() - t0
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + dt
        return out


def match_block(f: InputBlock, g: InputBlock, timings: Timings | None = None, *,
                bound_dim1: bool = False) -> Counts:
    """(m_k, p_k, g_k) of one block (docs/metric.md section 11). With ``bound_dim1``, m_1 is
    its upper bound min(p_1, g_1) instead of the two image reductions (most of the cost)."""
    timings = timings or Timings()
    n0, n1, n2 = f.shape
    nvox = n0 * n1 * n2
    if 6 * nvox >= 2**31:
        raise ValueError(f"an octant of {f.shape} voxels is too large for the dim-1 kernel")
    if np.array_equal(f.mask, g.mask):
        # Identical inputs: V_F = V_G and H_k(K(F)) injects into every Y_0, so every class
        # matches (docs/metric.md 6.2): m_k = p_k = g_k.
        return {dim: (f.betti[dim], f.betti[dim], f.betti[dim]) for dim in range(3)}
    u = f.mask | g.mask
    with workspace(nvox) as ws:
        return _match_block(f, g, u, ws, timings, bound_dim1)


def _match_block(f: InputBlock, g: InputBlock, u: np.ndarray, ws: _Workspace, timings: Timings,
                 bound_dim1: bool) -> Counts:
    k = kernels()
    n0, n1, n2 = f.shape
    nvox = n0 * n1 * n2
    m0 = timings.timed("dim0", lambda: k.dim0_matches(f.mask, g.mask, n0, n1, n2, ws.vox_i32,
                                                      ws.vox_u8))

    def dim2():
        if f.betti[2] == 0 or g.betti[2] == 0:
            return 0
        kf = k.cavity_keys(*f.cavities, u, n2)
        kg = k.cavity_keys(*g.cavities, u, n2)
        return k.count_common_keys(kf, kg, nvox)

    m2 = timings.timed("dim2", dim2)
    m1 = 0
    if bound_dim1:
        m1 = min(f.betti[1], g.betti[1])
    elif f.betti[1] > 0 and g.betti[1] > 0:
        kus, ku_cleared = timings.timed("dim1.clearing", lambda: k.kus_births(
            u, n0, n1, n2, ws.vox_i32, ws.owners))  # owners: free until dim1_matches refills it
        # the other squares' classes are computed inside, only if the reduction gets there
        m1 = timings.timed("dim1.reduction", lambda: k.dim1_matches(
            f.mask, g.mask, u, kus, ku_cleared, n0, n1, n2, f.z1_dim, g.z1_dim, ws.vox_u8,
            ws.sq_u8[1], ws.sq_u8[2], ws.owners, ws.sq_u8[0], ws.vox_i32))
    return {0: (int(m0), f.betti[0], g.betti[0]),
            1: (int(m1), f.betti[1], g.betti[1]),
            2: (int(m2), f.betti[2], g.betti[2])}


def octant_task(pred_block: np.ndarray, g: InputBlock, timings: Timings | None = None) -> Counts:
    timings = timings or Timings()
    f = timings.timed("betti", lambda: InputBlock.build(pred_block))
    return match_block(f, g, timings)


def sum_counts(parts) -> Counts:
    total = {0: [0, 0, 0], 1: [0, 0, 0], 2: [0, 0, 0]}
    for counts in parts:
        for dim, trip in counts.items():
            for i in range(3):
                total[dim][i] += trip[i]
    return {dim: tuple(v) for dim, v in total.items()}


def match_blocks(pred_blocks: list[InputBlock], gt_blocks: list[InputBlock], *,
                 workers: int = 1, timings: Timings | None = None) -> Counts:
    """Sum the per-block (m_k, p_k, g_k) over all blocks."""
    if workers <= 1:
        return sum_counts(match_block(f, g, timings) for f, g in zip(pred_blocks, gt_blocks))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum_counts(pool.map(lambda fg: match_block(*fg, timings),
                                   zip(pred_blocks, gt_blocks)))


def build_blocks(mask: np.ndarray, *, workers: int = 1) -> list[InputBlock]:
    blocks = [mask[s] for s in octant_slices(mask.shape)]
    if workers <= 1:
        return [InputBlock.build(b) for b in blocks]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(InputBlock.build, blocks))


def topo_score(counts: Counts, weights=(0.34, 0.33, 0.33)) -> float:
    """Weighted F1 over the active dimensions (docs/metric.md part 1, step 4)."""
    num = 0.0
    den = 0.0
    for dim, w in zip((0, 1, 2), weights):
        m, p, g = counts[dim]
        if p == 0 and g == 0:
            continue
        f1 = 2.0 * m / (p + g) if g > 0 else 0.5 / (p + 0.5)
        num += w * f1
        den += w
    return 1.0 if den == 0 else num / den
