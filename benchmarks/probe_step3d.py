"""Probe: variants of the D3Q19 forward step, each timed in one process against the copy roofline
(PyTorch). Not part of the suite; it chose the solver's step kernel. "base" is the former push
step (collide, push with the walls' bounce-back or reflection, inflow and outflow planes),
"solver" the pull step the solver runs, "bare_*" steps without walls or body.

    python benchmarks/probe_step3d.py --arch cuda --grid 256x256x256 --grid 128x128x128
"""

import argparse
import time
import warnings

import numpy as np
import taichi as ti

import tigeom
from tigeom.sim import ConvergenceWarning, Flow3D, meshes
from tigeom.sim import _lbm3d_kernels as K
from tigeom.sim._lbm3d_kernels import (CX, CY, CZ, OPP, Q, B_I0, B_I1, B_J0, B_J1, B_L0, B_L1, P_TAU, _collide,
                                       _heq, _in_box, _load, _macro, _relax, _shell, _shell_size,
                                       _solid_weights, nd1, nd2, nd3, nd4, nd_i32_1)


_step_cell = K._push_cell  # the push step of one cell


@ti.func
def _bgk(fl, om):
    drho, _, _, _, ux, uy, uz = _macro(fl)
    out = ti.Vector([0.0] * Q)
    for k in ti.static(range(Q)):
        out[k] = fl[k] - om * (fl[k] - _heq(k, drho, ux, uy, uz))
    return out


@ti.func
def _inner(box: ti.template(), i, j, l, nx, ny, nz):
    return ((i > 0) & (i < nx - 1) & (j > 0) & (j < ny - 1) & (l > 0) & (l < nz - 1)
            & (_in_box(box, i, j, l) == 0))


def _pair_of(body):
    """A kernel of two steps f -> fn -> f of the step ``body``."""
    @ti.kernel
    def pair(f: nd4, fn: nd4, gam: nd3, box: nd_i32_1, prm: nd1, slip: ti.i32, uin: nd2):
        body(f, fn, gam, box, prm, slip, uin)
        body(fn, f, gam, box, prm, slip, uin)

    return pair


def make_push_split(bd):
    @ti.func
    def body(f: ti.template(), fn: ti.template(), gam: ti.template(), box: ti.template(), prm: ti.template(), slip,
             uin: ti.template()):
        nx, ny, nz = f.shape[1], f.shape[2], f.shape[3]
        tau = prm[P_TAU]
        om = 1.0 / tau
        if ti.static(bd > 0):
            ti.loop_config(block_dim=bd)
        for i, j, l in ti.ndrange(nx, ny, nz):
            if _inner(box, i, j, l, nx, ny, nz):
                post = _bgk(_load(f, i, j, l), om)
                for k in ti.static(range(Q)):
                    fn[k, i + CX[k], j + CY[k], l + CZ[k]] = post[k]
        for s in range(_shell_size(1, nx, ny, nz)):
            i, j, l = _shell(s, 1, nx, ny, nz)
            _step_cell(f, fn, gam, box, slip, uin, tau, i, j, l, nx, ny, nz)
        for a, c, e in ti.ndrange((box[B_I0], box[B_I1]), (box[B_J0], box[B_J1]), (box[B_L0], box[B_L1])):
            if (a > 0) & (a < nx - 1) & (c > 0) & (c < ny - 1) & (e > 0) & (e < nz - 1):
                _step_cell(f, fn, gam, box, slip, uin, tau, a, c, e, nx, ny, nz)

    return _pair_of(body)


def make_push_inline(bd):
    @ti.func
    def body(f: ti.template(), fn: ti.template(), gam: ti.template(), box: ti.template(), prm: ti.template(), slip,
             uin: ti.template()):
        nx, ny, nz = f.shape[1], f.shape[2], f.shape[3]
        tau = prm[P_TAU]
        om = 1.0 / tau
        if ti.static(bd > 0):
            ti.loop_config(block_dim=bd)
        for i, j, l in ti.ndrange(nx, ny, nz):
            if _inner(box, i, j, l, nx, ny, nz):
                post = _bgk(_load(f, i, j, l), om)
                for k in ti.static(range(Q)):
                    fn[k, i + CX[k], j + CY[k], l + CZ[k]] = post[k]
            else:
                _step_cell(f, fn, gam, box, slip, uin, tau, i, j, l, nx, ny, nz)

    return _pair_of(body)


