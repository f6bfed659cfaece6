"""Taichi kernels of the D3Q19 lattice Boltzmann solver, its discrete adjoint, and the solid
fraction of a triangle mesh.

The scheme is the 2D one (``_lbm_kernels``) on the D3Q19 lattice: state ``f[k, i, j, l]``
shifted by the rest weights (structure of arrays, ``l`` fastest); a step collides every cell
(BGK blended with the Noble-Torczynski partially saturated operator where the solid fraction
gamma > 0, and the reset of nearly solid cells toward rest) and pushes the post-collision values
to the neighbours (halfway bounce-back or specular reflection at the walls y = 0, ny and z = 0,
nz). The plane i = 0 holds the inflow equilibrium at the density of plane 1 and the plane
i = nx - 1 the outflow equilibrium at density 1 and the velocity of plane nx - 2; ``apply_bc``
stores them.

On a CPU the solver runs that push step (``push_step``). On a GPU it runs its pull form. There
the state between steps is the post-collision populations p, which ``collide_state`` makes
from f. A step gathers each cell's incoming values (``_pull``, the inverse of the push
``_dest``) and collides them in place of the cell: every store is the cell's own and every load
unconditional. ``stream_state`` turns p back into the pre-collision state f, with its planes set.
Both forms do the same arithmetic in the same order, so they give the same f. The pull form
runs 1.2x faster on an H200 and 0.88x as fast on a 2-core CPU. The force on the body is
``F = sum_x (B + r (1 - B)) m(x)`` (``_force_weight``).

The adjoint step is a gather (the transpose of the push), so it needs no atomics; it runs a lean
loop over the cells away from the inflow/outflow ends, the walls and the body's box, and the
general update over the box and the boundary shell (``_shell``). The solid
fraction is stored only over the body's box ``[i0, i1) x [j0, j1) x [l0, l1)``: ``gam[i - i0,
j - j0, l - l0]``.

Solid fraction: for each cell centre of the box, the nearest point of the mesh (exact point-
triangle distance over all faces), and the inside test by the generalised winding number (the
sum of the faces' solid angles), robust to the ray-through-an-edge cases of a parity test.
"""

import math

import taichi as ti

from ._lbm_kernels import _force_weight, _psm_b, _ramp, _relax, _relax_t, _reset

from tigeom._core.ndtypes import nd1, nd2, nd3, nd4, nd_i32_1, nd_i32_2, nd_i32_3

Q = 19
CX = (0, 1, -1, 0, 0, 0, 0, 1, -1, 1, -1, 1, -1, 1, -1, 0, 0, 0, 0)
CY = (0, 0, 0, 1, -1, 0, 0, 1, -1, -1, 1, 0, 0, 0, 0, 1, -1, 1, -1)
CZ = (0, 0, 0, 0, 0, 1, -1, 0, 0, 0, 0, 1, -1, -1, 1, 1, -1, -1, 1)
W = tuple(1.0 / 3.0 if n == 0 else (1.0 / 18.0 if n == 1 else 1.0 / 36.0)
          for n in (abs(a) + abs(b) + abs(c) for a, b, c in zip(CX, CY, CZ)))


def _index(cx, cy, cz):
    return next(k for k in range(Q) if (CX[k], CY[k], CZ[k]) == (cx, cy, cz))


OPP = tuple(_index(-CX[k], -CY[k], -CZ[k]) for k in range(Q))
MIRROR_Y = tuple(_index(CX[k], -CY[k], CZ[k]) for k in range(Q))
MIRROR_Z = tuple(_index(CX[k], CY[k], -CZ[k]) for k in range(Q))
MIRROR_YZ = tuple(_index(CX[k], -CY[k], -CZ[k]) for k in range(Q))

# prm layout
P_TAU = 0
P_GX = 1  # weights of the force components in the adjoint objective (lattice units)
P_GY = 2
P_GZ = 3
P_WIDTH = 4  # half-width of the solid-fraction ramp, cells
P_RETRACT = 5  # distance of the ramp's centre inside the boundary, cells
P_ORIENT = 6  # +1 if the faces are oriented outward, -1 if inward
N_PRM = 7

# box layout (int32): the cells that may have gamma > 0
B_I0, B_I1, B_J0, B_J1, B_L0, B_L1 = 0, 1, 2, 3, 4, 5
N_BC = 8  # per inflow/outflow row: inflow sensitivity, outflow W (3), rho, u (3) of plane nx - 2


@ti.func
def _in_box(box: ti.template(), i, j, l) -> ti.i32:
    return ((i >= box[B_I0]) & (i < box[B_I1]) & (j >= box[B_J0]) & (j < box[B_J1])
            & (l >= box[B_L0]) & (l < box[B_L1]))


