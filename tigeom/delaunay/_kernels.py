"""Taichi kernels of the weighted Delaunay triangulation: power cells by half-space clipping.

Every cell is clipped in the local frame of its point (coordinates relative to p_i), in f64
whatever the runtime precision. A plane is named by a global point index (the power bisector
between p_i and that point: keep g(y) = 2 d.y - (|d|^2 - w_j + w_i) <= 0, d = p_j - p_i) or by
-1-k for the k-th face of the clipping box (k = 2 axis + side).

Decisions. A cell vertex made of bisectors only is the power centre of a simplex (i, S); point
j removes it when it lies inside that simplex's power sphere. Far from a tie the sign of g at
the vertex decides. Near a tie the lifted predicate decides, evaluated on the input
coordinates in a canonical order (indices sorted, sign corrected by the permutation's parity),
so every cell that meets the same d + 2 points answers the same. When its floating-point error
bound cannot certify the sign, the tie is broken by symbolic perturbation of the weights (point
k gets w_k + eps^(k+1), lower indices dominating; k is the point's label, its place in the grid
order, see cells.CellSetup), which is a genuine perturbation of the input
and therefore consistent across cells. Vertices that involve a box face are decided by g.

The host checks afterwards that every simplex is reported by each of its d + 1 cells; cells
that disagree are recomputed with exact rational arithmetic (see ``delaunay._exact``).
"""

import taichi as ti

from .._core.gridfuncs import sorted_insert
from .._core.launch import light_compile

nd_i32 = ti.types.ndarray(dtype=ti.i32, ndim=1)
nd_i32_2 = ti.types.ndarray(dtype=ti.i32, ndim=2)
nd_i32_3 = ti.types.ndarray(dtype=ti.i32, ndim=3)
nd_i64_2 = ti.types.ndarray(dtype=ti.i64, ndim=2)
nd_f64 = ti.types.ndarray(dtype=ti.f64, ndim=1)
nd_f64_2 = ti.types.ndarray(dtype=ti.f64, ndim=2)
nd_f64_3 = ti.types.ndarray(dtype=ti.f64, ndim=3)

EPS_ORIENT = 1e-15  # relative error bound of an orientation determinant (Shewchuk: 3.3e-16)
EPS_LIFT = 1e-14  # relative error bound of a lifted determinant (weights and squares included)
R1_2D = 0  # rings gathered and clipped nearest-first before the ring-by-ring search
R1_3D = 1
# 3D: gathered candidates are clipped in bands of distance (in grid cells), nearest band first:
# near bisectors shrink the cell early, so most far candidates fail the security test
# (band k ends at BAND0 * BAND_GROWTH**k cells, the last one is open)
BAND0 = 0.35
BAND_GROWTH = 1.18
NPASS = 10
EPS_G = 1e-9  # relative band of the fast vertex test inside which the lifted predicate decides
# Relative slack of the security distances. Wrap as ti.f64(...) inside kernels: a bare literal
# such as (1.0 + 1e-9) is folded in the default float type, which is f32 (1.0 + 1e-9 == 1.0), and
# a point at exactly the security distance (a grid's diagonal neighbour) was then skipped
# although the symbolic perturbation lets it cut the cell.
GROW = 1.0 + 1e-9
SHRINK = 1.0 - 1e-9

# status bits per cell
ST_HIDDEN = 1
ST_OVERFLOW = 2  # cell too complex for the scratch capacity: rerun with more room
ST_BROKEN = 4  # clipping met an inconsistent configuration: recompute exactly on the host


@ti.func
def _f64(x):
    return ti.cast(x, ti.f64)


# --------------------------------------------------------------------------- predicates


@ti.func
def _sort_small(v, n: ti.template()):
    """Sort the first n entries of an int vector ascending; return the sorted copy and the parity
    (+1/-1). ``v`` is taken by value: the caller's vector keeps its order (conflict_exact relies on
    that to combine the parities of its two sorts)."""
    par = 1
    for a in range(n - 1):  # runtime loops: far less code to compile than the unrolled network
        for b in range(n - 1 - a):
            if v[b] > v[b + 1]:
                t = v[b]
                v[b] = v[b + 1]
                v[b + 1] = t
                par = -par
    return v, par


@ti.func
def _pt(P: ti.template(), i, dim: ti.template()):
    v = ti.Vector.zero(ti.f64, dim)
    for d in ti.static(range(dim)):
        v[d] = P[i, d]
    return v


@ti.func
def _det2(a, b):
    return a[0] * b[1] - a[1] * b[0]


@ti.func
def _det3(a, b, c):
    return a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0]) + a[2] * (
        b[0] * c[1] - b[1] * c[0])


@ti.func
def _perm3(a, b, c):
    A, B, C = ti.abs(a), ti.abs(b), ti.abs(c)
    return A[0] * (B[1] * C[2] + B[2] * C[1]) + A[1] * (B[0] * C[2] + B[2] * C[0]) + A[2] * (
        B[0] * C[1] + B[1] * C[0])


@ti.func
def _sign_orient_sorted(P: ti.template(), v: ti.template(), dim: ti.template()):
    """Sign of the homogeneous orientation det [x 1] of the d + 1 points v (already sorted);
    0 when the error bound cannot certify it."""
    s = 0
    if ti.static(dim == 2):
        p0 = _pt(P, v[0], 2)
        a = _pt(P, v[1], 2) - p0
        b = _pt(P, v[2], 2) - p0
        det = _det2(a, b)
        bound = EPS_ORIENT * (ti.abs(a[0] * b[1]) + ti.abs(a[1] * b[0]))
        if det > bound:
            s = 1
        elif det < -bound:
            s = -1
    else:
        p0 = _pt(P, v[0], 3)
        a = _pt(P, v[1], 3) - p0
        b = _pt(P, v[2], 3) - p0
        c = _pt(P, v[3], 3) - p0
        det = -_det3(a, b, c)  # homogeneous 4x4 = (-1)^3 det_rel
        bound = EPS_ORIENT * 2.0 * _perm3(a, b, c)
        if det > bound:
            s = 1
        elif det < -bound:
            s = -1
    return s


@ti.func
def _lifted_row(P: ti.template(), W: ti.template(), k, p0, w0, dim: ti.template()):
    """Row (d, |d|^2 - w_k + w_0) relative to point 0, and its magnitude row for the bound."""
    d = _pt(P, k, dim) - p0
    r = ti.Vector.zero(ti.f64, dim + 1)
    m = ti.Vector.zero(ti.f64, dim + 1)
    for a in ti.static(range(dim)):
        r[a] = d[a]
        m[a] = ti.abs(d[a])
    r[dim] = d.dot(d) - W[k] + w0
    m[dim] = d.dot(d) + ti.abs(W[k]) + ti.abs(w0)
    return r, m


@ti.func
def _sign_lifted_sorted(P: ti.template(), W: ti.template(), v: ti.template(), dim: ti.template()):
    """Sign of the homogeneous lifted det [x |x|^2-w 1] of the d + 2 sorted points v, with the
    symbolic weight perturbation deciding exact (or uncertifiable) zeros."""
    p0 = _pt(P, v[0], dim)
    w0 = W[v[0]]
    s = 0
    if ti.static(dim == 2):
        r1, m1 = _lifted_row(P, W, v[1], p0, w0, 2)
        r2, m2 = _lifted_row(P, W, v[2], p0, w0, 2)
        r3, m3 = _lifted_row(P, W, v[3], p0, w0, 2)
        det = -_det3(r1, r2, r3)  # homogeneous 4x4 = (-1)^3 det_rel
        bound = EPS_LIFT * _perm3(m1, m2, m3)
        if det > bound:
            s = 1
        elif det < -bound:
            s = -1
    else:
        r1, m1 = _lifted_row(P, W, v[1], p0, w0, 3)
        r2, m2 = _lifted_row(P, W, v[2], p0, w0, 3)
        r3, m3 = _lifted_row(P, W, v[3], p0, w0, 3)
        r4, m4 = _lifted_row(P, W, v[4], p0, w0, 3)
        # expansion along the lifted column; the homogeneous 5x5 det equals det_rel
        x1 = ti.Vector([r1[0], r1[1], r1[2]])
        x2 = ti.Vector([r2[0], r2[1], r2[2]])
        x3 = ti.Vector([r3[0], r3[1], r3[2]])
        x4 = ti.Vector([r4[0], r4[1], r4[2]])
        a1 = ti.Vector([m1[0], m1[1], m1[2]])
        a2 = ti.Vector([m2[0], m2[1], m2[2]])
        a3 = ti.Vector([m3[0], m3[1], m3[2]])
        a4 = ti.Vector([m4[0], m4[1], m4[2]])
        det = (-r1[3] * _det3(x2, x3, x4) + r2[3] * _det3(x1, x3, x4)
               - r3[3] * _det3(x1, x2, x4) + r4[3] * _det3(x1, x2, x3))
        perm = (m1[3] * _perm3(a2, a3, a4) + m2[3] * _perm3(a1, a3, a4)
                + m3[3] * _perm3(a1, a2, a4) + m4[3] * _perm3(a1, a2, a3))
        bound = EPS_LIFT * 4.0 * perm
        if det > bound:
            s = 1
        elif det < -bound:
            s = -1
    # D(eps) = D - sum_r eps_r C_r, C_r = (-1)^(r+d) H(others); the first (lowest index) r with
    # H != 0 decides: sign = -(-1)^(r+d) sign(H). A runtime loop: the orientation is inlined once
    r = 0
    while s == 0 and r < dim + 2:
        o = ti.Vector.zero(ti.i32, dim + 1)  # v without its entry r
        for q in ti.static(range(dim + 1)):
            o[q] = v[q] if q < r else v[q + 1]
        h = _sign_orient_sorted(P, o, dim)
        if h != 0:
            s = h if (r + dim) % 2 == 1 else -h
        r += 1
    return s


