"""Marching cubes speed: tigeom against scikit-image (CPU) and the copy bandwidth (GPU), same run.

    python benchmarks/bench_isosurface.py --arch cpu --sizes 128 256
    python benchmarks/bench_isosurface.py --arch cuda --sizes 128 256 512

CPU rows time the public call (numpy in, numpy out) after a warm-up call (kernel compilation
excluded), best of ``--repeat``, next to ``skimage.measure.marching_cubes`` on the same field.
GPU rows also time the device-resident path (grid already on the device, outputs left there;
the vertex/face counts come back to the host, which synchronises) and the vjp kernel, and
compare the bytes of one read of the grid with the device copy bandwidth measured here.
"""


import argparse
import json
import platform
import time

import numpy as np


def field(n: int) -> np.ndarray:
    """A torus plus a sphere: a closed surface of a realistic size (about 1% of the cells)."""
    x = np.linspace(-1, 1, n, dtype=np.float32)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij", sparse=True)
    torus = np.sqrt((np.sqrt(X**2 + Y**2) - 0.5) ** 2 + Z**2) - 0.2
    ball = np.sqrt((X - 0.1) ** 2 + (Y + 0.1) ** 2 + (Z - 0.4) ** 2) - 0.25
    return np.minimum(torus, ball).astype(np.float32)


def best(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def copy_bandwidth(n_bytes: int, repeat: int) -> dict:
    """Device copy bandwidth (bytes read + written per second): Taichi, and PyTorch if present."""
    import taichi as ti

    n = n_bytes // 4
    a = ti.ndarray(ti.f32, shape=(n,))
    b = ti.ndarray(ti.f32, shape=(n,))

    @ti.kernel
    def copy(src: ti.types.ndarray(), dst: ti.types.ndarray()):
        for i in range(src.shape[0]):
            dst[i] = src[i]

    a.fill(1.0)
    copy(a, b)
    ti.sync()

    def run():
        copy(a, b)
        ti.sync()

    out = {"taichi_copy_GBps": 2 * n * 4 / best(run, repeat) / 1e9}
    try:
        import torch

        if torch.cuda.is_available():
            x = torch.ones(n, dtype=torch.float32, device="cuda")
            y = torch.empty_like(x)
            y.copy_(x)
            torch.cuda.synchronize()

            def trun():
                y.copy_(x)
                torch.cuda.synchronize()

            out["torch_copy_GBps"] = 2 * n * 4 / best(trun, repeat) / 1e9
    except ImportError:
        pass
    out["copy_GBps"] = max(v for k, v in out.items() if k.endswith("GBps"))
    return out


def bench_device(vals: np.ndarray, repeat: int) -> dict:
    """Forward and vjp with the grid resident on the device."""
    import taichi as ti

    from tigeom._core import device as _device
    from tigeom.isosurface import _kernels as K
    from tigeom.isosurface.extract import _marcher, default_layout

    shape = vals.shape
    sweep, S = default_layout(shape)
    vd = _device.upload(vals)
    flat = _device.upload(vals.ravel())
    m = _marcher(3)
    org, spc = np.full(3, -1.0), np.full(3, 2.0 / (shape[0] - 1))
    res = m.run(vd, shape, 0.0, org, spc, sweep, S)
    ti.sync()

    def fwd():
        m.run(vd, shape, 0.0, org, spc, sweep, S)
        ti.sync()

    t_fwd = best(fwd, repeat)
    res = m.run(vd, shape, 0.0, org, spc, sweep, S)
    V = res["V"]
    g = _device.upload(np.random.default_rng(0).standard_normal(V * 3).astype(np.float32))  # (V, 3), flat
    vmax = _device.upload(np.array([np.abs(vals).max()], np.float32))
    strides = _device.upload(np.array([shape[1] * shape[2], shape[2], 1], np.int32))
    spc_d = _device.upload(spc.astype(np.float32))
    out = _device.empty((vals.size,), np.float32)

    def vjp():
        out.fill(0)
        K.vertex_vjp(flat, res["vedge"], V, g, 3, 1, strides, spc_d, 3, 0.0, 1e-6, vmax, out)
        ti.sync()

    vjp()
    t_vjp = best(vjp, repeat)
    return {"vertices": V, "faces": res["T"], "fwd_device_ms": t_fwd * 1e3, "vjp_device_ms": t_vjp * 1e3,
            "fwd_vjp_device_ms": (t_fwd + t_vjp) * 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None, help="write the rows to this JSON file")
    args = ap.parse_args()

    import tigeom

    rt = tigeom.init(arch=args.arch, precision="f32")
    try:
        from skimage import measure
    except ImportError:
        measure = None
    rows = []
    info = {"backend": rt.backend, "machine": platform.machine(), "processor": platform.processor(),
            "python": platform.python_version()}
    if rt.backend == "cuda":
        info.update(copy_bandwidth(4 * max(args.sizes) ** 3, args.repeat))
    for n in args.sizes:
        vals = field(n)
        tigeom.marching_cubes(vals)  # compile
        row = {"n": n, "voxels": vals.size}
        row["public_ms"] = best(lambda: tigeom.marching_cubes(vals), args.repeat) * 1e3
        surf = tigeom.marching_cubes(vals)
        g = np.ones_like(surf.vertices)
        surf.vjp(g)
        row["public_vjp_ms"] = best(lambda: surf.vjp(g), args.repeat) * 1e3
        row["faces"] = len(surf.faces)
        if measure is not None:
            row["skimage_ms"] = best(lambda: measure.marching_cubes(vals, 0.0), max(args.repeat // 2, 1)) * 1e3
            row["speedup_vs_skimage"] = row["skimage_ms"] / row["public_ms"]
        if rt.backend == "cuda":
            row.update(bench_device(vals, args.repeat))
            gbps = vals.nbytes / (row["fwd_device_ms"] * 1e-3) / 1e9
            row["fwd_read_GBps"] = gbps
            row["fwd_frac_of_copy"] = gbps / info["copy_GBps"]
        rows.append(row)

    print(f"# marching cubes, backend={rt.backend}, {info}")
    cols = ["n", "faces", "public_ms", "public_vjp_ms", "skimage_ms", "speedup_vs_skimage", "fwd_device_ms",
            "vjp_device_ms", "fwd_vjp_device_ms", "fwd_read_GBps", "fwd_frac_of_copy"]
    cols = [c for c in cols if any(c in r for r in rows)]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols)
              + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"info": info, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
