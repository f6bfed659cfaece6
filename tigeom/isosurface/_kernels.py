"""Taichi kernels for marching squares / cubes: count, (scan), emit vertices, emit elements.

Work decomposition: a thread owns a short run of ``S`` nodes along axis 0 (the slowest numpy
axis) at fixed (j[, k]). Adjacent threads read adjacent memory (coalesced on a GPU) and each
thread slides a window of the current and the next plane along its run, so every value is read
about once per pass. A node owns the grid edges leaving it in +x, +y (+z); a vertex is indexed by
(node, axis), so cells that share a grid edge share its vertex.

Inside means ``value < level``; ``value >= level`` is outside. Vertex parameter along an edge from
node A (value a) to B (value b): ``t = (level - a) / (b - a)``, exactly 0 or 1 when a node sits on
the level ("snapped" vertices, welded afterwards by the caller).
"""


import taichi as ti

nd_i32 = ti.types.ndarray(dtype=ti.i32, ndim=1)
nd_i64 = ti.types.ndarray(dtype=ti.i64, ndim=1)


@ti.func
def _ins(v, level) -> ti.i32:
    return ti.cast(v < level, ti.i32)


@ti.func
def _ne(a: ti.i32, b: ti.i32) -> ti.i32:
    return ti.cast(a != b, ti.i32)


# --------------------------------------------------------------------------------------------
# 3D
# --------------------------------------------------------------------------------------------

@ti.func
def _window3(vals: ti.template(), i, j, k, level):
    """Inside-flags of nodes (i, j, k), (i, j+1, k), (i, j, k+1), (i, j+1, k+1) (0 when absent)."""
    ny, nz = vals.shape[1], vals.shape[2]
    w = ti.Vector([0, 0, 0, 0])
    w[0] = _ins(vals[i, j, k], level)
    if j + 1 < ny:
        w[1] = _ins(vals[i, j + 1, k], level)
    if k + 1 < nz:
        w[2] = _ins(vals[i, j, k + 1], level)
    if j + 1 < ny and k + 1 < nz:
        w[3] = _ins(vals[i, j + 1, k + 1], level)
    return w


@ti.func
def _case3(b, n) -> ti.i32:
    # corner c = dx + 2 dy + 4 dz; window slot s = dy + 2 dz; b: plane i (dx = 0), n: plane i + 1
    return (b[0] | (n[0] << 1) | (b[1] << 2) | (n[1] << 3) | (b[2] << 4) | (n[2] << 5)
            | (b[3] << 6) | (n[3] << 7))


@ti.func
def _node_edges3(vals: ti.template(), b, n, i, j, k) -> ti.math.ivec3:
    """Which of node (i, j, k)'s +x, +y, +z edges cross the level."""
    nx, ny, nz = vals.shape[0], vals.shape[1], vals.shape[2]
    e = ti.Vector([0, 0, 0])
    if i + 1 < nx:
        e[0] = _ne(b[0], n[0])
    if j + 1 < ny:
        e[1] = _ne(b[0], b[1])
    if k + 1 < nz:
        e[2] = _ne(b[0], b[2])
    return e


@ti.kernel
def count3(vals: ti.types.ndarray(ndim=3), level: float, S: ti.i32, tri_count: nd_i32,
           vcnt: nd_i32, tcnt: nd_i32):
    nx, ny, nz = vals.shape[0], vals.shape[1], vals.shape[2]
    nch = (nx + S - 1) // S
    for c, j, k in ti.ndrange(nch, ny, nz):
        i0 = c * S
        i1 = ti.min(i0 + S, nx)
        b = _window3(vals, i0, j, k, level)
        nv = 0
        nt = 0
        for i in range(i0, i1):
            n = ti.Vector([0, 0, 0, 0])
            if i + 1 < nx:
                n = _window3(vals, i + 1, j, k, level)
            e = _node_edges3(vals, b, n, i, j, k)
            nv += e[0] + e[1] + e[2]
            if i + 1 < nx and j + 1 < ny and k + 1 < nz:
                nt += tri_count[_case3(b, n)]
            b = n
        r = (c * ny + j) * nz + k
        vcnt[r] = nv
        tcnt[r] = nt


@ti.func
def _emit_vertex3(vals: ti.template(), verts: ti.template(), vedge: ti.template(), vsnap: ti.template(),
                  nsnap: ti.template(), org: ti.template(), spc: ti.template(), level,
                  vid, i, j, k, axis):
    nx, ny, nz = vals.shape[0], vals.shape[1], vals.shape[2]
    di = ti.Vector([0, 0, 0])
    di[axis] = 1
    a = vals[i, j, k]
    bv = vals[i + di[0], j + di[1], k + di[2]]
    t = (level - a) / (bv - a)
    fa = (i * ny + j) * nz + k
    fb = ((i + di[0]) * ny + j + di[1]) * nz + k + di[2]
    p = ti.Vector([ti.cast(i, float), ti.cast(j, float), ti.cast(k, float)])
    p[axis] += t
    for d in ti.static(range(3)):
        verts[vid, d] = org[d] + spc[d] * p[d]
    vedge[vid] = ti.cast(fa, ti.i64) * 3 + axis
    snap = -1
    if a == level:
        snap = fa
    elif bv == level:
        snap = fb
    vsnap[vid] = snap
    if snap >= 0:
        ti.atomic_add(nsnap[0], 1)


