"""DMesh kernels: face probabilities (min-ball and weighted-Delaunay), the expected Chamfer loss,
and the grid queries that pick which points and faces each term looks at.

Every differentiable quantity is split in two kernels: a *selection* kernel (arg-mins, nearest
neighbours, sort orders; integers, no gradient, as in DMesh where the arg-min choices carry no
gradient) and an *evaluation* kernel that is straight-line arithmetic on the selected indices.
Evaluation kernels are differentiated by Taichi's reverse-mode autodiff (``kernel.grad``), which
gives the exact vector-Jacobian product of the evaluated function with the selection held fixed.

Points enter the selection kernels padded to three coordinates (z = 0 in 2D); evaluation
kernels read the (N, dim) arrays directly and work on 3-vectors with z = 0 in 2D.
"""

import taichi as ti

from .._core.gridfuncs import cell_index, flat_index, knn_into, sorted_insert

nd_i32 = ti.types.ndarray(dtype=ti.i32, ndim=1)
nd2_i32 = ti.types.ndarray(dtype=ti.i32, ndim=2)

SOFTMIN_Q = 32.0  # exponent of the power-mean soft minimum of the real values


# --------------------------------------------------------------------------- small geometry


@ti.func
def _pt(P: ti.template(), i, dim: ti.template()):
    if ti.static(dim == 3):
        return ti.Vector([P[i, 0], P[i, 1], P[i, 2]])
    else:
        return ti.Vector([P[i, 0], P[i, 1], 0.0])


@ti.func
def _sigmoid(x):
    """Logistic function, evaluated so that neither it nor its derivative overflows."""
    out = 0.0
    if x >= 0:
        out = 1.0 / (1.0 + ti.exp(-x))
    else:
        e = ti.exp(x)
        out = e / (1.0 + e)
    return out


@ti.func
def _norm(v):
    """|v| with a finite derivative at v = 0 (0 there)."""
    return ti.sqrt(v.norm_sqr() + 1e-30)


@ti.func
def _softmin(R: ti.template(), F: ti.template(), f, D: ti.template()):
    """Power mean with exponent -Q of the face's real values: monotone in every value, between
    min and min(max, D^(1/Q) min), equal to ψ when all are ψ, 0 when any value is 0, gradient
    to every vertex."""
    m = R[F[f, 0]]
    for k in ti.static(range(1, D)):
        m = ti.min(m, R[F[f, k]])
    out = m
    if m > 0:
        s = 0.0
        for k in ti.static(range(D)):
            s += (m / R[F[f, k]]) ** SOFTMIN_Q
        out = m * (s / D) ** (-1.0 / SOFTMIN_Q)
    return out


@ti.func
def _ball(a, b, c, dim: ti.template()):
    """Centre and radius of a face's minimum ball: the edge's diametral disk (2D), the
    triangle's circumscribed ball centred in its plane (3D)."""
    centre = 0.5 * (a + b)
    if ti.static(dim == 3):
        u = b - a
        v = c - a
        n = u.cross(v)
        centre = a + (u.norm_sqr() * v.cross(n) + v.norm_sqr() * n.cross(u)) / (2.0 * n.norm_sqr())
    return centre, (centre - a).norm()


@ti.func
def _power_center(P: ti.template(), W: ti.template(), S: ti.template(), s, dim: ti.template()):
    """Power centre (orthocentre) of simplex s: the point of equal power distance to its vertices."""
    x0 = _pt(P, S[s, 0], dim)
    c = ti.Vector([0.0, 0.0, 0.0])
    if ti.static(dim == 2):
        x1 = _pt(P, S[s, 1], dim)
        x2 = _pt(P, S[s, 2], dim)
        A = ti.Matrix([[2.0 * (x1[0] - x0[0]), 2.0 * (x1[1] - x0[1])],
                       [2.0 * (x2[0] - x0[0]), 2.0 * (x2[1] - x0[1])]])
        w0 = W[S[s, 0]]
        b = ti.Vector([x1.norm_sqr() - x0.norm_sqr() - W[S[s, 1]] + w0,
                       x2.norm_sqr() - x0.norm_sqr() - W[S[s, 2]] + w0])
        y = A.inverse() @ b
        c = ti.Vector([y[0], y[1], 0.0])
    else:
        x1 = _pt(P, S[s, 1], dim)
        x2 = _pt(P, S[s, 2], dim)
        x3 = _pt(P, S[s, 3], dim)
        A = ti.Matrix.rows([2.0 * (x1 - x0), 2.0 * (x2 - x0), 2.0 * (x3 - x0)])
        w0 = W[S[s, 0]]
        b = ti.Vector([x1.norm_sqr() - x0.norm_sqr() - W[S[s, 1]] + w0,
                       x2.norm_sqr() - x0.norm_sqr() - W[S[s, 2]] + w0,
                       x3.norm_sqr() - x0.norm_sqr() - W[S[s, 3]] + w0])
        c = A.inverse() @ b
    return c


