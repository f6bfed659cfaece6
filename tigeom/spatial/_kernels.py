"""Uniform-grid nearest-neighbour kernels (3D; 2D inputs are padded with z = 0).

Build: counting sort of the points into cells (count, scan, fill). Query: visit rings of cells at
Chebyshev distance r = 0, 1, 2, ... around the query's (clamped) cell and stop once the best
squared distance is at most (r h)^2: every unvisited point is at least r h away, because the
query's projection onto the grid box lies in its cell and projecting onto a convex set does not
increase distances. Ties go to the smaller index, so results are deterministic.
"""

import taichi as ti

from .._core.gridfuncs import cell_index, flat_index, knn_into

nd_i32 = ti.types.ndarray(dtype=ti.i32, ndim=1)


@ti.kernel
def count_cells(pts: ti.types.ndarray(ndim=2), lo: ti.types.ndarray(ndim=1), h: float,
                res: nd_i32, counts: nd_i32, cell_of: nd_i32):
    r = ti.Vector([res[0], res[1], res[2]])
    lov = ti.Vector([lo[0], lo[1], lo[2]])
    for i in range(pts.shape[0]):
        p = ti.Vector([pts[i, 0], pts[i, 1], pts[i, 2]])
        f = flat_index(cell_index(p, lov, h, r), r)
        cell_of[i] = f
        ti.atomic_add(counts[f], 1)


@ti.kernel
def fill_cells(cell_of: nd_i32, start: nd_i32, cursor: nd_i32, order: nd_i32):
    for i in range(cell_of.shape[0]):
        f = cell_of[i]
        slot = ti.atomic_add(cursor[f], 1)
        order[start[f] + slot] = i


@ti.kernel
def knn(X3: ti.types.ndarray(ndim=2), Q3: ti.types.ndarray(ndim=2), self_query: ti.i32, reach: float,
        lo: ti.types.ndarray(ndim=1), h: float, res: nd_i32, start: nd_i32, order: nd_i32,
        kd2: ti.types.ndarray(ndim=2), kid: ti.types.ndarray(dtype=ti.i32, ndim=2), count: nd_i32):
    """k nearest rows of X3 for every row of Q3 (with self_query, Q3 is X3 and row q skips itself);
    ties go to the smaller index, so results are deterministic."""
    r3 = ti.Vector([res[0], res[1], res[2]])
    lov = ti.Vector([lo[0], lo[1], lo[2]])
    for q in range(Q3.shape[0]):
        skip = -1
        if self_query:
            skip = q
        x = ti.Vector([Q3[q, 0], Q3[q, 1], Q3[q, 2]])
        count[q] = knn_into(X3, x, skip, reach, lov, h, r3, start, order, kd2, kid, q)
