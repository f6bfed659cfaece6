"""Taichi kernels of the D2Q9 lattice Boltzmann solver and its discrete adjoint.

State: ``f[k, i, j]``, the pre-collision populations stored shifted by their rest value,
``f_k - w_k`` (structure of arrays, ``j`` fastest): in f32 the shift keeps round-off from
swamping the small deviations that carry the flow. Densities are ``1 + sum_k f_k``.
One step ``f' = G(f, gamma)`` is: collide at every cell (BGK, and Noble-Torczynski partially
saturated collision where the solid fraction gamma > 0, then a reset of nearly solid cells
toward rest), push the post-collision values to the neighbours (halfway bounce-back or specular
reflection at the walls y = 0 and y = ny). Column 0 holds the inflow equilibrium at the density
of column 1 and column nx - 1 the outflow equilibrium at density 1 and the velocity of column
nx - 2; a step computes them where it reads them (``_load_bc``), and ``apply_bc`` stores them.

The force on the body is the momentum the solid term and the reset remove, which reduces to
``F = sum_x (B + r (1 - B)) m(x)``, m the momentum of f(x) (``_force_weight``).

The adjoint of a push step is a pull: ``lam(x) = C_f(x)^T lamhat(x) + dF/df(x)`` with
``lamhat_k(x) = lamtilde_k(x + c_k)`` (bounce-back/reflection at the walls), where
``lamtilde = BC^T lam`` zeroes the overwritten boundary columns and adds their sensitivity
to columns 1 and nx - 2. Everything is local or a gather: no atomics, one pass per step.

Lattice coordinates: cell (i, j) has its centre at (i + 1/2, j + 1/2); the walls are y = 0 and
y = ny. Parameters are passed in a small array ``prm`` (see ``P_*``).
"""

import taichi as ti

from tigeom._core.ndtypes import nd1, nd2, nd3, nd_i32_1, nd_i32_2

CX = (0, 1, 0, -1, 0, 1, -1, -1, 1)
CY = (0, 0, 1, 0, -1, 1, 1, -1, -1)
W = (4.0 / 9.0, 1.0 / 9.0, 1.0 / 9.0, 1.0 / 9.0, 1.0 / 9.0, 1.0 / 36.0, 1.0 / 36.0, 1.0 / 36.0, 1.0 / 36.0)
OPP = (0, 3, 4, 1, 2, 7, 8, 5, 6)
MIRROR_Y = (0, 1, 4, 3, 2, 8, 7, 6, 5)  # (cx, cy) -> (cx, -cy)

# prm layout
P_TAU = 0
P_GX = 1  # weight of the x force in the adjoint objective (lattice units)
P_GY = 2
P_WIDTH = 3  # half-width of the solid-fraction ramp, cells
P_RETRACT = 4  # distance of the ramp's centre inside the boundary, cells
N_PRM = 5

# box layout (int32): the cells that may have gamma > 0
B_I0, B_I1, B_J0, B_J1 = 0, 1, 2, 3


@ti.func
def _moments(f: ti.template(), i, j):
    rho = 1.0
    mx = 0.0
    my = 0.0
    for k in ti.static(range(9)):
        v = f[k, i, j]
        rho += v
        if ti.static(CX[k] != 0):
            mx += CX[k] * v
        if ti.static(CY[k] != 0):
            my += CY[k] * v
    return rho, mx, my


@ti.func
def _feq(k: ti.template(), rho, ux, uy):
    cu = CX[k] * ux + CY[k] * uy
    return W[k] * rho * (1.0 + 3.0 * cu + 4.5 * cu * cu - 1.5 * (ux * ux + uy * uy))


@ti.func
def _heq(k: ti.template(), drho, ux, uy):
    """Shifted equilibrium feq_k - w_k at density 1 + drho."""
    cu = CX[k] * ux + CY[k] * uy
    return W[k] * (drho + (1.0 + drho) * (3.0 * cu + 4.5 * cu * cu - 1.5 * (ux * ux + uy * uy)))


@ti.func
def _psm_b(gam, tau):
    """Noble-Torczynski weight B(gamma) and dB/dgamma."""
    t = tau - 0.5
    den = (1.0 - gam) + t
    return gam * t / den, t * (tau + 0.5) / (den * den)


GAMMA_RESET = 0.9  # above this solid fraction the post-collision state relaxes to rest


