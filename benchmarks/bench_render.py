"""tigeom.render: rasterize and vjp of an icosphere from an 8 x 8 orbit of cameras, per-face
opacities, with the time split into binning + compositing, antialiasing and the vjp.

    python benchmarks/bench_render.py --arch cpu --subdiv 4 --res 128
    python benchmarks/bench_render.py --arch cuda --subdiv 6 --res 256 --subdiv 8 --res 512
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import trimesh

import tigeom
from tigeom import render


def bench(subdiv: int, res: int, reps: int) -> dict:
    mesh = trimesh.creation.icosphere(subdiv, radius=0.8)
    cams = render.orbit_cameras(8, 8, radius=3.0, resolution=(res, res))
    op = np.random.default_rng(0).uniform(0.2, 1.0, len(mesh.faces))
    img = render.rasterize(mesh.vertices, mesh.faces, cams, op)  # compiles
    img.vjp(np.ones_like(img.alpha))
    tf, tb = [], []
    for _ in range(reps):
        t = time.perf_counter()
        img = render.rasterize(mesh.vertices, mesh.faces, cams, op)
        tf.append(time.perf_counter() - t)
        t = time.perf_counter()
        img.vjp(np.ones_like(img.alpha), np.where(np.isfinite(img.depth), 1.0, 0.0))
        tb.append(time.perf_counter() - t)
    return {"faces": len(mesh.faces), "forward": min(tf), "vjp": min(tb), "covered": float((img.alpha > 0).mean()),
            "over": img.stats["pixels_over_layers"]}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--subdiv", type=int, action="append")
    ap.add_argument("--res", type=int, action="append")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    cfg = tigeom.init(arch=a.arch, precision="f32")
    subdivs, ress = a.subdiv or [4], a.res or [128]
    print(f"# backend {cfg.backend}, {platform.processor() or platform.machine()}; 64 views (8 x 8 orbit), "
          "per-face opacities in [0.2, 1], best of", a.reps)
    print("| faces | views x resolution | rasterize (s) | vjp (s) | per view, forward + vjp (ms) | pixels covered |")
    print("|---|---|---|---|---|---|")
    for s, r in zip(subdivs, ress):
        out = bench(s, r, a.reps)
        print(f"| {out['faces']:,} | 64 x {r}^2 | {out['forward']:.3f} | {out['vjp']:.3f} | "
              f"{1e3 * (out['forward'] + out['vjp']) / 64:.1f} | {100 * out['covered']:.0f}% |", flush=True)


if __name__ == "__main__":
    main()
