"""Lattice updates per second of tigeom.sim.Flow2D and Flow3D (forward step and adjoint step, body
and boundaries included, launched the way ``solve`` launches them) against the memory roofline
measured in the same process.

D2Q9 in f32 moves 72 bytes per forward cell update (9 populations read, 9 written); the adjoint
step reads the adjoint populations and the converged state's velocity and writes the adjoint:
80 bytes. D3Q19: 152 and 164 bytes. The roofline is the best copy bandwidth (bytes read + written) of a
Taichi copy kernel, numpy (CPU) and PyTorch (GPU, when installed).

    python benchmarks/bench_flow.py --arch cpu --grid 440x82 --grid 1024x512 --grid 64x64x64
    python benchmarks/bench_flow.py --arch cuda --grid 1024x512 --grid 128x128x128 --grid 256x256x256
"""


import argparse
import platform
import time
import warnings

import numpy as np

import tigeom
from tigeom.sim import ConvergenceWarning, Flow2D, Flow3D, meshes, polygons
from tigeom.sim._steady import Repeat

from _timing import best_synced


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

    def best(fn):
        return 2 * n * 4 / best_synced(fn)

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


def bench(shape, steps: int) -> dict:
    """Forward and adjoint lattice updates per second on a grid ``shape`` with a body (a circle or
    a sphere of a tenth of the height), through the solver's own step launches."""
    n = shape[1]
    if len(shape) == 2:
        fl = Flow2D(size=tuple(float(s) for s in shape), resolution=1.0, viscosity=0.05, inflow_velocity=0.05,
                    lattice_velocity=0.05, max_steps=10 ** 9)
        body = polygons.circle((0.25 * shape[0], 0.5 * n), 0.05 * n, 128)
    else:
        fl = Flow3D(size=tuple(float(s) for s in shape), resolution=1.0, viscosity=0.05, inflow_velocity=0.05,
                    lattice_velocity=0.05, max_steps=10 ** 9)
        body = meshes.sphere((0.25 * shape[0], 0.5 * n, 0.5 * shape[2]), 0.05 * n, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # short runs, only to set up the buffers
        res = fl.solve(*body, max_steps=200)
        res.vjp(np.eye(len(shape))[0], max_steps=20)  # allocates and compiles the adjoint
    b = fl._bufs
    out = {"bytes_per_cell_forward": fl.bytes_per_cell(False) if len(shape) == 3 else None}
    cells = float(np.prod(shape))
    def chunks(fn, n):  # as the solver runs: check intervals of check_every steps
        for _ in range(n // fl.check_every):
            fn(b, fl.check_every)
        fn(b, n % fl.check_every)

    for name, fn in (("forward", fl._advance), ("adjoint", fl._adj_advance)):
        chunks(fn, fl.check_every + 11)  # compiles every kernel (and graph) it uses, outside the timing
        fn(b, 0)
        tigeom.runtime.sync()
        t = time.perf_counter()
        chunks(fn, steps)
        tigeom.runtime.sync()
        out[name] = cells * steps / (time.perf_counter() - t)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--grid", action="append", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--no-graphs", action="store_true",
                    help="launch every step from Python instead of through Taichi compute graphs")
    a = ap.parse_args(argv)
    Repeat.graphs = not a.no_graphs
    cfg = tigeom.init(arch=a.arch, precision="f32")
    gpu = cfg.backend != "cpu"
    grids = a.grid or (["1024x512", "4096x2048"] if gpu else ["440x82", "1024x512"])
    roof = copy_bandwidth(1 << 30 if gpu else 1 << 28, gpu)
    bw = max(v for k, v in roof.items() if isinstance(v, float))
    print(f"# backend {cfg.backend}, {platform.processor() or platform.machine()}; copy bandwidth (GB/s): "
          + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in roof.items() if isinstance(v, float)))
    print(f"# roofline: D2Q9 forward {bw / 72 / 1e9:.2f} GLUPS (72 B/update), adjoint {bw / 80 / 1e9:.2f} "
          f"GLUPS (80 B); D3Q19 forward {bw / 152 / 1e9:.2f} (152 B), adjoint {bw / 164 / 1e9:.2f} (164 B)")
    print("| grid | forward MLUPS | % of roofline | adjoint MLUPS | % of roofline | adjoint/forward time | "
          "bytes per cell (forward) |")
    print("|---|---|---|---|---|---|---|")
    for g in grids:
        shape = tuple(int(t) for t in g.split("x"))
        fb, ab = (72, 80) if len(shape) == 2 else (152, 164)
        steps = a.steps or 200 * max(1, round((4e9 if gpu else 2e8) / np.prod(shape) / 200))  # whole check intervals
        r = bench(shape, steps)
        print(f"| {' x '.join(map(str, shape))} | {r['forward'] / 1e6:.0f} | {100 * r['forward'] * fb / bw:.0f}% | "
              f"{r['adjoint'] / 1e6:.0f} | {100 * r['adjoint'] * ab / bw:.0f}% | {r['forward'] / r['adjoint']:.2f} | "
              f"{r['bytes_per_cell_forward'] or ''} |", flush=True)


if __name__ == "__main__":
    main()
