"""Taichi kernels of the tetrahedral mesh quality module (f64 whatever the runtime precision).

Orientation: a tet (a, b, c, d) is positive when det[b - a, c - a, d - a] > 0. The six edges of a
tet are numbered (0,1) (0,2) (0,3) (1,2) (1,3) (2,3); the dihedral angle at edge (i, j) lies
between the two faces that contain it, i.e. the faces opposite the other two vertices k, l:
cos = -n_k . n_l (outward unit normals), sin = 3 V |e_ij| / (2 A_k A_l).

The improvement quality of a tet is the smallest sine of its six dihedral angles (negative
when inverted, 0 when flat), the measure Klingner & Shewchuk use to drive both small and large
angles away: a tet with every angle in [30, 150] degrees has quality >= 0.5; the regular tet has
sqrt(8) / 3 = 0.9428.
"""

import taichi as ti

from .._core.launch import fast_module_kernels, light_compile

nd_f64 = ti.types.ndarray(dtype=ti.f64, ndim=1)
nd_f64_2 = ti.types.ndarray(dtype=ti.f64, ndim=2)
nd_i32 = ti.types.ndarray(dtype=ti.i32, ndim=1)
nd_i32_2 = ti.types.ndarray(dtype=ti.i32, ndim=2)
nd_i64 = ti.types.ndarray(dtype=ti.i64, ndim=1)

v3 = ti.types.vector(3, ti.f64)
EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
OTHER = ((2, 3), (1, 3), (1, 2), (0, 3), (0, 2), (0, 1))  # the two vertices off each edge
DEG = 57.29577951308232  # degrees per radian


@ti.func
def _pt(V: ti.template(), i):
    return v3(V[i, 0], V[i, 1], V[i, 2])


@ti.func
def _face_normal(p: ti.template(), k):
    """Outward area vector of the face opposite vertex k (length = twice the area) of a positive tet."""
    n = v3(0.0, 0.0, 0.0)
    if k == 0:
        n = (p[2] - p[1]).cross(p[3] - p[1])
    elif k == 1:
        n = (p[3] - p[0]).cross(p[2] - p[0])
    elif k == 2:
        n = (p[1] - p[0]).cross(p[3] - p[0])
    else:
        n = (p[2] - p[0]).cross(p[1] - p[0])
    return n


@ti.func
def _angles(pts: ti.template()):
    """Sines and angles (degrees) of the six dihedral angles, EDGES order; sines < 0 when inverted."""
    vol6 = (pts[1] - pts[0]).dot((pts[2] - pts[0]).cross(pts[3] - pts[0]))
    nrm = [_face_normal(pts, k) for k in ti.static(range(4))]
    sines = ti.Vector([0.0] * 6, ti.f64)
    angs = ti.Vector([0.0] * 6, ti.f64)
    for e in ti.static(range(6)):
        i, j, k, l = ti.static(EDGES[e][0], EDGES[e][1], OTHER[e][0], OTHER[e][1])
        den = nrm[k].norm() * nrm[l].norm()
        if den > 0.0:
            # sin = 3 V |e| / (2 A_k A_l) with A = |n| / 2 and V = vol6 / 6
            sines[e] = vol6 * (pts[j] - pts[i]).norm() / den
            angs[e] = ti.atan2(sines[e], -nrm[k].dot(nrm[l]) / den) * ti.f64(DEG)
    return sines, angs


@ti.func
def tet_min_sine(a, b, c, d):
    """Smallest dihedral sine of (a, b, c, d); negative for an inverted tet, 0 for a flat one."""
    pts = [a, b, c, d]
    vol6 = (pts[1] - pts[0]).dot((pts[2] - pts[0]).cross(pts[3] - pts[0]))
    nl = [_face_normal(pts, k).norm() for k in ti.static(range(4))]
    m = ti.f64(1e300)
    for e in ti.static(range(6)):  # the sines of _angles, without the angles
        i, j, k, l = ti.static(EDGES[e][0], EDGES[e][1], OTHER[e][0], OTHER[e][1])
        den = nl[k] * nl[l]
        s = ti.f64(0.0)
        if den > 0.0:
            s = vol6 * (pts[j] - pts[i]).norm() / den
        m = ti.min(m, s)
    return m


@ti.func
def tet_measures(a, b, c, d):
    """(volume, radius ratio, mean ratio, AMIPS, sines, angles) of one tet."""
    pts = [a, b, c, d]
    sines, angs = _angles(pts)
    u, v, w = b - a, c - a, d - a
    vol6 = u.dot(v.cross(w))
    vol = vol6 / 6.0
    # radius ratio 3 r_in / R; circumcentre a + (|u|^2 v x w + |v|^2 w x u + |w|^2 u x v) / (2 det)
    rr = ti.f64(0.0)
    if vol6 != 0.0:
        cen = (u.norm_sqr() * v.cross(w) + v.norm_sqr() * w.cross(u) + w.norm_sqr() * u.cross(v)) / (2.0 * vol6)
        asum = ti.f64(0.0)
        for k in ti.static(range(4)):
            asum += 0.5 * _face_normal(pts, k).norm()
        rr = 9.0 * vol / (asum * cen.norm())
    # mean ratio 12 (3|V|)^(2/3) / sum l^2 (signed); AMIPS tr(J^T J) / det(J)^(2/3) = 3 / mean ratio
    l2sum = ti.f64(0.0)
    for e in ti.static(range(6)):
        i, j = ti.static(EDGES[e][0], EDGES[e][1])
        l2sum += (pts[j] - pts[i]).norm_sqr()
    mr = ti.f64(0.0)
    if l2sum > 0.0:
        mr = 12.0 * ti.pow(3.0 * ti.abs(vol), ti.f64(2.0 / 3.0)) / l2sum
        if vol < 0.0:
            mr = -mr
    amips = ti.f64(ti.math.inf)
    if mr > 0.0:
        amips = 3.0 / mr
    return vol, rr, mr, amips, sines, angs


@ti.kernel
def measures(V: nd_f64_2, T: nd_i32_2, out: nd_f64_2, dih: nd_f64_2):
    for t in range(T.shape[0]):
        a, b, c, d = _pt(V, T[t, 0]), _pt(V, T[t, 1]), _pt(V, T[t, 2]), _pt(V, T[t, 3])
        vol, rr, mr, amips, sines, angs = tet_measures(a, b, c, d)
        out[t, 0] = vol
        out[t, 1] = rr
        out[t, 2] = mr
        out[t, 3] = amips
        out[t, 4] = sines.min()
        for e in ti.static(range(6)):
            dih[t, e] = angs[e]


# --------------------------------------------------------------------------- gradients of the measures

# the vertices of the face opposite vertex k in the order _face_normal crosses them: n = (y - x) x (z - x)
FACE_XYZ = ((1, 2, 3), (0, 3, 2), (0, 1, 3), (0, 2, 1))


@ti.func
def _add_row(G: ti.template(), q: ti.template(), x):
    for c in ti.static(range(3)):
        G[q, c] += x[c]