@ti.func
def _dual_line(P: ti.template(), W: ti.template(), F: ti.template(), f, dim: ti.template()):
    """F's dual line: the points of equal power distance to F's vertices. Returns a point on it
    (F's orthocentre within F's own affine hull) and its unit direction (normal to F)."""
    a = _pt(P, F[f, 0], dim)
    b = _pt(P, F[f, 1], dim)
    o = a
    n = ti.Vector([0.0, 0.0, 0.0])
    if ti.static(dim == 2):
        e = b - a
        delta = 0.5 * (1.0 - (W[F[f, 1]] - W[F[f, 0]]) / e.norm_sqr())
        o = a + delta * e
        n = ti.Vector([-e[1], e[0], 0.0]) / e.norm()
    else:
        c = _pt(P, F[f, 2], dim)
        u = b - a
        v = c - a
        # o = a + s u + t v with 2 (x_i - a) . o = |x_i|^2 - |a|^2 - w_i + w_a for x_i = b, c
        r1 = b.norm_sqr() - a.norm_sqr() - W[F[f, 1]] + W[F[f, 0]] - 2.0 * u.dot(a)
        r2 = c.norm_sqr() - a.norm_sqr() - W[F[f, 2]] + W[F[f, 0]] - 2.0 * v.dot(a)
        M = ti.Matrix([[2.0 * u.dot(u), 2.0 * u.dot(v)], [2.0 * v.dot(u), 2.0 * v.dot(v)]])
        st = M.inverse() @ ti.Vector([r1, r2])
        o = a + st[0] * u + st[1] * v
        n = u.cross(v).normalized()
    return o, n


@ti.func
def _line_dist(x, o, n):
    r = x - o
    return (r - r.dot(n) * n).norm()


@ti.func
def _bisector_dist(P: ti.template(), W: ti.template(), v, j, m, dim: ti.template()):
    """Signed distance from m to the power bisector of (v, j), positive on v's side."""
    pv = _pt(P, v, dim)
    pj = _pt(P, j, dim)
    e = pj - pv
    l2 = e.norm_sqr()
    n = e / ti.sqrt(l2)
    delta = 0.5 * (1.0 - (W[j] - W[v]) / l2)
    return n.dot(pv + delta * e) - n.dot(m)


@ti.func
def _dual_point(P: ti.template(), W: ti.template(), F: ti.template(), S: ti.template(), f, s0, s1,
                D: ti.template(), dim: ti.template()):
    """A point inside the dual element of a face of the triangulation: the midpoint of the dual
    segment between the power centres of its two simplices or, on the hull, a point on the
    outward dual ray (past the face's orthocentre by the face's size)."""
    c0 = _power_center(P, W, S, s0, dim)
    m = c0
    if s1 >= 0:
        m = 0.5 * (c0 + _power_center(P, W, S, s1, dim))
    else:
        o, n = _dual_line(P, W, F, f, dim)
        opp = S[s0, 0]
        for k in ti.static(range(D + 1)):
            x = S[s0, k]
            inf = False
            for kk in ti.static(range(D)):
                if F[f, kk] == x:
                    inf = True
            if not inf:
                opp = x
        if n.dot(_pt(P, opp, dim) - o) > 0:
            n = -n
        rho = 0.0
        for kk in ti.static(range(D)):
            rho = ti.max(rho, (_pt(P, F[f, kk], dim) - o).norm())
        m = c0 + (ti.max(n.dot(o - c0), 0.0) + rho) * n
    return m


# --------------------------------------------------------------------------- min-ball (DMesh++)


