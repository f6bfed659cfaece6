"""Taichi kernels of the differentiable rasteriser (see :mod:`tigeom.render`).

Screen space: ``scr[c, v] = (u, v, Z)``, pixel (row y, column x) centred at (x + 0.5, y + 0.5).
A face's edge function ``_cr(a, b, p)`` is twice the signed area of (a, b, p); the face covers a
pixel when the three edge functions at its centre share the sign of the face's own area (edges
inclusive). Per pixel the covering faces are kept sorted by (depth, face index), the nearest
``LAYERS``; the composite is premultiplied: ``A = 1 - prod(1 - o)``, ``D = sum w z``,
``N = sum w n`` with ``w = o T`` (T the transmittance in front). The antialiasing pass blends the
premultiplied values of neighbouring pixels where a silhouette edge of the nearer front face
(boundary, non-manifold, or between faces that face opposite ways) crosses between their centres
(nvdiffrast's analytic antialiasing); its weight depends on where the edge crosses, which carries the gradient of
silhouette and occlusion edges to their vertices.
"""

import taichi as ti

from .._core.ndtypes import nd1, nd2, nd3, nd4, nd_i32_1, nd_i32_2, nd_i32_3

TILE = 16
LAYERS = 32
NCH = 5  # premultiplied channels: A, D, N (3)


@ti.func
def _cr(ax, ay, bx, by, px, py):
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


@ti.func
def _cr_grad(ax, ay, bx, by, px, py):
    """d _cr / d(ax, ay, bx, by, px, py)."""
    return ti.Vector([by - py, px - bx, py - ay, ax - px, ay - by, bx - ax])


@ti.func
def _corners(scr: ti.template(), faces: ti.template(), c, f):
    ia, ib, id_ = faces[f, 0], faces[f, 1], faces[f, 2]
    a = ti.Vector([scr[c, ia, 0], scr[c, ia, 1], scr[c, ia, 2]])
    b = ti.Vector([scr[c, ib, 0], scr[c, ib, 1], scr[c, ib, 2]])
    d = ti.Vector([scr[c, id_, 0], scr[c, id_, 1], scr[c, id_, 2]])
    return ia, ib, id_, a, b, d


@ti.func
def _valid(a, b, d, znear):
    S = _cr(a[0], a[1], b[0], b[1], d[0], d[1])
    return (a[2] > znear) & (b[2] > znear) & (d[2] > znear) & (S != 0.0), S


@ti.func
def _box(a, b, d, H, W):
    """Pixel index ranges whose centres may lie in the face."""
    x0 = ti.max(0, ti.cast(ti.ceil(ti.min(a[0], b[0], d[0]) - 0.5), ti.i32))
    x1 = ti.min(W - 1, ti.cast(ti.floor(ti.max(a[0], b[0], d[0]) - 0.5), ti.i32))
    y0 = ti.max(0, ti.cast(ti.ceil(ti.min(a[1], b[1], d[1]) - 0.5), ti.i32))
    y1 = ti.min(H - 1, ti.cast(ti.floor(ti.max(a[1], b[1], d[1]) - 0.5), ti.i32))
    return x0, x1, y0, y1


@ti.func
def _camera_xyz(verts: ti.template(), view: ti.template(), c, i):
    """Camera-space coordinates of vertex i in view c."""
    X = view[c, 0, 0] * verts[i, 0] + view[c, 0, 1] * verts[i, 1] + view[c, 0, 2] * verts[i, 2] + view[c, 0, 3]
    Y = view[c, 1, 0] * verts[i, 0] + view[c, 1, 1] * verts[i, 1] + view[c, 1, 2] * verts[i, 2] + view[c, 1, 3]
    Z = view[c, 2, 0] * verts[i, 0] + view[c, 2, 1] * verts[i, 1] + view[c, 2, 2] * verts[i, 2] + view[c, 2, 3]
    return X, Y, Z