@ti.kernel
def emit_vertices3(vals: ti.types.ndarray(ndim=3), level: float, S: ti.i32, vbase: nd_i32,
                   org: ti.types.ndarray(ndim=1), spc: ti.types.ndarray(ndim=1),
                   verts: ti.types.ndarray(ndim=2), vedge: nd_i64, vsnap: nd_i32, node_vid: nd_i32,
                   nsnap: nd_i32):
    nx, ny, nz = vals.shape[0], vals.shape[1], vals.shape[2]
    nch = (nx + S - 1) // S
    for c, j, k in ti.ndrange(nch, ny, nz):
        i0 = c * S
        i1 = ti.min(i0 + S, nx)
        vid = vbase[(c * ny + j) * nz + k]
        b = _window3(vals, i0, j, k, level)
        for i in range(i0, i1):
            n = ti.Vector([0, 0, 0, 0])
            if i + 1 < nx:
                n = _window3(vals, i + 1, j, k, level)
            e = _node_edges3(vals, b, n, i, j, k)
            if e[0] + e[1] + e[2] > 0:
                node_vid[(i * ny + j) * nz + k] = vid
                for axis in ti.static(range(3)):
                    if e[axis]:
                        _emit_vertex3(vals, verts, vedge, vsnap, nsnap, org, spc, level, vid, i, j, k, axis)
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


@ti.kernel
def emit_triangles3(vals: ti.types.ndarray(ndim=3), level: float, S: ti.i32, tbase: nd_i32,
                    tri_count: nd_i32, tri_elems: nd_i32, stride: ti.i32, edge_corner: nd_i32,
                    edge_axis: nd_i32, node_vid: nd_i32, tris: ti.types.ndarray(dtype=ti.i32, ndim=2)):
    nx, ny, nz = vals.shape[0], vals.shape[1], vals.shape[2]
    nch = (nx + S - 1) // S
    for c, j, k in ti.ndrange(nch, ny, nz):
        if j + 1 < ny and k + 1 < nz:
            i0 = c * S
            i1 = ti.min(i0 + S, nx - 1)
            tid = tbase[(c * ny + j) * nz + k]
            b = _window3(vals, i0, j, k, level)
            for i in range(i0, i1):
                n = _window3(vals, i + 1, j, k, level)
                case = _case3(b, n)
                for t in range(tri_count[case]):
                    for m in ti.static(range(3)):
                        e = tri_elems[case * stride + 3 * t + m]
                        cc = edge_corner[e]
                        tris[tid, m] = _vid3(vals, node_vid, level, i + (cc & 1), j + ((cc >> 1) & 1),
                                             k + ((cc >> 2) & 1), edge_axis[e])
                    tid += 1
                b = n


# --------------------------------------------------------------------------------------------
# 2D
# --------------------------------------------------------------------------------------------

@ti.func
def _window2(vals: ti.template(), i, j, level):
    w = ti.Vector([0, 0])
    w[0] = _ins(vals[i, j], level)
    if j + 1 < vals.shape[1]:
        w[1] = _ins(vals[i, j + 1], level)
    return w


@ti.func
def _case2(b, n) -> ti.i32:
    # corner c = dx + 2 dy
    return b[0] | (n[0] << 1) | (b[1] << 2) | (n[1] << 3)


@ti.func
def _node_edges2(vals: ti.template(), b, n, i, j) -> ti.math.ivec2:
    e = ti.Vector([0, 0])
    if i + 1 < vals.shape[0]:
        e[0] = _ne(b[0], n[0])
    if j + 1 < vals.shape[1]:
        e[1] = _ne(b[0], b[1])
    return e


@ti.kernel
def count2(vals: ti.types.ndarray(ndim=2), level: float, S: ti.i32, seg_count: nd_i32,
           vcnt: nd_i32, tcnt: nd_i32):
    nx, ny = vals.shape[0], vals.shape[1]
    nch = (nx + S - 1) // S
    for c, j in ti.ndrange(nch, ny):
        i0 = c * S
        i1 = ti.min(i0 + S, nx)
        b = _window2(vals, i0, j, level)
        nv = 0
        nt = 0
        for i in range(i0, i1):
            n = ti.Vector([0, 0])
            if i + 1 < nx:
                n = _window2(vals, i + 1, j, level)
            e = _node_edges2(vals, b, n, i, j)
            nv += e[0] + e[1]
            if i + 1 < nx and j + 1 < ny:
                nt += seg_count[_case2(b, n)]
            b = n
        vcnt[c * ny + j] = nv
        tcnt[c * ny + j] = nt


