"""Taichi kernels for marching squares / cubes: count, (scan), emit vertices, emit elements.

Work decomposition: a thread owns a run of ``S`` nodes along one grid axis (the *sweep* axis) and
slides a window of the current and the next plane along it, so every value is read about once
per pass from cache. The sweep is the last (contiguous) axis on a CPU and the first axis on a
GPU, where adjacent threads then read adjacent memory. A node owns the grid edges leaving it in +x, +y (+z); a vertex is indexed by
(node, axis), so cells that share a grid edge share its vertex.

Inside means ``value < level``; ``value >= level`` is outside. Vertex parameter along an edge from
node A (value a) to B (value b): ``t = (level - a) / (b - a)``, exactly 0 or 1 when a node sits on
the level ("snapped" vertices, welded afterwards by the caller).
"""


import taichi as ti

from .._core.scan import scan_two_levels, serial_scan

nd_i32 = ti.types.ndarray(dtype=ti.i32, ndim=1)
nd_i64 = ti.types.ndarray(dtype=ti.i64, ndim=1)


@ti.func
def _ins(v, level) -> ti.i32:
    return ti.cast(v < level, ti.i32)


@ti.func
def _ne(a: ti.i32, b: ti.i32) -> ti.i32:
    return ti.cast(a != b, ti.i32)


# --------------------------------------------------------------------------------------------
# Sweep frames. A thread owns row (u, v) of the grid and walks the sweep coordinate s. ``sweep``
# (a compile-time template) names the grid axis walked: the last axis on a CPU (contiguous loads),
# the first on a GPU (adjacent threads read adjacent memory). Window bits at plane s:
# bit (du + 2 dv) = inside-flag of node (s, u + du, v + dv), clamped at the grid edge and masked
# by the has_* flags where the neighbour does not exist.
# --------------------------------------------------------------------------------------------

@ti.func
def _node3(sweep: ti.template(), s, u, v):
    """Grid node (i, j, k) of sweep coordinate s and row (u, v): u, v are the other axes in order.
    Also maps any per-axis triple from sweep order to x, y, z order."""
    r = ti.Vector([s, u, v])
    if ti.static(sweep == 1):
        r = ti.Vector([u, s, v])
    elif ti.static(sweep == 2):
        r = ti.Vector([u, v, s])
    return r


@ti.func
def _dims3(sweep: ti.template(), vals: ti.template()):
    r = ti.Vector([vals.shape[0], vals.shape[1], vals.shape[2]])
    if ti.static(sweep == 1):
        r = ti.Vector([vals.shape[1], vals.shape[0], vals.shape[2]])
    elif ti.static(sweep == 2):
        r = ti.Vector([vals.shape[2], vals.shape[0], vals.shape[1]])
    return r


@ti.func
def _val3(sweep: ti.template(), vals: ti.template(), s, u, v):
    p = _node3(sweep, s, u, v)
    return vals[p[0], p[1], p[2]]


@ti.func
def _win3(sweep: ti.template(), vals: ti.template(), s, u, v, u1, v1, level) -> ti.i32:
    return (_ins(_val3(sweep, vals, s, u, v), level) | (_ins(_val3(sweep, vals, s, u1, v), level) << 1)
            | (_ins(_val3(sweep, vals, s, u, v1), level) << 2) | (_ins(_val3(sweep, vals, s, u1, v1), level) << 3))


def _corner_frames(dim):
    """Per sweep axis and cell corner c: (1 if the corner lies on plane s + 1, its window bit)."""
    out = {}
    for sweep in range(dim):
        others = [a for a in range(dim) if a != sweep]
        rows = []
        for c in range(1 << dim):
            d = [(c >> a) & 1 for a in range(dim)]
            rows.append((d[sweep], sum(d[a] << m for m, a in enumerate(others))))
        out[sweep] = tuple(rows)
    return out


_FRAME3 = _corner_frames(3)
_FRAME2 = _corner_frames(2)


_FRAMES = {3: _FRAME3, 2: _FRAME2}


@ti.func
def _case(dim: ti.template(), sweep: ti.template(), b, n) -> ti.i32:
    """Cell case (bit c = corner c inside, c = dx + 2 dy [+ 4 dz]) from the windows of s and s + 1."""
    case = 0
    for c in ti.static(range(1 << dim)):
        if ti.static(_FRAMES[dim][sweep][c][0]):
            case |= ((n >> ti.static(_FRAMES[dim][sweep][c][1])) & 1) << c
        else:
            case |= ((b >> ti.static(_FRAMES[dim][sweep][c][1])) & 1) << c
    return case