@ti.kernel
def project(verts: nd2, Km: nd3, view: nd3, scr: nd3):
    for c, i in ti.ndrange(scr.shape[0], scr.shape[1]):
        X, Y, Z = _camera_xyz(verts, view, c, i)
        scr[c, i, 0] = (Km[c, 0, 0] * X + Km[c, 0, 1] * Y) / Z + Km[c, 0, 2]
        scr[c, i, 1] = Km[c, 1, 1] * Y / Z + Km[c, 1, 2]
        scr[c, i, 2] = Z


@ti.kernel
def bin_faces(scr: nd3, faces: nd_i32_2, H: ti.i32, W: ti.i32, znear: ti.f64, cnt: nd_i32_1, off: nd_i32_1,
              lst: nd_i32_1, fill: ti.i32, stats: nd_i32_1):
    """Count (fill = 0; and the (view, face) pairs behind the near plane in ``stats[1]``) or list
    (fill = 1, cursors ``off`` from the scan of the counts) the faces of every (view, tile)."""
    ntx = (W + TILE - 1) // TILE
    nty = (H + TILE - 1) // TILE
    for c, f in ti.ndrange(scr.shape[0], faces.shape[0]):
        _i0, _i1, _i2, a, b, d = _corners(scr, faces, c, f)
        ok, _S = _valid(a, b, d, znear)
        if (fill == 0) & ((a[2] <= znear) | (b[2] <= znear) | (d[2] <= znear)):
            ti.atomic_add(stats[1], 1)
        if ok:
            x0, x1, y0, y1 = _box(a, b, d, H, W)
            if (x0 <= x1) & (y0 <= y1):
                for ty, tx in ti.ndrange((y0 // TILE, y1 // TILE + 1), (x0 // TILE, x1 // TILE + 1)):
                    t = (c * nty + ty) * ntx + tx
                    if fill:
                        lst[ti.atomic_add(off[t], 1)] = f
                    else:
                        ti.atomic_add(cnt[t], 1)


@ti.func
def _depth_at(a, b, d, S, px, py):
    """(covered, depth, e0, e1, e2) of the face at p: perspective-correct depth from the
    screen-linear inverse depth, extended beyond the face."""
    e0 = _cr(b[0], b[1], d[0], d[1], px, py)
    e1 = _cr(d[0], d[1], a[0], a[1], px, py)
    e2 = _cr(a[0], a[1], b[0], b[1], px, py)
    inside = (e0 * S >= 0.0) & (e1 * S >= 0.0) & (e2 * S >= 0.0)
    invz = (e0 / a[2] + e1 / b[2] + e2 / d[2]) / S
    return inside, 1.0 / invz, e0, e1, e2


@ti.func
def _layers(scr: ti.template(), faces: ti.template(), tstart: ti.template(), lst: ti.template(), c, y, x, H, W,
            znear):
    """The faces covering pixel (x, y) of view c, nearest first: (count, depths, faces, dropped)."""
    ntx = (W + TILE - 1) // TILE
    nty = (H + TILE - 1) // TILE
    t = (c * nty + y // TILE) * ntx + x // TILE
    zs = ti.Vector([0.0] * LAYERS)
    fs = ti.Vector([0] * LAYERS)
    n = 0
    dropped = 0
    px = x + 0.5
    py = y + 0.5
    for s in range(tstart[t], tstart[t + 1]):
        f = lst[s]
        _i0, _i1, _i2, a, b, d = _corners(scr, faces, c, f)
        _ok, S = _valid(a, b, d, znear)
        inside, z, _e0, _e1, _e2 = _depth_at(a, b, d, S, px, py)
        if inside & (z > 0.0):
            if n == LAYERS:
                dropped += 1
                if (z < zs[n - 1]) | ((z == zs[n - 1]) & (f < fs[n - 1])):
                    n -= 1  # the farthest kept layer makes room
                else:
                    continue
            k = n
            while k > 0:
                if (zs[k - 1] < z) | ((zs[k - 1] == z) & (fs[k - 1] < f)):
                    break
                zs[k] = zs[k - 1]
                fs[k] = fs[k - 1]
                k -= 1
            zs[k] = z
            fs[k] = f
            n += 1
    return n, zs, fs, dropped


@ti.func
def _normal(verts: ti.template(), faces: ti.template(), camc: ti.template(), c, f):
    """(unit flat normal turned toward camera c, m = (x1 - x0) x (x2 - x0), sign)."""
    x0 = ti.Vector([verts[faces[f, 0], 0], verts[faces[f, 0], 1], verts[faces[f, 0], 2]])
    x1 = ti.Vector([verts[faces[f, 1], 0], verts[faces[f, 1], 1], verts[faces[f, 1], 2]])
    x2 = ti.Vector([verts[faces[f, 2], 0], verts[faces[f, 2], 1], verts[faces[f, 2], 2]])
    m = (x1 - x0).cross(x2 - x0)
    cam = ti.Vector([camc[c, 0], camc[c, 1], camc[c, 2]])
    s = 1.0
    if m.dot(cam - x0) < 0.0:
        s = -1.0
    return s * m / m.norm(), m, s, x0, x1, x2


@ti.kernel
def composite(verts: nd2, faces: nd_i32_2, opac: nd1, scr: nd3, camc: nd2, tstart: nd_i32_1, lst: nd_i32_1,
              znear: ti.f64, pre: nd4, front: nd_i32_3, fz: nd3, stats: nd_i32_1):
    C, H, W = pre.shape[0], pre.shape[1], pre.shape[2]
    for c, y, x in ti.ndrange(C, H, W):
        n, zs, fs, dropped = _layers(scr, faces, tstart, lst, c, y, x, H, W, znear)
        T = 1.0
        D = 0.0
        N = ti.Vector([0.0, 0.0, 0.0])
        for k in range(n):
            a = opac[fs[k]]
            w = a * T
            D += w * zs[k]
            nrm, _, _, _, _, _ = _normal(verts, faces, camc, c, fs[k])
            N += w * nrm
            T *= 1.0 - a
        pre[c, y, x, 0] = 1.0 - T
        pre[c, y, x, 1] = D
        for j in ti.static(range(3)):
            pre[c, y, x, 2 + j] = N[j]
        front[c, y, x] = fs[0] if n > 0 else -1
        fz[c, y, x] = zs[0] if n > 0 else 0.0
        if dropped > 0:
            ti.atomic_add(stats[0], 1)


@ti.func
def _silhouette(scr: ti.template(), faces: ti.template(), twin: ti.template(), c, f, je, ea, eb, S):
    """Whether edge ``je`` (ea -> eb) of face f is a silhouette in view c: a boundary or
    non-manifold edge, or one whose neighbouring face faces the other way."""
    t = twin[f, je]
    sil = 1
    if t >= 0:
        _i0, _i1, _i2, a, b, d = _corners(scr, faces, c, t)
        St = _cr(a[0], a[1], b[0], b[1], d[0], d[1])
        same_dir = 0  # the twin runs the edge ea -> eb too (inconsistent orientation)
        for j in ti.static(range(3)):
            same_dir += ti.cast((faces[t, j] == ea) & (faces[t, (j + 1) % 3] == eb), ti.i32)
        same_facing = (S * St > 0.0) != (same_dir != 0)
        sil = 0 if same_facing else 1
    return sil


@ti.func
def _pair(scr: ti.template(), faces: ti.template(), twin: ti.template(), front: ti.template(), fz: ti.template(), c, y,
          x, dirn, H, W):
    """The antialiasing blend of pixel (x, y) with its right (dirn 0) or lower (dirn 1)
    neighbour: (ok, src (y, x), dst (y, x), t, w, the crossing edge's vertices, in and out
    centres). The nearer front face f of the two pixels (``in`` the pixel it is in front of)
    must not cover the other centre, and its first edge crossed on the way from ``in`` to
    ``out`` must not be an edge of the other pixel's front face; ``t`` is where it crosses
    (0 at ``in``, 1 at ``out``), and it must be a silhouette in this view (``_silhouette``). The
    blend moves ``w`` of ``src``'s value into ``dst``."""
    qy = y + dirn
    qx = x + 1 - dirn
    ok = (qx < W) & (qy < H)
    t = 0.0
    w = 0.0
    iny, inx, outy, outx = y, x, qy, qx
    ea = 0
    eb = 0
    je = 0
    if ok:
        fp = front[c, y, x]
        fq = front[c, qy, qx]
        ok = fp != fq
        if ok:
            f = fp
            g = fq
            if (fp < 0) | ((fq >= 0) & (fz[c, qy, qx] < fz[c, y, x])):
                f, g = fq, fp
                iny, inx, outy, outx = qy, qx, y, x
            ia, ib, id_, a, b, d = _corners(scr, faces, c, f)
            S = _cr(a[0], a[1], b[0], b[1], d[0], d[1])
            pix = inx + 0.5
            piy = iny + 0.5
            pox = outx + 0.5
            poy = outy + 0.5
            vid = ti.Vector([ia, ib, id_])
            t = 2.0
            for j in ti.static(range(3)):
                # edge j runs from vertex j + 1 to vertex j + 2 (opposite vertex j)
                u0 = a if j == 2 else (b if j == 0 else d)
                u1 = b if j == 2 else (d if j == 0 else a)
                ei = _cr(u0[0], u0[1], u1[0], u1[1], pix, piy) * S
                eo = _cr(u0[0], u0[1], u1[0], u1[1], pox, poy) * S
                if eo < 0.0:
                    tj = ei / (ei - eo)
                    if tj < t:
                        t = tj
                        je = j
                        ea = vid[(j + 1) % 3]
                        eb = vid[(j + 2) % 3]
            ok = t <= 1.0
            if ok & (g >= 0):  # an edge the other front face shares is not a silhouette
                shared = 0
                for j in ti.static(range(3)):
                    shared += (faces[g, j] == ea) | (faces[g, j] == eb)
                ok = shared < 2
            if ok:
                ok = _silhouette(scr, faces, twin, c, f, je, ea, eb, S) != 0
    sy, sx, dy, dx = iny, inx, outy, outx
    if ok:
        if t > 0.5:
            w = t - 0.5
        else:
            w = 0.5 - t
            sy, sx, dy, dx = outy, outx, iny, inx
    return ok, sy, sx, dy, dx, t, w, ea, eb, inx, iny, outx, outy


@ti.kernel
def antialias(scr: nd3, faces: nd_i32_2, twin: nd_i32_2, front: nd_i32_3, fz: nd3, pre: nd4, post: nd4):
    C, H, W = pre.shape[0], pre.shape[1], pre.shape[2]
    for c, y, x, dirn in ti.ndrange(C, H, W, 2):
        ok, sy, sx, dy, dx, _, w, _, _, _, _, _, _ = _pair(scr, faces, twin, front, fz, c, y, x, dirn, H, W)
        if ok:
            for ch in ti.static(range(NCH)):
                ti.atomic_add(post[c, dy, dx, ch], w * (pre[c, sy, sx, ch] - pre[c, dy, dx, ch]))


@ti.kernel
def finish(post: nd4, alpha: nd3, depth: nd3, normal: nd4):
    C, H, W = post.shape[0], post.shape[1], post.shape[2]
    for c, y, x in ti.ndrange(C, H, W):
        A = post[c, y, x, 0]
        alpha[c, y, x] = ti.min(ti.max(A, 0.0), 1.0)
        if A > 0.0:
            depth[c, y, x] = post[c, y, x, 1] / A
            for j in ti.static(range(3)):
                normal[c, y, x, j] = post[c, y, x, 2 + j] / A
        else:
            depth[c, y, x] = ti.math.inf
            for j in ti.static(range(3)):
                normal[c, y, x, j] = 0.0


@ti.kernel
def finish_vjp(post: nd4, ga: nd3, gd: nd3, gn: nd4, G: nd4):
    """Gradient with respect to the antialiased premultiplied channels."""
    C, H, W = post.shape[0], post.shape[1], post.shape[2]
    for c, y, x in ti.ndrange(C, H, W):
        A = post[c, y, x, 0]
        for ch in ti.static(range(NCH)):
            G[c, y, x, ch] = 0.0
        if A > 0.0:
            g = 0.0
            if A <= 1.0:
                g = ga[c, y, x]
            # depth = D / A and normal = N / A: d/dA = -(gd depth + gn . normal) / A
            g -= gd[c, y, x] * post[c, y, x, 1] / (A * A)
            G[c, y, x, 1] = gd[c, y, x] / A
            for j in ti.static(range(3)):
                g -= gn[c, y, x, j] * post[c, y, x, 2 + j] / (A * A)
                G[c, y, x, 2 + j] = gn[c, y, x, j] / A
            G[c, y, x, 0] = g


@ti.kernel
def antialias_vjp(scr: nd3, faces: nd_i32_2, twin: nd_i32_2, front: nd_i32_3, fz: nd3, pre: nd4, G: nd4, Gpre: nd4,
                  gscr: nd3):
    """Gpre (initialised to G) receives the blends' transposes; gscr the gradient of the crossing
    points with respect to the crossing edges' screen positions."""
    C, H, W = pre.shape[0], pre.shape[1], pre.shape[2]
    for c, y, x, dirn in ti.ndrange(C, H, W, 2):
        ok, sy, sx, dy, dx, t, w, ea, eb, inx, iny, outx, outy = _pair(scr, faces, twin, front, fz, c, y, x, dirn, H, W)
        if ok:
            gw = 0.0
            for ch in ti.static(range(NCH)):
                g = G[c, dy, dx, ch]
                ti.atomic_add(Gpre[c, sy, sx, ch], w * g)
                ti.atomic_add(Gpre[c, dy, dx, ch], -w * g)
                gw += g * (pre[c, sy, sx, ch] - pre[c, dy, dx, ch])
            gt = gw if t > 0.5 else -gw
            ax, ay, bx, by = scr[c, ea, 0], scr[c, ea, 1], scr[c, eb, 0], scr[c, eb, 1]
            ei = _cr(ax, ay, bx, by, inx + 0.5, iny + 0.5)
            eo = _cr(ax, ay, bx, by, outx + 0.5, outy + 0.5)
            den = (ei - eo) * (ei - eo)
            gi = gt * (-eo / den)
            go = gt * (ei / den)
            di = _cr_grad(ax, ay, bx, by, inx + 0.5, iny + 0.5)
            do = _cr_grad(ax, ay, bx, by, outx + 0.5, outy + 0.5)
            ti.atomic_add(gscr[c, ea, 0], gi * di[0] + go * do[0])
            ti.atomic_add(gscr[c, ea, 1], gi * di[1] + go * do[1])
            ti.atomic_add(gscr[c, eb, 0], gi * di[2] + go * do[2])
            ti.atomic_add(gscr[c, eb, 1], gi * di[3] + go * do[3])


@ti.func
def _depth_vjp(gscr: ti.template(), c, ia, ib, id_, a, b, d, px, py, gz, z):
    """Chain d(loss)/d(depth at p) to the face's screen positions and depths."""
    S = _cr(a[0], a[1], b[0], b[1], d[0], d[1])
    e0 = _cr(b[0], b[1], d[0], d[1], px, py)
    e1 = _cr(d[0], d[1], a[0], a[1], px, py)
    e2 = _cr(a[0], a[1], b[0], b[1], px, py)
    invz = 1.0 / z
    gi = -z * z * gz
    ti.atomic_add(gscr[c, ia, 2], -gi * e0 / (S * a[2] * a[2]))
    ti.atomic_add(gscr[c, ib, 2], -gi * e1 / (S * b[2] * b[2]))
    ti.atomic_add(gscr[c, id_, 2], -gi * e2 / (S * d[2] * d[2]))
    g0 = gi / (S * a[2])
    g1 = gi / (S * b[2])
    g2 = gi / (S * d[2])
    gS = -gi * invz / S
    d0 = _cr_grad(b[0], b[1], d[0], d[1], px, py)  # e0: (b, d)
    d1 = _cr_grad(d[0], d[1], a[0], a[1], px, py)  # e1: (d, a)
    d2 = _cr_grad(a[0], a[1], b[0], b[1], px, py)  # e2: (a, b)
    dS = _cr_grad(a[0], a[1], b[0], b[1], d[0], d[1])  # S: (a, b, d)
    for j in ti.static(range(2)):
        ti.atomic_add(gscr[c, ia, j], g1 * d1[2 + j] + g2 * d2[j] + gS * dS[j])
        ti.atomic_add(gscr[c, ib, j], g0 * d0[j] + g2 * d2[2 + j] + gS * dS[2 + j])
        ti.atomic_add(gscr[c, id_, j], g0 * d0[2 + j] + g1 * d1[j] + gS * dS[4 + j])


@ti.func
def _normal_vjp(gv: ti.template(), faces: ti.template(), f, gn, m, s, x0, x1, x2):
    mn = m.norm()
    mh = m / mn
    gm = s * (gn - mh * mh.dot(gn)) / mn
    g1 = (x2 - x0).cross(gm)
    g2 = gm.cross(x1 - x0)
    for j in ti.static(range(3)):
        ti.atomic_add(gv[faces[f, 0], j], -g1[j] - g2[j])
        ti.atomic_add(gv[faces[f, 1], j], g1[j])
        ti.atomic_add(gv[faces[f, 2], j], g2[j])


@ti.kernel
def composite_vjp(verts: nd2, faces: nd_i32_2, opac: nd1, scr: nd3, camc: nd2, tstart: nd_i32_1, lst: nd_i32_1,
                  znear: ti.f64, Gpre: nd4, gop: nd1, gscr: nd3, gv: nd2):
    C, H, W = Gpre.shape[0], Gpre.shape[1], Gpre.shape[2]
    for c, y, x in ti.ndrange(C, H, W):
        n, zs, fs, _ = _layers(scr, faces, tstart, lst, c, y, x, H, W, znear)
        if n > 0:
            GA = Gpre[c, y, x, 0]
            GD = Gpre[c, y, x, 1]
            GN = ti.Vector([Gpre[c, y, x, 2], Gpre[c, y, x, 3], Gpre[c, y, x, 4]])
            Ts = ti.Vector([0.0] * LAYERS)
            T = 1.0
            for k in range(n):
                Ts[k] = T
                T *= 1.0 - opac[fs[k]]
            S = 1.0
            R = 0.0
            for kk in range(n):
                k = n - 1 - kk
                f = fs[k]
                a = opac[f]
                nrm, m, s, x0, x1, x2 = _normal(verts, faces, camc, c, f)
                q = GD * zs[k] + GN.dot(nrm)
                ti.atomic_add(gop[f], Ts[k] * (GA * S + q - R))
                w = a * Ts[k]
                ia, ib, id_, pa, pb, pd = _corners(scr, faces, c, f)
                _depth_vjp(gscr, c, ia, ib, id_, pa, pb, pd, x + 0.5, y + 0.5, GD * w, zs[k])
                _normal_vjp(gv, faces, f, GN * w, m, s, x0, x1, x2)
                R = q * a + (1.0 - a) * R
                S *= 1.0 - a


@ti.kernel
def project_vjp(verts: nd2, Km: nd3, view: nd3, gscr: nd3, gv: nd2):
    for c, i in ti.ndrange(gscr.shape[0], gscr.shape[1]):
        X, Y, Z = _camera_xyz(verts, view, c, i)
        gu = gscr[c, i, 0]
        gvv = gscr[c, i, 1]
        gX = gu * Km[c, 0, 0] / Z
        gY = gu * Km[c, 0, 1] / Z + gvv * Km[c, 1, 1] / Z
        gZ = (gscr[c, i, 2] - gu * (Km[c, 0, 0] * X + Km[c, 0, 1] * Y) / (Z * Z)
              - gvv * Km[c, 1, 1] * Y / (Z * Z))
        for j in ti.static(range(3)):
            ti.atomic_add(gv[i, j], view[c, 0, j] * gX + view[c, 1, j] * gY + view[c, 2, j] * gZ)
