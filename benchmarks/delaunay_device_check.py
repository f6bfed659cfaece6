"""Same triangulation on every backend: hashes of weighted_delaunay's output, to compare a GPU
run with a CPU run of the same code (no scipy needed, so it runs on a bare CUDA machine).

    python benchmarks/delaunay_device_check.py --arch cpu  > cpu.txt
    python benchmarks/delaunay_device_check.py --arch cuda > gpu.txt    # then: diff cpu.txt gpu.txt

Small cases cover random 2D/3D inputs, weights, grids, a cell that overflows the first scratch
capacity (the centre of points on a sphere), duplicates and heavy weights. ``--sizes`` adds
benchmark-sized uniform inputs (best-of-2 time and phase times go to stderr, so the diff stays
about the output). The hash is SHA-1 over the sorted simplices and the hidden mask.
"""

import argparse
import hashlib
import sys
import time

import numpy as np

import tigeom


def digest(tri) -> str:
    s = np.sort(tri.simplices, 1)
    s = s[np.lexsort(s.T[::-1])]
    return hashlib.sha1(s.astype(np.int64).tobytes() + tri.hidden.tobytes()).hexdigest()[:12]


def small_cases():
    rng = np.random.default_rng(7)
    yield "random 3D", (rng.random((20000, 3)),)
    yield "random 3D weighted", (rng.random((20000, 3)), rng.random(20000) * 1e-3)
    yield "random 2D", (rng.random((50000, 2)),)
    yield "random 2D weighted", (rng.random((50000, 2)), rng.random(50000) * 1e-4)
    yield "grid 6^3", (np.stack(np.meshgrid(*[np.arange(6.0)] * 3), -1).reshape(-1, 3),)
    yield "grid 9^2", (np.stack(np.meshgrid(*[np.arange(9.0)] * 2), -1).reshape(-1, 2),)
    q = rng.normal(size=(300, 3))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    yield "sphere centre", (np.vstack([[[0.0, 0.0, 0.0]], q]),)
    p = rng.random((200, 3))
    yield "duplicates", (np.vstack([p, p[:30]]), np.r_[np.zeros(200), np.ones(30) * 1e-4])
    yield "heavy weights", (rng.random((40, 3)), np.r_[rng.random(5) * 10, np.zeros(35)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--dims", type=int, nargs="*", default=[3])
    ap.add_argument("--sizes", type=int, nargs="*", default=[])
    a = ap.parse_args()
    tigeom.init(arch=a.arch)
    for name, args in small_cases():
        tri = tigeom.weighted_delaunay(*args)
        print(f"{name}: {digest(tri)} {len(tri.simplices)} simplices, retries {tri.stats['retries']}, "
              f"exact cells {tri.stats['cells_recomputed_exactly']}", flush=True)
    for d in a.dims:
        rng = np.random.default_rng(0)
        for n in a.sizes:
            p = rng.random((n, d))
            for weighted in (False, True):
                w = rng.random(n) * (0.5 * n ** (-1 / d)) ** 2 if weighted else None
                best, tri = None, None
                for _ in range(2):
                    t0 = time.perf_counter()
                    tri = tigeom.weighted_delaunay(p, w)
                    dt = time.perf_counter() - t0
                    if best is None or dt < best[0]:
                        best = (dt, tri.stats["seconds"])
                print(f"{d}D {n} weighted={weighted}: {digest(tri)} {len(tri.simplices)} simplices", flush=True)
                print(f"  {d}D {n} weighted={weighted}: {best[0]:.3f} s {best[1]}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