@ti.func
def _edges3(sweep: ti.template(), b, n, hs, hu, hv):
    """Crossing flags of the node's +x, +y, +z grid edges."""
    es = hs * ((b ^ n) & 1)
    eu = hu * ((b ^ (b >> 1)) & 1)
    ev = hv * ((b ^ (b >> 2)) & 1)
    return _node3(sweep, es, eu, ev)  # the same permutation from sweep order to x, y, z


@ti.func
def _run3(sweep: ti.template(), vals: ti.template(), c, u, v, S, ns, nu, nv, level):
    """Start of the run c of S nodes along the sweep axis at (u, v): its node range [s0, s1), the
    clamped neighbour lines u1, v1, whether they exist (hu, hv), and the first window's bits."""
    s0 = c * S
    u1 = ti.min(u + 1, nu - 1)
    v1 = ti.min(v + 1, nv - 1)
    return (s0, ti.min(s0 + S, ns), u1, v1, ti.cast(u + 1 < nu, ti.i32), ti.cast(v + 1 < nv, ti.i32),
            _win3(sweep, vals, s0, u, v, u1, v1, level))


@ti.kernel
def count3(vals: ti.types.ndarray(ndim=3), level: float, sweep: ti.template(), S: ti.i32, tri_count: nd_i32,
           cnt: nd_i32, flags: nd_i32):
    """Per run of S nodes: crossing grid edges owned, triangles of the cells, non-finite values."""
    for k in ti.static(range(3)):  # zeroed here, before the loop: no separate fill launch
        flags[k] = 0
    dims = _dims3(sweep, vals)
    ns, nu, nv = dims[0], dims[1], dims[2]
    nch = (ns + S - 1) // S
    big = ti.static(3.0e38)
    for c, u, v in ti.ndrange(nch, nu, nv):
        s0, s1, u1, v1, hu, hv, b = _run3(sweep, vals, c, u, v, S, ns, nu, nv, level)
        cnt_v = 0
        cnt_t = 0
        bad = 0
        at = 0
        for s in range(s0, s1):
            x = _val3(sweep, vals, s, u, v)
            bad += ti.cast(not (ti.abs(x) <= big), ti.i32)  # NaN fails every comparison
            at += ti.cast(x == level, ti.i32)
            sn = ti.min(s + 1, ns - 1)
            hs = ti.cast(s + 1 < ns, ti.i32)
            n = _win3(sweep, vals, sn, u, v, u1, v1, level)
            e = _edges3(sweep, b, n, hs, hu, hv)
            cnt_v += e[0] + e[1] + e[2]
            cnt_t += hs * hu * hv * tri_count[_case(3, sweep, b, n)]
            b = n
        r = (c * nu + u) * nv + v
        cnt[r] = cnt_v
        cnt[nch * nu * nv + r] = cnt_t
        if bad > 0:
            ti.atomic_add(flags[0], bad)  # flags[0]: non-finite values
        if at > 0:
            ti.atomic_add(flags[2], at)  # flags[2]: nodes exactly at the level (vertices may snap there)


@ti.func
def _emit_vertex3(vals: ti.template(), verts: ti.template(), vedge: ti.template(), vsnap: ti.template(),
                  flags: ti.template(), org: ti.template(), spc: ti.template(), level,
                  vid, p, axis: ti.template()):
    ny, nz = vals.shape[1], vals.shape[2]
    q = p
    q[axis] += 1
    a = vals[p[0], p[1], p[2]]
    bv = vals[q[0], q[1], q[2]]
    t = (level - a) / (bv - a)
    fa = (p[0] * ny + p[1]) * nz + p[2]
    fb = (q[0] * ny + q[1]) * nz + q[2]
    x = ti.Vector([ti.cast(p[0], float), ti.cast(p[1], float), ti.cast(p[2], float)])
    x[axis] += t
    for d in ti.static(range(3)):
        verts[vid, d] = org[d] + spc[d] * x[d]
    vedge[vid] = ti.cast(fa, ti.i64) * 3 + axis
    snap = -1
    if a == level:
        snap = fa
    elif bv == level:
        snap = fb
    vsnap[vid] = snap
    if snap >= 0:
        ti.atomic_add(flags[1], 1)  # flags[1]: snapped vertices