@ti.func
def _reset(gam):
    """Fraction r(gamma) of a nearly solid cell's post-collision state relaxed to rest
    (``_relax``), and dr/dgamma: 0 up to GAMMA_RESET, a C1 smoothstep to 1 at gamma = 1. Without
    it the Noble-Torczynski operator pumps mass into the body's interior, whose density then
    grows without bound, and populations carry momentum through the solid (into no-slip walls
    where a body pierces them)."""
    s = ti.max(gam - GAMMA_RESET, 0.0) / (1.0 - GAMMA_RESET)
    s = ti.min(s, 1.0)
    return s * s * (3.0 - 2.0 * s), 6.0 * s * (1.0 - s) / (1.0 - GAMMA_RESET)


@ti.func
def _force_weight(gam, tau):
    """Weight of a cell's (pre-collision) momentum m in the force on the body, and its derivative
    in gamma: the solid operator takes B m, the reset (``_relax``) the fraction r of the (1 - B) m left."""
    B, dB = _psm_b(gam, tau)
    r, dr = _reset(gam)
    return B + r * (1.0 - B), dB * (1.0 - r) + dr * (1.0 - B)


@ti.func
def _relax(post, r):
    """Relax the fraction r of a nearly solid cell's post-collision state to rest (shifted
    populations scaled by 1 - r): density excess and non-equilibrium populations alike, so no
    momentum travels through the solid interior."""
    return post * (1.0 - r)


@ti.func
def _relax_t(lh, r):
    """Transpose of ``_relax``."""
    return lh * (1.0 - r)


@ti.func
def _in_box(box: ti.template(), i, j) -> ti.i32:
    return (i >= box[B_I0]) & (i < box[B_I1]) & (j >= box[B_J0]) & (j < box[B_J1])


@ti.func
def _solid_weights(gam: ti.template(), box: ti.template(), i, j, tau):
    """B(gamma) and the reset fraction r(gamma) of cell (i, j); both 0 outside the body's box."""
    B = 0.0
    r = 0.0
    if _in_box(box, i, j):
        B, _ = _psm_b(gam[i, j], tau)
        r, _ = _reset(gam[i, j])
    return B, r


@ti.func
def _load(f: ti.template(), i, j):
    v = ti.Vector([0.0] * 9)
    for k in ti.static(range(9)):
        v[k] = f[k, i, j]
    return v


@ti.func
def _macro(fl):
    """Density deviation, momentum and velocity of shifted populations fl."""
    drho = fl.sum()
    mx = 0.0
    my = 0.0
    for k in ti.static(range(9)):
        mx += CX[k] * fl[k]
        my += CY[k] * fl[k]
    return drho, mx, my, mx / (1.0 + drho), my / (1.0 + drho)


@ti.func
def _collide(fl, B, tau):
    """Post-collision (shifted) populations of one cell (BGK blended with the solid operator by B)."""
    drho, _, _, ux, uy = _macro(fl)
    feq = ti.Vector([0.0] * 9)
    for k in ti.static(range(9)):
        feq[k] = _heq(k, drho, ux, uy)
    out = ti.Vector([0.0] * 9)
    for k in ti.static(range(9)):
        om = fl[OPP[k]] - fl[k] + W[k] * drho - feq[OPP[k]]
        out[k] = fl[k] - (1.0 - B) / tau * (fl[k] - feq[k]) + B * om
    return out


@ti.kernel
def init_state(f: nd3, uin: nd1, gam: nd2, box: nd_i32_1):
    nx, ny = f.shape[1], f.shape[2]
    for i, j in ti.ndrange(nx, ny):
        s = 1.0
        if _in_box(box, i, j):
            s = 1.0 - gam[i, j]
        for k in ti.static(range(9)):
            f[k, i, j] = _heq(k, 0.0, s * uin[j], 0.0)


@ti.func
def _load_bc(f: ti.template(), uin: ti.template(), i, j, nx):
    """Populations of cell (i, j); on the inflow and outflow columns the equilibria that
    ``apply_bc`` would write there, computed from the neighbouring column instead of read. The
    steps set the boundary columns when they read them, so a step is one pass over the grid, and
    the stored columns are only made current by ``apply_bc`` at the end of a check interval."""
    fl = ti.Vector([0.0] * 9)
    if i == 0:
        rho1, _, _ = _moments(f, 1, j)
        for k in ti.static(range(9)):
            fl[k] = _heq(k, rho1 - 1.0, uin[j], 0.0)
    elif i == nx - 1:
        rho2, mx2, my2 = _moments(f, nx - 2, j)
        for k in ti.static(range(9)):
            fl[k] = _heq(k, 0.0, mx2 / rho2, my2 / rho2)
    else:
        fl = _load(f, i, j)
    return fl