@ti.func
def conflict_exact(P: ti.template(), W: ti.template(), i, S: ti.template(), j, dim: ti.template()):
    """True when point j lies inside the power sphere of simplex (i, S): the lifted test."""
    u = ti.Vector.zero(ti.i32, dim + 1)
    u[0] = i
    for a in ti.static(range(dim)):
        u[a + 1] = S[a]
    us, pu = _sort_small(u, dim + 1)
    h = _sign_orient_sorted(P, us, dim) * pu
    res = False
    if h != 0:
        v = ti.Vector.zero(ti.i32, dim + 2)
        for a in ti.static(range(dim + 1)):
            v[a] = u[a]
        v[dim + 1] = j
        vs, pv = _sort_small(v, dim + 2)
        D = _sign_lifted_sorted(P, W, vs, dim) * pv
        res = D * h > 0
    return res


# --------------------------------------------------------------------------- planes


@ti.func
def _plane(P: ti.template(), W: ti.template(), i, pid, pi, box_lo, box_hi, dim: ti.template()):
    """(normal, offset) of plane pid in the local frame of point i: keep n.y <= c."""
    n = ti.Vector.zero(ti.f64, dim)
    c = _f64(0.0)
    if pid >= 0:
        d = _pt(P, pid, dim) - pi
        n = 2.0 * d
        c = d.dot(d) - W[pid] + W[i]
    else:
        k = -1 - pid
        ax = k // 2
        for a in ti.static(range(dim)):
            if a == ax:
                if k % 2 == 0:
                    n[a] = -1.0
                    c = -(box_lo[a] - pi[a])
                else:
                    n[a] = 1.0
                    c = box_hi[a] - pi[a]
    return n, c


@ti.func
def _sos_box_vertex(P: ti.template(), W: ti.template(), i, pi, S: ti.template(), j, n, box_lo, box_hi,
                    dim: ti.template()):
    """Tie at a vertex that involves a box face: the sign of dg under the weight perturbation
    w_k + eps_k (lower index dominant). With u = N^-T n_j (N: the vertex's plane normals),
    dg = eps_i (sum_bis u_k - 1) - sum_bis u_k eps_k + eps_j; the lowest index with a non-zero
    coefficient decides."""
    N = ti.Matrix.zero(ti.f64, dim, dim)
    for a in ti.static(range(dim)):
        na, ca = _plane(P, W, i, S[a], pi, box_lo, box_hi, dim)
        for b in ti.static(range(dim)):
            N[a, b] = na[b]
    u = N.transpose().inverse() @ n
    ci = _f64(-1.0)
    for a in ti.static(range(dim)):
        if S[a] >= 0:
            ci += u[a]
    # candidates: i, j and the bisectors of S; pick the smallest index with a non-zero coefficient
    best = 2147483647
    coef = _f64(0.0)
    if ti.abs(ci) > 1e-9:
        best = i
        coef = ci
    if j < best:
        best = j
        coef = 1.0
    for a in ti.static(range(dim)):
        if S[a] >= 0 and S[a] < best and ti.abs(u[a]) > 1e-9:
            best = S[a]
            coef = -u[a]
    return coef > 0


@ti.func
def _conflict_tie(P: ti.template(), W: ti.template(), i, pi, S: ti.template(), j, n, box_lo, box_hi,
                  dim: ti.template()):
    """The exact or symbolically perturbed decision for a vertex inside the float filter's band."""
    allbis = True
    for a in ti.static(range(dim)):
        if S[a] < 0:
            allbis = False
    res = False
    if allbis:
        res = conflict_exact(P, W, i, S, j, dim)
    else:
        res = _sos_box_vertex(P, W, i, pi, S, j, n, box_lo, box_hi, dim)
    return res


@ti.func
def _is_conflict(P: ti.template(), W: ti.template(), i, pi, S: ti.template(), y, j, n, c, box_lo, box_hi,
                 dim: ti.template()):
    """Does bisector j (plane n.y <= c) remove the cell vertex y = intersection of planes S?"""
    g = n.dot(y) - c
    res = g > 0
    if ti.abs(g) <= EPS_G * (ti.abs(n).dot(ti.abs(y)) + ti.abs(c)):
        res = _conflict_tie(P, W, i, pi, S, j, n, box_lo, box_hi, dim)
    return res


@ti.func
def _vertex2(P: ti.template(), W: ti.template(), i, pi, a, b, box_lo, box_hi):
    na, ca = _plane(P, W, i, a, pi, box_lo, box_hi, 2)
    nb, cb = _plane(P, W, i, b, pi, box_lo, box_hi, 2)
    det = _det2(na, nb)
    y = ti.Vector([ca * nb[1] - cb * na[1], na[0] * cb - nb[0] * ca]) / det
    return y, det != 0.0


@ti.func
def _vertex3(P: ti.template(), W: ti.template(), i, pi, a, b, c, box_lo, box_hi):
    na, ca = _plane(P, W, i, a, pi, box_lo, box_hi, 3)
    nb, cb = _plane(P, W, i, b, pi, box_lo, box_hi, 3)
    nc, cc = _plane(P, W, i, c, pi, box_lo, box_hi, 3)
    bc = nb.cross(nc)
    det = na.dot(bc)
    y = (ca * bc + cb * nc.cross(na) + cc * na.cross(nb)) / det
    return y, det != 0.0


@ti.func
def inside_box_canonical(P: ti.template(), W: ti.template(), i, S: ti.template(), box_lo, box_hi, band, dim: ti.template()):
    """Whether the power centre of simplex (i, S) lies inside the box shrunk by band, computed
    from the sorted indices in one fixed way, so every cell of the simplex gets the same answer."""
    u = ti.Vector.zero(ti.i32, dim + 1)
    u[0] = i
    for a in ti.static(range(dim)):
        u[a + 1] = S[a]
    us, par = _sort_small(u, dim + 1)
    p0 = _pt(P, us[0], dim)
    x = p0
    if ti.static(dim == 2):
        e1 = _pt(P, us[1], 2) - p0
        e2 = _pt(P, us[2], 2) - p0
        b1 = 0.5 * (e1.dot(e1) - W[us[1]] + W[us[0]])
        b2 = 0.5 * (e2.dot(e2) - W[us[2]] + W[us[0]])
        det = _det2(e1, e2)
        x = p0 + ti.Vector([b1 * e2[1] - b2 * e1[1], e1[0] * b2 - e2[0] * b1]) / det
    else:
        e1 = _pt(P, us[1], 3) - p0
        e2 = _pt(P, us[2], 3) - p0
        e3 = _pt(P, us[3], 3) - p0
        b1 = 0.5 * (e1.dot(e1) - W[us[1]] + W[us[0]])
        b2 = 0.5 * (e2.dot(e2) - W[us[2]] + W[us[0]])
        b3 = 0.5 * (e3.dot(e3) - W[us[3]] + W[us[0]])
        c23 = e2.cross(e3)
        det = e1.dot(c23)
        x = p0 + (b1 * c23 + b2 * e3.cross(e1) + b3 * e1.cross(e2)) / det
    ok = True
    for a in ti.static(range(dim)):
        if not (box_lo[a] + band < x[a] < box_hi[a] - band):
            ok = False
    return ok


# --------------------------------------------------------------------------- grid rings


@ti.func
def _cell_of(p, lo, h, res, dim: ti.template()):
    c = ti.Vector.zero(ti.i32, 3)
    for d in ti.static(range(dim)):
        c[d] = ti.min(ti.max(ti.cast(ti.floor((p[d] - lo[d]) / h), ti.i32), 0), res[d] - 1)
    return c


@ti.func
def _box_dist2(p, cell, lo, h):
    """Squared distance from p to grid cell `cell` (3D), less a slack of 1e-6 h plus the round-off
    of the coordinates per axis, so that it never exceeds the distance to a point filed in that
    cell: cells at least the security distance away can be skipped."""
    d2 = _f64(0.0)
    for a in ti.static(range(3)):
        c_lo = lo[a] + cell[a] * h
        gap = ti.max(c_lo - p[a], p[a] - (c_lo + h))
        gap -= 1e-6 * h + 1e-15 * (ti.abs(p[a]) + ti.abs(lo[a]))
        if gap > 0:
            d2 += gap * gap
    return d2


@ti.func
def _security(R2, dw):
    """Squared distance beyond which a point cannot cut a cell of squared radius R2 (dw: the
    largest weight minus the cell's own): |d| >= R + sqrt(R^2 + dw), with a little slack."""
    R = ti.sqrt(R2)
    need = (R + ti.sqrt(R2 + ti.max(dw, 0.0))) * ti.f64(GROW)
    return need * need


@ti.func
def _need2_2(vy: ti.template(), w, cur, n, dw):
    R2 = _f64(0.0)
    for k in range(n):
        R2 = ti.max(R2, vy[w, cur, k, 0] ** 2 + vy[w, cur, k, 1] ** 2)
    return _security(R2, dw)