@ti.func
def _emit_vertices3(vals: ti.template(), level: float, sweep: ti.template(), S: ti.i32,
                   vbase: ti.template(), org: ti.template(), spc: ti.template(),
                   verts: ti.template(), vedge: ti.template(), vsnap: ti.template(), node_vid: ti.template(),
                   flags: ti.template()):
    dims = _dims3(sweep, vals)
    ns, nu, nv = dims[0], dims[1], dims[2]
    ny, nz = vals.shape[1], vals.shape[2]
    nch = (ns + S - 1) // S
    for c, u, v in ti.ndrange(nch, nu, nv):
        r = (c * nu + u) * nv + v
        vid = vbase[r]
        if vbase[r + 1] > vid:  # skip runs without vertices
            s0, s1, u1, v1, hu, hv, b = _run3(sweep, vals, c, u, v, S, ns, nu, nv, level)
            for s in range(s0, s1):
                n = _win3(sweep, vals, ti.min(s + 1, ns - 1), u, v, u1, v1, level)
                e = _edges3(sweep, b, n, ti.cast(s + 1 < ns, ti.i32), hu, hv)
                if e[0] + e[1] + e[2] > 0:
                    p = _node3(sweep, s, u, v)
                    node_vid[(p[0] * ny + p[1]) * nz + p[2]] = vid
                    for axis in ti.static(range(3)):
                        if e[axis]:
                            _emit_vertex3(vals, verts, vedge, vsnap, flags, org, spc, level, vid, p, axis)
                            vid += 1
                b = n


@ti.func
def _vid3(vals: ti.template(), node_vid: ti.template(), level, i, j, k, axis) -> ti.i32:
    """Vertex id of the grid edge leaving node (i, j, k) along ``axis`` (it must cross)."""
    ny, nz = vals.shape[1], vals.shape[2]
    rank = 0
    s = _ins(vals[i, j, k], level)
    if axis > 0 and i + 1 < vals.shape[0]:
        rank += _ne(s, _ins(vals[i + 1, j, k], level))
    if axis > 1 and j + 1 < ny:
        rank += _ne(s, _ins(vals[i, j + 1, k], level))
    return node_vid[(i * ny + j) * nz + k] + rank


@ti.func
def _emit_triangles3(vals: ti.template(), level: float, sweep: ti.template(), S: ti.i32,
                    base: ti.template(), tri_count: ti.template(), tri_elems: ti.template(), stride: ti.i32,
                    edge_corner: ti.template(), edge_axis: ti.template(), node_vid: ti.template(),
                    tris: ti.template()):
    dims = _dims3(sweep, vals)
    ns, nu, nv = dims[0], dims[1], dims[2]
    nch = (ns + S - 1) // S
    for c, u, v in ti.ndrange(nch, nu, nv):
        r = (c * nu + u) * nv + v
        R = nch * nu * nv
        tid = base[R + r] - base[R]
        if base[R + r + 1] - base[R] > tid:  # skip runs without triangles (also every boundary row)
            s0 = c * S
            s1 = ti.min(s0 + S, ns - 1)
            b = _win3(sweep, vals, s0, u, v, u + 1, v + 1, level)
            for s in range(s0, s1):
                n = _win3(sweep, vals, s + 1, u, v, u + 1, v + 1, level)
                case = _case(3, sweep, b, n)
                p = _node3(sweep, s, u, v)
                for t in range(tri_count[case]):
                    for m in ti.static(range(3)):
                        e = tri_elems[case * stride + 3 * t + m]
                        cc = edge_corner[e]
                        tris[tid, m] = _vid3(vals, node_vid, level, p[0] + (cc & 1), p[1] + ((cc >> 1) & 1),
                                             p[2] + ((cc >> 2) & 1), edge_axis[e])
                    tid += 1
                b = n


# --------------------------------------------------------------------------------------------
# 2D: the same scheme with rows u and a two-node window (bit du)
# --------------------------------------------------------------------------------------------

@ti.func
def _node2(sweep: ti.template(), s, u):
    r = ti.Vector([s, u])
    if ti.static(sweep == 1):
        r = ti.Vector([u, s])
    return r


@ti.func
def _val2(sweep: ti.template(), vals: ti.template(), s, u):
    p = _node2(sweep, s, u)
    return vals[p[0], p[1]]


@ti.func
def _win2(sweep: ti.template(), vals: ti.template(), s, u, u1, level) -> ti.i32:
    return _ins(_val2(sweep, vals, s, u), level) | (_ins(_val2(sweep, vals, s, u1), level) << 1)


