"""Nearest-neighbour queries on a uniform grid, in Taichi kernels (2D and 3D points): the nearest
point (NearestIndex), the k nearest within a reach (PointGrid.knn), the mean spacing.

>>> index = NearestIndex(points)          # (N, d)
>>> idx, dist = index.query(queries)      # (Q,) int64 indices into points, (Q,) float64 distances
"""

from __future__ import annotations

import numpy as np

from .. import runtime
from .._core import device as _device
from .._core.validate import as_points


def pad3(x: np.ndarray) -> np.ndarray:
    if x.shape[1] == 3:
        return x
    return np.column_stack([x, np.zeros(len(x), x.dtype)])


class PointGrid:
    """Points (N, 2 or 3) sorted into a uniform grid of about two points per cell."""

    def __init__(self, points: np.ndarray, per_cell: float = 2.0):
        runtime.ensure_init()
        rdt = runtime.real_dtype()
        p3 = pad3(np.asarray(points, np.float64)).astype(rdt)
        self._build(_device.upload(p3), len(p3), *grid_params(p3, per_cell))

    @classmethod
    def on_device(cls, pts3, n: int, lo: np.ndarray, hi: np.ndarray, per_cell: float = 2.0) -> "PointGrid":
        """A grid over the first n rows of a kernel array ``pts3`` (n, 3) already on the device,
        whose points lie in the box [lo, hi] (3-vectors): nothing is copied to or from the host."""
        runtime.ensure_init()
        grid = cls.__new__(cls)
        grid._build(pts3, int(n), *box_grid_params(np.asarray(lo, np.float64), np.asarray(hi, np.float64),
                                                   int(n), per_cell))
        return grid

    def _build(self, pts3, n: int, lo: np.ndarray, h: float, res: np.ndarray) -> None:
        self.n = n
        self.h = h
        self.pts = pts3
        self.lo = _device.upload(lo.astype(runtime.real_dtype()))
        self.res = _device.upload(res)
        # queries keep the k best by (distance, index), so the order inside a cell does not matter
        self.start, self.order = build_grid(self.pts, self.n, self.lo, h, res, sort=False)

    def nearest_on_device(self, queries3, n: int, reach: float):
        """Index (int32 kernel array (n, 1)) of the nearest grid point within ``reach`` of each of
        the first n rows of the kernel array ``queries3`` (n, 3), -1 where none is that close.
        Nothing leaves the device."""
        from . import _kernels as K

        rdt = runtime.real_dtype()
        near = _device.empty((n, 1), np.int32)
        near.fill(-1)
        if n:
            K.knn(self.pts, queries3, 0, float(min(reach, 1e30)), self.lo, self.h, self.res, self.start, self.order,
                  _device.empty((n, 1), rdt), near, _device.empty((n,), np.int32))
        return near

    def nearest_other_into(self, kd2, kid, cnt) -> None:
        """Squared distance to (``kd2`` (n, 1)) and index of (``kid`` (n, 1)) each grid point's
        nearest other point, ``cnt`` (n,) 1 where one exists, written into the caller's kernel
        arrays (they stay on the device)."""
        from . import _kernels as K

        if self.n:
            K.knn(self.pts, self.pts, 1, 1e30, self.lo, self.h, self.res, self.start, self.order, kd2, kid, cnt)

    def knn(self, k: int, queries: np.ndarray | None = None, reach: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest grid points within ``reach`` of every query, ascending: ``(index (Q, k)
        int64, distance (Q, k))``, -1 / inf where fewer exist. ``queries=None`` queries the
        grid's own points, each skipping itself."""
        from . import _kernels as K

        rdt = runtime.real_dtype()
        if queries is None:
            q3, nq, self_q = self.pts, self.n, 1
        else:
            q3 = _device.upload(pad3(np.asarray(queries, np.float64)).astype(rdt))
            nq, self_q = len(queries), 0
        k = int(k)
        kd2 = _device.zeros((nq, k), rdt)
        kid = _device.empty((nq, k), np.int32)
        cnt = _device.empty((nq,), np.int32)
        if nq and k:
            K.knn(self.pts, q3, self_q, float(min(reach, 1e30)), self.lo, self.h, self.res, self.start, self.order, kd2, kid, cnt)
        idx = _device.fetch(kid, nq).astype(np.int64)
        dist = np.sqrt(np.maximum(_device.fetch(kd2, nq).astype(np.float64), 0.0))
        have = np.arange(k)[None, :] < _device.fetch(cnt, nq)[:, None]
        idx[~have] = -1
        dist[~have] = np.inf
        return idx, dist


class NearestIndex(PointGrid):
    """Uniform grid over ``points`` (N, 2 or 3) answering exact nearest-neighbour queries.

    The cell size gives about two points per cell. Results are exact (ties go to the smaller
    index) and deterministic; the cost per query grows with the distance to its neighbour.
    """

    def __init__(self, points):
        pts = as_points(points, "points")
        if len(pts) == 0:
            raise ValueError("points: need at least one point")
        self.dim = pts.shape[1]
        super().__init__(pts)

    def query(self, queries) -> tuple[np.ndarray, np.ndarray]:
        """Nearest point of each query: ``(index (Q,) int64, distance (Q,) float64)``."""
        q = as_points(queries, "queries", dims=(self.dim,))
        idx, dist = self.knn(1, q)
        return idx[:, 0], dist[:, 0]


def grid_params(p3: np.ndarray, per_cell: float) -> tuple[np.ndarray, float, np.ndarray]:
    """Origin, cell size and resolution (int32, 3) of a grid holding about ``per_cell`` points per
    cell over the bounding box of ``p3`` (N, 3); flat axes get one cell. The cell size is an f32
    value, so kernels compiled for either precision place the points in the same cells."""
    lo, hi = bounding_box(p3)
    return box_grid_params(lo, hi, len(p3), per_cell)


def bounding_box(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) float64 per column of ``x`` (N, d), column by column (numpy's axis-0 reduction
    of a narrow array is about 20x slower)."""
    lo = np.array([x[:, j].min() for j in range(x.shape[1])], np.float64)
    hi = np.array([x[:, j].max() for j in range(x.shape[1])], np.float64)
    return lo, hi


def box_grid_params(lo: np.ndarray, hi: np.ndarray, n: int, per_cell: float) -> tuple[np.ndarray, float, np.ndarray]:
    """:func:`grid_params` for n points in the box [lo, hi]."""
    ext = np.maximum(hi - lo, 0.0)
    active = ext > 0
    vol = np.prod(ext[active]) if active.any() else 1.0
    k = int(active.sum()) or 1
    h = float((vol / max(n / per_cell, 1.0)) ** (1.0 / k)) if active.any() else 1.0
    h = max(h, float(ext.max()) / 1024.0, 1e-30)
    res = np.maximum(np.floor(ext / h).astype(np.int64) + 1, 1)
    while res.prod() > 4 * n + 64:  # cap the cell count
        h *= 1.25
        res = np.maximum(np.floor(ext / h).astype(np.int64) + 1, 1)
    h = float(np.float32(h))
    res = np.maximum(np.floor(ext / h).astype(np.int64) + 1, 1)
    return lo, h, res.astype(np.int32)


def build_grid(pts3, n: int, lo, h: float, res, sort: bool = True):
    """Counting sort of n points (an (n, 3) kernel array) into the cells of a uniform grid.

    Returns ``(start, order)`` kernel arrays: the points of flat cell f are
    ``order[start[f]:start[f + 1]]``, in ascending index order (deterministic) with ``sort``, in
    the order the parallel fill left them otherwise.
    """
    from .._core.scan import ExclusiveScan, sort_segments
    from . import _kernels as K

    ncell = int(np.prod(_device.fetch(res) if not isinstance(res, np.ndarray) else res))
    counts = _device.zeros((ncell,), np.int32)
    cell_of = _device.empty((n,), np.int32)
    K.count_cells(pts3, lo, h, res, counts, cell_of)
    start = _device.empty((ncell + 1,), np.int32)
    ExclusiveScan(ncell).run(counts, start, ncell)
    cursor = _device.zeros((ncell,), np.int32)
    order = _device.empty((n,), np.int32)
    K.fill_cells(cell_of, start, cursor, order)
    if sort:
        sort_segments(start, order)
    return start, order


def nearest(points, queries) -> tuple[np.ndarray, np.ndarray]:
    """Index of and distance to the nearest of ``points`` for each of ``queries``."""
    return NearestIndex(points).query(queries)


def spacing(points: np.ndarray) -> float:
    """Mean distance from a point to its nearest neighbour (the scale DMesh's defaults follow)."""
    pts = np.asarray(points, np.float64)
    if len(pts) < 2:
        return 1.0
    _, d = PointGrid(pts).knn(1)
    d = d[np.isfinite(d[:, 0]), 0]
    pos = d[d > 0]
    return float(pos.mean()) if len(pos) else 1.0