@ti.func
def _need2_3(vy: ti.template(), w, nt, dw):
    R2 = _f64(0.0)
    for t in range(nt):
        R2 = ti.max(R2, vy[w, t, 0] ** 2 + vy[w, t, 1] ** 2 + vy[w, t, 2] ** 2)
    return _security(R2, dw)


@ti.func
def _gather(P: ti.template(), skip: ti.template(), start: ti.template(), order: ti.template(), i, pi, c, r1,
            r3, cand: ti.template(), cdist: ti.template(), w, dim: ti.template()):
    """The points of the grid cells within Chebyshev distance r1 of cell c with their squared
    distances to p_i; in 2D sorted by distance (insertion sort: a handful of entries), in 3D in
    grid order (about 80 entries: sorting them cost more than it saved; cells3d clips them in
    distance bands). Returns their count, or -1 when they overflow."""
    kc = cand.shape[1]
    m = 0
    for a, b, e in ti.ndrange((-r1, r1 + 1), (-r1, r1 + 1), (-r1 if ti.static(dim == 3) else 0,
                                                               r1 + 1 if ti.static(dim == 3) else 1)):
        cx, cy, cz = c[0] + a, c[1] + b, c[2] + e
        if 0 <= cx < r3[0] and 0 <= cy < r3[1] and 0 <= cz < r3[2]:
            f = (cx * r3[1] + cy) * r3[2] + cz
            for sidx in range(start[f], start[f + 1]):
                j = order[sidx]
                if j != i and skip[j] == 0:
                    if m < kc:
                        dj = _pt(P, j, dim) - pi
                        d2 = dj.dot(dj)
                        if ti.static(dim == 2):
                            sorted_insert(cdist, cand, w, m, d2, j)
                        else:  # 3D: the clipping loop visits them in distance bands instead
                            cdist[w, m] = d2
                            cand[w, m] = j
                    m += 1
    if m > kc:
        m = -1
    return m


@ti.func
def _band_hi2(pas, h):
    """Squared outer radius of distance band ``pas`` of the gathered candidates (the last band
    takes the rest)."""
    hi2 = ti.f64(1e300)
    if pas < NPASS - 1:
        hi2 = (ti.f64(BAND0) * ti.pow(ti.f64(BAND_GROWTH), pas) * h) ** 2
    return hi2


@ti.func
def _ring_done(st, r, rmax, h, need2):
    """After ring r: stop on a status, past the grid, or once unvisited points (at least r h
    away) lie beyond the security distance."""
    return st != 0 or r > rmax or (r * h * ti.f64(SHRINK)) ** 2 >= need2


@ti.func
def _rings_start(r1, h, need2):
    """(first ring, phase) after the gathered candidates of the cells within r1: ring r1 + 1 in
    phase 1, or phase 2 (finished) when those cells already cover the security distance."""
    phase = 1
    if (r1 * h * ti.f64(SHRINK)) ** 2 >= need2:
        phase = 2
    return r1 + 1, phase


@ti.func
def _ring_next(st, r, rmax, h, need2):
    """(next ring, phase) once ring r is visited: phase 2 when no point beyond it can cut the
    cell (a visit then starts no further ring), else ring r + 1 in phase 1."""
    phase = 1
    if _ring_done(st, r, rmax, h, need2):
        phase = 2
    else:
        r += 1
    return r, phase


@ti.func
def _emit(buf: ti.template(), counter: ti.template(), i, k, S: ti.template(), m: ti.template(), slot, left,
          chunk: ti.template()):
    """Append row (i, k, sorted S) to buf. A worker reserves `chunk` rows at a time with one
    atomic on the shared counter (on the CPU, one atomic per row cost more than the rest of the
    emission); returns the worker's (next slot, rows left in its reservation). The counter still
    counts reservations that do not fit, so the host can retry with the exact capacity."""
    if left == 0:
        slot = ti.atomic_add(counter[0], chunk)
        left = chunk
    if slot < buf.shape[0]:
        Ss, par = _sort_small(S, m)
        buf[slot, 0] = i
        buf[slot, 1] = k
        for a in ti.static(range(m)):
            buf[slot, 2 + a] = Ss[a]
    return slot + 1, left - 1


@ti.func
def _emit_close(buf: ti.template(), slot, left):
    """Mark the unused rows of a worker's last reservation (owner -1; the host drops them)."""
    for r in range(left):
        if slot + r < buf.shape[0]:
            buf[slot + r, 0] = -1


# --------------------------------------------------------------------------- 2D cells


@ti.func
def _cell_point(P: ti.template(), skip: ti.template(), order: ti.template(), i, pi, s, need2, dim: ti.template()):
    """Point s of the grid order as a clipping candidate of cell i: (its index, or -1 when it is
    i itself, skipped, or beyond the security distance; s + 1)."""
    j = order[s]
    dj = _pt(P, j, dim) - pi
    if j == i or skip[j] != 0 or dj.dot(dj) >= need2:
        j = -1
    return j, s + 1


@ti.func
def _ring_cell2(start: ti.template(), c, r3, a, b, r, s, send):
    """Visit grid cell c + (a, b) of ring r: the range [s, send) of its points in the grid order
    (left as it was outside the grid); then step to the next cell of the ring."""
    cx = c[0] + a
    cy = c[1] + b
    if 0 <= cx < r3[0] and 0 <= cy < r3[1]:
        f = cx * r3[1] + cy
        s = start[f]
        send = start[f + 1]
    b += 1 if (ti.abs(a) == r or r == 0) else 2 * r
    if b > r:
        b = -r
        a += 1
    return s, send, a, b


@ti.func
def _emit_cell2(P: ti.template(), W: ti.template(), i, w, n, cur, planes: ti.template(), box_lo, box_hi, band,
                buf: ti.template(), counter: ti.template(), slot, left, chunk: ti.template()):
    """Emit the finished 2D cell's simplices (edges between two bisector planes, owned by the
    box); returns (count, slot, left)."""
    cnt = 0
    for k in range(n):
        a2 = planes[w, cur, k]
        b2 = planes[w, cur, (k + 1) % n]
        # nested ifs: Taichi's `and` does not short-circuit, and box planes are
        # negative ids that must never index P (an out-of-bounds read on CUDA)
        if a2 >= 0 and b2 >= 0:
            if inside_box_canonical(P, W, i, ti.Vector([a2, b2]), box_lo, box_hi, band, 2):
                slot, left = _emit(buf, counter, i, cnt, ti.Vector([a2, b2]), 2, slot, left, chunk)
                cnt += 1
    return cnt, slot, left


@ti.func
def _clip2(P: ti.template(), W: ti.template(), i, pi, j, w, n, cur, planes: ti.template(), vy: ti.template(), flag: ti.template(),
           box_lo, box_hi, cap):
    """Clip polygon `cur` of worker w (n vertices) by bisector j; returns (n, cur, status)."""
    nin = 0
    nj, cj = _plane(P, W, i, j, pi, box_lo, box_hi, 2)
    for k in range(n):
        a = planes[w, cur, k]
        b = planes[w, cur, (k + 1) % n]
        y = ti.Vector([vy[w, cur, k, 0], vy[w, cur, k, 1]])
        f = _is_conflict(P, W, i, pi, ti.Vector([a, b]), y, j, nj, cj, box_lo, box_hi, 2)
        flag[w, k] = 1 if f else 0
        nin += 1 if f else 0
    st = 0
    if nin == n:
        n = 0
        st = ST_HIDDEN
    elif nin > 0:
        # the conflict vertices must form one cyclic run s..e
        s = -1
        runs = 0
        for k in range(n):
            if flag[w, k] == 1 and flag[w, (k + n - 1) % n] == 0:
                s = k
                runs += 1
        if runs != 1:
            st = ST_BROKEN
        else:
            e = (s + nin - 1) % n
            m = n - nin + 2
            if m > cap:
                st = ST_OVERFLOW
            else:
                nxt = 1 - cur
                # kept vertices e+1 .. s-1, then (P[s], j), then (j, P[e+1])
                for t in range(n - nin):
                    k = (e + 1 + t) % n
                    planes[w, nxt, t] = planes[w, cur, k]
                    vy[w, nxt, t, 0] = vy[w, cur, k, 0]
                    vy[w, nxt, t, 1] = vy[w, cur, k, 1]
                ps = planes[w, cur, s]
                pe = planes[w, cur, (e + 1) % n]
                planes[w, nxt, m - 2] = ps
                planes[w, nxt, m - 1] = j
                y1, ok1 = _vertex2(P, W, i, pi, ps, j, box_lo, box_hi)
                y2, ok2 = _vertex2(P, W, i, pi, j, pe, box_lo, box_hi)
                if not (ok1 and ok2):
                    st = ST_BROKEN
                vy[w, nxt, m - 2, 0] = y1[0]
                vy[w, nxt, m - 2, 1] = y1[1]
                vy[w, nxt, m - 1, 0] = y2[0]
                vy[w, nxt, m - 1, 1] = y2[1]
                n = m
                cur = nxt
    return n, cur, st


TWIN_CAP = 64  # grid_twins: cells holding more points than this go to the host's duplicate search


@ti.kernel
def pad3(P: nd_f64_2, P3: nd_f64_2):
    """The (n, d) points as (n, 3) rows, zero beyond column d."""
    for i in range(P.shape[0]):
        for a in ti.static(range(3)):
            P3[i, a] = 0.0
        for a in range(P.shape[1]):
            P3[i, a] = P[i, a]