@ti.func
def _face_ball(P3: ti.template(), F: ti.template(), f, dim: ti.template()):
    """Minimum ball (centre, radius) of face f, from the padded (N, 3) points."""
    a = _pt(P3, F[f, 0], 3)
    b = _pt(P3, F[f, 1], 3)
    c = a
    if ti.static(dim == 3):
        c = _pt(P3, F[f, 2], 3)
    return _ball(a, b, c, dim)


@ti.func
def _is_vertex(F: ti.template(), f, i, dim: ti.template()):
    own = False
    for k in ti.static(range(dim)):
        if F[f, k] == i:
            own = True
    return own


@ti.kernel
def minball_select(P3: ti.types.ndarray(ndim=2), F: nd2_i32, lo: ti.types.ndarray(ndim=1), h: float,
                   res: nd_i32, start: nd_i32, order: nd_i32, cap: float, low: float, smax: ti.i32,
                   dim: ti.template(), out: nd_i32, deferred: nd_i32, ndeferred: nd_i32):
    """Per face: the point (not a vertex of the face) nearest its minimum-ball centre, or -1 when
    none lies within r + cap (Λ_min is then saturated at σ(α cap)). The search stops early at
    any point deeper than ``low`` inside the ball: the margin is clamped at -low, so which such
    point is chosen does not change the value, and the huge balls of nearly flat triangles
    (centres far outside the data) no longer make their threads scan the whole grid.

    Shells of cells at Chebyshev distance s = 0, 1, ... around the centre's (clamped) cell; after
    shell s every unvisited point is at least s h away (see tigeom._spatial_kernels). A face still
    open after shell ``smax`` (a huge, nearly empty ball, such as a flat triangle on the hull) is
    listed in ``deferred`` for :func:`minball_brute` instead: one thread scanning the whole grid
    would set the time of the entire kernel on a GPU."""
    r3 = ti.Vector([res[0], res[1], res[2]])
    lov = ti.Vector([lo[0], lo[1], lo[2]])
    rmax = ti.max(r3[0], ti.max(r3[1], r3[2]))
    for f in range(F.shape[0]):
        centre, rad = _face_ball(P3, F, f, dim)
        reach = rad + cap
        deep = ti.max(rad - low, 0.0)
        cell = cell_index(centre, lov, h, r3)
        best = -1
        bd2 = reach * reach
        s = 0
        while s <= rmax:
            for da, db in ti.ndrange((-s, s + 1), (-s, s + 1)):
                edge = ti.abs(da) == s or ti.abs(db) == s
                e = -s
                while e <= s:
                    cc = cell + ti.Vector([da, db, e])
                    if 0 <= cc[0] < r3[0] and 0 <= cc[1] < r3[1] and 0 <= cc[2] < r3[2]:
                        fl = flat_index(cc, r3)
                        for t in range(start[fl], start[fl + 1]):
                            i = order[t]
                            q = _pt(P3, i, 3) - centre
                            d2 = q.dot(q)
                            if not _is_vertex(F, f, i, dim) and (d2 < bd2 or (d2 == bd2 and (best < 0 or i < best))):
                                bd2 = d2
                                best = i
                    e += 1 if (edge or s == 0) else 2 * s
            if (best >= 0 and (bd2 < deep * deep or bd2 <= (s * h) * (s * h))) or s * h >= reach:
                break
            if s >= smax:
                best = -2
                deferred[ti.atomic_add(ndeferred[0], 1)] = f
                break
            s += 1
        out[f] = best


@ti.kernel
def minball_brute(P3: ti.types.ndarray(ndim=2), F: nd2_i32, deferred: nd_i32, m: ti.i32, cap: float,
                  chunk: ti.i32, dim: ti.template(), bd2: ti.types.ndarray(ndim=2), bid: nd2_i32):
    """Nearest point (not in the face, within r + cap) to each deferred face's ball centre, per
    chunk of ``chunk`` points: all (face, chunk) pairs in parallel. Row k of bd2 / bid gets each
    chunk's best squared distance and index (-1: none), for :func:`minball_brute_reduce`. No
    atomics and no float equality across kernels (a GPU may round one expression differently in
    two kernels), so the choice is the same as the shell search's: the smallest (d2, index)."""
    for k, c in ti.ndrange(m, bd2.shape[1]):
        f = deferred[k]
        centre, rad = _face_ball(P3, F, f, dim)
        reach = rad + cap
        b2 = reach * reach
        best = -1
        for i in range(c * chunk, ti.min((c + 1) * chunk, P3.shape[0])):
            q = _pt(P3, i, 3) - centre
            d2 = q.dot(q)
            if not _is_vertex(F, f, i, dim) and (d2 < b2 or (d2 == b2 and best < 0)):
                b2 = d2
                best = i
        bd2[k, c] = b2
        bid[k, c] = best


