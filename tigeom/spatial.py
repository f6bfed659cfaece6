"""Nearest-neighbour queries on a uniform grid, in Taichi kernels (2D and 3D points).

>>> index = NearestIndex(points)          # (N, d)
>>> idx, dist = index.query(queries)      # (Q,) int64 indices into points, (Q,) float64 distances
"""

from __future__ import annotations

import numpy as np

from . import _device, runtime
from ._validate import as_points


def _pad3(x: np.ndarray) -> np.ndarray:
    if x.shape[1] == 3:
        return x
    return np.column_stack([x, np.zeros(len(x), x.dtype)])


class NearestIndex:
    """Uniform grid over ``points`` (N, 2 or 3) answering exact nearest-neighbour queries.

    The cell size gives about two points per cell. Results are exact (ties go to the smaller
    index) and deterministic; the cost per query grows with the distance to its neighbour.
    """

    def __init__(self, points):
        pts = as_points(points, "points")
        if len(pts) == 0:
            raise ValueError("points: need at least one point")
        self.dim = pts.shape[1]
        runtime.ensure_init()
        rdt = runtime.real_dtype()
        p3 = _pad3(pts).astype(rdt)
        lo, h, res = grid_params(p3, 2.0)
        self.h, self.lo, self.res = h, lo, res
        self._pts = _device.upload(p3)
        self._lo = _device.upload(lo.astype(rdt))
        self._res = _device.upload(self.res)
        self._start, self._order = build_grid(self._pts, len(pts), self._lo, h, self._res)
        self.n = len(pts)

    def query(self, queries) -> tuple[np.ndarray, np.ndarray]:
        """Nearest point of each query: ``(index (Q,) int64, distance (Q,) float64)``."""
        q = as_points(queries, "queries", dims=(self.dim,))
        from . import _spatial_kernels as K

        rdt = runtime.real_dtype()
        idx = _device.empty((len(q), 1), np.int32)
        d2 = _device.zeros((len(q), 1), rdt)
        cnt = _device.empty((len(q),), np.int32)
        if len(q):
            K.knn(self._pts, _device.upload(_pad3(q).astype(rdt)), 0, 1e30, self._lo, self.h, self._res,
                  self._start, self._order, d2, idx, cnt)
        return (_device.fetch(idx, len(q))[:, 0].astype(np.int64),
                np.sqrt(np.maximum(_device.fetch(d2, len(q))[:, 0].astype(np.float64), 0.0)))


def grid_params(p3: np.ndarray, per_cell: float) -> tuple[np.ndarray, float, np.ndarray]:
    """Origin, cell size and resolution (int32, 3) of a grid holding about ``per_cell`` points per
    cell over the bounding box of ``p3`` (N, 3); flat axes get one cell. The cell size is an f32
    value, so kernels compiled for either precision place the points in the same cells."""
    lo, hi = p3.min(0), p3.max(0)
    ext = np.maximum(hi - lo, 0.0)
    active = ext > 0
    vol = np.prod(ext[active]) if active.any() else 1.0
    k = int(active.sum()) or 1
    n = len(p3)
    h = float((vol / max(n / per_cell, 1.0)) ** (1.0 / k)) if active.any() else 1.0
    h = max(h, float(ext.max()) / 1024.0, 1e-30)
    res = np.maximum(np.floor(ext / h).astype(np.int64) + 1, 1)
    while res.prod() > 4 * n + 64:  # cap the cell count
        h *= 1.25
        res = np.maximum(np.floor(ext / h).astype(np.int64) + 1, 1)
    h = float(np.float32(h))
    res = np.maximum(np.floor(ext / h).astype(np.int64) + 1, 1)
    return lo, h, res.astype(np.int32)


def build_grid(pts3, n: int, lo, h: float, res):
    """Counting sort of n points (an (n, 3) kernel array) into the cells of a uniform grid.

    Returns ``(start, order)`` kernel arrays: the points of flat cell f are
    ``order[start[f]:start[f + 1]]``, in ascending index order (deterministic).
    """
    from . import _scan
    from . import _spatial_kernels as K

    ncell = int(np.prod(_device.fetch(res) if not isinstance(res, np.ndarray) else res))
    counts = _device.zeros((ncell,), np.int32)
    cell_of = _device.empty((n,), np.int32)
    K.count_cells(pts3, lo, h, res, counts, cell_of)
    start = _device.empty((ncell + 1,), np.int32)
    _scan.ExclusiveScan(ncell).run(counts, start, ncell)
    cursor = _device.zeros((ncell,), np.int32)
    order = _device.empty((n,), np.int32)
    K.fill_cells(cell_of, start, cursor, order)
    K.sort_cells(start, order)
    return start, order


def nearest(points, queries) -> tuple[np.ndarray, np.ndarray]:
    """Index of and distance to the nearest of ``points`` for each of ``queries``."""
    return NearestIndex(points).query(queries)
