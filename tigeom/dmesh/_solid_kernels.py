"""Kernels of :mod:`tigeom.dmesh.solid`: inside/outside votes of the tets of a triangulation by
the parity of surface crossings along rays walked from tet to tet."""

import taichi as ti

nd_i32 = ti.types.ndarray(dtype=ti.i32, ndim=1)
nd2_i32 = ti.types.ndarray(dtype=ti.i32, ndim=2)
nd2_f64 = ti.types.ndarray(dtype=ti.f64, ndim=2)


@ti.func
def _p(V: ti.template(), i):
    return ti.Vector([V[i, 0], V[i, 1], V[i, 2]], ti.f64)


@ti.kernel
def ray_votes(V: nd2_f64, T: nd2_i32, nb: nd2_i32, wall: nd2_i32, dirs: nd2_f64, max_steps: ti.i32,
              votes: nd2_i32):
    """votes[t, r]: parity (0 or 1) of the wall faces crossed by the ray from tet t's centroid in
    direction r until it leaves the triangulation's hull, walked through the face neighbours
    ``nb`` (the face opposite local vertex k, -1 on the hull); -1 when the walk did not leave
    within ``max_steps`` tets (a degenerate crossing sent it back and forth)."""
    for t, r in ti.ndrange(T.shape[0], dirs.shape[0]):
        c = (_p(V, T[t, 0]) + _p(V, T[t, 1]) + _p(V, T[t, 2]) + _p(V, T[t, 3])) * 0.25
        d = ti.Vector([dirs[r, 0], dirs[r, 1], dirs[r, 2]], ti.f64)
        cur = t
        cnt = 0
        res = -1
        for _ in range(max_steps):
            best_k = -1
            best_s = ti.f64(1e300)
            for k in ti.static(range(4)):
                a = _p(V, T[cur, (k + 1) % 4])
                b = _p(V, T[cur, (k + 2) % 4])
                e = _p(V, T[cur, (k + 3) % 4])
                n = (b - a).cross(e - a)
                if n.dot(_p(V, T[cur, k]) - a) > 0:  # make n point away from vertex k
                    n = -n
                nd = n.dot(d)
                if nd > 0:  # the ray leaves through this face's plane at s
                    s = n.dot(a - c) / nd
                    if s < best_s:
                        best_s = s
                        best_k = k
            if best_k < 0:
                break
            cnt += wall[cur, best_k]
            nxt = nb[cur, best_k]
            if nxt < 0:
                res = cnt % 2
                break
            cur = nxt
        votes[t, r] = res