@ti.kernel
def gather_points(P: nd_f64_2, W: nd_f64, perm: nd_i32, Pp: nd_f64_2, Wp: nd_f64):
    """Row k of (Pp, Wp) is row perm[k] of (P, W): the points relabelled in grid order."""
    for k in range(perm.shape[0]):
        i = perm[k]
        Wp[k] = W[i]
        for a in range(P.shape[1]):
            Pp[k, a] = P[i, a]


@ti.kernel
def grid_twins(P3: nd_f64_2, W: nd_f64, start: nd_i32, order: nd_i32, cap: ti.i32, dup: nd_i32):
    """Duplicates among points sorted into a grid (every point, duplicates included): dup[i] = 1
    when another point of i's cell has i's coordinates and beats it (a larger weight, or the same
    weight and a smaller index), else 0; -1 for every point of a cell that holds more than ``cap``
    points, which the host decides. Twins share a cell, since equal coordinates give equal cells."""
    for f in range(start.shape[0] - 1):
        s0 = start[f]
        s1 = start[f + 1]
        if s1 - s0 > cap:
            for a in range(s0, s1):
                dup[order[a]] = -1
        else:
            for a in range(s0, s1):
                i = order[a]
                hidden = 0
                for b in range(s0, s1):
                    j = order[b]
                    if j != i and P3[j, 0] == P3[i, 0] and P3[j, 1] == P3[i, 1] and P3[j, 2] == P3[i, 2]:
                        if W[j] > W[i] or (W[j] == W[i] and j < i):
                            hidden = 1
                dup[i] = hidden


@light_compile
@ti.kernel
def cells2d(P: nd_f64_2, W: nd_f64, skip: nd_i32, ids: nd_i32, glo: nd_f64, res: nd_i32,
            start: nd_i32, order: nd_i32, box_lo_a: nd_f64, box_hi_a: nd_f64, prm: nd_f64,
            planes: nd_i32_3, vy: ti.types.ndarray(dtype=ti.f64, ndim=4), flag: nd_i32_2,
            cand: nd_i32_2, cdist: nd_f64_2,
            status: nd_i32, count: nd_i32, buf: nd_i32_2, counter: nd_i32, cap: ti.i32,
            chunk: ti.template(), block: ti.template(), qa: ti.i32, qs: ti.i32, qlen: ti.i32):
    """Power cell of every point in ids; writes each cell's simplices (i, a, b) into buf.
    prm = (grid cell size, largest weight, box band): f64 scalars travel in an array. ``block``:
    the GPU's threads per block (0: Taichi's default; on the CPU pass 0)."""
    # everything lives inside the parallel loop: values computed before it become global
    # temporaries, whose mixed f64/i32 layout faulted on CUDA (misaligned address)
    if ti.static(block > 0):
        ti.loop_config(block_dim=block)
    for w in range(planes.shape[0]):
        nw = planes.shape[0]
        h, wmax, band = prm[0], prm[1], prm[2]
        box_lo = ti.Vector([box_lo_a[0], box_lo_a[1]])
        box_hi = ti.Vector([box_hi_a[0], box_hi_a[1]])
        lo = ti.Vector([glo[0], glo[1]])
        r3 = ti.Vector([res[0], res[1], res[2]])
        rmax = ti.max(r3[0], r3[1])
        slot = 0
        left = 0
        q = w * qa  # this worker's ids: q = w qa, + qs, ... up to w qa + qlen (see cells_schedule)
        qend = ti.min(ids.shape[0], w * qa + qlen)
        while q < qend:
            i = ids[q]
            pi = _pt(P, i, 2)
            # the box as a 4-gon: planes x-, y-, x+, y+ counter-clockwise; vertex k joins k, k+1
            cur = 0
            n = 4
            planes[w, 0, 0] = -1
            planes[w, 0, 1] = -3
            planes[w, 0, 2] = -2
            planes[w, 0, 3] = -4
            for k in range(4):
                y, ok = _vertex2(P, W, i, pi, planes[w, 0, k], planes[w, 0, (k + 1) % 4], box_lo, box_hi)
                vy[w, 0, k, 0] = y[0]
                vy[w, 0, k, 1] = y[1]
            st = 0
            need2 = _need2_2(vy, w, cur, n, wmax - W[i])
            c = _cell_of(pi, lo, h, r3, 2)
            m = _gather(P, skip, start, order, i, pi, c, R1_2D, r3, cand, cdist, w, 2)
            # one loop hands out the candidates of both searches, so that _clip2 is inlined once
            # (as in cells3d)
            phase = 0  # 0: gathered candidates, 1: rings, 2: finished
            r = 0
            kc = 0
            a = 0
            b = 0
            s = 0
            send = 0
            if m < 0:
                phase = 1
            while phase < 2 and st == 0:
                # the next candidate: an inner loop of cheap steps, so that the threads of a GPU
                # warp reach the clip together (see cells3d)
                j = -1
                while j < 0 and phase < 2:
                    if phase == 0:
                        if kc < m:
                            if cdist[w, kc] < need2:
                                j = cand[w, kc]
                            kc += 1
                        else:
                            r, phase = _rings_start(R1_2D, h, need2)
                            a, b = -r, -r
                    elif s < send:  # the points of the grid cell being visited
                        j, s = _cell_point(P, skip, order, i, pi, s, need2, 2)
                    elif a > r:  # ring r visited
                        r, phase = _ring_next(st, r, rmax, h, need2)
                        a, b = -r, -r
                    else:
                        s, send, a, b = _ring_cell2(start, c, r3, a, b, r, s, send)
                if j >= 0:
                    cur0 = cur
                    n, cur, st = _clip2(P, W, i, pi, j, w, n, cur, planes, vy, flag, box_lo, box_hi, cap)
                    if st == 0 and cur != cur0:
                        need2 = _need2_2(vy, w, cur, n, wmax - W[i])
            status[i] = st
            cnt = 0
            if st == 0:
                cnt, slot, left = _emit_cell2(P, W, i, w, n, cur, planes, box_lo, box_hi, band, buf, counter, slot,
                                              left, chunk)
            count[i] = cnt
            q += qs
        _emit_close(buf, slot, left)


# --------------------------------------------------------------------------- 3D cells


BOUNDARY_SLOTS = 64  # distinct planes around one conflict region, one bit each (beyond: a quadratic scan)


@ti.func
def _tri_has_edge(tri: ti.template(), w, t, u, v):
    """Whether triangle t of worker w contains the directed edge u -> v."""
    a, b, c = tri[w, t, 0], tri[w, t, 1], tri[w, t, 2]
    return (a == u and b == v) or (b == u and c == v) or (c == u and a == v)


@ti.func
def _conflict_boundary_scan(tri: ti.template(), cl: ti.template(), be: ti.template(), w, nc, tcap):
    """:func:`_conflict_boundary` for any number of slots: each edge's reverse is looked for among
    all the conflict triangles, and every pair of boundary edges compared (quadratic in nc)."""
    nb = 0
    for q in range(nc):
        t = cl[w, q]
        for e in ti.static(range(3)):
            u = tri[w, t, e]
            v = tri[w, t, (e + 1) % 3]
            inner = False
            for q2 in range(nc):
                if _tri_has_edge(tri, w, cl[w, q2], v, u):
                    inner = True
            if not inner:
                if nb < tcap:
                    be[w, nb, 0] = u
                    be[w, nb, 1] = v
                nb += 1
    st = 0
    for q in range(ti.min(nb, tcap)):
        for q2 in range(q + 1, ti.min(nb, tcap)):
            if be[w, q, 0] == be[w, q2, 0]:
                st = ST_BROKEN
    return nb, st


@ti.func
def _conflict_boundary(tri: ti.template(), cl: ti.template(), be: ti.template(), loc: ti.template(),
                       mk: ti.template(), w, nc, tcap):
    """Boundary of the conflict region of worker w (its nc triangles cl[w, :nc]): the directed
    edges u -> v of conflict triangles whose reverse lies on none, into be[w, :nb] in the order of
    the triangles' edges. Returns (nb, status).

    Exact and linear in nc: the plane slots met get local ids (loc, -1 between calls), and each
    local id a 64-bit mask of the local ids its conflict edges lead to, so an edge is inner when
    its reverse's bit is set. The region is a topological disk, so its boundary is one cycle in
    which every slot starts one edge at most: ST_BROKEN when one starts two. A region around more
    than BOUNDARY_SLOTS slots (a cell with many faces, such as a point in a sparse region next to
    a dense one, cut by a plane that removes much of it) goes through the quadratic scan."""
    nv = 0
    for q in range(nc):
        t = cl[w, q]
        for e in ti.static(range(3)):
            u = tri[w, t, e]
            if loc[w, u] < 0:
                if nv < BOUNDARY_SLOTS:
                    loc[w, u] = nv
                    mk[w, nv] = 0
                nv += 1
    st = 0
    nb = 0
    if nv > BOUNDARY_SLOTS:
        nb, st = _conflict_boundary_scan(tri, cl, be, w, nc, tcap)
    else:
        for q in range(nc):
            t = cl[w, q]
            for e in ti.static(range(3)):
                u = loc[w, tri[w, t, e]]
                v = loc[w, tri[w, t, (e + 1) % 3]]
                mk[w, u] |= ti.cast(1, ti.i64) << ti.cast(v, ti.i64)
        starts = ti.cast(0, ti.i64)
        for q in range(nc):
            t = cl[w, q]
            for e in ti.static(range(3)):
                su = tri[w, t, e]
                sv = tri[w, t, (e + 1) % 3]
                u = ti.cast(loc[w, su], ti.i64)
                v = loc[w, sv]
                if (mk[w, v] >> u) & 1 == 0:
                    if nb < tcap:
                        be[w, nb, 0] = su
                        be[w, nb, 1] = sv
                    nb += 1
                    if (starts >> u) & 1 != 0:
                        st = ST_BROKEN
                    starts |= ti.cast(1, ti.i64) << u
    for q in range(nc):
        t = cl[w, q]
        for e in ti.static(range(3)):
            loc[w, tri[w, t, e]] = -1
    return nb, st


