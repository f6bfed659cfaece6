"""Weighted Delaunay speed and memory: tigeom against scipy/Qhull in the same run.

    python benchmarks/bench_delaunay.py --arch cpu --dims 2 3 --sizes 10000 100000 200000
    python benchmarks/bench_delaunay.py --arch cuda --dims 2 --sizes 1000000 10000000 --no-ref

Unweighted rows compare with ``scipy.spatial.Delaunay``; weighted rows with the lifted-hull
route (``scipy.spatial.ConvexHull`` of (p, |p|^2 - w), lower facets), the standard way to get a
regular triangulation from Qhull. Points are uniform in the unit square/cube, weights uniform in
[0, (spacing/2)^2]. Timings are the best of ``--repeat`` public calls (numpy in, numpy out) after a
warm-up call (kernel compilation excluded). Peak memory: host peak RSS growth of the process
(CPU) or the Taichi device allocation high-water mark is not exposed, so on a GPU we report the
bytes of the arrays the call allocates (from the stats) per point.
"""

import argparse
import json
import platform
import resource
import time

import numpy as np


def best(fn, repeat):
    ts, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return min(ts), out


def scipy_ref(p, w):
    from scipy.spatial import ConvexHull, Delaunay

    if w is None:
        return Delaunay(p).simplices
    lift = np.column_stack([p, (p * p).sum(1) - w])
    hull = ConvexHull(lift)
    return hull.simplices[hull.equations[:, p.shape[1]] < 0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-ref", action="store_true", help="skip scipy (e.g. at 1e7 points)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import tigeom

    cfg = tigeom.init(arch=args.arch)
    rows = []
    hdr = f"{'dim':>3} {'points':>9} {'weights':>7} {'tigeom s':>9} {'scipy s':>8} {'ratio':>6} {'simplices':>10} {'same':>5} {'MB/pt*1e3':>9}"
    print(f"# {platform.processor() or platform.machine()} | backend {cfg.backend}")
    print(hdr)
    for d in args.dims:
        for n in args.sizes:
            for weighted in (False, True):
                rng = np.random.default_rng(n + d)
                p = rng.random((n, d))
                w = rng.random(n) * (0.5 * n ** (-1.0 / d)) ** 2 if weighted else None
                tigeom.weighted_delaunay(p[: min(n, 5000)], None if w is None else w[: min(n, 5000)])
                rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                t_ours, tri = best(lambda: tigeom.weighted_delaunay(p, w), args.repeat)
                rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                t_ref, same = float("nan"), None
                if not args.no_ref:
                    t_ref, ref = best(lambda: scipy_ref(p, w), 1 if n >= 500_000 else args.repeat)
                    a = np.sort(tri.simplices, axis=1)
                    b = np.sort(ref, axis=1)
                    same = bool(len(a) == len(b) and np.array_equal(a[np.lexsort(a.T[::-1])], b[np.lexsort(b.T[::-1])]))
                mem = (rss1 - rss0) * 1024 / n  # bytes per point of peak growth (0 if under an earlier peak)
                row = dict(dim=d, points=n, weighted=weighted, tigeom_s=t_ours, scipy_s=t_ref,
                           ratio=t_ref / t_ours, simplices=len(tri.simplices), same=same,
                           peak_bytes_per_point=mem, phases=tri.stats["seconds"], wrapped=tri.stats["wrapped"],
                           exact_cells=tri.stats["cells_recomputed_exactly"], backend=cfg.backend)
                rows.append(row)
                print(f"{d:>3} {n:>9} {str(weighted):>7} {t_ours:9.3f} {t_ref:8.3f} {t_ref / t_ours:6.2f} "
                      f"{len(tri.simplices):>10} {str(same):>5} {mem / 1e3:9.2f}  {tri.stats['seconds']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
