"""First-call time of ``weighted_delaunay``, kernel compilation included: each case runs in a
fresh Python process whose Taichi offline cache points at an empty folder, so every kernel is
compiled. Prints the whole first call and the kernels whose first launch took longest (their
compile time, plus one run on 300 points).

    python benchmarks/bench_compile.py --arch cpu
    python benchmarks/bench_compile.py --arch cuda --dims 3
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
import numpy as np
import tigeom
from taichi.lang import kernel_impl

arch, dim = sys.argv[1], int(sys.argv[2])
first = {}
orig = kernel_impl.Kernel.__call__

def timed(self, *args, **kwargs):  # every launch of a kernel's first instance goes through here once
    name = self.func.__name__
    t0 = time.perf_counter()
    out = orig(self, *args, **kwargs)
    first.setdefault(name, time.perf_counter() - t0)
    return out

kernel_impl.Kernel.__call__ = timed
tigeom.init(arch=arch)
pts = np.random.default_rng(0).random((300, dim))
t0 = time.perf_counter()
tri = tigeom.weighted_delaunay(pts)
total = time.perf_counter() - t0
print(json.dumps({"total": total, "simplices": int(len(tri.simplices)),
                  "kernels": sorted(first.items(), key=lambda kv: -kv[1])[:6]}))
"""


def first_call(arch: str, dim: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TI_OFFLINE_CACHE_FILE_PATH=cache)
        out = subprocess.run([sys.executable, "-c", CHILD, arch, str(dim)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the {dim}D first call failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--dims", type=int, nargs="*", default=[3, 2])
    a = ap.parse_args()
    for dim in a.dims:
        r = first_call(a.arch, dim)
        ks = ", ".join(f"{k} {v:.1f} s" for k, v in r["kernels"][:4])
        print(f"{a.arch} {dim}D first call {r['total']:.1f} s ({r['simplices']} simplices); slowest first launches: {ks}",
              flush=True)


if __name__ == "__main__":
    main()
