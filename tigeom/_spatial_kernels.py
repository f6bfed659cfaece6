"""Uniform-grid nearest-neighbour kernels (3D; 2D inputs are padded with z = 0).

Build: counting sort of the points into cells (count, scan, fill). Query: visit rings of cells at
Chebyshev distance r = 0, 1, 2, ... around the query's (clamped) cell and stop once the best
squared distance is at most (r h)^2: every unvisited point is at least r h away, because the
query's projection onto the grid box lies in its cell and projecting onto a convex set does not
increase distances. Ties go to the smaller index, so results are deterministic.
"""

import taichi as ti

nd_i32 = ti.types.ndarray(dtype=ti.i32, ndim=1)


@ti.func
def _cell(p, lo, h, res):
    c = ti.Vector([0, 0, 0])
    for d in ti.static(range(3)):
        c[d] = ti.min(ti.max(ti.cast(ti.floor((p[d] - lo[d]) / h), ti.i32), 0), res[d] - 1)
    return c


@ti.func
def _flat(c, res):
    return (c[0] * res[1] + c[1]) * res[2] + c[2]


@ti.kernel
def count_cells(pts: ti.types.ndarray(ndim=2), lo: ti.types.ndarray(ndim=1), h: float,
                res: nd_i32, counts: nd_i32, cell_of: nd_i32):
    r = ti.Vector([res[0], res[1], res[2]])
    lov = ti.Vector([lo[0], lo[1], lo[2]])
    for i in range(pts.shape[0]):
        p = ti.Vector([pts[i, 0], pts[i, 1], pts[i, 2]])
        f = _flat(_cell(p, lov, h, r), r)
        cell_of[i] = f
        ti.atomic_add(counts[f], 1)


@ti.kernel
def fill_cells(cell_of: nd_i32, start: nd_i32, cursor: nd_i32, order: nd_i32):
    for i in range(cell_of.shape[0]):
        f = cell_of[i]
        slot = ti.atomic_add(cursor[f], 1)
        order[start[f] + slot] = i


@ti.kernel
def sort_cells(start: nd_i32, order: nd_i32):
    """Sort each cell's point indices (insertion sort; cells hold a handful): deterministic order."""
    for f in range(start.shape[0] - 1):
        for a in range(start[f] + 1, start[f + 1]):
            v = order[a]
            b = a - 1
            while b >= start[f] and order[b] > v:
                order[b + 1] = order[b]
                b -= 1
            order[b + 1] = v


@ti.kernel
def nearest(pts: ti.types.ndarray(ndim=2), qs: ti.types.ndarray(ndim=2), lo: ti.types.ndarray(ndim=1),
            h: float, res: nd_i32, start: nd_i32, order: nd_i32, out_idx: nd_i32,
            out_d2: ti.types.ndarray(ndim=1)):
    r3 = ti.Vector([res[0], res[1], res[2]])
    lov = ti.Vector([lo[0], lo[1], lo[2]])
    rmax = ti.max(r3[0], ti.max(r3[1], r3[2]))
    for q in range(qs.shape[0]):
        x = ti.Vector([qs[q, 0], qs[q, 1], qs[q, 2]])
        c = _cell(x, lov, h, r3)
        best = ti.cast(-1, ti.i32)
        bd = ti.cast(0.0, float)
        r = 0
        while r <= rmax:
            # the shell of cells at Chebyshev distance exactly r: O(r^2) cells, not the whole cube
            for a, b in ti.ndrange((-r, r + 1), (-r, r + 1)):
                edge = ti.abs(a) == r or ti.abs(b) == r
                e = -r
                while e <= r:
                    cc = c + ti.Vector([a, b, e])
                    if 0 <= cc[0] < r3[0] and 0 <= cc[1] < r3[1] and 0 <= cc[2] < r3[2]:
                        f = _flat(cc, r3)
                        for s in range(start[f], start[f + 1]):
                            i = order[s]
                            d2 = 0.0
                            for d in ti.static(range(3)):
                                t = pts[i, d] - x[d]
                                d2 += t * t
                            if best < 0 or d2 < bd or (d2 == bd and i < best):
                                best = i
                                bd = d2
                    e += 1 if (edge or r == 0) else 2 * r
            if best >= 0 and bd <= (r * h) * (r * h):
                break
            r += 1
        out_idx[q] = best
        out_d2[q] = bd