@ti.func
def _clip3(P: ti.template(), W: ti.template(), i, pi, j, w, nt, npl, tri: ti.template(), pl: ti.template(), vy: ti.template(),
           flag: ti.template(), cl: ti.template(), be: ti.template(), loc: ti.template(), mk: ti.template(), box_lo,
           box_hi, tcap, pcap):
    """Clip the cell of worker w (nt triangles over npl plane slots) by bisector j."""
    nc = 0
    nj, cj = _plane(P, W, i, j, pi, box_lo, box_hi, 3)
    anj = ti.abs(nj)
    acj = ti.abs(cj)
    # most candidates remove no vertex: a first pass without stores (after a store Taichi reloads
    # the arrays' addresses) finds the first vertex removed or within the filter's band, if any
    first = nt
    for t in range(nt):
        y = ti.Vector([vy[w, t, 0], vy[w, t, 1], vy[w, t, 2]])
        if nj.dot(y) - cj >= -EPS_G * (anj.dot(ti.abs(y)) + acj):
            first = t
            break
    for t in range(first, nt):
        # the float filter first; the vertex's planes are read only for a near tie. flag[w, t] is
        # 0 for every live triangle between clips, so only conflicts write it
        y = ti.Vector([vy[w, t, 0], vy[w, t, 1], vy[w, t, 2]])
        g = nj.dot(y) - cj
        f = g > 0
        if ti.abs(g) <= EPS_G * (anj.dot(ti.abs(y)) + acj):
            S = ti.Vector([pl[w, tri[w, t, 0]], pl[w, tri[w, t, 1]], pl[w, tri[w, t, 2]]])
            f = _conflict_tie(P, W, i, pi, S, j, nj, box_lo, box_hi, 3)
        if f:
            flag[w, t] = 1
            cl[w, nc] = t
            nc += 1
    st = 0
    if nc == nt:
        nt = 0
        st = ST_HIDDEN
    elif nc > 0:
        if npl >= pcap:
            st = ST_OVERFLOW
        else:
            js = npl
            pl[w, js] = j
            npl += 1
            loc[w, js] = -1
            nb, bst = _conflict_boundary(tri, cl, be, loc, mk, w, nc, tcap)
            if nb > tcap or nt - nc + nb > tcap:
                st = ST_OVERFLOW
            else:
                st = bst
            if st == 0:
                # new triangles (u, v, j) go into the conflict slots first, then at the end
                ntn = nt
                for q in range(nb):
                    t = 0
                    if q < nc:
                        t = cl[w, q]
                    else:
                        t = ntn
                        ntn += 1
                    u = be[w, q, 0]
                    v = be[w, q, 1]
                    tri[w, t, 0] = u
                    tri[w, t, 1] = v
                    tri[w, t, 2] = js
                    flag[w, t] = 0
                    y, ok = _vertex3(P, W, i, pi, pl[w, u], pl[w, v], j, box_lo, box_hi)
                    if not ok:
                        st = ST_BROKEN
                    vy[w, t, 0] = y[0]
                    vy[w, t, 1] = y[1]
                    vy[w, t, 2] = y[2]
                # fewer new than removed: fill the remaining holes with triangles from the end
                if nb < nc:
                    t = 0
                    while t < ntn:
                        if flag[w, t] == 1:
                            last = ntn - 1
                            while last > t and flag[w, last] == 1:
                                last -= 1
                            if last > t:
                                for e in ti.static(range(3)):
                                    tri[w, t, e] = tri[w, last, e]
                                    vy[w, t, e] = vy[w, last, e]
                                flag[w, t] = 0
                                flag[w, last] = 1
                            ntn = last
                            if flag[w, t] == 1:
                                ntn = t
                        t += 1
                nt = ntn
    return nt, npl, st


@ti.func
def _box_cell3(P: ti.template(), W: ti.template(), i, pi, w, tri: ti.template(), pl: ti.template(),
               vy: ti.template(), flag: ti.template(), loc: ti.template(), box_lo, box_hi):
    """Worker w's cell of point i starts as the box: plane slots 0..5 are x-, x+, y-, y+, z-, z+;
    its 8 corners, each ordered so that the outward normals have a positive determinant (a
    consistent dual orientation)."""
    for k in range(6):
        pl[w, k] = -1 - k
        loc[w, k] = -1
    for k in range(8):
        sx, sy, sz = k & 1, (k >> 1) & 1, (k >> 2) & 1
        a, b, cc = sx, 2 + sy, 4 + sz
        sgn = (1 if sx == 1 else -1) * (1 if sy == 1 else -1) * (1 if sz == 1 else -1)
        if sgn < 0:
            tmp = b
            b = cc
            cc = tmp
        tri[w, k, 0] = a
        tri[w, k, 1] = b
        tri[w, k, 2] = cc
        flag[w, k] = 0
        y, ok = _vertex3(P, W, i, pi, -1 - a, -1 - b, -1 - cc, box_lo, box_hi)
        vy[w, k, 0] = y[0]
        vy[w, k, 1] = y[1]
        vy[w, k, 2] = y[2]


@ti.func
def _ring_cell3(start: ti.template(), c, r3, a, b, e, r, s, send, pi, lo, h, need2):
    """Visit grid cell c + (a, b, e) of ring r: the range [s, send) of its points in the grid
    order (left as it was outside the grid or beyond the security distance); then step to the
    next cell of the ring (its surface only)."""
    cx, cy, cz = c[0] + a, c[1] + b, c[2] + e
    inside = 0 <= cx < r3[0] and 0 <= cy < r3[1] and 0 <= cz < r3[2]
    if inside and _box_dist2(pi, ti.Vector([cx, cy, cz]), lo, h) < need2:
        f = (cx * r3[1] + cy) * r3[2] + cz
        s = start[f]
        send = start[f + 1]
    edge = ti.abs(a) == r or ti.abs(b) == r
    e += 1 if (edge or r == 0) else 2 * r
    if e > r:
        e = -r
        b += 1
        if b > r:
            b = -r
            a += 1
    return s, send, a, b, e


@ti.func
def _emit_cell3(P: ti.template(), W: ti.template(), i, w, nt, tri: ti.template(), pl: ti.template(), box_lo,
                box_hi, band, buf: ti.template(), counter: ti.template(), slot, left, chunk: ti.template()):
    """Emit the finished 3D cell's simplices (vertices of three bisector planes, owned by the
    box); returns (count, slot, left)."""
    cnt = 0
    for t in range(nt):
        a3 = pl[w, tri[w, t, 0]]
        b3 = pl[w, tri[w, t, 1]]
        c3 = pl[w, tri[w, t, 2]]
        if a3 >= 0 and b3 >= 0 and c3 >= 0:  # nested: `and` does not short-circuit
            if inside_box_canonical(P, W, i, ti.Vector([a3, b3, c3]), box_lo, box_hi, band, 3):
                slot, left = _emit(buf, counter, i, cnt, ti.Vector([a3, b3, c3]), 3, slot, left, chunk)
                cnt += 1
    return cnt, slot, left


