"""Taichi functions of the uniform point grid, shared by the kernels of several parts.

The grid (``tigeom.spatial.build_grid``) sorts points into cells of width ``h`` from ``lo``;
``start``/``order`` are its CSR arrays. These are ``ti.func``s: they compile into the kernels
that call them.
"""

import taichi as ti


@ti.func
def cell_index(p, lo, h, res):
    c = ti.Vector([0, 0, 0])
    for d in ti.static(range(3)):
        c[d] = ti.min(ti.max(ti.cast(ti.floor((p[d] - lo[d]) / h), ti.i32), 0), res[d] - 1)
    return c


@ti.func
def flat_index(c, res):
    return (c[0] * res[1] + c[1]) * res[2] + c[2]


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
    cell = cell_index(x, lov, h, r3)
    cnt = 0
    r = 0
    while r <= rmax:
        for da, db in ti.ndrange((-r, r + 1), (-r, r + 1)):
            edge = ti.abs(da) == r or ti.abs(db) == r
            e = -r
            while e <= r:
                cc = cell + ti.Vector([da, db, e])
                if 0 <= cc[0] < r3[0] and 0 <= cc[1] < r3[1] and 0 <= cc[2] < r3[2]:
                    fl = flat_index(cc, r3)
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