@ti.func
def _area_grads(G: ti.template(), p: ti.template(), coef):
    """G += coef * d(sum of the four face areas)/dp: the area of a triangle (x, y, z) with unit
    normal m moves with x as m x (z - y) / 2 (and cyclically)."""
    for k in ti.static(range(4)):
        x, y, z = ti.static(FACE_XYZ[k][0], FACE_XYZ[k][1], FACE_XYZ[k][2])
        n = _face_normal(p, k)
        nl = n.norm()
        if nl > 0.0:
            m = n * (0.5 * coef / nl)
            _add_row(G, x, m.cross(p[z] - p[y]))
            _add_row(G, y, m.cross(p[x] - p[z]))
            _add_row(G, z, m.cross(p[y] - p[x]))


@ti.func
def _circum_grads(G: ti.template(), u, v, w, N, coef):
    """G += coef * d|N|/dp, N = |u|^2 v x w + |v|^2 w x u + |w|^2 u x v (u, v, w the edges from
    vertex 0), which is 2 det[u, v, w] times the circumcentre's offset from vertex 0."""
    nn = N.norm()
    if nn > 0.0:
        h = N / nn
        du = 2.0 * h.dot(v.cross(w)) * u + v.norm_sqr() * h.cross(w) + w.norm_sqr() * v.cross(h)
        dv = 2.0 * h.dot(w.cross(u)) * v + w.norm_sqr() * h.cross(u) + u.norm_sqr() * w.cross(h)
        dw = 2.0 * h.dot(u.cross(v)) * w + u.norm_sqr() * h.cross(v) + v.norm_sqr() * u.cross(h)
        _add_row(G, 1, coef * du)
        _add_row(G, 2, coef * dv)
        _add_row(G, 3, coef * dw)
        _add_row(G, 0, -coef * (du + dv + dw))


@ti.func
def _dihedral_grads(G: ti.template(), p: ti.template(), gd: ti.template()):
    """G += sum_e gd[e] * d(angle_e in degrees)/dp. Moving the vertex k off edge (i, j) along the
    outward normal of its face (the face opposite l) by h turns that face about the edge by
    h / (distance of k from the edge); i and j take the opposite of the two, split by where k's
    and l's feet fall on the edge."""
    nrm = [_face_normal(p, k) for k in ti.static(range(4))]
    for e in ti.static(range(6)):
        i, j, k, l = ti.static(EDGES[e][0], EDGES[e][1], OTHER[e][0], OTHER[e][1])
        nk2, nl2 = nrm[k].norm_sqr(), nrm[l].norm_sqr()
        if gd[e] != 0.0 and nk2 > 0.0 and nl2 > 0.0:
            ev = p[j] - p[i]
            el2 = ev.norm_sqr()
            scale = gd[e] * ti.f64(DEG) * ti.sqrt(el2)
            gk = scale / nl2 * nrm[l]
            gl = scale / nk2 * nrm[k]
            tk = (p[k] - p[i]).dot(ev) / el2
            tl = (p[l] - p[i]).dot(ev) / el2
            _add_row(G, k, gk)
            _add_row(G, l, gl)
            _add_row(G, i, -((1.0 - tk) * gk + (1.0 - tl) * gl))
            _add_row(G, j, -(tk * gk + tl * gl))


@ti.kernel
def measures_vjp(V: nd_f64_2, T: nd_i32_2, g: nd_f64_2, gdih: nd_f64_2, out: nd_f64_2):
    """out (N, 3) += the gradient of sum_t g[t, 0] volume_t + g[t, 1] radius_ratio_t +
    g[t, 2] mean_ratio_t + sum_e gdih[t, e] dihedral_te (degrees), the measures of ``measures``.
    A flat tet's mean ratio has an infinite slope: its term is NaN where g[t, 2] is not 0."""
    for t in range(T.shape[0]):
        p = [_pt(V, T[t, q]) for q in ti.static(range(4))]
        G = ti.Matrix.zero(ti.f64, 4, 3)
        u, v, w = p[1] - p[0], p[2] - p[0], p[3] - p[0]
        vol = u.dot(v.cross(w)) / 6.0
        cvol = g[t, 0]  # the coefficient of d(volume)/dp
        gm = g[t, 2]
        if gm != 0.0:
            l2sum = ti.f64(0.0)
            for e in ti.static(range(6)):
                l2sum += (p[EDGES[e][1]] - p[EDGES[e][0]]).norm_sqr()
            if l2sum > 0.0:
                if vol == 0.0:
                    cvol += ti.math.nan
                else:
                    mr = 12.0 * ti.pow(3.0 * ti.abs(vol), ti.f64(2.0 / 3.0)) / l2sum * ti.math.sign(vol)
                    cvol += gm * (2.0 / 3.0) * mr / vol
                    cen = 0.25 * (p[0] + p[1] + p[2] + p[3])  # d(sum l^2)/dp_q = 8 (p_q - centroid)
                    for q in ti.static(range(4)):
                        _add_row(G, q, (-gm * mr / l2sum * 8.0) * (p[q] - cen))
        gr = g[t, 1]
        if gr != 0.0 and vol != 0.0:
            # radius ratio 108 V |V| / (A |N|): A the faces' total area, N as in _circum_grads
            N = u.norm_sqr() * v.cross(w) + v.norm_sqr() * w.cross(u) + w.norm_sqr() * u.cross(v)
            area = ti.f64(0.0)
            for k in ti.static(range(4)):
                area += 0.5 * _face_normal(p, k).norm()
            an = area * N.norm()
            if an > 0.0:
                rr = 108.0 * vol * ti.abs(vol) / an
                cvol += gr * 216.0 * ti.abs(vol) / an
                _area_grads(G, p, -gr * rr / area)
                _circum_grads(G, u, v, w, N, -gr * rr / N.norm())
        gd = ti.Vector([gdih[t, e] for e in ti.static(range(6))], ti.f64)
        _dihedral_grads(G, p, gd)
        # d(volume)/dp: (v x w, w x u, u x v) / 6 for vertices 1-3, minus their sum for vertex 0
        a1, a2, a3 = v.cross(w) * (cvol / 6.0), w.cross(u) * (cvol / 6.0), u.cross(v) * (cvol / 6.0)
        _add_row(G, 1, a1)
        _add_row(G, 2, a2)
        _add_row(G, 3, a3)
        _add_row(G, 0, -(a1 + a2 + a3))
        for q in ti.static(range(4)):
            for c in ti.static(range(3)):
                ti.atomic_add(out[T[t, q], c], G[q, c])


# --------------------------------------------------------------------------- improvement

MAXRING = 8  # tets around an edge that an edge removal (n <= 7) or a split (n <= 8) may touch
MAXCAV = 40  # tets a cavity move may replace (at 32, pairs of stars of 34 and more held cube-edge caps)
STARCAV = 20  # largest vertex star a cavity move seeds with
CAV_ROUNDS = 48  # compass rounds of a cavity move (14 steps each; each evaluation grows a cavity)
CAV_MODES = 11  # cavity candidates per bad tet (see _cavity_seed)
COMPASS_TINY = 1.0 / 4096  # a compass search stops once its step has fallen below this fraction of the first
SMOOTH_TOL = 1e-4  # a smoothing move must raise the worst sine of its star by more than this
SELECT_ROUNDS = 4  # priority rounds that choose a smoothing round's independent set of movers
KEY_SHIFT = 41  # priority in the high bits of a claim key, candidate id in the low 41 bits