@light_compile
@ti.kernel
def cells3d(P: nd_f64_2, W: nd_f64, skip: nd_i32, ids: nd_i32, glo: nd_f64, res: nd_i32,
            start: nd_i32, order: nd_i32, box_lo_a: nd_f64, box_hi_a: nd_f64, prm: nd_f64,
            tri: nd_i32_3, pl: nd_i32_2, vy: nd_f64_3, flag: nd_i32_2, cl: nd_i32_2, be: nd_i32_3,
            loc: nd_i32_2, mk: nd_i64_2, cand: nd_i32_2, cdist: nd_f64_2,
            status: nd_i32, count: nd_i32, buf: nd_i32_2, counter: nd_i32,
            tcap: ti.i32, pcap: ti.i32, chunk: ti.template(), block: ti.template(), qa: ti.i32, qs: ti.i32,
            qlen: ti.i32):
    """Power cell of every point in ids; writes each cell's simplices (i, a, b, c) into buf.
    prm = (grid cell size, largest weight, box band); ``block`` as in cells2d."""
    # everything inside the parallel loop (see cells2d)
    if ti.static(block > 0):
        ti.loop_config(block_dim=block)
    for w in range(tri.shape[0]):
        h, wmax, band = prm[0], prm[1], prm[2]
        nw = tri.shape[0]
        box_lo = ti.Vector([box_lo_a[0], box_lo_a[1], box_lo_a[2]])
        box_hi = ti.Vector([box_hi_a[0], box_hi_a[1], box_hi_a[2]])
        lo = ti.Vector([glo[0], glo[1], glo[2]])
        r3 = ti.Vector([res[0], res[1], res[2]])
        rmax = ti.max(r3[0], ti.max(r3[1], r3[2]))
        slot = 0
        left = 0
        q = w * qa  # this worker's ids: q = w qa, + qs, ... up to w qa + qlen (see cells_schedule)
        qend = ti.min(ids.shape[0], w * qa + qlen)
        while q < qend:
            i = ids[q]
            pi = _pt(P, i, 3)
            _box_cell3(P, W, i, pi, w, tri, pl, vy, flag, loc, box_lo, box_hi)
            npl = 6
            nt = 8
            st = 0
            need2 = _need2_3(vy, w, nt, wmax - W[i])
            c = _cell_of(pi, lo, h, r3, 3)
            m = _gather(P, skip, start, order, i, pi, c, R1_3D, r3, cand, cdist, w, 3)
            # one loop hands out the candidates of both searches (gathered points by distance
            # bands, then rings of grid cells) so that _clip3, costly to compile, is inlined once
            phase = 0  # 0: gathered candidates, 1: rings, 2: finished
            r = 0
            pas = 0
            k = 0
            lo2 = _f64(-1.0)
            hi2 = _band_hi2(0, h)
            a = 0
            b = 0
            e = 0
            s = 0
            send = 0
            if m < 0:
                phase = 1
            while phase < 2 and st == 0:
                # the next candidate, found by an inner loop of cheap steps (bands, grid cells,
                # rings). With one step per turn of the outer loop a GPU warp ran the clip in
                # almost every turn (some thread of it had a candidate) while each thread needed
                # it in few; now every thread brings a candidate to each clip
                j = -1
                while j < 0 and phase < 2:
                    if phase == 0:
                        if k < m:
                            dk = cdist[w, k]
                            if lo2 <= dk and dk < hi2 and dk < need2:
                                j = cand[w, k]
                            k += 1
                        else:
                            lo2 = hi2
                            pas += 1
                            k = 0
                            if pas < NPASS and lo2 < need2:  # (need2 only shrinks: the rest lie beyond)
                                hi2 = _band_hi2(pas, h)
                            else:
                                r, phase = _rings_start(R1_3D, h, need2)
                                a, b, e = -r, -r, -r
                    elif s < send:  # the points of the grid cell being visited
                        j, s = _cell_point(P, skip, order, i, pi, s, need2, 3)
                    elif a > r:  # ring r visited
                        r, phase = _ring_next(st, r, rmax, h, need2)
                        a, b, e = -r, -r, -r
                    else:
                        s, send, a, b, e = _ring_cell3(start, c, r3, a, b, e, r, s, send, pi, lo, h, need2)
                if j >= 0:
                    nt0 = nt
                    npl0 = npl
                    nt, npl, st = _clip3(P, W, i, pi, j, w, nt, npl, tri, pl, vy, flag, cl, be, loc, mk, box_lo,
                                         box_hi, tcap, pcap)
                    if st == 0 and (npl != npl0 or nt != nt0):
                        need2 = _need2_3(vy, w, nt, wmax - W[i])
            status[i] = st
            cnt = 0
            if st == 0:
                cnt, slot, left = _emit_cell3(P, W, i, w, nt, tri, pl, box_lo, box_hi, band, buf, counter, slot,
                                              left, chunk)
            count[i] = cnt
            q += qs
        _emit_close(buf, slot, left)


# --------------------------------------------------------------------------- assembly


@ti.kernel
def scatter_rows(buf: nd_i32_2, used: ti.i32, off: nd_i32, lst: nd_i32_2, dim: ti.template()):
    """Cell lists in CSR form: emitted row (i, k, S) of buf goes to row off[i] + k of lst."""
    for r in range(used):
        i = buf[r, 0]
        if i >= 0:
            row = off[i] + buf[r, 1]
            for a in ti.static(range(dim)):
                lst[row, a] = buf[r, 2 + a]


@ti.kernel
def row_slots(lst: nd_i32_2, off: nd_i32, own: nd_i32, nface: nd_i32, dim: ti.template()):
    """Per cell-list row (i; S), S sorted: own = 1 when i is the simplex's smallest vertex (the
    row that reports the simplex); nface = the face incidences it owns (faces whose smallest
    vertex is i): dim when i < S[0], one when S[0] < i < S[1], else none."""
    for i in range(off.shape[0] - 1):
        for row in range(off[i], off[i + 1]):
            o = 1 if lst[row, 0] > i else 0
            own[row] = o
            nface[row] = (1 if lst[row, 1] > i else 0) + o * (dim - 1)


@ti.func
def _find_row(lst: ti.template(), off: ti.template(), cell, v: ti.template(), m: ti.template()):
    """The row of cell's list (rows off[cell] .. off[cell+1]) that holds the sorted tuple v; -1 if none."""
    found = -1
    row = off[cell]
    while row < off[cell + 1] and found < 0:
        same = True
        for a in ti.static(range(m)):
            if lst[row, a] != v[a]:
                same = False
        if same:
            found = row
        row += 1
    return found


@ti.func
def _seen_from(S: ti.template(), i, a: ti.template(), dim: ti.template()):
    """Cell entry (i; S) as the cell of S[a] lists it: S without S[a], plus i, sorted."""
    v = ti.Vector.zero(ti.i32, dim)
    for b in ti.static(range(dim)):
        if ti.static(b < a):
            v[b] = S[b]
        elif ti.static(b > a):
            v[b - 1] = S[b]
    v[dim - 1] = i
    vs, par = _sort_small(v, dim)
    return vs


@ti.kernel
def check_owned(lst: nd_i32_2, off: nd_i32, mark: nd_i32, bad: nd_i32, dim: ti.template()):
    """Every simplex must be listed by the cells of all its vertices. First pass: the entry
    (i; S) of the simplex's smallest vertex i is looked up in the cells of S; a miss marks both
    cells bad, a hit marks the row found (see check_marked)."""
    for i in range(off.shape[0] - 1):
        for row in range(off[i], off[i + 1]):
            S = ti.Vector.zero(ti.i32, dim)
            for a in ti.static(range(dim)):
                S[a] = lst[row, a]
            if i < S[0]:
                for a in ti.static(range(dim)):
                    r = _find_row(lst, off, S[a], _seen_from(S, i, a, dim), dim)
                    if r < 0:
                        bad[i] = 1
                        bad[S[a]] = 1
                    else:
                        mark[r] = 1


@ti.kernel
def check_marked(lst: nd_i32_2, off: nd_i32, mark: nd_i32, bad: nd_i32, dim: ti.template()):
    """Second pass: an entry (i; S) with S[0] < i that no first-pass lookup found lists a simplex
    that its smallest vertex S[0] does not. One lookup per vertex other than the smallest, half of
    looking every entry up in the cells of all its other vertices."""
    for i in range(off.shape[0] - 1):
        for row in range(off[i], off[i + 1]):
            if lst[row, 0] < i and mark[row] == 0:
                bad[i] = 1
                bad[lst[row, 0]] = 1


@ti.func
def _row_has(lst: ti.template(), r, f: ti.template(), dim: ti.template()):
    """Whether row r of a cell list holds every entry of the face f (dim - 1 indices)."""
    ok = True
    for b in ti.static(range(dim - 1)):
        hit = False
        for c in ti.static(range(dim)):
            if lst[r, c] == f[b]:
                hit = True
        if not hit:
            ok = False
    return ok


@ti.kernel
def cell_faces(lst: nd_i32_2, off: nd_i32, fout: nd_i32_2, foff: nd_i32, simp: nd_i32_2, soff: nd_i32,
               dim: ti.template()):
    """Simplices and faces owned by each cell (the cell's point is their smallest index).
    Simplex rows go to simp[soff[row]] for the rows that own one (see row_slots). Faces, one row
    each: (face..., opposite, multiplicity), at the first row of the cell list that has the face.
    foff holds, per list row, its slot range: one slot per owned face incidence; slots of
    repeated incidences get owner -1 (holes, compacted afterwards). A face lies on two simplices
    of a cell at most, so each scan stops at the first other row that has it."""
    for i in range(off.shape[0] - 1):
        for row in range(off[i], off[i + 1]):
            if lst[row, 0] > i:
                srow = soff[row]
                simp[srow, 0] = i
                for a in ti.static(range(dim)):
                    simp[srow, a + 1] = lst[row, a]
            k = foff[row]
            for drop in ti.static(range(dim)):
                # the face (i, S minus S[drop]) and its opposite vertex S[drop]
                f = ti.Vector.zero(ti.i32, dim - 1 if dim > 1 else 1)
                for b in ti.static(range(dim)):
                    if ti.static(b < drop):
                        f[b] = lst[row, b]
                    elif ti.static(b > drop):
                        f[b - 1] = lst[row, b]
                if i < f[0]:  # S is sorted: f[0] is the face's smallest other index
                    first = True
                    r2 = off[i]
                    while r2 < row and first:
                        if _row_has(lst, r2, f, dim):
                            first = False
                        r2 += 1
                    if first:
                        mult = 1
                        r2 = row + 1
                        while r2 < off[i + 1] and mult == 1:
                            if _row_has(lst, r2, f, dim):
                                mult = 2
                            r2 += 1
                        fout[k, 0] = i
                        for b in ti.static(range(dim - 1)):
                            fout[k, b + 1] = f[b]
                        fout[k, dim] = lst[row, drop]
                        fout[k, dim + 1] = mult
                    else:
                        fout[k, 0] = -1
                    k += 1


