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
            while b >= start[f]:  # not `and order[b] > v`: no short-circuit, order[-1] at f = 0
                if order[b] > v:
                    order[b + 1] = order[b]
                    b -= 1
                else:
                    break
            order[b + 1] = v


@ti.func
def sorted_insert(dist: ti.template(), ids: ti.template(), q, pos, d, i):
    """Insert (d, i) into row q of a list kept sorted by (distance, index): entries before slot
    ``pos`` (the free slot) that sort after it move one slot right."""
    p = pos
    # the loop tests p > 0 on its own: Taichi's `and` does not short-circuit, and reading slot
    # p - 1 = -1 is an out-of-bounds access (harmless-looking on a CPU, a fault on CUDA)
    while p > 0:
        if dist[q, p - 1] > d or (dist[q, p - 1] == d and ids[q, p - 1] > i):
            dist[q, p] = dist[q, p - 1]
            ids[q, p] = ids[q, p - 1]
            p -= 1
        else:
            break
    dist[q, p] = d
    ids[q, p] = i


@ti.func
def knn_into(X3: ti.template(), x, skip, reach, lov, h, r3, start: ti.template(), order: ti.template(),
             kd2: ti.template(), kid: ti.template(), q):
    """The k = kd2.shape[1] nearest rows of X3 (N, 3) to x within distance ``reach`` (row ``skip``
    excluded), ascending by distance then index, into row q of kd2 (squared distances) and kid.
    Returns how many were found (< k when fewer lie within reach).

    Visits the shells of cells at Chebyshev distance r = 0, 1, ... around x's (clamped) cell, O(r^2)
    cells each; after shell r every unvisited point is at least r h away, so it stops once the
    k-th best is that close or r h reaches ``reach``."""
    rmax = ti.max(r3[0], ti.max(r3[1], r3[2]))
    K = kd2.shape[1]
    cell = _cell(x, lov, h, r3)
    cnt = 0
    r = 0
    while r <= rmax:
        for da, db in ti.ndrange((-r, r + 1), (-r, r + 1)):
            edge = ti.abs(da) == r or ti.abs(db) == r
            e = -r
            while e <= r:
                cc = cell + ti.Vector([da, db, e])
                if 0 <= cc[0] < r3[0] and 0 <= cc[1] < r3[1] and 0 <= cc[2] < r3[2]:
                    fl = _flat(cc, r3)
                    for s in range(start[fl], start[fl + 1]):
                        i = order[s]
                        d2 = 0.0
                        for d in ti.static(range(3)):
                            t = X3[i, d] - x[d]
                            d2 += t * t
                        worse = cnt == K and (d2 > kd2[q, K - 1] or (d2 == kd2[q, K - 1] and i > kid[q, K - 1]))
                        if i != skip and d2 <= reach * reach and not worse:
                            sorted_insert(kd2, kid, q, ti.min(cnt, K - 1), d2, i)
                            cnt = ti.min(cnt + 1, K)
                e += 1 if (edge or r == 0) else 2 * r
        if (cnt == K and kd2[q, K - 1] <= (r * h) * (r * h)) or r * h >= reach:
            break
        r += 1
    return cnt


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