@ti.func
def tet_q(V: ti.template(), T: ti.template(), t):
    return tet_min_sine(_pt(V, T[t, 0]), _pt(V, T[t, 1]), _pt(V, T[t, 2]), _pt(V, T[t, 3]))


@ti.func
def _vol6(a, b, c, d):
    return (b - a).dot((c - a).cross(d - a))


@ti.kernel
def qualities(V: nd_f64_2, T: nd_i32_2, q: nd_f64):
    for t in range(T.shape[0]):
        q[t] = tet_q(V, T, t)


@ti.func
def _key(oldmin, cid):
    """Claim key: the worse the tets a move replaces, the higher its priority."""
    u = ti.cast(ti.max(ti.min(1.0 - oldmin, 2.0), 0.0) * 1048576.0, ti.i64)
    return (u << KEY_SHIFT) | ti.cast(cid, ti.i64)


@ti.kernel
def claim(ctets: nd_i32_2, cn: nd_i32, key: nd_i64, owner: nd_i64):
    for c in range(cn.shape[0]):
        if key[c] >= 0:
            for j in range(cn[c]):
                ti.atomic_max(owner[ctets[c, j]], key[c])


@ti.kernel
def winners(ctets: nd_i32_2, cn: nd_i32, key: nd_i64, owner: nd_i64, win: nd_i32):
    for c in range(cn.shape[0]):
        w = 0
        if key[c] >= 0:
            w = 1
            for j in range(cn[c]):
                if owner[ctets[c, j]] != key[c]:
                    w = 0
        win[c] = w


@ti.func
def _even_order(T: ti.template(), t, a, b):
    """(c, d): the other two vertices of tet t, ordered so that (a, b, c, d) has t's orientation."""
    ia, ib = 0, 0
    for k in ti.static(range(4)):
        if T[t, k] == a:
            ia = k
        if T[t, k] == b:
            ib = k
    rest = ti.Vector([0, 0], ti.i32)
    n = 0
    for k in ti.static(range(4)):
        if k != ia and k != ib:
            rest[n] = k
            n += 1
    perm = ti.Vector([ia, ib, rest[0], rest[1]], ti.i32)
    inv = 0
    for x in ti.static(range(4)):
        for y in ti.static(range(x + 1, 4)):
            if perm[x] > perm[y]:
                inv += 1
    c, d = T[t, rest[0]], T[t, rest[1]]
    if inv % 2 == 1:
        c, d = d, c
    return c, d


@ti.func
def _ring(T: ti.template(), nb: ti.template(), t0, a, b, ring: ti.template(), rtet: ti.template()):
    """Walk around edge (a, b) from tet t0. Returns n (tets = ring vertices) or -1 when the ring
    is open (a boundary edge) or longer than MAXRING. ring[k], ring[k+1] with a, b form rtet[k]."""
    c, d = _even_order(T, t0, a, b)
    ring[0] = c
    rtet[0] = t0
    n = 1
    cur = t0
    prev = c
    nxt = d
    res = -1
    while True:
        # neighbour of cur across face (a, b, nxt), i.e. opposite prev
        k_opp = 0
        for k in ti.static(range(4)):
            if T[cur, k] == prev:
                k_opp = k
        t2 = nb[cur, k_opp]
        if t2 < 0:
            break
        if t2 == t0:
            res = n
            break
        if n >= MAXRING:
            break
        ring[n] = nxt
        rtet[n] = t2
        n += 1
        nn = -1
        for k in ti.static(range(4)):
            v = T[t2, k]
            if v != a and v != b and v != nxt:
                nn = v
        prev = nxt
        nxt = nn
        cur = t2
    return res


@ti.func
def _edge_ring(T: ti.template(), nb: ti.template(), E: ti.template(), etet: ti.template(), e):
    """Edge e's ends, ring size (-1: open or too long), ring vertices and tets (see _ring)."""
    a, b = E[e, 0], E[e, 1]
    ring = ti.Vector([0] * MAXRING, ti.i32)
    rtet = ti.Vector([0] * MAXRING, ti.i32)
    n = _ring(T, nb, etet[e], a, b, ring, rtet)
    return a, b, n, ring, rtet


@ti.kernel
def edge_removal_candidates(V: nd_f64_2, T: nd_i32_2, nb: nd_i32_2, q: nd_f64, E: nd_i32_2, etet: nd_i32,
                            tab: nd_i32_2, tab_off: nd_i32, ctets: nd_i32_2, cn: nd_i32, cinfo: nd_i32_2,
                            key: nd_i64, eps: ti.f64):
    """Per interior edge with 3..7 tets around it: the best triangulation of its ring (tab: all
    triangulations of an n-gon as rows of triangle vertex positions; tab_off[n]..tab_off[n+1])."""
    for e in range(E.shape[0]):
        key[e] = -1
        cn[e] = 0
        a, b, n, ring, rtet = _edge_ring(T, nb, E, etet, e)
        if 3 <= n <= 7:
            oldmin = ti.f64(1e300)
            oldvol = ti.f64(0.0)
            for k in range(n):
                oldmin = ti.min(oldmin, q[rtet[k]])
                t = rtet[k]
                oldvol += _vol6(_pt(V, T[t, 0]), _pt(V, T[t, 1]), _pt(V, T[t, 2]), _pt(V, T[t, 3]))
            pa, pb = _pt(V, a), _pt(V, b)
            best = oldmin + eps
            best_id = -1
            for r in range(tab_off[n], tab_off[n + 1]):
                newmin = ti.f64(1e300)
                newvol = ti.f64(0.0)
                for j in range(n - 2):
                    pi = _pt(V, ring[tab[r, 3 * j]])
                    pj = _pt(V, ring[tab[r, 3 * j + 1]])
                    pk = _pt(V, ring[tab[r, 3 * j + 2]])
                    newmin = ti.min(newmin, ti.min(tet_min_sine(pa, pi, pj, pk), tet_min_sine(pb, pi, pk, pj)))
                    if newmin <= best:  # it can only fall: this triangulation cannot win
                        break
                    newvol += _vol6(pa, pi, pj, pk) + _vol6(pb, pi, pk, pj)
                if newmin > best and ti.abs(newvol - oldvol) <= ti.f64(1e-9) * ti.abs(oldvol):
                    best = newmin
                    best_id = r
            if best_id >= 0:
                cn[e] = n
                for k in range(n):
                    ctets[e, k] = rtet[k]
                cinfo[e, 0] = best_id
                key[e] = _key(oldmin, e)


