"""Lattice updates per second of tigeom.sim.Flow2D (forward step and adjoint step) against the memory
roofline measured in the same process.

D2Q9 in f32 moves 72 bytes per forward cell update (9 populations read, 9 written); the adjoint
step reads the adjoint populations and the converged state and writes the adjoint: 108 bytes.
The roofline is the best copy bandwidth (bytes read + written) of a Taichi copy kernel,
numpy (CPU) and PyTorch (GPU, when installed).

    python benchmarks/bench_flow.py --arch cpu --grid 440x82 --grid 1024x512
    python benchmarks/bench_flow.py --arch cuda --grid 1024x512 --grid 4096x2048
"""


import argparse
import platform
import time
import warnings

import numpy as np

import tigeom
from tigeom.sim import ConvergenceWarning, Flow2D, polygons
from tigeom.sim import _lbm_kernels as K


def copy_bandwidth(n_bytes: int, gpu: bool) -> dict:
    import taichi as ti

    n = n_bytes // 4
    a = ti.ndarray(ti.f32, (n,))
    b = ti.ndarray(ti.f32, (n,))
    a.fill(1.0)

    @ti.kernel
    def cp(x: ti.types.ndarray(ndim=1), y: ti.types.ndarray(ndim=1)):
        for i in range(x.shape[0]):
            y[i] = x[i]

    def best(fn, reps=10):
        fn()
        tigeom.runtime.sync()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            tigeom.runtime.sync()
            ts.append(time.perf_counter() - t)
        return 2 * n * 4 / min(ts)

    out = {"taichi_copy": best(lambda: cp(a, b))}
    if gpu:
        try:
            import torch

            x = torch.ones(n, device="cuda", dtype=torch.float32)
            y = torch.empty_like(x)

            def tc():
                y.copy_(x)
                torch.cuda.synchronize()

            out["torch_copy"] = best(tc)
        except Exception as exc:  # torch missing or without CUDA
            out["torch_copy_error"] = str(exc)
    else:
        x = np.ones(n, np.float32)
        y = np.empty_like(x)
        out["numpy_copy"] = best(lambda: np.copyto(y, x))
    return out


def bench(nx: int, ny: int, steps: int) -> dict:
    dx = 1.0
    fl = Flow2D(size=(nx * dx, ny * dx), resolution=1.0, viscosity=0.05, inflow_velocity=0.05,
                lattice_velocity=0.05, max_steps=10 ** 9)
    v, s = polygons.circle((0.25 * nx, 0.5 * ny), 0.05 * ny, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a short run, only to set up the buffers
        res = fl.solve(v, s, max_steps=200)
    b = fl._bufs
    slip = 0

    def fwd(n):
        for _ in range(n):
            K.step(b["f"], b["fn"], b["gam"], b["box"], b["prm"], slip)
            K.apply_bc(b["fn"], b["uin"])
            b["f"], b["fn"] = b["fn"], b["f"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res.vjp([1.0, 0.0], max_steps=20)  # allocates and compiles the adjoint

    def adj(n):
        for _ in range(n):
            K.adj_bc_terms(b["lam"], b["f"], b["uin"], b["bc"])
            K.adj_step(b["lam"], b["lamn"], b["f"], b["gam"], b["box"], b["prm"], b["bc"], slip)
            b["lam"], b["lamn"] = b["lamn"], b["lam"]

    out = {}
    for name, fn in (("forward", fwd), ("adjoint", adj)):
        fn(10)
        tigeom.runtime.sync()
        t = time.perf_counter()
        fn(steps)
        tigeom.runtime.sync()
        dt = time.perf_counter() - t
        out[name] = nx * ny * steps / dt
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--grid", action="append", default=None)
    ap.add_argument("--steps", type=int, default=None)
    a = ap.parse_args(argv)
    cfg = tigeom.init(arch=a.arch, precision="f32")
    gpu = cfg.backend != "cpu"
    grids = a.grid or (["1024x512", "4096x2048"] if gpu else ["440x82", "1024x512"])
    roof = copy_bandwidth(1 << 30 if gpu else 1 << 28, gpu)
    bw = max(v for k, v in roof.items() if isinstance(v, float))
    print(f"# backend {cfg.backend}, {platform.processor() or platform.machine()}; copy bandwidth (GB/s): "
          + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in roof.items() if isinstance(v, float)))
    print(f"# roofline: forward {bw / 72 / 1e9:.2f} GLUPS (72 B/update), adjoint {bw / 108 / 1e9:.2f} GLUPS (108 B)")
    print("| grid | forward MLUPS | % of roofline | adjoint MLUPS | % of roofline | adjoint/forward time |")
    print("|---|---|---|---|---|---|")
    for g in grids:
        nx, ny = (int(t) for t in g.split("x"))
        steps = a.steps or max(20, int((4e9 if gpu else 2e8) / (nx * ny)))
        r = bench(nx, ny, steps)
        print(f"| {nx} x {ny} | {r['forward'] / 1e6:.0f} | {100 * r['forward'] * 72 / bw:.0f}% | "
              f"{r['adjoint'] / 1e6:.0f} | {100 * r['adjoint'] * 108 / bw:.0f}% | {r['forward'] / r['adjoint']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