@ti.func
def _step_body(f: ti.template(), fn: ti.template(), gam: ti.template(), box: ti.template(), prm: ti.template(),
               slip, uin: ti.template()):
    nx, ny = f.shape[1], f.shape[2]
    tau = prm[P_TAU]
    for i, j in ti.ndrange(nx, ny):
        B, r = _solid_weights(gam, box, i, j, tau)
        post = _collide(_load_bc(f, uin, i, j, nx), B, tau)
        if r > 0.0:
            post = _relax(post, r)
        for k in ti.static(range(9)):
            ti_ = i + CX[k]
            tj = j + CY[k]
            if tj < 0 or tj >= ny:
                if slip:
                    if ti_ >= 0 and ti_ < nx:
                        fn[MIRROR_Y[k], ti_, j] = post[k]
                else:
                    fn[OPP[k], i, j] = post[k]
            elif ti_ >= 0 and ti_ < nx:
                fn[k, ti_, tj] = post[k]


@ti.func
def _bc_body(fn: ti.template(), uin: ti.template()):
    nx, ny = fn.shape[1], fn.shape[2]
    for j in range(ny):
        rho1, _, _ = _moments(fn, 1, j)
        rho2, mx2, my2 = _moments(fn, nx - 2, j)
        for k in ti.static(range(9)):
            fn[k, 0, j] = _heq(k, rho1 - 1.0, uin[j], 0.0)
            fn[k, nx - 1, j] = _heq(k, 0.0, mx2 / rho2, my2 / rho2)


@ti.kernel
def step(f: nd3, fn: nd3, gam: nd2, box: nd_i32_1, prm: nd1, slip: ti.i32, uin: nd1):
    """One collide-and-push step f -> fn (its boundary columns are stale until ``apply_bc``)."""
    _step_body(f, fn, gam, box, prm, slip, uin)


@ti.kernel
def apply_bc(fn: nd3, uin: nd1):
    """Inflow equilibrium (density of column 1) and outflow equilibrium (density 1, velocity of
    column nx - 2)."""
    _bc_body(fn, uin)


@ti.kernel
def step_pair(f: nd3, fn: nd3, gam: nd2, box: nd_i32_1, prm: nd1, slip: ti.i32, uin: nd1):
    """Two steps f -> fn -> f in one launch (boundary columns stale until ``apply_bc``): on a CPU
    a kernel launch costs about as much as a step of a small grid."""
    _step_body(f, fn, gam, box, prm, slip, uin)
    _step_body(fn, f, gam, box, prm, slip, uin)


@ti.kernel
def step_oct(f: nd3, fn: nd3, gam: nd2, box: nd_i32_1, prm: nd1, slip: ti.i32, uin: nd1):
    """Eight steps f -> fn -> ... -> f in one launch (boundary columns stale until ``apply_bc``):
    on a GPU a 1024 x 512 step takes about as long as the host needs to launch a kernel, so
    batching steps keeps the device busy (used there; a CPU compiles the eight bodies for little)."""
    for _ in ti.static(range(4)):
        _step_body(f, fn, gam, box, prm, slip, uin)
        _step_body(fn, f, gam, box, prm, slip, uin)


@ti.kernel
def force(f: nd3, gam: nd2, box: nd_i32_1, prm: nd1, out: nd1):
    """out[0:2] = sum over the box of w(gamma) m (the force on the body, lattice units; w from
    ``_force_weight``)."""
    tau = prm[P_TAU]
    out[0] = 0.0
    out[1] = 0.0
    for i, j in ti.ndrange((box[B_I0], box[B_I1]), (box[B_J0], box[B_J1])):
        wf, _ = _force_weight(gam[i, j], tau)
        if wf > 0.0:
            _, mx, my = _moments(f, i, j)
            out[0] += wf * mx
            out[1] += wf * my