@ti.kernel
def edge_removal_apply(T: nd_i32_2, nb: nd_i32_2, E: nd_i32_2, etet: nd_i32, tab: nd_i32_2, win: nd_i32,
                       cinfo: nd_i32_2, off: nd_i32, m0: ti.i32):
    """Apply the winning edge removals; the appended tets of edge e start at row m0 + off[e]
    (off: the exclusive scan of append_counts), so the result does not depend on thread order."""
    for e in range(E.shape[0]):
        if win[e] == 1:
            a, b, n, ring, rtet = _edge_ring(T, nb, E, etet, e)
            r = cinfo[e, 0]
            # 2 (n - 2) new tets: the first n reuse the old slots, the rest are appended
            base = m0 + off[e]
            slot = 0
            for j in range(n - 2):
                ri, rj, rk = ring[tab[r, 3 * j]], ring[tab[r, 3 * j + 1]], ring[tab[r, 3 * j + 2]]
                for s in ti.static(range(2)):
                    t = 0
                    if slot < n:
                        t = rtet[slot]
                    else:
                        t = base + slot - n
                    if s == 0:
                        T[t, 0], T[t, 1], T[t, 2], T[t, 3] = a, ri, rj, rk
                    else:
                        T[t, 0], T[t, 1], T[t, 2], T[t, 3] = b, ri, rk, rj
                    slot += 1
            for k in range(slot, n):  # n = 3: one slot left over
                T[rtet[k], 0] = -1


@ti.func
def _face_slot(nb: ti.template(), key: ti.template(), cn: ti.template(), c):
    """Candidate c is the face of tet c // 4 opposite its vertex c % 4: no move yet, and (tet,
    local vertex, the tet across that face or -1)."""
    key[c] = -1
    cn[c] = 0
    t, k = c // 4, c % 4
    return t, k, nb[t, k]


@ti.kernel
def flip23_candidates(V: nd_f64_2, T: nd_i32_2, nb: nd_i32_2, q: nd_f64, ctets: nd_i32_2, cn: nd_i32,
                      key: nd_i64, eps: ti.f64):
    """Per interior face (t, k), t < its neighbour: replace the two tets by three around the new
    edge joining the two apexes when that raises the worse of the two."""
    for c in range(key.shape[0]):
        t, k, t2 = _face_slot(nb, key, cn, c)
        if t2 > t:
            f0, f1, f2, d, e = _flip23_verts(T, t, k, t2)
            pa, pb, pc, pd, pe = _pt(V, f0), _pt(V, f1), _pt(V, f2), _pt(V, d), _pt(V, e)
            oldmin = ti.min(q[t], q[t2])
            newmin = ti.min(tet_min_sine(pa, pb, pe, pd), ti.min(tet_min_sine(pb, pc, pe, pd),
                                                                  tet_min_sine(pc, pa, pe, pd)))
            if newmin > oldmin + eps:
                cn[c] = 2
                ctets[c, 0] = t
                ctets[c, 1] = t2
                key[c] = _key(oldmin, c)


@ti.func
def _flip23_verts(T: ti.template(), t, k, t2):
    """Face of tet t opposite local vertex k as (f0, f1, f2) with (f0, f1, f2, apex) positive; the
    apex d = T[t, k] and e, the vertex of t2 off the face."""
    f = ti.Vector([0, 0, 0], ti.i32)
    n = 0
    for j in ti.static(range(4)):
        if j != k:
            f[n] = T[t, j]
            n += 1
    if (3 - k) % 2 == 1:  # moving position k to the end is an odd permutation
        f[0], f[1] = f[1], f[0]
    e = -1
    for j in ti.static(range(4)):
        v = T[t2, j]
        if v != f[0] and v != f[1] and v != f[2]:
            e = v
    return f[0], f[1], f[2], T[t, k], e


@ti.kernel
def append_counts(win: nd_i32, cn: nd_i32, kind: ti.template(), out: nd_i32):
    """Rows each winning candidate appends: a 2-3 flip 1 (kind 0), an edge removal of an n-ring
    max(n - 4, 0) (kind 1), an edge split of an n-ring n (kind 2), a face split 4 (kind 3), a
    cavity insertion the count its candidate left in ``out`` (kind 4); 0 for the others."""
    for c in range(win.shape[0]):
        k = 0
        if win[c] == 1:
            if ti.static(kind == 0):
                k = 1
            elif ti.static(kind == 1):
                k = ti.max(cn[c] - 4, 0)
            elif ti.static(kind == 3):
                k = 4
            elif ti.static(kind == 4):
                k = out[c]
            else:
                k = cn[c]
        out[c] = k


@ti.kernel
def flip23_apply(T: nd_i32_2, nb: nd_i32_2, win: nd_i32, off: nd_i32, m0: ti.i32):
    """Apply the winning 2-3 flips; the third tet of candidate c goes to row m0 + off[c]."""
    for c in range(win.shape[0]):
        if win[c] == 1:
            t, k = c // 4, c % 4
            t2 = nb[t, k]
            f0, f1, f2, d, e = _flip23_verts(T, t, k, t2)
            t3 = m0 + off[c]
            T[t, 0], T[t, 1], T[t, 2], T[t, 3] = f0, f1, e, d
            T[t2, 0], T[t2, 1], T[t2, 2], T[t2, 3] = f1, f2, e, d
            T[t3, 0], T[t3, 1], T[t3, 2], T[t3, 3] = f2, f0, e, d


@ti.func
def _row(P, i):
    return ti.Vector([P[i, 0], P[i, 1], P[i, 2]], ti.f64)


@ti.func
def _split_min(x, P, n):
    """Worst of the 2n tets made by a vertex x on the edge (P[0], P[1]) whose ring is P[2 .. n + 1]."""
    pa, pb = _row(P, 0), _row(P, 1)
    m = ti.f64(1e300)
    for k in range(n):
        pi, pj = _row(P, 2 + k), _row(P, 2 + (k + 1) % n)
        m = ti.min(m, ti.min(tet_min_sine(pa, x, pi, pj), tet_min_sine(x, pb, pi, pj)))
    return m