@ti.func
def _edges2(sweep: ti.template(), b, n, hs, hu):
    es = hs * ((b ^ n) & 1)
    eu = hu * ((b ^ (b >> 1)) & 1)
    r = ti.Vector([es, eu])
    if ti.static(sweep == 1):
        r = ti.Vector([eu, es])
    return r


@ti.func
def _shape2(sweep: ti.template(), vals: ti.template()):
    r = ti.Vector([vals.shape[0], vals.shape[1]])
    if ti.static(sweep == 1):
        r = ti.Vector([vals.shape[1], vals.shape[0]])
    return r


@ti.func
def _run2(sweep: ti.template(), vals: ti.template(), c, u, S, ns, nu, level):
    """2D counterpart of ``_run3``."""
    s0 = c * S
    u1 = ti.min(u + 1, nu - 1)
    return s0, ti.min(s0 + S, ns), u1, ti.cast(u + 1 < nu, ti.i32), _win2(sweep, vals, s0, u, u1, level)


@ti.kernel
def count2(vals: ti.types.ndarray(ndim=2), level: float, sweep: ti.template(), S: ti.i32, seg_count: nd_i32,
           cnt: nd_i32, flags: nd_i32):
    for k in ti.static(range(3)):  # zeroed here, before the loop: no separate fill launch
        flags[k] = 0
    dims = _shape2(sweep, vals)
    ns, nu = dims[0], dims[1]
    nch = (ns + S - 1) // S
    big = ti.static(3.0e38)
    for c, u in ti.ndrange(nch, nu):
        s0, s1, u1, hu, b = _run2(sweep, vals, c, u, S, ns, nu, level)
        cnt_v = 0
        cnt_t = 0
        bad = 0
        at = 0
        for s in range(s0, s1):
            x = _val2(sweep, vals, s, u)
            bad += ti.cast(not (ti.abs(x) <= big), ti.i32)
            at += ti.cast(x == level, ti.i32)
            hs = ti.cast(s + 1 < ns, ti.i32)
            n = _win2(sweep, vals, ti.min(s + 1, ns - 1), u, u1, level)
            e = _edges2(sweep, b, n, hs, hu)
            cnt_v += e[0] + e[1]
            cnt_t += hs * hu * seg_count[_case(2, sweep, b, n)]
            b = n
        cnt[c * nu + u] = cnt_v
        cnt[nch * nu + c * nu + u] = cnt_t
        if bad > 0:
            ti.atomic_add(flags[0], bad)  # flags[0]: non-finite values
        if at > 0:
            ti.atomic_add(flags[2], at)  # flags[2]: nodes exactly at the level (vertices may snap there)


@ti.func
def _emit_vertices2(vals: ti.template(), level: float, sweep: ti.template(), S: ti.i32,
                   vbase: ti.template(), org: ti.template(), spc: ti.template(),
                   verts: ti.template(), vedge: ti.template(), vsnap: ti.template(), node_vid: ti.template(),
                   flags: ti.template()):
    dims = _shape2(sweep, vals)
    ns, nu = dims[0], dims[1]
    ny = vals.shape[1]
    nch = (ns + S - 1) // S
    for c, u in ti.ndrange(nch, nu):
        r = c * nu + u
        vid = vbase[r]
        if vbase[r + 1] > vid:
            s0, s1, u1, hu, b = _run2(sweep, vals, c, u, S, ns, nu, level)
            for s in range(s0, s1):
                n = _win2(sweep, vals, ti.min(s + 1, ns - 1), u, u1, level)
                e = _edges2(sweep, b, n, ti.cast(s + 1 < ns, ti.i32), hu)
                if e[0] + e[1] > 0:
                    p = _node2(sweep, s, u)
                    node_vid[p[0] * ny + p[1]] = vid
                    for axis in ti.static(range(2)):
                        if e[axis]:
                            q = p
                            q[axis] += 1
                            a = vals[p[0], p[1]]
                            bv = vals[q[0], q[1]]
                            t = (level - a) / (bv - a)
                            x = ti.Vector([ti.cast(p[0], float), ti.cast(p[1], float)])
                            x[axis] += t
                            for d in ti.static(range(2)):
                                verts[vid, d] = org[d] + spc[d] * x[d]
                            fa = p[0] * ny + p[1]
                            vedge[vid] = ti.cast(fa, ti.i64) * 2 + axis
                            snap = -1
                            if a == level:
                                snap = fa
                            elif bv == level:
                                snap = q[0] * ny + q[1]
                            vsnap[vid] = snap
                            if snap >= 0:
                                ti.atomic_add(flags[1], 1)  # flags[1]: snapped vertices
                            vid += 1
                b = n