@ti.kernel
def velocity_change(f: nd3, msnap: nd3, out: nd1):
    """out[0] = sum |m(f) - msnap|^2, out[1] = sum |m(f)|^2 over the grid; then msnap = m(f).
    Comparing states a check interval apart measures the drift, not the round-off noise."""
    nx, ny = f.shape[1], f.shape[2]
    out[0] = 0.0
    out[1] = 0.0
    for i, j in ti.ndrange(nx, ny):
        _, bx, by = _moments(f, i, j)
        out[0] += (bx - msnap[0, i, j]) ** 2 + (by - msnap[1, i, j]) ** 2
        out[1] += bx * bx + by * by
        msnap[0, i, j] = bx
        msnap[1, i, j] = by


# --------------------------------------------------------------------------- adjoint


@ti.func
def _adj_bc_body(lam: ti.template(), f: ti.template(), uin: ti.template(), bc: ti.template()):
    nx, ny = f.shape[1], f.shape[2]
    for j in range(ny):
        s = 0.0
        for m in ti.static(range(9)):
            s += lam[m, 0, j] * _feq(m, 1.0, uin[j], 0.0)
        rho, mx, my = _moments(f, nx - 2, j)
        ux = mx / rho
        uy = my / rho
        wx = 0.0
        wy = 0.0
        for m in ti.static(range(9)):
            cu = CX[m] * ux + CY[m] * uy
            a = lam[m, nx - 1, j] * W[m]
            wx += a * (3.0 * CX[m] + 9.0 * cu * CX[m] - 3.0 * ux)
            wy += a * (3.0 * CY[m] + 9.0 * cu * CY[m] - 3.0 * uy)
        bc[j, 0] = s
        bc[j, 1] = wx
        bc[j, 2] = wy
        bc[j, 3] = rho
        bc[j, 4] = ux
        bc[j, 5] = uy


@ti.kernel
def adj_bc_terms(lam: nd3, f: nd3, uin: nd1, bc: nd2):
    """Per row j: bc[j, 0] = inflow sensitivity added to every lam_k(1, j); bc[j, 1:3] = W,
    the outflow sensitivity vector, added as W . (c_k - u) / rho to lam_k(nx - 2, j);
    bc[j, 3:6] = (rho, ux, uy) of f(nx - 2, j)."""
    _adj_bc_body(lam, f, uin, bc)


@ti.func
def _lam_tilde(lam: ti.template(), bc: ti.template(), k, cx, cy, i, j, nx):
    """(BC^T lam)_k at cell (i, j); (cx, cy) is direction k's velocity."""
    v = 0.0
    if i > 0 and i < nx - 1:
        v = lam[k, i, j]
        if i == 1:
            v += bc[j, 0]
        if i == nx - 2:
            v += (bc[j, 1] * (cx - bc[j, 4]) + bc[j, 2] * (cy - bc[j, 5])) / bc[j, 3]
    return v


@ti.func
def _gather(lam: ti.template(), bc: ti.template(), i, j, nx, ny, slip):
    """lamhat(i, j): the transpose of the push streaming applied to BC^T lam: the source slot
    of direction k is chosen first (neighbour, bounce-back or mirror), then read once."""
    lh = ti.Vector([0.0] * 9)
    for k in ti.static(range(9)):
        kk = k
        cx = CX[k]
        cy = CY[k]
        ii = i + CX[k]
        jj = j + CY[k]
        if jj < 0 or jj >= ny:
            jj = j
            if slip:
                kk = MIRROR_Y[k]
                cy = -CY[k]
            else:
                kk = OPP[k]
                ii = i
                cx = -CX[k]
                cy = -CY[k]
        if ii >= 0 and ii < nx:
            lh[k] = _lam_tilde(lam, bc, kk, cx, cy, ii, jj, nx)
    return lh


@ti.func
def _collide_t(ux, uy, lh, B, tau):
    """C_f^T lh: the transposed Jacobian of ``_collide`` at a state of velocity (ux, uy) applied
    to lh (the Jacobian depends on the state through its velocity only)."""
    uu = ux * ux + uy * uy
    a = 1.0 - (1.0 - B) / tau - B
    S = 0.0
    A = 0.0
    Vx = 0.0
    Vy = 0.0
    L0 = 0.0
    for k in ti.static(range(9)):
        beta = (1.0 - B) / tau * lh[k] - B * lh[OPP[k]]
        cu = CX[k] * ux + CY[k] * uy
        wb = W[k] * beta
        S += wb
        A += wb * (1.0 - 4.5 * cu * cu + 1.5 * uu)
        Vx += wb * (3.0 * CX[k] + 9.0 * cu * CX[k])
        Vy += wb * (3.0 * CY[k] + 9.0 * cu * CY[k])
        L0 += W[k] * lh[k]
    out = ti.Vector([0.0] * 9)
    for m in ti.static(range(9)):
        out[m] = (a * lh[m] + B * lh[OPP[m]] + A + CX[m] * Vx + CY[m] * Vy
                  - 3.0 * (ux * CX[m] + uy * CY[m]) * S + B * L0)
    return out


