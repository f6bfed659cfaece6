"""Overhead of tigeom.batch: a batch of short runs on a local Dask cluster against the ideal,
the runs' own wall times summed and divided by the workers (measured in the same process).

    python benchmarks/bench_batch.py --runs 16 --workers 2
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time

from dask.distributed import Client, LocalCluster

from tigeom import batch


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--grid", action="append", default=["iters=1", "resolution=16", "n_target=500"],
                    help="sdf_fit configuration of every run (the seeds make the runs)")
    a = ap.parse_args(argv)
    out = tempfile.mkdtemp(prefix="tigeom-batch-bench-")
    cluster = LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    try:
        batch.run("sdf_fit", a.grid, seeds=a.workers, out=out + "/warm", progress=False, client=client)  # imports, kernels
        t = time.perf_counter()
        rows = batch.run("sdf_fit", a.grid, seeds=a.runs, out=out + "/timed", progress=False, client=client)
        wall = time.perf_counter() - t
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(out, ignore_errors=True)
    work = sum(float(r["wall_s"]) for r in rows)
    ideal = work / a.workers
    print(f"# {platform.processor() or platform.machine()}, {a.workers} local workers, {a.runs} runs of sdf_fit "
          f"({' '.join(a.grid)})")
    print("| runs | workers | mean run (s) | batch wall (s) | ideal (s) | batch / ideal |")
    print("|---|---|---|---|---|---|")
    print(f"| {a.runs} | {a.workers} | {work / len(rows):.2f} | {wall:.1f} | {ideal:.1f} | {wall / ideal:.2f} |")


if __name__ == "__main__":
    main()