@ti.func
def _vid2(vals: ti.template(), node_vid: ti.template(), level, i, j, axis) -> ti.i32:
    rank = 0
    if axis > 0 and i + 1 < vals.shape[0]:
        rank = _ne(_ins(vals[i, j], level), _ins(vals[i + 1, j], level))
    return node_vid[i * vals.shape[1] + j] + rank


@ti.func
def _emit_segments2(vals: ti.template(), level: float, sweep: ti.template(), S: ti.i32,
                   base: ti.template(), seg_count: ti.template(), seg_elems: ti.template(), stride: ti.i32, edge_corner: ti.template(),
                   edge_axis: ti.template(), node_vid: ti.template(), segs: ti.template()):
    dims = _shape2(sweep, vals)
    ns, nu = dims[0], dims[1]
    nch = (ns + S - 1) // S
    for c, u in ti.ndrange(nch, nu):
        r = c * nu + u
        R = nch * nu
        sid = base[R + r] - base[R]
        if base[R + r + 1] - base[R] > sid:
            s0 = c * S
            s1 = ti.min(s0 + S, ns - 1)
            b = _win2(sweep, vals, s0, u, u + 1, level)
            for s in range(s0, s1):
                n = _win2(sweep, vals, s + 1, u, u + 1, level)
                case = _case(2, sweep, b, n)
                p = _node2(sweep, s, u)
                for t in range(seg_count[case]):
                    for m in ti.static(range(2)):
                        e = seg_elems[case * stride + 2 * t + m]
                        cc = edge_corner[e]
                        segs[sid, m] = _vid2(vals, node_vid, level, p[0] + (cc & 1), p[1] + ((cc >> 1) & 1),
                                             edge_axis[e])
                    sid += 1
                b = n


# --------------------------------------------------------------------------------------------
# One launch each for the scan and for the emission (a top-level loop finishes before the next)
# --------------------------------------------------------------------------------------------

@ti.kernel
def emit3(vals: ti.types.ndarray(ndim=3), level: float, sweep: ti.template(), S: ti.i32, base: nd_i32,
          org: ti.types.ndarray(ndim=1), spc: ti.types.ndarray(ndim=1), verts: ti.types.ndarray(ndim=2),
          vedge: nd_i64, vsnap: nd_i32, node_vid: nd_i32, flags: nd_i32, tri_count: nd_i32, tri_elems: nd_i32,
          stride: ti.i32, edge_corner: nd_i32, edge_axis: nd_i32, tris: ti.types.ndarray(ndim=2)):
    """Vertices, then triangles (int32 or int64 ``tris``): the second pass reads node_vid."""
    _emit_vertices3(vals, level, sweep, S, base, org, spc, verts, vedge, vsnap, node_vid, flags)
    _emit_triangles3(vals, level, sweep, S, base, tri_count, tri_elems, stride, edge_corner, edge_axis, node_vid,
                     tris)


@ti.kernel
def emit2(vals: ti.types.ndarray(ndim=2), level: float, sweep: ti.template(), S: ti.i32, base: nd_i32,
          org: ti.types.ndarray(ndim=1), spc: ti.types.ndarray(ndim=1), verts: ti.types.ndarray(ndim=2),
          vedge: nd_i64, vsnap: nd_i32, node_vid: nd_i32, flags: nd_i32, seg_count: nd_i32, seg_elems: nd_i32,
          stride: ti.i32, edge_corner: nd_i32, edge_axis: nd_i32, segs: ti.types.ndarray(ndim=2)):
    """Vertices, then segments (int32 or int64 ``segs``)."""
    _emit_vertices2(vals, level, sweep, S, base, org, spc, verts, vedge, vsnap, node_vid, flags)
    _emit_segments2(vals, level, sweep, S, base, seg_count, seg_elems, stride, edge_corner, edge_axis, node_vid,
                    segs)