def make_base(bd):
    @ti.func
    def body(f: ti.template(), fn: ti.template(), gam: ti.template(), box: ti.template(), prm: ti.template(), slip,
             uin: ti.template()):
        nx, ny, nz = f.shape[1], f.shape[2], f.shape[3]
        tau = prm[P_TAU]
        if ti.static(bd > 0):
            ti.loop_config(block_dim=bd)
        for i, j, l in ti.ndrange(nx, ny, nz):
            _step_cell(f, fn, gam, box, slip, uin, tau, i, j, l, nx, ny, nz)

    return _pair_of(body)


@ti.func
def _pull_general(f: ti.template(), fn: ti.template(), gam: ti.template(), box: ti.template(), tau, i, j, l, nx, ny, nz):
    """Pull step storing post-collision values, halfway bounce-back at every wall (timing only)."""
    fl = ti.Vector([0.0] * Q)
    for k in ti.static(range(Q)):
        si = ti.min(ti.max(i - CX[k], 0), nx - 1)
        sj = j - CY[k]
        sl = l - CZ[k]
        if (sj < 0) | (sj >= ny) | (sl < 0) | (sl >= nz):
            fl[k] = f[OPP[k], i, j, l]
        else:
            fl[k] = f[k, si, sj, sl]
    B, r = _solid_weights(gam, box, i, j, l, tau)
    post = _collide(fl, B, tau)
    if r > 0.0:
        post = _relax(post, r)
    for k in ti.static(range(Q)):
        fn[k, i, j, l] = post[k]


def make_pull(split, bd):
    @ti.func
    def body(f: ti.template(), fn: ti.template(), gam: ti.template(), box: ti.template(), prm: ti.template(), slip,
             uin: ti.template()):
        nx, ny, nz = f.shape[1], f.shape[2], f.shape[3]
        tau = prm[P_TAU]
        om = 1.0 / tau
        if ti.static(bd > 0):
            ti.loop_config(block_dim=bd)
        for i, j, l in ti.ndrange(nx, ny, nz):
            if _inner(box, i, j, l, nx, ny, nz):
                fl = ti.Vector([0.0] * Q)
                for k in ti.static(range(Q)):
                    fl[k] = f[k, i - CX[k], j - CY[k], l - CZ[k]]
                post = _bgk(fl, om)
                for k in ti.static(range(Q)):
                    fn[k, i, j, l] = post[k]
            elif ti.static(not split):
                _pull_general(f, fn, gam, box, tau, i, j, l, nx, ny, nz)
        if ti.static(split):
            for s in range(_shell_size(1, nx, ny, nz)):
                i, j, l = _shell(s, 1, nx, ny, nz)
                _pull_general(f, fn, gam, box, tau, i, j, l, nx, ny, nz)
            for a, c, e in ti.ndrange((box[B_I0], box[B_I1]), (box[B_J0], box[B_J1]), (box[B_L0], box[B_L1])):
                if (a > 0) & (a < nx - 1) & (c > 0) & (c < ny - 1) & (e > 0) & (e < nz - 1):
                    _pull_general(f, fn, gam, box, tau, a, c, e, nx, ny, nz)

    return _pair_of(body)


def make_bare(mode):
    """Pull BGK steps without walls or body: mode "wrap" (periodic, modulo), "clamp" (neighbour
    index clamped into the grid), "inner" (the lean pull update for inner cells, nothing at the
    rest, without the box test), "push_wrap" (push, periodic)."""
    @ti.func
    def body(f: ti.template(), fn: ti.template(), prm: ti.template()):
        nx, ny, nz = f.shape[1], f.shape[2], f.shape[3]
        om = 1.0 / prm[P_TAU]
        for i, j, l in ti.ndrange(nx, ny, nz):
            if ti.static(mode == "push_wrap"):
                post = _bgk(_load(f, i, j, l), om)
                for k in ti.static(range(Q)):
                    fn[k, (i + CX[k] + nx) % nx, (j + CY[k] + ny) % ny, (l + CZ[k] + nz) % nz] = post[k]
            else:
                fl = ti.Vector([0.0] * Q)
                go = 1
                if ti.static(mode == "inner"):
                    go = (i > 0) & (i < nx - 1) & (j > 0) & (j < ny - 1) & (l > 0) & (l < nz - 1)
                if go:
                    for k in ti.static(range(Q)):
                        if ti.static(mode == "wrap"):
                            fl[k] = f[k, (i - CX[k] + nx) % nx, (j - CY[k] + ny) % ny, (l - CZ[k] + nz) % nz]
                        elif ti.static(mode == "clamp"):
                            fl[k] = f[k, ti.min(ti.max(i - CX[k], 0), nx - 1), ti.min(ti.max(j - CY[k], 0), ny - 1),
                                      ti.min(ti.max(l - CZ[k], 0), nz - 1)]
                        else:
                            fl[k] = f[k, i - CX[k], j - CY[k], l - CZ[k]]
                    post = _bgk(fl, om)
                    for k in ti.static(range(Q)):
                        fn[k, i, j, l] = post[k]

    @ti.kernel
    def pair(f: nd4, fn: nd4, gam: nd3, box: nd_i32_1, prm: nd1, slip: ti.i32, uin: nd2):
        body(f, fn, prm)
        body(fn, f, prm)

    return pair


