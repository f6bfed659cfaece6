"""Uniform-grid point queries in Taichi kernels: nearest neighbours, k nearest within a reach,
the grid's CSR cell lists (which the Delaunay and DMesh kernels walk), point spacing.

>>> index = tigeom.spatial.NearestIndex(points)   # (N, 2|3)
>>> idx, dist = index.query(queries)               # (Q,) int64, (Q,) float64
"""

from .grid import (NearestIndex, PointGrid, bounding_box, box_grid_params, build_grid, grid_params, nearest, pad3,
                   spacing)

__all__ = ["NearestIndex", "PointGrid", "nearest", "spacing", "bounding_box", "grid_params", "box_grid_params",
           "build_grid", "pad3"]