@ti.kernel
def scan_totals(cnt: nd_i32, base: nd_i32, s1: nd_i32, o1: nd_i32, s2: nd_i32, o2: nd_i32, R: ti.i32,
                flags: nd_i32, out: nd_i32, serial: ti.template()):
    """The exclusive scan of [vertex counts | element counts] (2R <= 256^3 values; in one thread
    with ``serial``) and the totals for the host, in one launch (see gather_totals)."""
    if ti.static(serial):
        serial_scan(cnt, base, 2 * R)
    else:
        scan_two_levels(cnt, base, s1, o1, s2, o2, 2 * R)
    _totals(base, R, flags, out)


@ti.func
def _totals(base: ti.template(), R, flags: ti.template(), out: ti.template()):
    for _ in range(1):
        out[0] = base[R]
        out[1] = base[2 * R]
        out[2] = flags[0]
        out[3] = flags[2]


# --------------------------------------------------------------------------------------------
# Adjoints, dimension-generic on the flattened grid
# --------------------------------------------------------------------------------------------

@ti.kernel
def vertex_vjp(vflat: ti.types.ndarray(ndim=1), vedge: nd_i64, n: ti.i32, grad: ti.types.ndarray(ndim=1),
               gs0: ti.i32, gs1: ti.i32, strides: nd_i32, spc: ti.types.ndarray(ndim=1), dim: ti.i32, level: float,
               eps_rel: float, vmax: ti.types.ndarray(ndim=1), out: ti.types.ndarray(ndim=1)):
    """out[node] += d(sum_v g_v . x_v)/d values[node] for each vertex's edge (A, B).

    x_v = x_A + t (x_B - x_A) along one axis, t = (level - a) / (b - a):
    dt/da = (level - b) / (b - a)^2, dt/db = (a - level) / (b - a)^2. g_v[k] is
    ``grad[v * gs0 + k * gs1]`` (element strides: a broadcast gradient, such as the one of a sum,
    is read in place, with strides 0); |b - a| is clamped below by eps_rel * max(1, vmax[0])
    (vmax: max |values|). Vertices 0..n-1.
    """
    eps = eps_rel * ti.max(1.0, vmax[0])
    for v in range(n):
        e = vedge[v]
        axis = ti.cast(e % dim, ti.i32)
        fa = ti.cast(e // dim, ti.i32)
        fb = fa + strides[axis]
        a = vflat[fa]
        b = vflat[fb]
        d = b - a
        if ti.abs(d) < eps:
            d = eps if d >= 0 else -eps
        coef = grad[v * gs0 + axis * gs1] * spc[axis] / (d * d)
        out[fa] += coef * (level - b)
        out[fb] += coef * (a - level)


@ti.func
def _grad_at(vflat: ti.template(), shape: ti.template(), strides: ti.template(), spc: ti.template(),
             dim: ti.template(), f):
    """Central-difference field gradient at flat node f (one-sided on the grid boundary)."""
    g = ti.Vector([0.0, 0.0, 0.0])
    rem = f
    for d in ti.static(range(dim)):
        idx = rem // strides[d]
        rem = rem - idx * strides[d]
        lo = f - strides[d] if idx > 0 else f
        hi = f + strides[d] if idx + 1 < shape[d] else f
        steps = ti.cast((hi - lo) // strides[d], float)
        g[d] = (vflat[hi] - vflat[lo]) / (steps * spc[d])
    return g


@ti.kernel
def vertex_normals(vflat: ti.types.ndarray(ndim=1), vedge: nd_i64, shape: nd_i32, strides: nd_i32,
                   spc: ti.types.ndarray(ndim=1), dim: ti.template(), level: float,
                   out: ti.types.ndarray(ndim=2)):
    """Unit field gradient at each vertex: the node gradients interpolated along its edge."""
    for v in range(vedge.shape[0]):
        e = vedge[v]
        axis = ti.cast(e % dim, ti.i32)
        fa = ti.cast(e // dim, ti.i32)
        fb = fa + strides[axis]
        a = vflat[fa]
        b = vflat[fb]
        t = 0.5
        if b != a:
            t = (level - a) / (b - a)
        g = (1.0 - t) * _grad_at(vflat, shape, strides, spc, dim, fa) + t * _grad_at(
            vflat, shape, strides, spc, dim, fb)
        norm = g.norm()
        if norm > 0:
            g /= norm
        for d in ti.static(range(dim)):
            out[v, d] = g[d]


@ti.kernel
def gather_totals(base: nd_i32, R: ti.i32, flags: nd_i32, out: nd_i32):
    """One small array for the host: [vertices, vertices + elements, non-finite values, nodes at
    the level]."""
    _totals(base, R, flags, out)
