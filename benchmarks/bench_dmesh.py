"""DMesh per-iteration time against the number of points, and the reconstruction accuracy table.

Per iteration = min-ball face probabilities + expected Chamfer (both directions) + both vjps,
the work of one optimisation step (candidate refresh excluded; it runs every 20 steps and is
timed separately). Points: a torus sampled with N points plus N/2 imaginary points; targets:
2N points on the same torus. The anchor numbers (DMesh ~800 ms per step at 1e5 points with
CGAL, DMesh++ 282 s per 3D shape on an A10) are published figures, not rerun here: the
reference code needs CUDA/CGAL builds this machine does not have.

    python benchmarks/bench_dmesh.py --sizes 1000 10000 100000 [--arch cuda] [--accuracy]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

import tigeom
from tigeom import dmesh
from tigeom.dmesh import losses, shapes


def step_time(n: int, repeats: int = 5) -> dict:
    rng = np.random.default_rng(0)
    real = shapes.torus_samples(n, rng=rng)
    lo, hi = real.min(0), real.max(0)
    imag = rng.uniform(lo, hi, (n // 2, 3))
    pts = np.concatenate([real, imag])
    reals = np.r_[np.ones(n), np.zeros(n // 2)]
    tg = losses.Targets(shapes.torus_samples(2 * n, rng=rng))
    t0 = time.perf_counter()
    m = dmesh.DMesh(pts, reals)
    t_refresh = time.perf_counter() - t0

    def one():
        fp = m.probabilities()
        L = losses.expected_chamfer(m.points, m.prepared_faces, fp, tg)
        gp, gq, _ = L.vjp()
        fp.vjp(gq)

    one()  # compile
    tigeom.runtime.sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        one()
        tigeom.runtime.sync()
        times.append(time.perf_counter() - t)
    return {"points": len(pts), "candidates": len(m.faces), "step_ms": 1e3 * float(np.median(times)),
            "refresh_ms": 1e3 * t_refresh}


def accuracy() -> list[dict]:
    rows = []
    for name in ("B", "i", "&"):
        polys = shapes.glyph_outlines(name)
        s = shapes.sample_polylines(polys, 4000, 0)
        t = time.perf_counter()
        r = dmesh.reconstruct(s)
        sec = time.perf_counter() - t
        sc = shapes.chamfer_f1(r.vertices, r.faces, shapes.sample_polylines(polys, 200_000, 1))
        rows.append({"shape": f"glyph {name!r}", "samples": 4000, "faces": len(r.faces), "seconds": sec, **sc})
    for name, fn in (("torus", shapes.torus_samples), ("patch", shapes.patch_samples)):
        s = fn(20000, rng=0)
        t = time.perf_counter()
        r = dmesh.reconstruct(s)
        sec = time.perf_counter() - t
        sc = shapes.chamfer_f1(r.vertices, r.faces, fn(400_000, rng=1), n=200_000)
        rows.append({"shape": name, "samples": 20000, "faces": len(r.faces), "seconds": sec, **sc})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--accuracy", action="store_true")
    a = ap.parse_args()
    cfg = tigeom.init(arch=a.arch, precision=a.precision)
    print(f"machine: {platform.processor() or platform.machine()}, backend {cfg.backend}, {a.precision}")
    print(f"{'points':>9} {'candidates':>11} {'step ms':>9} {'refresh ms':>11} {'vs DMesh 800 ms @1e5':>21}")
    for n in a.sizes:
        r = step_time(n)
        ratio = f"{800.0 / r['step_ms']:.1f}x" if r["points"] >= 100_000 else "-"
        print(f"{r['points']:>9} {r['candidates']:>11} {r['step_ms']:>9.1f} {r['refresh_ms']:>11.1f} {ratio:>21}")
    if a.accuracy:
        print(f"{'shape':>12} {'samples':>8} {'faces':>7} {'Chamfer %diag':>14} {'F1':>6} {'seconds':>8}")
        for r in accuracy():
            print(f"{r['shape']:>12} {r['samples']:>8} {r['faces']:>7} {100 * r['chamfer']:>14.4f} "
                  f"{r['f1']:>6.3f} {r['seconds']:>8.1f}")


if __name__ == "__main__":
    main()