@ti.func
def _adj_step_body(lam: ti.template(), lamn: ti.template(), u: ti.template(), gam: ti.template(),
                   box: ti.template(), prm: ti.template(), bc: ti.template(), slip):
    nx, ny = lam.shape[1], lam.shape[2]
    tau = prm[P_TAU]
    gx = prm[P_GX]
    gy = prm[P_GY]
    for i, j in ti.ndrange(nx, ny):
        B, r = _solid_weights(gam, box, i, j, tau)
        lh = _gather(lam, bc, i, j, nx, ny, slip)
        out = _collide_t(u[0, i, j], u[1, i, j], _relax_t(lh, r), B, tau)
        for k in ti.static(range(9)):
            lamn[k, i, j] = out[k] + (B + r * (1.0 - B)) * (gx * CX[k] + gy * CY[k])


@ti.kernel
def adj_step(lam: nd3, lamn: nd3, u: nd3, gam: nd2, box: nd_i32_1, prm: nd1, bc: nd2, slip: ti.i32):
    """lamn = G_f^T lam + dJ/df at the state f of velocity u (``velocity``), J = gx Fx + gy Fy
    (call ``adj_bc_terms`` first)."""
    _adj_step_body(lam, lamn, u, gam, box, prm, bc, slip)


@ti.kernel
def adj_step_pair(lam: nd3, lamn: nd3, f: nd3, u: nd3, gam: nd2, box: nd_i32_1, prm: nd1, bc: nd2,
                  slip: ti.i32, uin: nd1):
    """Two adjoint steps lam -> lamn -> lam, each with its boundary terms, in one launch."""
    _adj_bc_body(lam, f, uin, bc)
    _adj_step_body(lam, lamn, u, gam, box, prm, bc, slip)
    _adj_bc_body(lamn, f, uin, bc)
    _adj_step_body(lamn, lam, u, gam, box, prm, bc, slip)


@ti.kernel
def velocity(f: nd3, u: nd3):
    """u = the velocity of the state f: all the adjoint step reads of it."""
    for i, j in ti.ndrange(f.shape[1], f.shape[2]):
        _, _, _, ux, uy = _macro(_load(f, i, j))
        u[0, i, j] = ux
        u[1, i, j] = uy


@ti.kernel
def adj_gamma(lam: nd3, f: nd3, gam: nd2, box: nd_i32_1, prm: nd1, bc: nd2, slip: ti.i32, ggam: nd2):
    """ggam = dJ/dgamma over the box: dF/dgamma + lamhat . dC/dgamma at the converged lam."""
    nx, ny = f.shape[1], f.shape[2]
    tau = prm[P_TAU]
    gx = prm[P_GX]
    gy = prm[P_GY]
    for i, j in ti.ndrange((box[B_I0], box[B_I1]), (box[B_J0], box[B_J1])):
        B, dB = _psm_b(gam[i, j], tau)
        r, dr = _reset(gam[i, j])
        fl = _load(f, i, j)
        lh = _gather(lam, bc, i, j, nx, ny, slip)
        lhd = _relax_t(lh, r)
        drho, mx, my, ux, uy = _macro(fl)
        _, dwf = _force_weight(gam[i, j], tau)
        acc = 0.0
        for k in ti.static(range(9)):
            fe = _heq(k, drho, ux, uy)
            om = fl[OPP[k]] - fl[k] + W[k] * drho - _heq(OPP[k], drho, ux, uy)
            acc += lhd[k] * ((fl[k] - fe) / tau + om)
        post = _collide(fl, B, tau)
        wl = 0.0
        for k in ti.static(range(9)):
            wl += lh[k] * post[k]
        ggam[i, j] = dB * acc + dwf * (gx * mx + gy * my) - dr * wl


@ti.kernel
def box_values(ggam: nd2, box: nd_i32_1, out: nd2):
    """out = ggam over the body's box [box0, box1) x [box2, box3): the adjoint's convergence test
    reads this small array, not the whole grid."""
    for i, j in ti.ndrange((box[0], box[1]), (box[2], box[3])):
        out[i - box[0], j - box[2]] = ggam[i, j]