@ti.kernel
def single_faces(fout: nd_i32_2, k: ti.i32, dst: nd_i32_2, dim: ti.template()):
    """(face..., opposite) of the first k face rows, owner -1 (a hole) unless the face was met
    once (multiplicity 1): the open faces that the hull completion starts from."""
    for r in range(k):
        dst[r, 0] = fout[r, 0]
        if fout[r, dim + 1] != 1:
            dst[r, 0] = -1
        for a in ti.static(range(1, dim + 1)):
            dst[r, a] = fout[r, a]


@ti.kernel
def stack_int64(a: nd_i32_2, na: ti.i32, b: nd_i32_2, nb: ti.i32, label: nd_i32,
                out: ti.types.ndarray(dtype=ti.i64, ndim=2), cols: ti.template(), sort_rows: ti.template()):
    """out: the first na rows of a, then the first nb rows of b, their entries mapped through
    ``label`` (the input's indices of the grid-ordered points) as int64; with ``sort_rows``
    each row ascending."""
    for r in range(na + nb):
        v = ti.Vector.zero(ti.i32, cols)
        for c in ti.static(range(cols)):
            if r < na:
                v[c] = label[a[r, c]]
            else:
                v[c] = label[b[r - na, c]]
        if ti.static(sort_rows):
            v, par = _sort_small(v, cols)
        for c in ti.static(range(cols)):
            out[r, c] = ti.cast(v[c], ti.i64)


@ti.kernel
def hidden_mask(used: nd_i32, label: nd_i32, out: ti.types.ndarray(dtype=ti.u8, ndim=1)):
    """out[label[k]] = 1 where the point of label k is no vertex (used[k] == 0): the hidden
    mask in the input's indices."""
    for k in range(used.shape[0]):
        out[label[k]] = ti.u8(1) if used[k] == 0 else ti.u8(0)


BOX_CHUNK = 4096  # points per thread of point_box


