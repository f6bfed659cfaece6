"""Taichi kernels of linear elasticity on linear tets (f64): shape gradients and K x, matrix free.

With g_a the gradient of the hat function of local vertex a (sum_a g_a = 0) and V the volume,
the displacement gradient is F = sum_b u_b g_b^T, the stress s = lam tr(e) I + 2 mu e with
e = (F + F^T) / 2, and the element force on vertex a is V s g_a, which is K_e u exactly.
"""

import taichi as ti

nd_f64 = ti.types.ndarray(dtype=ti.f64, ndim=1)
nd_f64_2 = ti.types.ndarray(dtype=ti.f64, ndim=2)
nd_f64_3 = ti.types.ndarray(dtype=ti.f64, ndim=3)
nd_i32_2 = ti.types.ndarray(dtype=ti.i32, ndim=2)
m3 = ti.types.matrix(3, 3, ti.f64)
v3 = ti.types.vector(3, ti.f64)


@ti.kernel
def shape_gradients(V: nd_f64_2, T: nd_i32_2, G: nd_f64_3, vol: nd_f64):
    for t in range(T.shape[0]):
        p0 = v3(V[T[t, 0], 0], V[T[t, 0], 1], V[T[t, 0], 2])
        dm = ti.Matrix.zero(ti.f64, 3, 3)
        for a in ti.static(range(3)):
            for i in ti.static(range(3)):
                dm[i, a] = V[T[t, a + 1], i] - p0[i]
        det = dm.determinant()
        vol[t] = det / 6.0
        inv = dm.inverse()  # rows of inv are the gradients of the hat functions of vertices 1..3
        for a in ti.static(range(3)):
            for i in ti.static(range(3)):
                G[t, a + 1, i] = inv[a, i]
        for i in ti.static(range(3)):
            G[t, 0, i] = -(inv[0, i] + inv[1, i] + inv[2, i])


@ti.kernel
def apply_stiffness(T: nd_i32_2, G: nd_f64_3, vol: nd_f64, lam: ti.f64, mu: ti.f64, x: nd_f64_2, y: nd_f64_2):
    for t in range(T.shape[0]):
        F = ti.Matrix.zero(ti.f64, 3, 3)
        for b in ti.static(range(4)):
            for i in ti.static(range(3)):
                for j in ti.static(range(3)):
                    F[i, j] += x[T[t, b], i] * G[t, b, j]
        e = 0.5 * (F + F.transpose())
        s = 2.0 * mu * e + lam * e.trace() * ti.Matrix.identity(ti.f64, 3)
        for a in ti.static(range(4)):
            g = v3(G[t, a, 0], G[t, a, 1], G[t, a, 2])
            f = vol[t] * (s @ g)
            for i in ti.static(range(3)):
                ti.atomic_add(y[T[t, a], i], f[i])


@ti.kernel
def compliance_gradient(T: nd_i32_2, G: nd_f64_3, vol: nd_f64, lam: ti.f64, mu: ti.f64, u: nd_f64_2, rho_g: nd_f64,
                        out: nd_f64_2):
    """out (N, 3) += d(f . u)/dx at equilibrium (K u = f): for each tet and local vertex a,
    2 V ((w - psi) g_a + F^T s g_a), psi = s : e / 2 the strain energy density and F^T s the
    displacement gradient's part of the Eshelby stress; w = rho g . (sum of the tet's four
    displacements) / 4 when the load is the lumped gravity rho V g / 4 per vertex (``rho_g`` =
    rho g), which moves with the volume; ``rho_g`` zero for a load that does not."""
    for t in range(T.shape[0]):
        F = ti.Matrix.zero(ti.f64, 3, 3)
        usum = v3(0.0, 0.0, 0.0)
        for b in ti.static(range(4)):
            ub = v3(u[T[t, b], 0], u[T[t, b], 1], u[T[t, b], 2])
            usum += ub
            for i in ti.static(range(3)):
                for j in ti.static(range(3)):
                    F[i, j] += ub[i] * G[t, b, j]
        e = 0.5 * (F + F.transpose())
        s = 2.0 * mu * e + lam * e.trace() * ti.Matrix.identity(ti.f64, 3)
        psi = 0.5 * (s * e).sum()
        w = 0.25 * v3(rho_g[0], rho_g[1], rho_g[2]).dot(usum)
        A = F.transpose() @ s
        for a in ti.static(range(4)):
            g = v3(G[t, a, 0], G[t, a, 1], G[t, a, 2])
            d = 2.0 * vol[t] * ((w - psi) * g + A @ g)
            for i in ti.static(range(3)):
                ti.atomic_add(out[T[t, a], i], d[i])