# --------------------------------------------------------------------------- solid fraction


@ti.func
def _ramp(d, w, c):
    """Solid fraction of a cell whose centre has signed distance d (cells, < 0 inside) and its
    derivative: a C1 piecewise-quadratic ramp from 1 (d <= -c - w) to 0 (d >= w - c), centred
    c cells inside the boundary."""
    s = (w - c - d) / (2.0 * w)
    g = 0.0
    dg = 0.0
    if s >= 1.0:
        g = 1.0
    elif s > 0.5:
        g = 1.0 - 2.0 * (1.0 - s) ** 2
        dg = -4.0 * (1.0 - s) / (2.0 * w)
    elif s > 0.0:
        g = 2.0 * s * s
        dg = -4.0 * s / (2.0 * w)
    return g, dg


@ti.func
def _nearest(v: ti.template(), seg: ti.template(), px, py):
    """Distance from (px, py) to the polygon, the nearest segment and its parameter, and the
    crossing parity (1 inside)."""
    best = 1e30
    be = -1
    bt = 0.0
    inside = 0
    for e in range(seg.shape[0]):
        ax = v[seg[e, 0], 0]
        ay = v[seg[e, 0], 1]
        bx = v[seg[e, 1], 0]
        by = v[seg[e, 1], 1]
        if (ay > py) != (by > py):
            xi = ax + (py - ay) * (bx - ax) / (by - ay)
            if px < xi:
                inside = 1 - inside
        ex = bx - ax
        ey = by - ay
        ll = ex * ex + ey * ey
        t = 0.0
        if ll > 0.0:
            t = ti.min(ti.max(((px - ax) * ex + (py - ay) * ey) / ll, 0.0), 1.0)
        qx = ax + t * ex - px
        qy = ay + t * ey - py
        d2 = qx * qx + qy * qy
        if d2 < best:
            best = d2
            be = e
            bt = t
    return ti.sqrt(best), be, bt, inside


@ti.kernel
def solid_fraction(v: nd2, seg: nd_i32_2, gam: nd2, box: nd_i32_1, prm: nd1):
    w = prm[P_WIDTH]
    for i, j in ti.ndrange((box[B_I0], box[B_I1]), (box[B_J0], box[B_J1])):
        d, e, t, inside = _nearest(v, seg, i + 0.5, j + 0.5)
        if inside:
            d = -d
        g, dg = _ramp(d, w, prm[P_RETRACT])
        gam[i, j] = g


@ti.kernel
def solid_fraction_vjp(v: nd2, seg: nd_i32_2, ggam: nd2, box: nd_i32_1, prm: nd1, gv: nd2):
    """gv += d(sum ggam * gamma)/d(vertices) (lattice units)."""
    w = prm[P_WIDTH]
    for i, j in ti.ndrange((box[B_I0], box[B_I1]), (box[B_J0], box[B_J1])):
        px = i + 0.5
        py = j + 0.5
        d, e, t, inside = _nearest(v, seg, px, py)
        sgn = 1.0
        if inside:
            sgn = -1.0
        _, dg = _ramp(sgn * d, w, prm[P_RETRACT])
        if dg != 0.0 and ggam[i, j] != 0.0:
            a = seg[e, 0]
            b = seg[e, 1]
            qx = v[a, 0] + t * (v[b, 0] - v[a, 0])
            qy = v[a, 1] + t * (v[b, 1] - v[a, 1])
            nx_ = px - qx
            ny_ = py - qy
            if d > 1e-12:
                nx_ /= d
                ny_ /= d
            else:  # centre on the boundary: the outward normal of the segment
                ex = v[b, 0] - v[a, 0]
                ey = v[b, 1] - v[a, 1]
                ln = ti.sqrt(ex * ex + ey * ey)
                nx_ = ey / ln
                ny_ = -ex / ln
                _, _, _, ins2 = _nearest(v, seg, px + 1e-3 * nx_, py + 1e-3 * ny_)
                if ins2:
                    nx_ = -nx_
                    ny_ = -ny_
                sgn = 1.0
            # d(signed distance)/d(a) = -sgn n (1 - t), /d(b) = -sgn n t
            c = ggam[i, j] * dg * sgn
            gv[a, 0] -= c * nx_ * (1.0 - t)
            gv[a, 1] -= c * ny_ * (1.0 - t)
            gv[b, 0] -= c * nx_ * t
            gv[b, 1] -= c * ny_ * t