@ti.kernel
def point_box(P: nd_f64_2, box: nd_f64_2, bad: nd_i32):
    """box[0] = min, box[1] = max of the points' coordinates over the finite ones (box comes in
    as (+inf, -inf) rows); bad[0] = the number of NaN or infinite coordinates, recognised by
    their exponent bits (a float comparison may be optimised away under fast math)."""
    for c in range((P.shape[0] + BOX_CHUNK - 1) // BOX_CHUNK):
        lo = ti.Vector([box[0, 0], box[0, 1], box[0, 2]])  # +inf at first, or a real coordinate
        hi = ti.Vector([box[1, 0], box[1, 1], box[1, 2]])
        nb = 0
        for i in range(c * BOX_CHUNK, ti.min(P.shape[0], (c + 1) * BOX_CHUNK)):
            for a in ti.static(range(3)):
                if a < P.shape[1]:
                    x = P[i, a]
                    if ti.bit_cast(x, ti.u64) & ti.u64(0x7FF0000000000000) == ti.u64(0x7FF0000000000000):
                        nb += 1
                    else:
                        lo[a] = ti.min(lo[a], x)
                        hi[a] = ti.max(hi[a], x)
        for a in ti.static(range(3)):
            if a < P.shape[1]:
                ti.atomic_min(box[0, a], lo[a])
                ti.atomic_max(box[1, a], hi[a])
        if nb:
            ti.atomic_add(bad[0], nb)


@ti.kernel
def flag_counts(flag: nd_i32, out: nd_i32):
    """out[0]: entries equal to 1 (duplicates found), out[1]: negative ones (crowded cells)."""
    for i in range(flag.shape[0]):
        if flag[i] == 1:
            ti.atomic_add(out[0], 1)
        elif flag[i] < 0:
            ti.atomic_add(out[1], 1)


@ti.kernel
def skip_from(skip: nd_i32, k: ti.i32):
    """skip[i] = 1 for the labels from k on (the duplicates); the rest is left as it is."""
    for i in range(k, skip.shape[0]):
        skip[i] = 1


@ti.kernel
def iota(a: nd_i32):
    """a[i] = i."""
    for i in range(a.shape[0]):
        a[i] = i


# --------------------------------------------------------------------------- hull completion


@ti.func
def _wrap_candidate(P: ti.template(), W: ti.template(), F: ti.template(), sp, q, n, p0, cf, pow_f, scale,
                    best, tb, dim: ti.template()):
    """Offer point q as the apex over face F (sp: the orientation sign of F with its known
    opposite vertex, q must get the other sign); returns the updated (best, t_best). The side is
    certified with the orientation predicate only for a q that may beat the best so far."""
    pq = _pt(P, q, dim)
    side = n.dot(pq - p0)
    isface = False
    for a in ti.static(range(dim)):
        if F[a] == q:
            isface = True
    if not isface and side > 1e-12 * ti.sqrt(scale):
        dq = cf - pq
        tq = (dq.dot(dq) - W[q] - pow_f) / (2.0 * n.dot(pq - cf))
        tol = 1e-9 * (ti.abs(tq) + ti.abs(tb) + ti.sqrt(scale))
        if best < 0 or tq <= tb + tol:
            u2 = ti.Vector.zero(ti.i32, dim + 1)
            for a in ti.static(range(dim)):
                u2[a] = F[a]
            u2[dim] = q
            xs, px = _sort_small(u2, dim + 1)
            so = _sign_orient_sorted(P, xs, dim) * px
            if so != 0 and so != sp:
                if best < 0 or tq < tb - tol:
                    best = q
                    tb = tq
                else:
                    # near tie: does q lie inside the power sphere of (face, best)?
                    S = ti.Vector.zero(ti.i32, dim)
                    for a in ti.static(range(dim - 1)):
                        S[a] = F[a + 1]
                    S[dim - 1] = best
                    if conflict_exact(P, W, F[0], S, q, dim):
                        best = q
                        tb = tq
    return best, tb


@ti.func
def _face_side(P: ti.template(), F: ti.template(), o, dim: ti.template()):
    """Orientation sign of the face F (d points) with the point o (0 when uncertain)."""
    v = ti.Vector.zero(ti.i32, dim + 1)
    for a in ti.static(range(dim)):
        v[a] = F[a]
    v[dim] = o
    vs, pv = _sort_small(v, dim + 1)
    return _sign_orient_sorted(P, vs, dim) * pv




@ti.kernel
def cell_boxes(P: nd_f64_2, start: nd_i32, order: nd_i32, box: nd_f64_2, dim: ti.template()):
    """Bounding box (lo xyz, hi xyz) of the points filed in every grid cell, into the first rows
    of box; lo > hi when empty."""
    for f in range(start.shape[0] - 1):
        lo = ti.Vector([ti.f64(1e300), ti.f64(1e300), ti.f64(1e300)])
        hi = -lo
        for s in range(start[f], start[f + 1]):
            p = _pt(P, order[s], dim)
            for a in ti.static(range(dim)):
                lo[a] = ti.min(lo[a], p[a])
                hi[a] = ti.max(hi[a], p[a])
        if ti.static(dim == 2):
            if start[f] < start[f + 1]:
                lo[2] = 0.0
                hi[2] = 0.0
        for a in ti.static(range(3)):
            box[f, a] = lo[a]
            box[f, 3 + a] = hi[a]


@ti.kernel
def merge_boxes(box: nd_f64_2, lvl: nd_i32_2, level: ti.i32):
    """The boxes of hierarchy level ``level``: each the box of a 2^3 group of the level below
    (rows and resolutions as in lvl, see gift_wrap)."""
    for g in range(lvl[level, 1] * lvl[level, 2] * lvl[level, 3]):
        gz = g % lvl[level, 3]
        gy = (g // lvl[level, 3]) % lvl[level, 2]
        gx = g // (lvl[level, 3] * lvl[level, 2])
        lo = ti.Vector([ti.f64(1e300), ti.f64(1e300), ti.f64(1e300)])
        hi = -lo
        fine = level - 1
        for a in range(2 * gx, ti.min(2 * gx + 2, lvl[fine, 1])):
            for b in range(2 * gy, ti.min(2 * gy + 2, lvl[fine, 2])):
                for c in range(2 * gz, ti.min(2 * gz + 2, lvl[fine, 3])):
                    f = lvl[fine, 0] + (a * lvl[fine, 2] + b) * lvl[fine, 3] + c
                    for e in ti.static(range(3)):
                        lo[e] = ti.min(lo[e], box[f, e])
                        hi[e] = ti.max(hi[e], box[f, 3 + e])
        for e in ti.static(range(3)):
            box[lvl[level, 0] + g, e] = lo[e]
            box[lvl[level, 0] + g, 3 + e] = hi[e]


@ti.func
def _wrap_box_open(box: ti.template(), f, n3, p03, cf3, best, tb, K, scale):
    """Whether box f may hold a point in front of the face's plane (n3 . (x - p03) > 0, with
    slack for round-off) and, once a best apex exists, inside its power sphere (centre
    cf3 + tb n3, squared radius at most K + tb^2 with K = wmax + pow_f, grown for round-off)."""
    lo = ti.Vector([box[f, 0], box[f, 1], box[f, 2]])
    hi = ti.Vector([box[f, 3], box[f, 4], box[f, 5]])
    ok = lo[0] <= hi[0]
    if ok:
        c = 0.5 * (lo + hi)
        e = 0.5 * (hi - lo)
        dc = c - p03
        an = ti.abs(n3)
        side = n3.dot(dc) + an.dot(e)
        if side < -ti.f64(1e-9) * an.dot(ti.abs(dc) + e + ti.abs(p03)):
            ok = False
        if ok and best >= 0:
            R2 = (K + tb * tb) * ti.f64(GROW) + 1e-12 * scale
            cb = cf3 + tb * n3
            g = ti.max(ti.max(lo - cb, cb - hi) - ti.f64(1e-12) * (ti.abs(cb) + ti.abs(lo) + ti.abs(hi)), 0.0)
            if g.dot(g) > R2:
                ok = False
    return ok


@ti.func
def _wrap_face(P: ti.template(), W: ti.template(), faces: ti.template(), opp: ti.template(), fi, dim: ti.template()):
    """The gift wrap's view of face fi: (F its vertices, p0 its first point, n its unit normal
    pointing away from its known opposite vertex, cf its power centre, pow_f the power there,
    scale its squared size)."""
    F = ti.Vector.zero(ti.i32, dim)
    for a in ti.static(range(dim)):
        F[a] = faces[fi, a]
    p0 = _pt(P, F[0], dim)
    n = ti.Vector.zero(ti.f64, dim)
    cf = p0
    scale = _f64(0.0)
    if ti.static(dim == 2):
        e = _pt(P, F[1], 2) - p0
        L2 = e.dot(e)
        tpar = 0.5 * (1.0 - (W[F[1]] - W[F[0]]) / L2)
        cf = p0 + tpar * e
        n = ti.Vector([-e[1], e[0]])
        scale = L2
    else:
        e1 = _pt(P, F[1], 3) - p0
        e2 = _pt(P, F[2], 3) - p0
        a11, a12, a22 = e1.dot(e1), e1.dot(e2), e2.dot(e2)
        b1 = 0.5 * (a11 - W[F[1]] + W[F[0]])
        b2 = 0.5 * (a22 - W[F[2]] + W[F[0]])
        det = a11 * a22 - a12 * a12
        s = (b1 * a22 - b2 * a12) / det
        u = (a11 * b2 - a12 * b1) / det
        cf = p0 + s * e1 + u * e2
        n = e1.cross(e2)
        scale = ti.max(a11, a22)
    d0 = cf - p0
    pow_f = d0.dot(d0) - W[F[0]]
    po = _pt(P, opp[fi], dim)
    if n.dot(po - p0) > 0:
        n = -n
    n = n / n.norm()
    return F, p0, n, cf, pow_f, scale


@ti.func
def _level_row(lvl: ti.template(), level, x, y, z):
    """Row of box (x, y, z) of hierarchy level ``level`` in the combined box array."""
    return lvl[level, 0] + (x * lvl[level, 2] + y) * lvl[level, 3] + z


@ti.func
def _morton_cell(k, top, qc, dim: ti.template()):
    """The grid cell (x, y, z) at Morton position k below the root box of level ``top``, each
    box's children in the order nearest first to the cell qc (an integer vector, which may lie
    outside the grid): at every level a coordinate bit is flipped where qc lies in the upper
    half of the parent box (dim bits per level: z stays 0 in 2D)."""
    c = ti.Vector([0, 0, 0])
    for i in range(top):
        bit = top - 1 - i
        for a in ti.static(range(dim)):
            b = ti.cast((k >> (dim * bit + dim - 1 - a)) & 1, ti.i32)
            if qc[a] >= c[a] + (1 << bit):
                b = 1 - b
            c[a] |= b << bit
    return c[0], c[1], c[2]


@ti.func
def _near_cell(F: ti.template(), n, lo, h, P: ti.template(), dim: ti.template()):
    """The grid cell (possibly outside the grid) one cell size in front of face F's centroid,
    where its apex most likely is: the gift wrap visits boxes nearest it first."""
    c = _pt(P, F[0], dim)
    for a in ti.static(range(1, dim)):
        c += _pt(P, F[a], dim)
    c = c / dim + h * n
    qc = ti.Vector([0, 0, 0])
    for a in ti.static(range(dim)):
        qc[a] = ti.cast(ti.floor(ti.max(ti.min((c[a] - lo[a]) / h, 4096.0), -4096.0)), ti.i32)
    return qc


@ti.func
def _aligned_level(k, top, dim: ti.template()):
    """The coarsest level below ``top`` whose box starts at Morton position k."""
    lev = 0
    for l in range(1, top):
        if k % (ti.i64(1) << (dim * l)) == 0:
            lev = l
    return lev


@light_compile
@ti.kernel
def gift_wrap(P: nd_f64_2, W: nd_f64, skip: nd_i32, faces: nd_i32_2, opp: nd_i32, m: ti.i32, out: nd_i32,
              glo: nd_f64, res: nd_i32, start: nd_i32, order: nd_i32, prm: nd_f64, box: nd_f64_2, lvl: nd_i32_2,
              dim: ti.template()):
    """For each of the first m faces (d points) with the known simplex on the side of opp, find
    the point q on the other side whose simplex with the face has an empty power sphere (-1: a
    hull face).

    Along the face's dual line c(t) = c_f + t n (n pointing away from opp) the power of q equals
    the face's at t_q; the simplex on that side belongs to the smallest t_q. Ties are decided by
    the lifted predicate. prm = (grid cell size, largest weight).

    Search: with the exact predicates, every point that may still beat the best so far, through
    a hierarchy of point bounding boxes: the grid cells (level 0), then boxes of 2^3 boxes of the level below, up to
    one root box. ``box`` holds every level's boxes, level l from row lvl[l, 0] on, at
    resolution lvl[l, 1:4]. A box is skipped when it lies behind the face's plane or outside the
    power sphere of the smallest known t (centre c(t), radius^2 <= pow_f + t^2 + wmax). One loop
    walks the hierarchy depth first in Morton order, testing a box on entering it and stepping
    over the whole of a closed one, so the box test and the predicates are each inlined at one
    call site (compile time); every box's children come nearest first to the cell one cell
    size in front of the face's centroid, where the apex most likely is, so a good apex is found
    early and the power sphere prunes the rest. At 1e6 points in 3D a face then tests about
    100-250 boxes and 15-21 points (mean per round); visiting 16^3-cell top boxes in raster order,
    then their children in plain Morton order, had cost 280-690 box tests and 38-108 points,
    with a tail of faces near the hull at thousands of each."""
    for fi in range(m):  # no statements before the loop (see cells2d)
        h, wmax = prm[0], prm[1]
        r3 = ti.Vector([res[0], res[1], res[2]])
        lo = ti.Vector.zero(ti.f64, 3)
        for a in ti.static(range(dim)):
            lo[a] = glo[a]
        F, p0, n, cf, pow_f, scale = _wrap_face(P, W, faces, opp, fi, dim)
        K = wmax + pow_f
        n3 = ti.Vector.zero(ti.f64, 3)
        p03 = ti.Vector.zero(ti.f64, 3)
        cf3 = ti.Vector.zero(ti.f64, 3)
        for a in ti.static(range(dim)):
            n3[a] = n[a]
            p03[a] = p0[a]
            cf3[a] = cf[a]
        best = -1
        tb = _f64(0.0)
        sp = _face_side(P, F, opp[fi], dim)
        top = lvl.shape[0] - 1  # the level of the one root box
        qc = _near_cell(F, n, lo, h, P, dim)
        k = ti.i64(0)  # Morton position: up to 3 x 11 bits (a grid is at most 1025 cells wide)
        lev = top
        while k < ti.i64(1) << (dim * top):
            cx, cy, cz = _morton_cell(k, top, qc, dim)
            step = False  # past this box: k moves to the next one at its level
            bx, by, bz = cx >> lev, cy >> lev, cz >> lev  # the box at this level
            if bx << lev >= r3[0] or by << lev >= r3[1] or bz << lev >= r3[2]:  # beyond the grid
                step = True
            elif not _wrap_box_open(box, _level_row(lvl, lev, bx, by, bz), n3, p03, cf3, best, tb, K, scale):
                step = True
            elif lev > 0:
                lev -= 1
            else:
                f = (cx * r3[1] + cy) * r3[2] + cz
                for sidx in range(start[f], start[f + 1]):
                    q = order[sidx]
                    if skip[q] == 0:
                        best, tb = _wrap_candidate(P, W, F, sp, q, n, p0, cf, pow_f, scale, best, tb, dim)
                step = True
            if step:
                k += ti.i64(1) << (dim * lev)
                lev = _aligned_level(k, top, dim)
        out[fi] = best


# --------------------------------------------------------------------------- orientation


@ti.kernel
def orient_simplices(P: nd_f64_2, s: nd_i32_2, m: ti.i32, used: nd_i32, dim: ti.template()):
    """Swap the first two vertices of every one of the first m simplices whose signed volume is
    negative, and mark their vertices used."""
    for t in range(m):
        for a in ti.static(range(dim + 1)):
            used[s[t, a]] = 1
        p0 = _pt(P, s[t, 0], dim)
        a = _pt(P, s[t, 1], dim) - p0
        b = _pt(P, s[t, 2], dim) - p0
        vol = _f64(0.0)
        if ti.static(dim == 2):
            vol = a[0] * b[1] - a[1] * b[0]
        else:
            c = _pt(P, s[t, 3], dim) - p0
            vol = a.dot(b.cross(c))
        if vol < 0:
            tmp = s[t, 0]
            s[t, 0] = s[t, 1]
            s[t, 1] = tmp
