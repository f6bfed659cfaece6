"""Timing shared by the benchmarks that run on a device."""

from __future__ import annotations

import sys
import time

import tigeom


def best_synced(fn, reps: int = 10) -> float:
    """Best wall time (s) of ``fn()`` over ``reps`` calls after one warm-up call, each call
    waited for on the device (Taichi's runtime, and torch's CUDA stream when torch is loaded)."""
    torch = sys.modules.get("torch")

    def sync():
        tigeom.runtime.sync()
        if torch is not None and torch.cuda.is_available():
            torch.cuda.synchronize()

    fn()
    sync()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return min(ts)


def best_interleaved(fns, reps: int = 10) -> list:
    """Best wall time (s) of each function, the functions called in turn ``reps`` times (after
    one warm-up round), so that a machine's drift during the run affects them alike."""
    torch = sys.modules.get("torch")

    def sync():
        tigeom.runtime.sync()
        if torch is not None and torch.cuda.is_available():
            torch.cuda.synchronize()

    best = [float("inf")] * len(fns)
    for r in range(reps + 1):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            sync()
            if r:
                best[i] = min(best[i], time.perf_counter() - t)
    return best