@ti.func
def _heq(k: ti.template(), drho, ux, uy, uz):
    """Shifted equilibrium feq_k - w_k at density 1 + drho."""
    cu = CX[k] * ux + CY[k] * uy + CZ[k] * uz
    return W[k] * (drho + (1.0 + drho) * (3.0 * cu + 4.5 * cu * cu - 1.5 * (ux * ux + uy * uy + uz * uz)))


@ti.func
def _feq(k: ti.template(), rho, ux, uy, uz):
    cu = CX[k] * ux + CY[k] * uy + CZ[k] * uz
    return W[k] * rho * (1.0 + 3.0 * cu + 4.5 * cu * cu - 1.5 * (ux * ux + uy * uy + uz * uz))


@ti.func
def _load(f: ti.template(), i, j, l):
    v = ti.Vector([0.0] * Q)
    for k in ti.static(range(Q)):
        v[k] = f[k, i, j, l]
    return v


@ti.func
def _macro(fl):
    """Density deviation, momentum and velocity of shifted populations fl."""
    drho = fl.sum()
    mx = 0.0
    my = 0.0
    mz = 0.0
    for k in ti.static(range(Q)):
        if ti.static(CX[k] != 0):
            mx += CX[k] * fl[k]
        if ti.static(CY[k] != 0):
            my += CY[k] * fl[k]
        if ti.static(CZ[k] != 0):
            mz += CZ[k] * fl[k]
    r = 1.0 / (1.0 + drho)
    return drho, mx, my, mz, mx * r, my * r, mz * r


@ti.func
def _solid_weights(gam: ti.template(), box: ti.template(), i, j, l, tau):
    """B(gamma) and the reset fraction r(gamma) of a cell; both 0 outside the body's box."""
    B = 0.0
    r = 0.0
    if _in_box(box, i, j, l):
        g = gam[i - box[B_I0], j - box[B_J0], l - box[B_L0]]
        if g > 0.0:
            B, _ = _psm_b(g, tau)
            r, _ = _reset(g)
    return B, r


@ti.func
def _collide(fl, B, tau):
    """Post-collision (shifted) populations of one cell (BGK blended with the solid operator by B)."""
    drho, _, _, _, ux, uy, uz = _macro(fl)
    feq = ti.Vector([0.0] * Q)
    for k in ti.static(range(Q)):
        feq[k] = _heq(k, drho, ux, uy, uz)
    out = ti.Vector([0.0] * Q)
    om = 1.0 / tau
    for k in ti.static(range(Q)):
        out[k] = fl[k] - om * (fl[k] - feq[k])
    if B > 0.0:
        for k in ti.static(range(Q)):
            solid = fl[OPP[k]] - fl[k] + W[k] * drho - feq[OPP[k]]
            out[k] += B * (om * (fl[k] - feq[k]) + solid)
    return out


@ti.func
def _dest(k: ti.template(), i, j, l, nx, ny, nz, slip):
    """Where push streaming puts direction k's post-collision value of cell (i, j, l): slot kk of
    cell (ii, jj, ll), the slot's velocity (cx, cy, cz), and whether that cell is in the grid.
    ``slip`` has bit 0 set when the walls y = 0, ny reflect specularly, bit 1 for z = 0, nz;
    otherwise they bounce back (a corner bounces back unless both its walls slip)."""
    kk = k
    ii = i + CX[k]
    jj = j + CY[k]
    ll = l + CZ[k]
    cx = CX[k]
    cy = CY[k]
    cz = CZ[k]
    outy = 0
    outz = 0
    if ti.static(CY[k] != 0):
        outy = (jj < 0) | (jj >= ny)
    if ti.static(CZ[k] != 0):
        outz = (ll < 0) | (ll >= nz)
    if ti.static(CY[k] != 0 or CZ[k] != 0):
        if outy | outz:
            if (((slip & 1) != 0) | (outy == 0)) & (((slip & 2) != 0) | (outz == 0)):  # every wall crossed is a slip wall
                if outy:
                    jj = j
                    cy = -cy
                if outz:
                    ll = l
                    cz = -cz
                if outy & outz:
                    kk = MIRROR_YZ[k]
                elif outy:
                    kk = MIRROR_Y[k]
                else:
                    kk = MIRROR_Z[k]
            else:
                kk = OPP[k]
                ii = i
                jj = j
                ll = l
                cx = -cx
                cy = -cy
                cz = -cz
    return kk, ii, jj, ll, cx, cy, cz, (ii >= 0) & (ii < nx)


@ti.kernel
def init_state(f: nd4, uin: nd2, gam: nd3, box: nd_i32_1):
    nx, ny, nz = f.shape[1], f.shape[2], f.shape[3]
    for i, j, l in ti.ndrange(nx, ny, nz):
        s = 1.0
        if _in_box(box, i, j, l):
            s = 1.0 - gam[i - box[B_I0], j - box[B_J0], l - box[B_L0]]
        for k in ti.static(range(Q)):
            f[k, i, j, l] = _heq(k, 0.0, s * uin[j, l], 0.0, 0.0)


