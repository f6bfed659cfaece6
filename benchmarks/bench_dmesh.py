"""DMesh per-iteration time against the number of points, and the reconstruction accuracy table.

Per iteration = min-ball face probabilities + expected Chamfer (both directions) + both vjps,
the work of one optimisation step, timed through the public numpy API ("step") and as a whole
``DMesh.optimize`` iteration with the state on the device and Adam included ("optimize");
candidate refresh excluded (it runs every 20 steps and is timed separately). Points: a torus sampled with N points plus N/2 imaginary points; targets:
2N points on the same torus. The anchor numbers (DMesh ~800 ms per step at 1e5 points with
CGAL, DMesh++ 282 s per 3D shape on an A10) are published figures, not rerun here: the
reference code needs CUDA/CGAL builds this machine does not have.

    python benchmarks/bench_dmesh.py --sizes 1000 10000 100000 [--arch cuda] [--accuracy]
    python benchmarks/bench_dmesh.py --arch cuda --wdt 100000   # the "wdt" first call and warm call
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

import tigeom
from tigeom import dmesh
from tigeom.dmesh import losses, sampling


def _synced(fn):
    t = time.perf_counter()
    out = fn()
    tigeom.runtime.sync()
    return out, 1e3 * (time.perf_counter() - t)


def torus_points(n: int):
    """(points, real values, the generator): n torus samples (real) and n / 2 uniform points in
    their box (imaginary), seed 0; the generator continues the same stream."""
    rng = np.random.default_rng(0)
    real = sampling.torus_samples(n, rng=rng)
    imag = rng.uniform(real.min(0), real.max(0), (n // 2, 3))
    return np.concatenate([real, imag]), np.r_[np.ones(n), np.zeros(n // 2)], rng


def step_time(n: int, repeats: int = 5) -> dict:
    """Median step time, its parts (each timed with a device sync, so they add up to a little more
    than the step) and the candidate refresh after a warm-up (the first build compiles)."""
    pts, reals, rng = torus_points(n)
    tg = losses.Targets(sampling.torus_samples(2 * n, rng=rng))
    m = dmesh.DMesh(pts, reals)

    def one():
        fp = m.probabilities()
        L = losses.expected_chamfer(m.points, m.prepared_faces, fp, tg)
        gp, gq, _ = L.vjp()
        fp.vjp(gq)

    one()  # compile
    tigeom.runtime.sync()
    times = [_synced(one)[1] for _ in range(repeats)]
    parts = {"probs": [], "chamfer": [], "chamfer_vjp": [], "probs_vjp": []}
    for _ in range(repeats):
        fp, t = _synced(m.probabilities)
        parts["probs"].append(t)
        L, t = _synced(lambda: losses.expected_chamfer(m.points, m.prepared_faces, fp, tg))
        parts["chamfer"].append(t)
        (_, gq, _), t = _synced(L.vjp)
        parts["chamfer_vjp"].append(t)
        parts["probs_vjp"].append(_synced(lambda: fp.vjp(gq))[1])
    likely = int((fp.probs >= 1e-3).sum())
    # a whole DMesh.optimize iteration (state on the device, Adam included), candidates fixed
    def loss_fn(mesh, fp):
        return losses.expected_chamfer(mesh, mesh.prepared_faces, fp, tg)

    m.optimize(loss_fn, iterations=1, refresh_every=0)
    _, t_opt = _synced(lambda: m.optimize(loss_fn, iterations=10, refresh_every=0))
    _, t_refresh = _synced(m.refresh)
    return {"points": len(pts), "candidates": len(m.faces), "likely": likely,
            "step_ms": float(np.median(times)), "optimize_ms": t_opt / 10, "refresh_ms": t_refresh,
            **{k: float(np.median(v)) for k, v in parts.items()}}


def wdt_time(n: int, repeats: int = 5) -> dict:
    """DMesh's "wdt" probabilities (a weighted Delaunay triangulation of the points, then the
    probabilities of the candidates): the first call, which compiles the kernels not yet in
    Taichi's offline cache (run with an empty ``TI_OFFLINE_CACHE_FILE_PATH`` to include them
    all), and the median warm call."""
    pts, reals, _ = torus_points(n)
    t = time.perf_counter()
    m = dmesh.DMesh(pts, reals, method="wdt")  # its refresh triangulates: the first call
    m.probabilities()
    tigeom.runtime.sync()
    first = time.perf_counter() - t
    warm = [_synced(m.probabilities)[1] for _ in range(repeats)]
    return {"points": len(pts), "candidates": len(m.faces), "first_s": first, "warm_ms": float(np.median(warm))}


def accuracy() -> list[dict]:
    rows = []
    for name in ("B", "i", "&"):
        polys = sampling.glyph_outlines(name)
        s = sampling.sample_polylines(polys, 4000, 0)
        t = time.perf_counter()
        r = dmesh.reconstruct(s)
        sec = time.perf_counter() - t
        sc = sampling.chamfer_f1(r.vertices, r.faces, sampling.sample_polylines(polys, 200_000, 1))
        rows.append({"shape": f"glyph {name!r}", "samples": 4000, "faces": len(r.faces), "seconds": sec, **sc})
    for name, fn in (("torus", sampling.torus_samples), ("patch", sampling.patch_samples)):
        s = fn(20000, rng=0)
        t = time.perf_counter()
        r = dmesh.reconstruct(s)
        sec = time.perf_counter() - t
        sc = sampling.chamfer_f1(r.vertices, r.faces, fn(400_000, rng=1), n=200_000)
        rows.append({"shape": name, "samples": 20000, "faces": len(r.faces), "seconds": sec, **sc})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--wdt", type=int, default=0, metavar="N",
                    help='only time the "wdt" probabilities on N torus samples (first call and warm)')
    a = ap.parse_args()
    cfg = tigeom.init(arch=a.arch, precision=a.precision)
    print(f"machine: {platform.processor() or platform.machine()}, backend {cfg.backend}, {a.precision}")
    if a.wdt:
        r = wdt_time(a.wdt)
        print(f"wdt: {r['points']} points, {r['candidates']} candidates: first call (refresh + probabilities) "
              f"{r['first_s']:.1f} s, warm probabilities {r['warm_ms']:.1f} ms")
        return
    cols = ("points", "candidates", "likely", "step_ms", "probs", "chamfer", "chamfer_vjp", "probs_vjp",
            "optimize_ms", "refresh_ms")
    print(" ".join(f"{c:>11}" for c in cols) + f" {'vs DMesh 800 ms @1e5':>21}")
    for n in a.sizes:
        r = step_time(n)
        ratio = f"{800.0 / r['step_ms']:.1f}x" if r["points"] >= 100_000 else "-"
        print(" ".join(f"{r[c]:>11}" if isinstance(r[c], int) else f"{r[c]:>11.1f}" for c in cols) + f" {ratio:>21}",
              flush=True)
    if a.accuracy:
        print(f"{'shape':>12} {'samples':>8} {'faces':>7} {'Chamfer %diag':>14} {'F1':>6} {'seconds':>8}")
        for r in accuracy():
            print(f"{r['shape']:>12} {r['samples']:>8} {r['faces']:>7} {100 * r['chamfer']:>14.4f} "
                  f"{r['f1']:>6.3f} {r['seconds']:>8.1f}")


if __name__ == "__main__":
    main()