@ti.func
def _compass_max(f: ti.template(), x, step, P: ti.template(), n, rounds=48, ndir: ti.template() = 6):
    """Compass search for the x that maximises f(x, P, n): ``ndir`` steps from x per round (6: the
    axis directions; 14: also the eight diagonals, which follow a ridge of a max-min objective
    that no axis step climbs), ``rounds`` rounds, the step halved after a round without gain,
    stopping early once it is below COMPASS_TINY of the first. Returns (x, f(x)). ``P`` is
    passed through as it is: packed points, or a tuple of the mesh arrays. f is inlined at one
    call site only (the start point is evaluation 0), which keeps the compile time of heavy
    objectives down."""
    cur = ti.f64(-1e300)
    improved = False
    diag = ti.f64(0.5773502691896258)  # 1 / sqrt(3), in f64 whatever the runtime's precision
    tiny = step * ti.f64(COMPASS_TINY)
    for s in range(1 + rounds * ndir):
        y = x
        if s > 0:
            d = (s - 1) % ndir
            if d < 6:
                y[d // 2] += step * (1.0 - 2.0 * (d % 2))
            else:
                e = d - 6
                y += step * diag * v3(ti.f64(1 - 2 * (e & 1)), ti.f64(1 - 2 * ((e >> 1) & 1)),
                                      ti.f64(1 - 2 * ((e >> 2) & 1)))
        val = f(y, P, n)
        if val > cur:
            cur = val
            x = y
            improved = s > 0
        if s > 0 and s % ndir == 0:  # end of a round
            if not improved:
                step *= 0.5
                if step < tiny:
                    break
            improved = False
    return x, cur


@ti.kernel
def split_candidates(V: nd_f64_2, T: nd_i32_2, nb: nd_i32_2, q: nd_f64, E: nd_i32_2, etet: nd_i32,
                     ctets: nd_i32_2, cn: nd_i32, cpos: nd_f64_2, key: nd_i64, below: ti.f64, eps: ti.f64):
    """Per interior edge of a tet worse than ``below``: insert a vertex near its midpoint (placed
    by compass search on the worst of the 2n new tets) when that beats the n old ones."""
    for e in range(E.shape[0]):
        key[e] = -1
        cn[e] = 0
        a, b, n, ring, rtet = _edge_ring(T, nb, E, etet, e)
        if n >= 3:
            oldmin = ti.f64(1e300)
            for k in range(n):
                oldmin = ti.min(oldmin, q[rtet[k]])
            if oldmin < below:
                P = ti.Matrix.zero(ti.f64, MAXRING + 2, 3)
                for k in range(n + 2):
                    w = a
                    if k == 1:
                        w = b
                    elif k >= 2:
                        w = ring[k - 2]
                    for j in ti.static(range(3)):
                        P[k, j] = V[w, j]
                x, cur = _compass_max(_split_min, 0.5 * (_pt(V, a) + _pt(V, b)),
                                      0.25 * (_pt(V, b) - _pt(V, a)).norm(), P, n)
                if cur > oldmin + eps:
                    cn[e] = n
                    for k in range(n):
                        ctets[e, k] = rtet[k]
                    for j in ti.static(range(3)):
                        cpos[e, j] = x[j]
                    key[e] = _key(oldmin, e)


@ti.kernel
def split_apply(V: nd_f64_2, T: nd_i32_2, nb: nd_i32_2, E: nd_i32_2, etet: nd_i32, win: nd_i32,
                cpos: nd_f64_2, off: nd_i32, m0: ti.i32, voff: nd_i32, v0: ti.i32):
    """Apply the winning edge splits: edge e's new vertex is row v0 + voff[e] and its appended
    tets start at row m0 + off[e] (exclusive scans), independent of thread order."""
    for e in range(E.shape[0]):
        if win[e] == 1:
            a, b, n, ring, rtet = _edge_ring(T, nb, E, etet, e)
            m = v0 + voff[e]
            for j in ti.static(range(3)):
                V[m, j] = cpos[e, j]
            base = m0 + off[e]
            for k in range(n):
                ri, rj = ring[k], ring[(k + 1) % n]
                t = rtet[k]
                T[t, 0], T[t, 1], T[t, 2], T[t, 3] = a, m, ri, rj
                t2 = base + k
                T[t2, 0], T[t2, 1], T[t2, 2], T[t2, 3] = m, b, ri, rj


@ti.func
def _face_split_min(x, P, _n):
    """Worst of the six tets made by a vertex x on the face (a, b, c) = P[0 .. 2] shared by the
    positive tets (a, b, c, d) and (a, c, b, e), d = P[3], e = P[4]: each old tet with one face
    vertex replaced by x."""
    pa, pb, pc, pd, pe = _row(P, 0), _row(P, 1), _row(P, 2), _row(P, 3), _row(P, 4)
    m = ti.min(tet_min_sine(x, pb, pc, pd), ti.min(tet_min_sine(pa, x, pc, pd), tet_min_sine(pa, pb, x, pd)))
    return ti.min(m, ti.min(tet_min_sine(x, pc, pb, pe), ti.min(tet_min_sine(pa, x, pb, pe),
                                                                 tet_min_sine(pa, pc, x, pe))))


@light_compile(backends=("cuda",))  # same output on CUDA; on the CPU its rounding changes
@ti.kernel
def face_split_candidates(V: nd_f64_2, T: nd_i32_2, nb: nd_i32_2, q: nd_f64, ctets: nd_i32_2, cn: nd_i32,
                          cpos: nd_f64_2, key: nd_i64, below: ti.f64, eps: ti.f64):
    """Per interior face (t, k), t < its neighbour, of a tet worse than ``below``: insert a vertex
    near the face's centroid (placed by compass search on the worst of the six new tets) when
    that beats the two old ones. It frees a tet whose other faces are all boundary faces, which
    no smoothing, flip or edge split can change."""
    for c in range(key.shape[0]):
        t, k, t2 = _face_slot(nb, key, cn, c)
        if t2 > t:
            oldmin = ti.min(q[t], q[t2])
            if oldmin < below:
                f0, f1, f2, d, e = _flip23_verts(T, t, k, t2)
                pa, pb, pc = _pt(V, f0), _pt(V, f1), _pt(V, f2)
                P = ti.Matrix.zero(ti.f64, 5, 3)
                for j in ti.static(range(3)):
                    P[0, j], P[1, j], P[2, j], P[3, j], P[4, j] = V[f0, j], V[f1, j], V[f2, j], V[d, j], V[e, j]
                step = 0.25 * ((pb - pa).norm() + (pc - pb).norm() + (pa - pc).norm()) / 3.0
                x, cur = _compass_max(_face_split_min, (pa + pb + pc) / 3.0, step, P, 0)
                if cur > oldmin + eps:
                    cn[c] = 2
                    ctets[c, 0] = t
                    ctets[c, 1] = t2
                    for j in ti.static(range(3)):
                        cpos[c, j] = x[j]
                    key[c] = _key(oldmin, c)


@ti.kernel
def face_split_apply(V: nd_f64_2, T: nd_i32_2, nb: nd_i32_2, win: nd_i32, cpos: nd_f64_2, off: nd_i32,
                     m0: ti.i32, voff: nd_i32, v0: ti.i32):
    """Apply the winning face splits: candidate c's new vertex is row v0 + voff[c]; its two tets
    are rewritten in place and four rows appended from m0 + off[c]."""
    for c in range(win.shape[0]):
        if win[c] == 1:
            t, k = c // 4, c % 4
            t2 = nb[t, k]  # the winner holds both tets: no other winner rewrites them
            f0, f1, f2, d, e = _flip23_verts(T, t, k, t2)
            p = v0 + voff[c]
            for j in ti.static(range(3)):
                V[p, j] = cpos[c, j]
            base = m0 + off[c]
            T[t, 0], T[t, 1], T[t, 2], T[t, 3] = p, f1, f2, d
            T[base, 0], T[base, 1], T[base, 2], T[base, 3] = f0, p, f2, d
            T[base + 1, 0], T[base + 1, 1], T[base + 1, 2], T[base + 1, 3] = f0, f1, p, d
            T[t2, 0], T[t2, 1], T[t2, 2], T[t2, 3] = p, f2, f1, e
            T[base + 2, 0], T[base + 2, 1], T[base + 2, 2], T[base + 2, 3] = f0, p, f1, e
            T[base + 3, 0], T[base + 3, 1], T[base + 3, 2], T[base + 3, 3] = f0, f2, p, e


@ti.func
def _holds(C: ti.template(), n, u):
    """Whether u is among the first n entries of C."""
    found = False
    for i in range(n):
        if C[i] == u:
            found = True
    return found


@ti.func
def _pair(T: ti.template(), t, k):
    """The ends of edge k (EDGES order) of tet t. The pair's cavity is the union of both stars
    whichever end stays, so each edge is one candidate, not two."""
    i = ti.cast(k >= 3, ti.i32) + ti.cast(k >= 5, ti.i32)
    j = i + 1 + k - i * (7 - i) // 2  # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    return T[t, i], T[t, j]


@ti.func
def _cavity_seed(M: ti.template(), c):
    """Seed of cavity candidate c over the mesh M = (V, T, nb, q, ptr, vt, free, bad): with
    t = bad[c // CAV_MODES] and mode = c % CAV_MODES,
    - mode 0 seeds t alone (a new vertex);
    - mode j in 1..4 seeds the star of t's vertex w = T[t, j - 1] when w may move and its star
      fits in STARCAV tets (w is then relocated: the move is a smoothing of w that may also
      change its connectivity);
    - mode 5 + k (k < 6) seeds the stars of two vertices of t that may move, its edge k
      (:func:`_pair`) with w the first end and u the second, when their union fits in MAXCAV
      tets: w is relocated and u removed, the collapse of the edge (u, w) with w placed anew.
      Two nearby interior vertices can block each other: at a cube corner, two of them made
      three tets around each of the corner's boundary edges, which caps their angle at 30
      degrees, and neither could move alone to reach two.
    ``free`` is 0 for vertices that may not move, 1 for input vertices that may, 2 for inserted
    ones. Returns (C, n, w, start): n = 0 when there is no candidate, w = -1 for a new vertex."""
    V, T, ptr, vt, free, bad = ti.static(M[0], M[1], M[4], M[5], M[6], M[7])
    C = ti.Vector([-1] * MAXCAV, ti.i32)
    t, mode = bad[c // CAV_MODES], c % CAV_MODES
    pa, pb, pc, pd = _pt(V, T[t, 0]), _pt(V, T[t, 1]), _pt(V, T[t, 2]), _pt(V, T[t, 3])
    start = 0.25 * (pa + pb + pc + pd)
    n, w = 0, -1
    if mode == 0:
        C[0] = t
        n = 1
    elif mode <= 4:
        u = T[t, mode - 1]
        if free[u] >= 1 and ptr[u + 1] - ptr[u] <= STARCAV:
            for s in range(ptr[u], ptr[u + 1]):
                C[n] = vt[s]
                n += 1
            w = u
            start = _pt(V, u)
    else:
        k = mode - 5
        wv, u = _pair(T, t, k)
        if free[wv] >= 1 and free[u] >= 1 and ptr[wv + 1] - ptr[wv] + ptr[u + 1] - ptr[u] <= MAXCAV + 8:
            for s in range(ptr[wv], ptr[wv + 1]):
                C[n] = vt[s]
                n += 1
            for s in range(ptr[u], ptr[u + 1]):
                # the tets of the edge (u, w) are in both stars; C is read only within its size
                if n <= MAXCAV and not _holds(C, ti.min(n, MAXCAV), vt[s]):
                    if n < MAXCAV:
                        C[n] = vt[s]
                    n += 1
            if n > MAXCAV:
                n = 0
            else:
                w = wv
                start = 0.5 * (_pt(V, wv) + _pt(V, u))
    return C, n, w, start


@ti.func
def _seeded_before(M: ti.template(), c, below):
    """Whether candidate c's vertex (modes 1-4) or vertex pair (modes 5-10) is a vertex or an
    edge of a tet listed before its own in ``bad`` (a lower index with quality below
    ``below``): that tet's candidate seeds the same star(s), so this one is skipped."""
    T, q, ptr, vt, bad = ti.static(M[1], M[3], M[4], M[5], M[7])
    t, mode = bad[c // CAV_MODES], c % CAV_MODES
    w, u = -1, -1
    if 1 <= mode <= 4:
        w = T[t, mode - 1]
    elif mode >= 5:
        k = mode - 5
        w, u = _pair(T, t, k)
    found = False
    if w >= 0:
        for j in range(ptr[w], ptr[w + 1]):
            s = vt[j]
            if s < t and q[s] < below:
                if u < 0 or T[s, 0] == u or T[s, 1] == u or T[s, 2] == u or T[s, 3] == u:
                    found = True
    return found


@ti.func
def _cavity(x, M: ti.template(), c):
    """Greedy cavity of candidate c (:func:`_cavity_seed`) for the vertex at x: each step takes in
    the tet across the cavity face whose new tet (the face joined to x) is worst, unless that
    face is a boundary face. Returns (C, n, gain): the best of the growth's prefixes is C's first
    n tets, gain the worst of its new tets minus the worst of the tets it replaces (below 0 when
    nothing gains). Face qualities and whether a face is on the cavity's boundary are kept per
    cavity tet, so a step costs the faces of the tet it adds and one pass over the boundary."""
    V, T, nb, q = ti.static(M[0], M[1], M[2], M[3])
    C, n, _w, _start = _cavity_seed(M, c)
    fq = ti.Vector([0.0] * (4 * MAXCAV), ti.f64)
    open_ = ti.Vector([0] * (4 * MAXCAV), ti.i32)  # 1: a face of the cavity's boundary
    nbest, best, oldmin, filled = n, ti.f64(-1e300), ti.f64(1e300), 0
    done = n == 0
    while not done:
        for i in range(filled, n):
            oldmin = ti.min(oldmin, q[C[i]])
            for k in range(4):  # not unrolled: one inlined quality, for compile time
                fq[4 * i + k] = _tet_q_at(V, T, C[i], T[C[i], k], x)
                open_[4 * i + k] = 1
                u = nb[C[i], k]
                for j in range(i):
                    if C[j] == u:  # the face between tets j and i is inside the cavity now
                        open_[4 * i + k] = 0
                        for kk in range(4):
                            if nb[u, kk] == C[i]:
                                open_[4 * j + kk] = 0
        filled = n
        low, worst, grow = ti.f64(1e300), ti.f64(1e300), -1
        for f in range(4 * n):
            if open_[f] == 1:
                low = ti.min(low, fq[f])
                u = nb[C[f // 4], f % 4]
                if u >= 0 and fq[f] < worst:
                    worst, grow = fq[f], u
        if low - oldmin > best:
            best, nbest = low - oldmin, n
        if n == MAXCAV or grow < 0:
            done = True
        else:
            C[n] = grow
            n += 1
    return C, nbest, best


@ti.func
def _cavity_gain(x, M: ti.template(), c):
    _C, _n, gain = _cavity(x, M, c)
    return gain


@ti.func
def _cavity_faces(T: ti.template(), nb: ti.template(), C: ti.template(), n, p):
    """The new tets of a cavity (C's first n tets) around vertex p: each cavity face that is not
    shared by two cavity tets, its tet's vertex off the face replaced by p (so the orientation
    stays). Returns (rows (4 * MAXCAV, 4), count)."""
    R = ti.Matrix([[-1] * 4] * (4 * MAXCAV), ti.i32)
    nf = 0
    for i in range(n):
        t = C[i]
        for k in ti.static(range(4)):
            if not _holds(C, n, nb[t, k]):
                for j in ti.static(range(4)):
                    R[nf, j] = T[t, j]
                R[nf, k] = p
                nf += 1
    return R, nf


@ti.func
def _cavity_keeps(T: ti.template(), C: ti.template(), n, R: ti.template(), nf, free: ti.template(), w):
    """Whether every vertex of the cavity's tets that may not move (``free`` 0) is on one of its
    new tets: a cavity that holds the whole star of a vertex removes it, which is allowed for
    interior vertices that may move (input or inserted) and never for fixed ones."""
    kept = True
    for i in range(n):
        for j in ti.static(range(4)):
            v = T[C[i], j]
            on = free[v] >= 1 or v == w
            for f in range(nf):
                if R[f, 0] == v or R[f, 1] == v or R[f, 2] == v or R[f, 3] == v:
                    on = True
            kept = kept and on
    return kept


@light_compile(backends=("cuda",))  # same output on CUDA; on the CPU its rounding changes
@ti.kernel
def cavity_candidates(V: nd_f64_2, T: nd_i32_2, nb: nd_i32_2, q: nd_f64, ptr: nd_i32, vt: nd_i32, free: nd_i32,
                      bad: nd_i32, ctets: nd_i32_2, cn: nd_i32, cpos: nd_f64_2, crel: nd_i32, rows: nd_i32,
                      key: nd_i64, eps: ti.f64, below: ti.f64, pair_eps: ti.f64):
    """CAV_MODES candidates per tet in ``bad`` (:func:`_cavity_seed`): a vertex position x (compass
    search) and the greedy cavity around it that gains most (:func:`_cavity`), whose tets are
    replaced by its faces joined to x, when that beats the worst tet it replaces. ``rows`` gets
    the number of rows the move appends (new tets minus cavity tets, at least 0), ``crel`` the
    relocated vertex or -1. Generalises the face split (a cavity of two tets) and the smoothing
    (a vertex star) for worst tets that no single flip, smoothing or split can raise. A pair
    candidate (modes 5-10) must gain more than ``pair_eps`` instead of ``eps``: a negative one
    lets an edge collapse lose that much, the escape from a plateau (see improve.py)."""
    for c in range(key.shape[0]):
        key[c] = -1
        cn[c] = 0
        rows[c] = 0
        M = ti.static((V, T, nb, q, ptr, vt, free, bad))
        _C, n0, w, start = _cavity_seed(M, c)
        if n0 > 0 and not _seeded_before(M, c, below):
            t = bad[c // CAV_MODES]
            pa, pb, pc, pd = _pt(V, T[t, 0]), _pt(V, T[t, 1]), _pt(V, T[t, 2]), _pt(V, T[t, 3])
            step = 0.25 * ((pb - pa).norm() + (pc - pa).norm() + (pd - pa).norm() + (pc - pb).norm()
                           + (pd - pb).norm() + (pd - pc).norm()) / 6.0
            x, gain = _compass_max(_cavity_gain, start, step, M, c, CAV_ROUNDS, 14)
            C, n, gain = _cavity(x, M, c)
            if gain > (eps if c % CAV_MODES < 5 else pair_eps):
                R, nf = _cavity_faces(T, nb, C, n, -1)
                if _cavity_keeps(T, C, n, R, nf, free, w):
                    cn[c] = n
                    crel[c] = w
                    rows[c] = ti.max(nf - n, 0)
                    for i in range(n):
                        ctets[c, i] = C[i]
                    for j in ti.static(range(3)):
                        cpos[c, j] = x[j]
                    key[c] = _key(q[t], c)


@ti.kernel
def cavity_apply(V: nd_f64_2, T: nd_i32_2, nb: nd_i32_2, win: nd_i32, ctets: nd_i32_2, cn: nd_i32,
                 cpos: nd_f64_2, crel: nd_i32, off: nd_i32, m0: ti.i32, voff: nd_i32, v0: ti.i32):
    """Apply the winning cavity moves: candidate c's vertex is the relocated one, or new at row
    v0 + voff[c]; its new tets overwrite the cavity's rows (rows left over become holes), the
    rest go to rows m0 + off[c] onwards. Every tet a winner reads is one it holds, so winners do
    not interfere."""
    for c in range(win.shape[0]):
        if win[c] == 1:
            n = cn[c]
            C = ti.Vector([-1] * MAXCAV, ti.i32)
            for i in range(n):
                C[i] = ctets[c, i]
            p = crel[c]
            if p < 0:
                p = v0 + voff[c]
            R, nf = _cavity_faces(T, nb, C, n, p)
            for j in ti.static(range(3)):
                V[p, j] = cpos[c, j]
            for f in range(ti.max(nf, n)):  # a cavity that removes vertices can have fewer faces than tets
                row = m0 + off[c] + f - n
                if f < n:
                    row = C[f]
                for j in ti.static(range(4)):
                    T[row, j] = R[f, j] if f < nf else -1  # -1: a hole, compacted away


# --------------------------------------------------------------------------- smoothing


@ti.func
def _tet_q_at(V: ti.template(), T: ti.template(), t, v, x):
    pts = [_pt(V, T[t, 0]), _pt(V, T[t, 1]), _pt(V, T[t, 2]), _pt(V, T[t, 3])]
    for k in ti.static(range(4)):
        if T[t, k] == v:
            pts[k] = x
    return tet_min_sine(pts[0], pts[1], pts[2], pts[3])


@ti.func
def _star_q(V: ti.template(), T: ti.template(), vt_ptr: ti.template(), vt: ti.template(), v, x):
    """Min quality over the star of v with v moved to x."""
    m = ti.f64(1e300)
    for s in range(vt_ptr[v], vt_ptr[v + 1]):
        m = ti.min(m, _tet_q_at(V, T, vt[s], v, x))
    return m


@ti.func
def _star_q_above(V: ti.template(), T: ti.template(), vt_ptr: ti.template(), vt: ti.template(), v, x, cur):
    """Min quality over the star of v moved to x, or a value <= cur as soon as one tet is (the
    line search only asks whether the move beats cur)."""
    m = ti.f64(1e300)
    s = vt_ptr[v]
    while s < vt_ptr[v + 1]:
        m = ti.min(m, _tet_q_at(V, T, vt[s], v, x))
        if m <= cur:
            s = vt_ptr[v + 1]
        s += 1
    return m


@ti.func
def _smooth_propose(V: ti.template(), T: ti.template(), vt_ptr: ti.template(), vt: ti.template(),
                    movable: ti.template(), hlen: ti.template(), newpos: ti.template(), gain: ti.template(),
                    qv: ti.template(), iters, dirty: ti.template()):
    """Per movable vertex whose star changed (``dirty``; the others keep their proposal, which is
    a function of the star alone): raise the worst quality of its star. Search direction: the
    smallest convex combination of the gradients of the nearly-worst tets (Gilbert's min-norm
    iteration; ascent for all of them), step by backtracking from a fraction of the local edge
    length, kept only if the worst tet of the star improves, so no tet can invert."""
    for i in range(movable.shape[0]):
        if dirty[i] == 0:
            continue
        v = movable[i]
        x0 = _pt(V, v)
        q0 = _star_q(V, T, vt_ptr, vt, v, x0)
        qv[i] = q0
        x = x0
        cur = q0
        h = hlen[i]
        # try the centroid of the star first (smart Laplacian)
        cen = v3(0.0, 0.0, 0.0)
        cnt = 0
        for s in range(vt_ptr[v], vt_ptr[v + 1]):
            t = vt[s]
            for k in ti.static(range(4)):
                if T[t, k] != v:
                    cen += _pt(V, T[t, k])
                    cnt += 1
        if cnt > 0:
            cen /= cnt
            ql = _star_q_above(V, T, vt_ptr, vt, v, cen, cur)
            if ql > cur:
                cur = ql
                x = cen
        for _it in range(iters):
            # gradients (central differences) of the tets within 1e-3 of the worst, up to 6
            grads = ti.Matrix.zero(ti.f64, 6, 3)
            na = 0
            fd = ti.f64(1e-7) * h
            for s in range(vt_ptr[v], vt_ptr[v + 1]):
                t = vt[s]
                qt = _tet_q_at(V, T, t, v, x)
                if qt < cur + ti.f64(1e-3) and na < 6:
                    for j in ti.static(range(3)):
                        xp, xm = x, x
                        xp[j] += fd
                        xm[j] -= fd
                        grads[na, j] = (_tet_q_at(V, T, t, v, xp) - _tet_q_at(V, T, t, v, xm)) / (2.0 * fd)
                    na += 1
            d = v3(grads[0, 0], grads[0, 1], grads[0, 2])
            for _g in range(24):
                jbest = -1
                dd = d.norm_sqr()
                low = dd - ti.f64(1e-12) * dd
                for j in range(na):
                    gj = v3(grads[j, 0], grads[j, 1], grads[j, 2])
                    if gj.dot(d) < low:
                        low = gj.dot(d)
                        jbest = j
                if jbest < 0:
                    break
                gj = v3(grads[jbest, 0], grads[jbest, 1], grads[jbest, 2])
                diff = d - gj
                tt = ti.min(ti.max(d.dot(diff) / ti.max(diff.norm_sqr(), ti.f64(1e-300)), 0.0), 1.0)
                d = d - tt * diff
            dn = d.norm()
            if dn < ti.f64(1e-12):
                break
            d /= dn
            step = 0.25 * h
            moved = False
            for _ls in range(12):
                y = x + step * d
                qy = _star_q_above(V, T, vt_ptr, vt, v, y, cur)
                if qy > cur:
                    cur = qy
                    x = y
                    moved = True
                    break
                step *= 0.5
            if not moved:
                break
        for j in ti.static(range(3)):
            newpos[i, j] = x[j]
        gain[i] = cur - q0


@ti.func
def _smooth_first(qv: ti.template(), i, j):
    """Whether vertex i's move goes before j's: the worse star first, then the lower index."""
    return qv[i] < qv[j] or (qv[i] == qv[j] and i < j)


@ti.func
def _smooth_select(E: ti.template(), vidx: ti.template(), gain: ti.template(), qv: ti.template(),
                   state: ti.template()):
    """The movers: an independent set of the vertices that want to move (no two on one edge, so
    no two in one tet), chosen by priority (:func:`_smooth_first`) in SELECT_ROUNDS rounds. A
    round takes every undecided vertex that goes before all its undecided neighbours and rules
    out those neighbours; later rounds fill in behind the ruled-out ones, so the set is nearly
    maximal, where one round gave only the local minima of the priority (8 movers a round among
    about 400 that wanted to on the test family). ``state``: 0 undecided, 1 out, 2 in, 3
    undecided but preceded this round."""
    for i in range(state.shape[0]):
        state[i] = 0 if gain[i] > SMOOTH_TOL else 1
    for _r in ti.static(range(SELECT_ROUNDS)):
        for e in range(E.shape[0]):
            i, j = vidx[E[e, 0]], vidx[E[e, 1]]
            if i >= 0 and j >= 0 and state[i] != 1 and state[i] != 2 and state[j] != 1 and state[j] != 2:
                if _smooth_first(qv, i, j):
                    state[j] = 3
                else:
                    state[i] = 3
        for i in range(state.shape[0]):
            if state[i] == 0:
                state[i] = 2
        for e in range(E.shape[0]):
            i, j = vidx[E[e, 0]], vidx[E[e, 1]]
            if i >= 0 and j >= 0:
                if state[i] == 2 and state[j] != 2:
                    state[j] = 1
                if state[j] == 2 and state[i] != 2:
                    state[i] = 1
        for i in range(state.shape[0]):
            if state[i] == 3:
                state[i] = 0


@ti.func
def _smooth_apply(V: ti.template(), movable: ti.template(), newpos: ti.template(), state: ti.template(),
                  moved: ti.template(), E: ti.template(), vidx: ti.template(), dirty: ti.template()):
    """Moves the selected vertices (``state`` 2), then marks dirty the movable vertices whose star
    changed: a mover and every vertex sharing an edge (so a tet) with one."""
    moved[0] = 0
    for i in range(movable.shape[0]):
        go = state[i] == 2
        dirty[i] = ti.cast(go, ti.i32)
        if go:
            for j in ti.static(range(3)):
                V[movable[i], j] = newpos[i, j]
            ti.atomic_add(moved[0], 1)
    for e in range(E.shape[0]):
        i, j = vidx[E[e, 0]], vidx[E[e, 1]]
        if i >= 0 and j >= 0:
            if state[i] == 2:
                dirty[j] = 1
            if state[j] == 2:
                dirty[i] = 1


@ti.kernel
def star_edge_lengths(V: nd_f64_2, T: nd_i32_2, ptr: nd_i32, vt: nd_i32, movable: nd_i32, vidx: nd_i32,
                      hlen: nd_f64):
    """Per movable vertex v (``vidx[v]`` gets its index i): ``hlen[i]``, the mean length of the
    edges at v over the tets of its star (an edge counts once per tet that holds it), summed in
    the star's order."""
    for i in range(movable.shape[0]):
        v = movable[i]
        vidx[v] = i
        pv = _pt(V, v)
        s = ti.f64(0.0)
        n = 0
        for j in range(ptr[v], ptr[v + 1]):
            t = vt[j]
            for k in ti.static(range(4)):
                u = T[t, k]
                if u != v:
                    s += (_pt(V, u) - pv).norm()
                    n += 1
        hlen[i] = s / ti.max(n, 1)


@light_compile(backends=("cuda",))  # same output on CUDA; on the CPU its rounding changes
@ti.kernel
def smooth_round(V: nd_f64_2, T: nd_i32_2, vt_ptr: nd_i32, vt: nd_i32, movable: nd_i32, hlen: nd_f64,
                 newpos: nd_f64_2, gain: nd_f64, qv: nd_f64, iters: ti.i32, dirty: nd_i32, E: nd_i32_2, vidx: nd_i32,
                 state: nd_i32, moved: nd_i32):
    """One smoothing round in one launch: proposals of the dirty vertices, the choice of movers
    (``state`` 2), the moves (``moved[0]``: how many) and the next round's dirty marks. Each pass
    ends before the next."""
    _smooth_propose(V, T, vt_ptr, vt, movable, hlen, newpos, gain, qv, iters, dirty)
    _smooth_select(E, vidx, gain, qv, state)
    _smooth_apply(V, movable, newpos, state, moved, E, vidx, dirty)


fast_module_kernels(globals())  # every kernel above launches through a prepared launch context