@ti.kernel
def minball_brute_reduce(deferred: nd_i32, m: ti.i32, bd2: ti.types.ndarray(ndim=2), bid: nd2_i32,
                         out: nd_i32):
    """The smallest (d2, index) over the chunks of each deferred face, into out."""
    for k in range(m):
        b2 = bd2[k, 0]
        best = bid[k, 0]
        for c in range(1, bd2.shape[1]):
            i = bid[k, c]
            if i >= 0 and (best < 0 or bd2[k, c] < b2):  # chunks ascend in index: ties keep the first
                b2 = bd2[k, c]
                best = i
        out[deferred[k]] = best


@ti.kernel
def minball_eval(P: ti.types.ndarray(ndim=2), R: ti.types.ndarray(ndim=1), F: nd2_i32, near: nd_i32,
                 alpha: float, cap: float, low: float, dim: ti.template(), probs: ti.types.ndarray(ndim=1),
                 margin: ti.types.ndarray(ndim=1)):
    """Λ = σ(α d(F)) · softmin(ψ), d(F) = max(|p* - c_F| - r_F, -low) (cap when no point is within
    reach)."""
    for f in range(F.shape[0]):
        a = _pt(P, F[f, 0], dim)
        b = _pt(P, F[f, 1], dim)
        c = a
        if ti.static(dim == 3):
            c = _pt(P, F[f, 2], dim)
        centre, rad = _ball(a, b, c, dim)
        d = cap
        j = near[f]
        if j >= 0:
            d = ti.max(_norm(_pt(P, j, dim) - centre) - rad, -low)
        margin[f] = d
        probs[f] = _sigmoid(alpha * d) * _softmin(R, F, f, dim)


# --------------------------------------------------------------------------- weighted Delaunay (DMesh)


@ti.kernel
def wdt_select(P: ti.types.ndarray(ndim=2), W: ti.types.ndarray(ndim=1), F: nd2_i32, S: nd2_i32,
               s0: nd_i32, s1: nd_i32, nptr: nd_i32, nbr: nd_i32, vptr: nd_i32, vsim: nd_i32,
               dim: ti.template(), sel: nd2_i32):
    """Arg-min choices of Δ(F). Faces of the triangulation (s0 >= 0): per vertex v, the neighbour
    j not in F whose power bisector is closest to the dual point. Other faces: per vertex v, the
    corner of v's power cell closest to F's dual line (-1 for a hidden vertex)."""
    for f in range(F.shape[0]):
        if s0[f] >= 0:
            m = _dual_point(P, W, F, S, f, s0[f], s1[f], dim, dim)
            for k in ti.static(range(dim)):
                v = F[f, k]
                best = -1
                bd = 0.0
                for t in range(nptr[v], nptr[v + 1]):
                    j = nbr[t]
                    own = False
                    for kk in ti.static(range(dim)):
                        if F[f, kk] == j:
                            own = True
                    if not own:
                        dj = _bisector_dist(P, W, v, j, m, dim)
                        if best < 0 or dj < bd:
                            best = j
                            bd = dj
                sel[f, k] = best
        else:
            o, n = _dual_line(P, W, F, f, dim)
            for k in ti.static(range(dim)):
                v = F[f, k]
                best = -1
                bd = 0.0
                for t in range(vptr[v], vptr[v + 1]):
                    s = vsim[t]
                    ds = _line_dist(_power_center(P, W, S, s, dim), o, n)
                    if best < 0 or ds < bd:
                        best = s
                        bd = ds
                sel[f, k] = best