@ti.kernel
def emit_vertices2(vals: ti.types.ndarray(ndim=2), level: float, S: ti.i32, vbase: nd_i32,
                   org: ti.types.ndarray(ndim=1), spc: ti.types.ndarray(ndim=1),
                   verts: ti.types.ndarray(ndim=2), vedge: nd_i64, vsnap: nd_i32, node_vid: nd_i32,
                   nsnap: nd_i32):
    nx, ny = vals.shape[0], vals.shape[1]
    nch = (nx + S - 1) // S
    for c, j in ti.ndrange(nch, ny):
        i0 = c * S
        i1 = ti.min(i0 + S, nx)
        vid = vbase[c * ny + j]
        b = _window2(vals, i0, j, level)
        for i in range(i0, i1):
            n = ti.Vector([0, 0])
            if i + 1 < nx:
                n = _window2(vals, i + 1, j, level)
            e = _node_edges2(vals, b, n, i, j)
            if e[0] + e[1] > 0:
                node_vid[i * ny + j] = vid
                for axis in ti.static(range(2)):
                    if e[axis]:
                        di = ti.Vector([0, 0])
                        di[axis] = 1
                        a = vals[i, j]
                        bv = vals[i + di[0], j + di[1]]
                        t = (level - a) / (bv - a)
                        p = ti.Vector([ti.cast(i, float), ti.cast(j, float)])
                        p[axis] += t
                        for d in ti.static(range(2)):
                            verts[vid, d] = org[d] + spc[d] * p[d]
                        fa = i * ny + j
                        vedge[vid] = ti.cast(fa, ti.i64) * 2 + axis
                        snap = -1
                        if a == level:
                            snap = fa
                        elif bv == level:
                            snap = (i + di[0]) * ny + j + di[1]
                        vsnap[vid] = snap
                        if snap >= 0:
                            ti.atomic_add(nsnap[0], 1)
                        vid += 1
            b = n


@ti.func
def _vid2(vals: ti.template(), node_vid: ti.template(), level, i, j, axis) -> ti.i32:
    rank = 0
    if axis > 0 and i + 1 < vals.shape[0]:
        rank = _ne(_ins(vals[i, j], level), _ins(vals[i + 1, j], level))
    return node_vid[i * vals.shape[1] + j] + rank


@ti.kernel
def emit_segments2(vals: ti.types.ndarray(ndim=2), level: float, S: ti.i32, tbase: nd_i32,
                   seg_count: nd_i32, seg_elems: nd_i32, stride: ti.i32, edge_corner: nd_i32,
                   edge_axis: nd_i32, node_vid: nd_i32, segs: ti.types.ndarray(dtype=ti.i32, ndim=2)):
    nx, ny = vals.shape[0], vals.shape[1]
    nch = (nx + S - 1) // S
    for c, j in ti.ndrange(nch, ny):
        if j + 1 < ny:
            i0 = c * S
            i1 = ti.min(i0 + S, nx - 1)
            sid = tbase[c * ny + j]
            b = _window2(vals, i0, j, level)
            for i in range(i0, i1):
                n = _window2(vals, i + 1, j, level)
                case = _case2(b, n)
                for t in range(seg_count[case]):
                    for m in ti.static(range(2)):
                        e = seg_elems[case * stride + 2 * t + m]
                        cc = edge_corner[e]
                        segs[sid, m] = _vid2(vals, node_vid, level, i + (cc & 1), j + ((cc >> 1) & 1),
                                             edge_axis[e])
                    sid += 1
                b = n


# --------------------------------------------------------------------------------------------
# Adjoints, dimension-generic on the flattened grid
# --------------------------------------------------------------------------------------------

@ti.kernel
def vertex_vjp(vflat: ti.types.ndarray(ndim=1), vedge: nd_i64, gaxis: ti.types.ndarray(ndim=1),
               strides: nd_i32, spc: ti.types.ndarray(ndim=1), dim: ti.i32, level: float, eps: float,
               out: ti.types.ndarray(ndim=1)):
    """out[node] += d(sum_v g_v . x_v)/d values[node] for each vertex's edge (A, B).

    x_v = x_A + t (x_B - x_A) along one axis, t = (level - a) / (b - a):
    dt/da = (level - b) / (b - a)^2, dt/db = (a - level) / (b - a)^2. ``gaxis`` holds g_v's
    component along the vertex's axis; |b - a| is clamped below by ``eps``.
    """
    for v in range(vedge.shape[0]):
        e = vedge[v]
        axis = ti.cast(e % dim, ti.i32)
        fa = ti.cast(e // dim, ti.i32)
        fb = fa + strides[axis]
        a = vflat[fa]
        b = vflat[fb]
        d = b - a
        if ti.abs(d) < eps:
            d = eps if d >= 0 else -eps
        coef = gaxis[v] * spc[axis] / (d * d)
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
