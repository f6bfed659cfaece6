"""A uniform grid over a point set for the DMesh queries (k nearest neighbours, min-ball search)."""

from __future__ import annotations

import numpy as np

from .. import _device, runtime
from ..spatial import _pad3, build_grid, grid_params


class PointGrid:
    """Points (N, 2 or 3) sorted into a uniform grid of about two points per cell."""

    def __init__(self, points: np.ndarray, per_cell: float = 2.0):
        runtime.ensure_init()
        rdt = runtime.real_dtype()
        p3 = _pad3(np.asarray(points, np.float64)).astype(rdt)
        self.n = len(p3)
        lo, h, res = grid_params(p3, per_cell)
        self.h = h
        self.pts = _device.upload(p3)
        self.lo = _device.upload(lo.astype(rdt))
        self.res = _device.upload(res)
        self.start, self.order = build_grid(self.pts, self.n, self.lo, h, self.res)

    def knn(self, k: int, queries: np.ndarray | None = None, reach: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest grid points within ``reach`` of every query, ascending: ``(index (Q, k)
        int64, distance (Q, k))``, -1 / inf where fewer exist. ``queries=None`` queries the
        grid's own points, each skipping itself."""
        from .. import _spatial_kernels as K

        rdt = runtime.real_dtype()
        if queries is None:
            q3, nq, self_q = self.pts, self.n, 1
        else:
            q3 = _device.upload(_pad3(np.asarray(queries, np.float64)).astype(rdt))
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


def spacing(points: np.ndarray) -> float:
    """Mean distance from a point to its nearest neighbour (the scale DMesh's defaults follow)."""
    pts = np.asarray(points, np.float64)
    if len(pts) < 2:
        return 1.0
    _, d = PointGrid(pts).knn(1)
    d = d[np.isfinite(d[:, 0]), 0]
    pos = d[d > 0]
    return float(pos.mean()) if len(pos) else 1.0