@ti.kernel
def wdt_eval(P: ti.types.ndarray(ndim=2), W: ti.types.ndarray(ndim=1), R: ti.types.ndarray(ndim=1),
             F: nd2_i32, S: nd2_i32, s0: nd_i32, s1: nd_i32, sel: nd2_i32, alpha: float, cap: float,
             dim: ti.template(), probs: ti.types.ndarray(ndim=1), margin: ti.types.ndarray(ndim=1)):
    """Λ = σ(α Δ(F)) · softmin(ψ) with Δ as in DMesh (see wdt_select for the arg-mins)."""
    for f in range(F.shape[0]):
        delta = 0.0
        if s0[f] >= 0:
            m = _dual_point(P, W, F, S, f, s0[f], s1[f], dim, dim)
            for k in ti.static(range(dim)):
                j = sel[f, k]
                if j >= 0:
                    delta += _bisector_dist(P, W, F[f, k], j, m, dim)
                else:
                    delta += cap
        else:
            o, n = _dual_line(P, W, F, f, dim)
            for k in ti.static(range(dim)):
                s = sel[f, k]
                if s >= 0:
                    delta -= _line_dist(_power_center(P, W, S, s, dim), o, n)
                else:
                    delta -= _line_dist(_pt(P, F[f, k], dim), o, n)
        delta = delta / dim
        margin[f] = delta
        probs[f] = _sigmoid(alpha * delta) * _softmin(R, F, f, dim)


# --------------------------------------------------------------------------- expected Chamfer


@ti.func
def _face_measure(a, b, c, dim: ti.template()):
    out = (b - a).norm()
    if ti.static(dim == 3):
        out = 0.5 * (b - a).cross(c - a).norm()
    return out


@ti.func
def _seg_dist2(x, a, b):
    e = b - a
    t = ti.min(ti.max((x - a).dot(e) / e.norm_sqr(), 0.0), 1.0)
    return (x - (a + t * e)).norm_sqr()


@ti.func
def _face_dist2(x, a, b, c, dim: ti.template()):
    """Squared distance from x to the segment ab (2D) or the triangle abc (3D)."""
    out = _seg_dist2(x, a, b)
    if ti.static(dim == 3):
        u = b - a
        v = c - a
        n = u.cross(v)
        nn = n.norm_sqr()
        r = x - a
        # barycentric coordinates of the projection of x onto the plane
        s = r.cross(v).dot(n) / nn
        t = u.cross(r).dot(n) / nn
        if s >= 0 and t >= 0 and s + t <= 1:
            h = r.dot(n)
            out = h * h / nn
        else:
            out = ti.min(out, ti.min(_seg_dist2(x, b, c), _seg_dist2(x, c, a)))
    return out


@ti.kernel
def face_samples(P3: ti.types.ndarray(ndim=2), F: nd2_i32, keep: nd_i32, bary: ti.types.ndarray(ndim=2),
                 D: ti.template(), out: ti.types.ndarray(ndim=2)):
    """Quadrature points x_{j,k} = Σ_v bary[k, v] p_v of the faces keep[j] (D vertices), rows
    j * M + k, from points padded to 3D."""
    M = bary.shape[0]
    for j, k in ti.ndrange(keep.shape[0], M):
        f = keep[j]
        x = ti.Vector([0.0, 0.0, 0.0])
        for v in ti.static(range(D)):
            x += bary[k, v] * _pt(P3, F[f, v], 3)
        for d in ti.static(range(3)):
            out[j * M + k, d] = x[d]


@ti.kernel
def mesh_to_target(P: ti.types.ndarray(ndim=2), F: nd2_i32, keep: nd_i32, probs: ti.types.ndarray(ndim=1),
                   bary: ti.types.ndarray(ndim=2), T: ti.types.ndarray(ndim=2), near: nd2_i32, reach: float,
                   floor: float, dim: ti.template(), acc: ti.types.ndarray(ndim=2)):
    """Σ p_f (|f| / M) (min(|x_fk - t(x_fk)|, reach) - floor)_+^2 into acc[:, 0] and Σ p_f |f| / M
    into acc[:, 1], over the faces f = keep[j]: quadrature of the probability-weighted squared
    distance from the mesh to the targets beyond the sampling tolerance ``floor`` (``near`` = -1:
    no target within reach). Sums are spread over the rows of ``acc`` (summed by the caller), so
    that the adds do not all contend for one address. (Autodiff: only the loop at top level.)"""
    for j, k in ti.ndrange(keep.shape[0], bary.shape[0]):
        f = keep[j]
        a = _pt(P, F[f, 0], dim)
        b = _pt(P, F[f, 1], dim)
        c = a
        if ti.static(dim == 3):
            c = _pt(P, F[f, 2], dim)
        x = ti.Vector([0.0, 0.0, 0.0])
        for v in ti.static(range(dim)):
            x += bary[k, v] * _pt(P, F[f, v], dim)
        wgt = probs[f] * _face_measure(a, b, c, dim) / bary.shape[0]
        t = near[j * bary.shape[0] + k, 0]
        d = reach
        if t >= 0:
            d = ti.min(_norm(x - _pt(T, t, dim)), reach)
        d = ti.max(d - floor, 0.0)
        acc[j % acc.shape[0], 0] += wgt * d * d
        acc[j % acc.shape[0], 1] += wgt