@ti.func
def _moments(f: ti.template(), i, j, l):
    return _macro(_load(f, i, j, l))


@ti.func
def _load_bc(f: ti.template(), uin: ti.template(), i, j, l, nx):
    """Populations of a cell; on the inflow and outflow planes the equilibria that ``apply_bc``
    would write there, computed from the neighbouring plane instead of read (so a step is one
    pass over the grid; ``apply_bc`` makes the stored planes current at the end of a check
    interval)."""
    fl = ti.Vector([0.0] * Q)
    if i == 0:
        d1, _, _, _, _, _, _ = _moments(f, 1, j, l)
        for k in ti.static(range(Q)):
            fl[k] = _heq(k, d1, uin[j, l], 0.0, 0.0)
    elif i == nx - 1:
        _, _, _, _, ux, uy, uz = _moments(f, nx - 2, j, l)
        for k in ti.static(range(Q)):
            fl[k] = _heq(k, 0.0, ux, uy, uz)
    else:
        fl = _load(f, i, j, l)
    return fl


@ti.func
def _shell_size(w: ti.template(), nx, ny, nz):
    return 2 * w * ny * nz + (nx - 2 * w) * 2 * nz + (nx - 2 * w) * (ny - 2) * 2


@ti.func
def _shell(s, w: ti.template(), nx, ny, nz):
    """Cell number s of the shell of width w: the planes i < w and i >= nx - w, then the walls
    j = 0, ny - 1 and l = 0, nz - 1 between them (``_shell_size`` cells in all)."""
    i = 0
    j = 0
    l = 0
    na = 2 * w * ny * nz
    nb = (nx - 2 * w) * 2 * nz
    if s < na:
        a = s // (ny * nz)
        r = s - a * ny * nz
        i = a
        if a >= w:
            i = nx - 2 * w + a
        j = r // nz
        l = r - j * nz
    elif s < na + nb:
        t = s - na
        a = t // (2 * nz)
        r = t - a * 2 * nz
        i = w + a
        j = (ny - 1) * (r // nz)
        l = r % nz
    else:
        t = s - na - nb
        a = t // ((ny - 2) * 2)
        r = t - a * (ny - 2) * 2
        i = w + a
        j = 1 + r // 2
        l = (nz - 1) * (r % 2)
    return i, j, l


@ti.func
def _push_cell(f: ti.template(), fn: ti.template(), gam: ti.template(), box: ti.template(), slip,
               uin: ti.template(), tau, i, j, l, nx, ny, nz):
    """The push step of one cell: solid weights, boundary planes, collision, the pushes."""
    B, r = _solid_weights(gam, box, i, j, l, tau)
    post = _collide(_load_bc(f, uin, i, j, l, nx), B, tau)
    if r > 0.0:
        post = _relax(post, r)
    for k in ti.static(range(Q)):
        kk, ii, jj, ll, _, _, _, ok = _dest(k, i, j, l, nx, ny, nz, slip)
        if ok:
            fn[kk, ii, jj, ll] = post[k]


@ti.func
def _push_body(f: ti.template(), fn: ti.template(), gam: ti.template(), box: ti.template(), prm: ti.template(),
               slip, uin: ti.template()):
    nx, ny, nz = f.shape[1], f.shape[2], f.shape[3]
    tau = prm[P_TAU]
    for i, j, l in ti.ndrange(nx, ny, nz):
        _push_cell(f, fn, gam, box, slip, uin, tau, i, j, l, nx, ny, nz)


@ti.kernel
def push_step(f: nd4, fn: nd4, gam: nd3, box: nd_i32_1, prm: nd1, slip: ti.i32, uin: nd2):
    """One collide-and-push step f -> fn (its inflow/outflow planes stale until ``apply_bc``)."""
    _push_body(f, fn, gam, box, prm, slip, uin)


@ti.kernel
def push_step_pair(f: nd4, fn: nd4, gam: nd3, box: nd_i32_1, prm: nd1, slip: ti.i32, uin: nd2):
    """Two push steps f -> fn -> f in one launch (inflow/outflow planes stale until ``apply_bc``)."""
    _push_body(f, fn, gam, box, prm, slip, uin)
    _push_body(fn, f, gam, box, prm, slip, uin)


@ti.func
def _pull(p: ti.template(), i, j, l, ny, nz, slip):
    """Pre-collision populations of cell (i, j, l), gathered from the post-collision values ``p``
    of the previous step: the inverse of the push ``_dest`` (halfway bounce-back, or specular
    reflection at slip walls). Every slot is one unconditional load whose source is chosen by
    selects; on an H200 a branch around the loads or stores of a step costs about a sixth of
    its speed."""
    fl = ti.Vector([0.0] * Q)
    for k in ti.static(range(Q)):
        kk = k
        si = i - CX[k]
        sj = j - CY[k]
        sl = l - CZ[k]
        if ti.static(CY[k] != 0 or CZ[k] != 0):
            outy = 0
            outz = 0
            ms = k
            if ti.static(CY[k] != 0):
                outy = (sj < 0) | (sj >= ny)
                ms = ti.select(outy, MIRROR_Y[k], ms)
            if ti.static(CZ[k] != 0):
                outz = (sl < 0) | (sl >= nz)
                ms = ti.select(outz, MIRROR_Z[k], ms)
            if ti.static(CY[k] != 0 and CZ[k] != 0):
                ms = ti.select(outy & outz, MIRROR_YZ[k], ms)
            slips = (((slip & 1) != 0) | (outy == 0)) & (((slip & 2) != 0) | (outz == 0))
            bb = (outy | outz) & (slips == 0)
            kk = ti.select(bb, OPP[k], ms)
            si = ti.select(bb, i, si)
            sj = ti.select(bb | outy, j, sj)
            sl = ti.select(bb | outz, l, sl)
        fl[k] = p[kk, si, sj, sl]
    return fl


@ti.func
def _pull_cell(p: ti.template(), pn: ti.template(), gam: ti.template(), box: ti.template(), slip,
               uin: ti.template(), tau, i, j, l, nx, ny, nz, collide: ti.template()):
    """Stream into cell (i, j, l) and, with ``collide``, collide it; store the result there.
    On the inflow and outflow planes the populations are the equilibria ``apply_bc`` would set,
    from the densities and velocities of planes 1 and nx - 2 as they stream in (every cell makes
    the same gather: the planes gather for their neighbour)."""
    fl = _pull(p, ti.min(ti.max(i, 1), nx - 2), j, l, ny, nz, slip)
    if i == 0:
        d1 = fl.sum()
        for k in ti.static(range(Q)):
            fl[k] = _heq(k, d1, uin[j, l], 0.0, 0.0)
    elif i == nx - 1:
        _, _, _, _, ux, uy, uz = _macro(fl)
        for k in ti.static(range(Q)):
            fl[k] = _heq(k, 0.0, ux, uy, uz)
    if ti.static(collide):
        B, r = _solid_weights(gam, box, i, j, l, tau)
        fl = _collide(fl, B, tau)
        if r > 0.0:
            fl = _relax(fl, r)
    for k in ti.static(range(Q)):
        pn[k, i, j, l] = fl[k]


@ti.func
def _pull_body(p: ti.template(), pn: ti.template(), gam: ti.template(), box: ti.template(), prm: ti.template(),
               slip, uin: ti.template(), collide: ti.template()):
    nx, ny, nz = p.shape[1], p.shape[2], p.shape[3]
    tau = prm[P_TAU]
    for i, j, l in ti.ndrange(nx, ny, nz):
        _pull_cell(p, pn, gam, box, slip, uin, tau, i, j, l, nx, ny, nz, collide)


@ti.kernel
def collide_state(f: nd4, p: nd4, gam: nd3, box: nd_i32_1, prm: nd1, slip: ti.i32, uin: nd2):
    """Post-collision populations p of the pre-collision state f (its inflow and outflow planes
    computed as ``apply_bc`` would set them): the first half of a push step."""
    nx = f.shape[1]
    tau = prm[P_TAU]
    for i, j, l in ti.ndrange(nx, f.shape[2], f.shape[3]):
        B, r = _solid_weights(gam, box, i, j, l, tau)
        post = _collide(_load_bc(f, uin, i, j, l, nx), B, tau)
        if r > 0.0:
            post = _relax(post, r)
        for k in ti.static(range(Q)):
            p[k, i, j, l] = post[k]


@ti.kernel
def stream_state(p: nd4, f: nd4, gam: nd3, box: nd_i32_1, prm: nd1, slip: ti.i32, uin: nd2):
    """The pre-collision state f that post-collision populations p stream to, with the inflow
    and outflow planes set (the second half of a push step, then ``apply_bc``)."""
    _pull_body(p, f, gam, box, prm, slip, uin, False)


@ti.kernel
def step(p: nd4, pn: nd4, gam: nd3, box: nd_i32_1, prm: nd1, slip: ti.i32, uin: nd2):
    """One step on post-collision populations: stream (pull), collide, store p -> pn."""
    _pull_body(p, pn, gam, box, prm, slip, uin, True)


@ti.kernel
def step_pair(p: nd4, pn: nd4, gam: nd3, box: nd_i32_1, prm: nd1, slip: ti.i32, uin: nd2):
    """Two steps p -> pn -> p in one launch."""
    _pull_body(p, pn, gam, box, prm, slip, uin, True)
    _pull_body(pn, p, gam, box, prm, slip, uin, True)


@ti.func
def _bc_body(fn: ti.template(), uin: ti.template()):
    nx, ny, nz = fn.shape[1], fn.shape[2], fn.shape[3]
    for j, l in ti.ndrange(ny, nz):
        d1, _, _, _, _, _, _ = _moments(fn, 1, j, l)
        _, _, _, _, ux, uy, uz = _moments(fn, nx - 2, j, l)
        for k in ti.static(range(Q)):
            fn[k, 0, j, l] = _heq(k, d1, uin[j, l], 0.0, 0.0)
            fn[k, nx - 1, j, l] = _heq(k, 0.0, ux, uy, uz)


@ti.kernel
def apply_bc(f: nd4, uin: nd2):
    """Inflow equilibrium (density of plane 1, the inflow profile) and outflow equilibrium
    (density 1, velocity of plane nx - 2)."""
    _bc_body(f, uin)


@ti.kernel
def force(f: nd4, gam: nd3, box: nd_i32_1, prm: nd1, out: nd1):
    """out[0:3] = sum over the box of w(gamma) m (the force on the body, lattice units; w from
    ``_force_weight``)."""
    tau = prm[P_TAU]
    for c in range(3):
        out[c] = 0.0
    for i, j, l in ti.ndrange((box[B_I0], box[B_I1]), (box[B_J0], box[B_J1]), (box[B_L0], box[B_L1])):
        g = gam[i - box[B_I0], j - box[B_J0], l - box[B_L0]]
        if g > 0.0:
            wf, _ = _force_weight(g, tau)
            _, mx, my, mz, _, _, _ = _moments(f, i, j, l)
            out[0] += wf * mx
            out[1] += wf * my
            out[2] += wf * mz


@ti.kernel
def velocity_change(f: nd4, msnap: nd4, out: nd1):
    """out[0] = sum |m(f) - msnap|^2, out[1] = sum |m(f)|^2; then msnap = m(f)."""
    nx, ny, nz = f.shape[1], f.shape[2], f.shape[3]
    out[0] = 0.0
    out[1] = 0.0
    for i, j, l in ti.ndrange(nx, ny, nz):
        _, bx, by, bz, _, _, _ = _moments(f, i, j, l)
        out[0] += (bx - msnap[0, i, j, l]) ** 2 + (by - msnap[1, i, j, l]) ** 2 + (bz - msnap[2, i, j, l]) ** 2
        out[1] += bx * bx + by * by + bz * bz
        msnap[0, i, j, l] = bx
        msnap[1, i, j, l] = by
        msnap[2, i, j, l] = bz


@ti.kernel
def momentum(f: nd4, out: nd4):
    """out[0] = density - 1, out[1:4] = momentum of every cell (lattice units)."""
    nx, ny, nz = f.shape[1], f.shape[2], f.shape[3]
    for i, j, l in ti.ndrange(nx, ny, nz):
        d, bx, by, bz, _, _, _ = _moments(f, i, j, l)
        out[0, i, j, l] = d
        out[1, i, j, l] = bx
        out[2, i, j, l] = by
        out[3, i, j, l] = bz


# --------------------------------------------------------------------------- adjoint


@ti.func
def _adj_bc_body(lam: ti.template(), f: ti.template(), uin: ti.template(), bc: ti.template()):
    nx, ny, nz = f.shape[1], f.shape[2], f.shape[3]
    for j, l in ti.ndrange(ny, nz):
        s = 0.0
        for m in ti.static(range(Q)):
            s += lam[m, 0, j, l] * _feq(m, 1.0, uin[j, l], 0.0, 0.0)
        drho, _, _, _, ux, uy, uz = _moments(f, nx - 2, j, l)
        wx = 0.0
        wy = 0.0
        wz = 0.0
        for m in ti.static(range(Q)):
            cu = CX[m] * ux + CY[m] * uy + CZ[m] * uz
            a = lam[m, nx - 1, j, l] * W[m]
            wx += a * (3.0 * CX[m] + 9.0 * cu * CX[m] - 3.0 * ux)
            wy += a * (3.0 * CY[m] + 9.0 * cu * CY[m] - 3.0 * uy)
            wz += a * (3.0 * CZ[m] + 9.0 * cu * CZ[m] - 3.0 * uz)
        bc[j, l, 0] = s
        bc[j, l, 1] = wx
        bc[j, l, 2] = wy
        bc[j, l, 3] = wz
        bc[j, l, 4] = 1.0 + drho
        bc[j, l, 5] = ux
        bc[j, l, 6] = uy
        bc[j, l, 7] = uz


@ti.kernel
def adj_bc_terms(lam: nd4, f: nd4, uin: nd2, bc: nd3):
    """Per inflow/outflow row (j, l): the sensitivities of the overwritten planes (see N_BC)."""
    _adj_bc_body(lam, f, uin, bc)


@ti.func
def _lam_tilde(lam: ti.template(), bc: ti.template(), kk, cx, cy, cz, i, j, l, nx):
    """(BC^T lam)_kk at cell (i, j, l); (cx, cy, cz) is slot kk's velocity."""
    v = 0.0
    if i > 0 and i < nx - 1:
        v = lam[kk, i, j, l]
        if i == 1:
            v += bc[j, l, 0]
        if i == nx - 2:
            v += (bc[j, l, 1] * (cx - bc[j, l, 5]) + bc[j, l, 2] * (cy - bc[j, l, 6])
                  + bc[j, l, 3] * (cz - bc[j, l, 7])) / bc[j, l, 4]
    return v


@ti.func
def _gather(lam: ti.template(), bc: ti.template(), i, j, l, nx, ny, nz, slip):
    """lamhat(i, j, l): the transpose of the push streaming applied to BC^T lam."""
    lh = ti.Vector([0.0] * Q)
    if (i > 2) & (i < nx - 3) & (j > 0) & (j < ny - 1) & (l > 0) & (l < nz - 1):
        for k in ti.static(range(Q)):  # no wall, plane or boundary term in reach: plain gather
            lh[k] = lam[k, i + CX[k], j + CY[k], l + CZ[k]]
    else:
        for k in ti.static(range(Q)):
            kk, ii, jj, ll, cx, cy, cz, ok = _dest(k, i, j, l, nx, ny, nz, slip)
            if ok:
                lh[k] = _lam_tilde(lam, bc, kk, cx, cy, cz, ii, jj, ll, nx)
    return lh


@ti.func
def _collide_t(ux, uy, uz, lh, B, tau):
    """C_f^T lh: the transposed Jacobian of ``_collide`` at a state of velocity (ux, uy, uz)
    applied to lh (the Jacobian depends on the state through its velocity only)."""
    uu = ux * ux + uy * uy + uz * uz
    a = 1.0 - (1.0 - B) / tau - B
    S = 0.0
    A = 0.0
    Vx = 0.0
    Vy = 0.0
    Vz = 0.0
    L0 = 0.0
    for k in ti.static(range(Q)):
        beta = (1.0 - B) / tau * lh[k] - B * lh[OPP[k]]
        cu = CX[k] * ux + CY[k] * uy + CZ[k] * uz
        wb = W[k] * beta
        S += wb
        A += wb * (1.0 - 4.5 * cu * cu + 1.5 * uu)
        Vx += wb * (3.0 * CX[k] + 9.0 * cu * CX[k])
        Vy += wb * (3.0 * CY[k] + 9.0 * cu * CY[k])
        Vz += wb * (3.0 * CZ[k] + 9.0 * cu * CZ[k])
        L0 += W[k] * lh[k]
    out = ti.Vector([0.0] * Q)
    for m in ti.static(range(Q)):
        out[m] = (a * lh[m] + B * lh[OPP[m]] + A + CX[m] * Vx + CY[m] * Vy + CZ[m] * Vz
                  - 3.0 * (ux * CX[m] + uy * CY[m] + uz * CZ[m]) * S + B * L0)
    return out


@ti.func
def _adj_cell(lam: ti.template(), lamn: ti.template(), u: ti.template(), gam: ti.template(), box: ti.template(),
              bc: ti.template(), slip, tau, gx, gy, gz, i, j, l, nx, ny, nz):
    """The general adjoint step of one cell: solid weights, boundary terms and walls."""
    B, r = _solid_weights(gam, box, i, j, l, tau)
    lh = _gather(lam, bc, i, j, l, nx, ny, nz, slip)
    out = _collide_t(u[0, i, j, l], u[1, i, j, l], u[2, i, j, l], _relax_t(lh, r), B, tau)
    wf = B + r * (1.0 - B)
    for k in ti.static(range(Q)):
        lamn[k, i, j, l] = out[k] + wf * (gx * CX[k] + gy * CY[k] + gz * CZ[k])


@ti.func
def _adj_step_body(lam: ti.template(), lamn: ti.template(), u: ti.template(), gam: ti.template(),
                   box: ti.template(), prm: ti.template(), bc: ti.template(), slip):
    """One adjoint step over the partition of ``_step_body``; the shell is three cells thick at
    the inflow and outflow ends, where the boundary terms reach."""
    nx, ny, nz = lam.shape[1], lam.shape[2], lam.shape[3]
    tau = prm[P_TAU]
    gx = prm[P_GX]  # read once: the stores below could alias prm, so reads between them repeat
    gy = prm[P_GY]
    gz = prm[P_GZ]
    for i, j, l in ti.ndrange(nx, ny, nz):  # the whole grid, so that a warp reads whole rows
        if (i >= 3) & (i < nx - 3) & (j >= 1) & (j < ny - 1) & (l >= 1) & (l < nz - 1) & (not _in_box(box, i, j, l)):
            lh = ti.Vector([0.0] * Q)
            for k in ti.static(range(Q)):
                lh[k] = lam[k, i + CX[k], j + CY[k], l + CZ[k]]
            out = _collide_t(u[0, i, j, l], u[1, i, j, l], u[2, i, j, l], lh, 0.0, tau)
            for k in ti.static(range(Q)):
                lamn[k, i, j, l] = out[k]
    for i, j, l in ti.ndrange((box[B_I0], box[B_I1]), (box[B_J0], box[B_J1]), (box[B_L0], box[B_L1])):
        _adj_cell(lam, lamn, u, gam, box, bc, slip, tau, gx, gy, gz, i, j, l, nx, ny, nz)
    for s in range(_shell_size(3, nx, ny, nz)):
        i, j, l = _shell(s, 3, nx, ny, nz)
        if not _in_box(box, i, j, l):
            _adj_cell(lam, lamn, u, gam, box, bc, slip, tau, gx, gy, gz, i, j, l, nx, ny, nz)


@ti.kernel
def adj_step_pair(lam: nd4, lamn: nd4, f: nd4, u: nd4, gam: nd3, box: nd_i32_1, prm: nd1, bc: nd3,
                  slip: ti.i32, uin: nd2):
    """Two adjoint steps lam -> lamn -> lam, each with its boundary terms, in one launch."""
    _adj_bc_body(lam, f, uin, bc)
    _adj_step_body(lam, lamn, u, gam, box, prm, bc, slip)
    _adj_bc_body(lamn, f, uin, bc)
    _adj_step_body(lamn, lam, u, gam, box, prm, bc, slip)


@ti.kernel
def adj_step(lam: nd4, lamn: nd4, f: nd4, u: nd4, gam: nd3, box: nd_i32_1, prm: nd1, bc: nd3, slip: ti.i32,
             uin: nd2):
    """One adjoint step lam -> lamn = G_f^T lam + dJ/df at the state f of velocity u
    (``velocity``), with its boundary terms."""
    _adj_bc_body(lam, f, uin, bc)
    _adj_step_body(lam, lamn, u, gam, box, prm, bc, slip)


@ti.kernel
def velocity(f: nd4, u: nd4):
    """u = the velocity of the state f: all the adjoint step reads of it."""
    for i, j, l in ti.ndrange(f.shape[1], f.shape[2], f.shape[3]):
        _, _, _, _, ux, uy, uz = _moments(f, i, j, l)
        u[0, i, j, l] = ux
        u[1, i, j, l] = uy
        u[2, i, j, l] = uz


@ti.kernel
def adj_gamma(lam: nd4, f: nd4, gam: nd3, box: nd_i32_1, prm: nd1, bc: nd3, slip: ti.i32, uin: nd2,
              ggam: nd3):
    """ggam = dJ/dgamma over the box: dF/dgamma + lamhat . dC/dgamma at the converged lam."""
    _adj_bc_body(lam, f, uin, bc)
    nx, ny, nz = f.shape[1], f.shape[2], f.shape[3]
    tau = prm[P_TAU]
    for a, b_, c in ti.ndrange(ggam.shape[0], ggam.shape[1], ggam.shape[2]):
        i = a + box[B_I0]
        j = b_ + box[B_J0]
        l = c + box[B_L0]
        g = gam[a, b_, c]
        B, dB = _psm_b(g, tau)
        r, dr = _reset(g)
        fl = _load(f, i, j, l)
        lh = _gather(lam, bc, i, j, l, nx, ny, nz, slip)
        lhd = _relax_t(lh, r)
        drho, mx, my, mz, ux, uy, uz = _macro(fl)
        _, dwf = _force_weight(g, tau)
        acc = 0.0
        for k in ti.static(range(Q)):
            fe = _heq(k, drho, ux, uy, uz)
            om = fl[OPP[k]] - fl[k] + W[k] * drho - _heq(OPP[k], drho, ux, uy, uz)
            acc += lhd[k] * ((fl[k] - fe) / tau + om)
        post = _collide(fl, B, tau)
        wl = 0.0
        for k in ti.static(range(Q)):
            wl += lh[k] * post[k]
        ggam[a, b_, c] = dB * acc + dwf * (prm[P_GX] * mx + prm[P_GY] * my + prm[P_GZ] * mz) - dr * wl


# --------------------------------------------------------------------------- solid fraction


@ti.func
def _closest_on_triangle(p, a, b, c):
    """Barycentric coordinates of the point of triangle abc nearest to p."""
    ab = b - a
    ac = c - a
    ap = p - a
    d1 = ab.dot(ap)
    d2 = ac.dot(ap)
    bp = p - b
    d3 = ab.dot(bp)
    d4 = ac.dot(bp)
    cp = p - c
    d5 = ab.dot(cp)
    d6 = ac.dot(cp)
    vc = d1 * d4 - d3 * d2
    vb = d5 * d2 - d1 * d6
    va = d3 * d6 - d5 * d4
    bary = ti.Vector([0.0, 0.0, 0.0])
    if d1 <= 0.0 and d2 <= 0.0:
        bary = ti.Vector([1.0, 0.0, 0.0])
    elif d3 >= 0.0 and d4 <= d3:
        bary = ti.Vector([0.0, 1.0, 0.0])
    elif vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
        v = d1 / (d1 - d3)
        bary = ti.Vector([1.0 - v, v, 0.0])
    elif d6 >= 0.0 and d5 <= d6:
        bary = ti.Vector([0.0, 0.0, 1.0])
    elif vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
        w = d2 / (d2 - d6)
        bary = ti.Vector([1.0 - w, 0.0, w])
    elif va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:
        w = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        bary = ti.Vector([0.0, 1.0 - w, w])
    else:
        den = va + vb + vc
        v = vb / den
        w = vc / den
        bary = ti.Vector([1.0 - v - w, v, w])
    return bary


@ti.func
def _vert(v: ti.template(), n):
    return ti.Vector([v[n, 0], v[n, 1], v[n, 2]])


@ti.func
def _solid_angle(a, b, c):
    """Signed solid angle of triangle abc seen from the origin (Van Oosterom and Strackee)."""
    la = a.norm()
    lb = b.norm()
    lc = c.norm()
    num = a.dot(b.cross(c))
    den = la * lb * lc + a.dot(b) * lc + a.dot(c) * lb + b.dot(c) * la
    return 2.0 * ti.atan2(num, den)


@ti.kernel
def signed_distance(v: nd2, tri: nd_i32_2, box: nd_i32_1, sd: nd3, near: nd_i32_3, bary: nd4):
    """For every cell centre of the box: signed distance to the mesh (cells, < 0 inside by the
    winding number), the nearest face and the barycentric coordinates of the nearest point."""
    for a_, b_, c_ in ti.ndrange(sd.shape[0], sd.shape[1], sd.shape[2]):
        p = ti.Vector([a_ + box[B_I0] + 0.5, b_ + box[B_J0] + 0.5, c_ + box[B_L0] + 0.5])
        best = 1e30
        bf = -1
        bb = ti.Vector([0.0, 0.0, 0.0])
        wind = 0.0
        for t in range(tri.shape[0]):
            pa = _vert(v, tri[t, 0])
            pb = _vert(v, tri[t, 1])
            pc = _vert(v, tri[t, 2])
            bc = _closest_on_triangle(p, pa, pb, pc)
            q = bc[0] * pa + bc[1] * pb + bc[2] * pc
            d2 = (p - q).norm_sqr()
            if d2 < best:
                best = d2
                bf = t
                bb = bc
            wind += _solid_angle(pa - p, pb - p, pc - p)
        d = ti.sqrt(best)
        if ti.abs(wind) > 2.0 * math.pi:  # |winding number| > 1/2: inside
            d = -d
        sd[a_, b_, c_] = d
        near[a_, b_, c_] = bf
        for m in ti.static(range(3)):
            bary[a_, b_, c_, m] = bb[m]


@ti.kernel
def solid_fraction(sd: nd3, gam: nd3, prm: nd1):
    for a, b, c in sd:
        g, _ = _ramp(sd[a, b, c], prm[P_WIDTH], prm[P_RETRACT])
        gam[a, b, c] = g


@ti.kernel
def solid_fraction_vjp(v: nd2, tri: nd_i32_2, box: nd_i32_1, sd: nd3, near: nd_i32_3, bary: nd4, ggam: nd3,
                       prm: nd1, gv: nd2):
    """gv += d(sum ggam * gamma)/d(vertices) (lattice units): the signed distance moves with the
    nearest point, d sd / d v_m = -n b_m, n the outward unit normal at the cell centre."""
    for a_, b_, c_ in sd:
        d = sd[a_, b_, c_]
        _, dg = _ramp(d, prm[P_WIDTH], prm[P_RETRACT])
        if dg != 0.0 and ggam[a_, b_, c_] != 0.0:
            t = near[a_, b_, c_]
            p = ti.Vector([a_ + box[B_I0] + 0.5, b_ + box[B_J0] + 0.5, c_ + box[B_L0] + 0.5])
            pa = _vert(v, tri[t, 0])
            pb = _vert(v, tri[t, 1])
            pc = _vert(v, tri[t, 2])
            bc = ti.Vector([bary[a_, b_, c_, 0], bary[a_, b_, c_, 1], bary[a_, b_, c_, 2]])
            q = bc[0] * pa + bc[1] * pb + bc[2] * pc
            n = p - q
            if ti.abs(d) > 1e-9:
                n *= 1.0 / d  # outward: (p - q)/|p - q| outside, its opposite inside
            else:  # centre on the surface: the face's outward normal
                n = (pb - pa).cross(pc - pa)
                n *= prm[P_ORIENT] / n.norm()
            c = ggam[a_, b_, c_] * dg
            for m in ti.static(range(3)):
                vi = tri[t, m]
                for x in ti.static(range(3)):
                    gv[vi, x] -= c * bc[m] * n[x]