@ti.kernel
def flat_pair(f: nd2, fn: nd2, nx: ti.i32, ny: ti.i32, nz: ti.i32, om: ti.f32):
    for half in ti.static(range(2)):
        src = ti.static(f if half == 0 else fn)
        dst = ti.static(fn if half == 0 else f)
        for c in range(nx * ny * nz):
            i = c // (ny * nz)
            j = (c // nz) % ny
            l = c % nz
            if (i > 0) & (i < nx - 1) & (j > 0) & (j < ny - 1) & (l > 0) & (l < nz - 1):
                fl = ti.Vector([0.0] * Q)
                for k in ti.static(range(Q)):
                    fl[k] = src[k, c - (CX[k] * ny * nz + CY[k] * nz + CZ[k])]
                post = _bgk(fl, om)
                for k in ti.static(range(Q)):
                    dst[k, c] = post[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--grid", action="append", default=None)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    tigeom.init(arch=a.arch, precision="f32")
    import torch
    n = 1 << 28
    x = torch.ones(n, device="cuda" if a.arch == "cuda" else "cpu")
    y = torch.empty_like(x)
    best = 1e9
    for _ in range(20):
        torch.cuda.synchronize() if a.arch == "cuda" else None
        t = time.perf_counter()
        y.copy_(x)
        torch.cuda.synchronize() if a.arch == "cuda" else None
        best = min(best, time.perf_counter() - t)
    bw = 2 * n * 4 / best
    roof = bw / 152
    print(f"# torch copy {bw / 1e9:.0f} GB/s; D3Q19 roofline {roof / 1e9:.2f} GLUPS", flush=True)
    variants = {"solver": K.step_pair, "base": make_base(0), "base_bd256": make_base(256), "base_bd512": make_base(512),
                "base_bd64": make_base(64),
                "push_split": make_push_split(0), "push_split_bd256": make_push_split(256),
                "push_inline": make_push_inline(0),
                "pull_split": make_pull(True, 0), "pull_inline": make_pull(False, 0),
                "pull_split_bd256": make_pull(True, 256)}
    variants.update({"bare_" + m: make_bare(m) for m in ("wrap", "clamp", "inner", "push_wrap")})
    if a.only:
        variants = {k: v for k, v in variants.items() if k in a.only.split(",")}
    for g in a.grid or ["64x32x32"]:
        shape = tuple(int(t) for t in g.split("x"))
        n = shape[1]
        fl = Flow3D(size=tuple(float(s) for s in shape), resolution=1.0, viscosity=0.05, inflow_velocity=0.05,
                    lattice_velocity=0.05, max_steps=10 ** 9)
        body = meshes.sphere((0.25 * shape[0], 0.5 * n, 0.5 * shape[2]), 0.05 * n, 3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fl.solve(*body, max_steps=200)
        b = fl._bufs
        args = (b["f"], b["fn"], b["gam"], b["box"], b["prm"], fl._slip, b["uin"])
        cells = float(np.prod(shape))
        pairs = max(4, int((2e9 if a.arch == "cuda" else 2e7) / cells / 2))
        if not a.only or "flat" in a.only:
            fa = ti.ndarray(ti.f32, (Q, int(cells)))
            fb = ti.ndarray(ti.f32, (Q, int(cells)))
            fa.fill(0.0)
            fb.fill(0.0)
            variants["flat"] = lambda *_: flat_pair(fa, fb, shape[0], shape[1], shape[2], 1.0 / fl.tau)
        for name, kern in variants.items():
            kern(*args)
            ti.sync()
            times = []
            for _ in range(3):
                t = time.perf_counter()
                for _ in range(pairs):
                    kern(*args)
                ti.sync()
                times.append(time.perf_counter() - t)
            glups = cells * 2 * pairs / min(times) / 1e9
            print(f"{g} {name:18s} {glups:6.2f} GLUPS {100 * glups * 1e9 / roof:5.1f}% of roofline", flush=True)


if __name__ == "__main__":
    main()