@ti.kernel
def knn_faces(X3: ti.types.ndarray(ndim=2), Q3: ti.types.ndarray(ndim=2), keep: nd_i32, M: ti.i32,
              lo: ti.types.ndarray(ndim=1), h: float, res: nd_i32, start: nd_i32, order: nd_i32,
              P3: ti.types.ndarray(ndim=2), F: nd2_i32, dim: ti.template(),
              kd2: ti.types.ndarray(ndim=2), kid: nd2_i32, out: nd2_i32):
    """For each query q: its k nearest face samples (rows of X3; row j * M + k belongs to face
    keep[j]), then
    the distinct faces owning them, ordered by exact distance from q to the face. Rows of ``out``
    are padded with -1."""
    r3 = ti.Vector([res[0], res[1], res[2]])
    lov = ti.Vector([lo[0], lo[1], lo[2]])
    K = kd2.shape[1]
    for q in range(Q3.shape[0]):
        x = _pt(Q3, q, 3)
        cnt = knn_into(X3, x, -1, 1e30, lov, h, r3, start, order, kd2, kid, q)
        # distinct owning faces, sorted by exact distance (kd2 reused as the distance buffer)
        nf = 0
        for t in range(cnt):
            fid = keep[kid[q, t] // M]
            seen = False
            for u in range(nf):
                if out[q, u] == fid:
                    seen = True
            if not seen:
                out[q, nf] = fid
                nf += 1
        for t in range(nf):
            fid = out[q, t]
            a = _pt(P3, F[fid, 0], 3)
            b = _pt(P3, F[fid, 1], 3)
            c = a
            if ti.static(dim == 3):
                c = _pt(P3, F[fid, 2], 3)
            kd2[q, t] = _face_dist2(x, a, b, c, dim)
        for t in range(1, nf):
            sorted_insert(kd2, out, q, t, kd2[q, t], out[q, t])
        for t in range(nf, K):
            out[q, t] = -1


@ti.kernel
def target_to_mesh(P: ti.types.ndarray(ndim=2), F: nd2_i32, probs: ti.types.ndarray(ndim=1),
                   T: ti.types.ndarray(ndim=2), cand: nd2_i32, miss2: float, dim: ti.template(),
                   K: ti.template(), acc: ti.types.ndarray(ndim=1)):
    """acc (summed by the caller) += Σ_t [Σ_j p_j Π_{i<j} (1 - p_i) d_j^2 + Π_j (1 - p_j) (d_last^2 + miss2)]: the
    expected squared distance from each target to the nearest existing face among its
    candidates (sorted by distance), a miss costing the farthest candidate's distance plus a
    margin."""
    for t in range(T.shape[0]):
        x = _pt(T, t, dim)
        e = 0.0
        keep = 1.0
        last = 0.0
        for j in ti.static(range(K)):
            f = cand[t, j]
            if f >= 0:
                a = _pt(P, F[f, 0], dim)
                b = _pt(P, F[f, 1], dim)
                c = a
                if ti.static(dim == 3):
                    c = _pt(P, F[f, 2], dim)
                d2 = _face_dist2(x, a, b, c, dim)
                e += keep * probs[f] * d2
                keep *= 1.0 - probs[f]
                last = d2
        acc[t % acc.shape[0]] += e + keep * (last + miss2)


# --------------------------------------------------------------------------- regularisers


@ti.kernel
def real_consistency(R: ti.types.ndarray(ndim=1), F: nd2_i32, probs: ti.types.ndarray(ndim=1),
                     dim: ti.template(), acc: ti.types.ndarray(ndim=1)):
    """acc (summed by the caller) += Σ_F p_F Σ_{v in F} (ψ_v - mean_F ψ)^2: pulls a likely face's real values together."""
    for f in range(F.shape[0]):
        mean = 0.0
        for k in ti.static(range(dim)):
            mean += R[F[f, k]]
        mean /= dim
        s = 0.0
        for k in ti.static(range(dim)):
            s += (R[F[f, k]] - mean) ** 2
        acc[f % acc.shape[0]] += probs[f] * s


@ti.kernel
def face_quality(P: ti.types.ndarray(ndim=2), F: nd2_i32, probs: ti.types.ndarray(ndim=1), scale: float,
                 dim: ti.template(), acc: ti.types.ndarray(ndim=1)):
    """acc (summed by the caller) += Σ_F p_F b_F with b_F = 1 - 4 sqrt(3) A / Σ l^2 (0 for an equilateral triangle,
    1 for a flat one) in 3D, and (l / scale)^2 for an edge in 2D."""
    for f in range(F.shape[0]):
        a = _pt(P, F[f, 0], dim)
        b = _pt(P, F[f, 1], dim)
        bad = (b - a).norm_sqr() / (scale * scale)
        if ti.static(dim == 3):
            c = _pt(P, F[f, 2], dim)
            l2 = (b - a).norm_sqr() + (c - b).norm_sqr() + (a - c).norm_sqr()
            area = 0.5 * (b - a).cross(c - a).norm()
            bad = 1.0 - 4.0 * ti.sqrt(3.0) * area / l2
        acc[f % acc.shape[0]] += probs[f] * bad


# --------------------------------------------------------------------------- optimiser state


@ti.kernel
def working_copy(src: ti.types.ndarray(), dst: ti.types.ndarray(), dt: ti.template()):
    """dst = src cast to dt, the runtime's float type (the float64 masters -> the kernels' copy)."""
    for I in ti.grouped(src):
        dst[I] = ti.cast(src[I], dt)


@ti.kernel
def padded_copy(src: ti.types.ndarray(dtype=ti.f64, ndim=2), dst: ti.types.ndarray(ndim=2),
                box: ti.types.ndarray(dtype=ti.f64, ndim=1), dt: ti.template()):
    """dst (N, 3) = src (N, d) cast to dt and padded with z = 0, and box = (min x, y, z, max x,
    y, z) of dst (in float64)."""
    for k in range(3):
        box[k] = 1e300
        box[3 + k] = -1e300
    for i in range(src.shape[0]):
        for k in ti.static(range(3)):
            x = ti.cast(0.0, dt)
            if k < src.shape[1]:
                x = ti.cast(src[i, k], dt)
            dst[i, k] = x
            ti.atomic_min(box[k], ti.cast(x, ti.f64))
            ti.atomic_max(box[3 + k], ti.cast(x, ti.f64))


@ti.kernel
def adam_step(x: ti.types.ndarray(), g: ti.types.ndarray(), m: ti.types.ndarray(), v: ti.types.ndarray(),
              move: nd_i32, prm: ti.types.ndarray(dtype=ti.f64, ndim=1)):
    """One Adam step on the float64 values x with the gradient g (the kernels' float type), as
    :class:`tigeom.optim.Adam` computes it: moments updated everywhere, the update capped at
    prm[6] (when > 0), applied where move[row] != 0 and clamped to [prm[7], prm[8]].
    prm = (lr, beta1, beta2, 1 - beta1^t, 1 - beta2^t, eps, max_step, lo, hi)."""
    lr, b1, b2, c1, c2, eps, cap, lo, hi = prm[0], prm[1], prm[2], prm[3], prm[4], prm[5], prm[6], prm[7], prm[8]
    for I in ti.grouped(x):
        gi = ti.cast(g[I], ti.f64)
        mi = b1 * m[I] + (1 - b1) * gi
        vi = b2 * v[I] + (1 - b2) * gi * gi
        m[I] = mi
        v[I] = vi
        upd = -lr * (mi / c1) / (ti.sqrt(vi / c2) + eps)
        if cap > 0:
            upd = ti.min(ti.max(upd, -cap), cap)
        if move[I[0]] != 0:
            x[I] = ti.min(ti.max(x[I] + upd, lo), hi)
