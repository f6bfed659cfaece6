"""The parallel power-cell pass: every live point's cell is clipped by the kernels, cells that
overflowed their scratch are rerun with more room, and the host certifies the result (each
simplex reported by all its cells) and recomputes disagreeing cells with exact arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
import logging
import time

import numpy as np

from .. import runtime
from .._core import device as _device
from .._core.launch import cpu_workers
from .._core.scan import sort_segments
from ..spatial import build_grid, grid_params
from ..spatial.grid import bounding_box, box_grid_params
from .assembly import CellLists
from .exact import Exact, exact_cell

logger = logging.getLogger("tigeom.delaunay")


class Laps:
    """Wall time of the named steps, into ``stats["seconds"]`` (device synchronised first)."""

    def __init__(self, stats: dict):
        self.stats = stats
        self.t0 = time.perf_counter()

    def __call__(self, key: str) -> None:
        runtime.sync()
        t1 = time.perf_counter()
        self.stats["seconds"][key] = round(t1 - self.t0, 4)
        self.t0 = t1


@dataclass
class CellSetup:
    """The inputs of the cell pass, on the host and as kernel arrays. The kernels see the points
    relabelled in grid order: label k is input point ``perm[k]``; labels below ``n_live`` are the
    live points (no duplicate) in grid order, the rest the duplicates. Neighbouring cells then
    read neighbouring rows (a call on 1e5 random points in 3D, 2 CPU cores: 2.8 s in the input's
    order, 2.5 s relabelled), and the symbolic perturbation ranks points by label."""

    src_pts: np.ndarray    # (n, d) float64, the input's order
    src_w: np.ndarray      # (n,) weights, the input's order
    perm_host: object      # (n,) int32 perm when the host has it, else None (see perm)
    n_live: int
    h: float               # grid cell size
    res: np.ndarray        # grid resolution (3,) int32
    wmax: float
    P: object              # kernel arrays, by label: points, weights, duplicate flags,
    Wd: object
    skip_d: object
    perm_d: object         # perm
    start: object          # the grid's CSR cell starts, ...
    order_d: object        # ... its point order (labels: 0, 1, ...), ...
    glo: object            # ... its origin (d,) ...
    res_d: object          # ... and resolution
    box: tuple             # (lo, hi) (d,) of the live points

    @property
    def n(self) -> int:
        return self.src_pts.shape[0]

    @property
    def d(self) -> int:
        return self.src_pts.shape[1]

    @property
    def live(self) -> np.ndarray:
        """Labels of the live points."""
        return np.arange(self.n_live)

    @cached_property
    def perm(self) -> np.ndarray:
        """(n,) int32: the input index of each label (fetched when first needed: only the
        exact recomputation and the rare paths read it on the host)."""
        if self.perm_host is not None:
            return self.perm_host
        return np.array(_device.fetch(self.perm_d), dtype=np.int32)

    @cached_property
    def pts(self) -> np.ndarray:
        """(n, d) points by label (host; only the exact recomputation reads them)."""
        return self.src_pts[self.perm]

    @cached_property
    def w(self) -> np.ndarray:
        """(n,) weights by label."""
        return self.src_w[self.perm]


def prepare(K, pts: np.ndarray, w: np.ndarray, twins, box: tuple, weighted: bool = True, P=None) -> CellSetup:
    """Upload the points, find the duplicates, sort the live points into a uniform grid and
    relabel every point by its place in the grid order (see CellSetup); ``box``: the points'
    bounding box (lo, hi); ``weighted``: False when w is all zeros (the device zeroes its copy);
    ``P``: the points as a kernel array when already uploaded.

    Duplicates are found on the device: every point goes into a grid, and ``K.grid_twins``
    compares the points of each cell (twins share a cell). The points of cells that hold more
    than ``K.TWIN_CAP`` points go to ``twins(pts, w)``, the host's search, instead. Without
    duplicates that grid, its cells sorted, is the cell pass's grid; with some, the live points
    get a grid of their own."""
    n, d = pts.shape
    up = _device.upload
    per_cell = 2.0 if d == 2 else 3.0
    lo, h, res = box_grid_params(_pad3(box[0]), _pad3(box[1]), n, per_cell)
    P = up(pts) if P is None else P  # P: the points already uploaded
    Wd = up(w) if weighted else _device.zeros((n,), np.float64)  # not the host's zeros over the bus
    P3 = _device.empty((n, 3), np.float64)
    K.pad3(P, P3)
    start, order_d = build_grid(P3, n, up(lo), h, up(res), sort=False)
    flag = _device.zeros((n,), np.int32)
    K.grid_twins(P3, Wd, start, order_d, K.TWIN_CAP, flag)
    del P3
    dup = _duplicate_mask(K, flag, pts, w, twins)  # None: no duplicates
    if dup is not None:
        live = np.flatnonzero(~dup)
        p3 = np.zeros((len(live), 3))
        p3[:, :d] = pts[live]
        lo, h, res = grid_params(p3, per_cell)
        start, order_live = build_grid(up(p3), len(live), up(lo), h, up(res))
        perm = np.concatenate([live[_device.fetch(order_live)], np.flatnonzero(dup)]).astype(np.int32)
        perm_d = up(perm)
        box = bounding_box(pts[live])
        wmax = float(w[live].max())
        n_live = len(live)
    else:
        sort_segments(start, order_d)  # as build_grid(sort=True) would
        perm_d, perm = order_d, None  # the host fetches the labels' order only if it needs it
        wmax = float(w.max()) if weighted else 0.0
        n_live = n
    Pl = _device.empty((n, d), np.float64)
    Wl = _device.empty((n,), np.float64)
    K.gather_points(P, Wd, perm_d, Pl, Wl)
    skip = _device.zeros((n,), np.int32)
    if n_live < n:
        K.skip_from(skip, n_live)
    order = _device.empty((n_live,), np.int32)  # the live labels in grid order: 0, 1, ...
    K.iota(order)
    return CellSetup(pts, w, perm, n_live, h, res, wmax, Pl, Wl, skip, perm_d, start, order,
                     up(lo[:d].copy()), up(res), box)


def _duplicate_mask(K, flag, pts, w, twins):
    """The duplicates as a host mask from the device flags of ``K.grid_twins`` (1: a twin, -1: in
    a crowded cell, which ``twins`` decides on the host), or None when there are none. Two
    counts come back first; the flags only when some are set."""
    counts = _device.zeros((2,), np.int32)
    K.flag_counts(flag, counts)
    found, crowded = (int(v) for v in _device.fetch(counts))
    if not (found or crowded):
        return None
    flag = _device.fetch(flag)
    dup = flag == 1
    crowded = np.flatnonzero(flag < 0)
    if len(crowded):
        dup[crowded] = twins(pts[crowded], w[crowded])  # ascending indices: ties keep the smaller
    return dup if dup.any() else None


def _pad3(v: np.ndarray) -> np.ndarray:
    out = np.zeros(3)
    out[:len(v)] = v
    return out


# Cell-kernel workers on a GPU (threads, each with its own scratch: about 5 KB in 2D, 10 KB in
# 3D, so 1.3 GB of scratch either way when the input has that many points). On an H200, 1e7
# points in 2D took 0.62-0.68 s in the cell kernel with 262,144 workers against 0.87-0.93 s with
# 65,536; 1e6 points in 3D 0.47 s with 131,072 against 0.49-0.50 s.
GPU_WORKERS = {2: 262144, 3: 131072}
# Threads per block of the cell kernels on a GPU (Taichi's default is 128). On an H200, 1e6
# points in 3D took 0.30 s in the cell kernel with 256 against 0.43 s with 128 (and 0.31 s with
# 512, 0.56 s with 1024).
GPU_BLOCK = {2: 256, 3: 256}


def schedule(m: int, nw: int, gpu: bool) -> tuple[int, int, int]:
    """(qa, qs, qlen): worker w of the cell kernels takes ids w qa, w qa + qs, ... below
    w qa + qlen. On a GPU neighbouring threads take neighbouring ids (strided); on the CPU each
    worker takes one contiguous run of the grid-ordered ids, so consecutive cells share their
    neighbours in cache."""
    if gpu:
        return 1, nw, m
    per = -(-m // nw)
    return per, 1, per


def _launch(K, s: CellSetup, ids, nw, cap, chunk, blo, bhi, prm, status, count, buf, counter) -> None:
    """One launch of the 2D or 3D cell kernel over the cells ``ids`` (None: every live cell)
    with ``nw`` workers."""
    d = s.d
    gpu = runtime.on_gpu()
    ids_d = s.order_d if ids is None else _device.upload(ids.astype(np.int32))
    m = s.n_live if ids is None else len(ids)
    ncand = 192 if d == 2 else 256
    block = GPU_BLOCK[d] if gpu else 0
    cand = _device.empty((nw, ncand), np.int32)
    cdist = _device.empty((nw, ncand), np.float64)
    common = (s.P, s.Wd, s.skip_d, ids_d, s.glo, s.res_d, s.start, s.order_d, blo, bhi, prm)
    if d == 2:
        planes = _device.empty((nw, 2, cap), np.int32)
        vy = _device.empty((nw, 2, cap, 2), np.float64)
        flag = _device.empty((nw, cap), np.int32)
        K.cells2d(*common, planes, vy, flag, cand, cdist, status, count, buf, counter, cap, chunk,
                  block, *schedule(m, nw, gpu))
    else:
        tri = _device.empty((nw, cap, 3), np.int32)
        pl = _device.empty((nw, cap), np.int32)
        vy = _device.empty((nw, cap, 3), np.float64)
        flag = _device.empty((nw, cap), np.int32)
        cl = _device.empty((nw, cap), np.int32)
        be = _device.empty((nw, cap, 2), np.int32)
        loc = _device.empty((nw, cap), np.int32)
        mk = _device.empty((nw, K.BOUNDARY_SLOTS), np.int64)
        K.cells3d(*common, tri, pl, vy, flag, cl, be, loc, mk, cand, cdist, status, count, buf, counter, cap, cap,
                  chunk, block, *schedule(m, nw, gpu))


def clip_cells(K, s: CellSetup, box_lo, box_hi, band: float, stats: dict):
    """Run the cell kernels until no cell overflows its scratch: ``(passes, status, count,
    status_host)``, passes being the (device buffer, rows used) of every run (a cell emits in
    one run only) and status_host the cells' final status bits, fetched."""
    n, d = s.n, s.d
    up = _device.upload
    blo, bhi = up(box_lo), up(box_hi)
    prm = up(np.array([s.h, s.wmax, band], np.float64))
    status = _device.zeros((n,), np.int32)
    count = _device.zeros((n,), np.int32)
    gpu = runtime.on_gpu()
    nworkers = GPU_WORKERS[d] if gpu else cpu_workers()
    cap = 64 if d == 2 else 128
    chunk = 1 if gpu else 64  # rows a worker reserves per atomic (see _emit)
    bufcap = int((6.5 if d == 2 else 30.0) * s.n_live) + 4096 + min(nworkers, s.n_live) * chunk
    ids = None  # every live cell, then those that overflowed
    passes = []
    while True:
        nw = max(1, min(nworkers, s.n_live if ids is None else len(ids)))
        buf = _device.empty((bufcap, d + 2), np.int32)
        counter = _device.zeros((1,), np.int32)
        _launch(K, s, ids, nw, cap, chunk, blo, bhi, prm, status, count, buf, counter)
        used = int(_device.fetch(counter)[0])
        if used > bufcap:
            bufcap = used + 1024
            stats["retries"] += 1
            continue
        # an overflowing cell emits nothing and is rerun with more room
        passes.append((buf, used))
        st_all = _device.fetch(status)
        if ids is None:
            over = np.flatnonzero((st_all[:s.n_live] & K.ST_OVERFLOW) != 0)
        else:
            over = ids[(st_all[ids] & K.ST_OVERFLOW) != 0]
        if len(over) == 0 or cap >= 4096:
            break
        ids = over
        cap *= 2
        stats["retries"] += 1
    return passes, status, count, st_all


def certify(K, s: CellSetup, cells: CellLists, status_all: np.ndarray, box_lo, box_hi, band: float,
            check: bool, stats: dict) -> None:
    """Recompute exactly the cells the kernels flagged (broken or overflowing) and, with
    ``check``, those that disagree with a neighbour, until all agree."""
    exact: list[Exact] = []  # made on the first recomputation: s.pts is gathered on first use

    def recompute(todo):
        if not exact:
            exact.append(Exact(s.pts, s.w))
        live_pts = s.pts[s.live]
        for i in sorted(todo):
            dist = ((live_pts - s.pts[i]) ** 2).sum(1)
            cand = s.live[np.argsort(dist, kind="stable")]
            cand = cand[cand != i]
            simp = exact_cell(i, exact[0], cand, box_lo, box_hi, band, s.wmax)
            cells.replace(i, simp or [])
        stats["exact_cells"] += len(todo)

    need_exact = set(np.flatnonzero((status_all & (K.ST_BROKEN | K.ST_OVERFLOW)) != 0).tolist())
    if need_exact:
        recompute(need_exact)
    if not check:
        return
    for _ in range(4):
        bad = cells.check(K)
        if not len(bad):
            return
        logger.info("weighted_delaunay: %d cells disagree with a neighbour; recomputing them exactly", len(bad))
        recompute(set(bad.tolist()))
    bad = cells.check(K)
    if len(bad):
        raise RuntimeError(f"weighted_delaunay: {len(bad)} power cells stay inconsistent after exact "
                           "recomputation; please report this input")


def cell_pass(K, s: CellSetup, margin: float, check: bool, stats: dict, laps: Laps, used):
    """Clip, certify and assemble every cell inside the bounding box plus ``margin``:
    ``(simp, ms, faces, nf, open)`` (see :meth:`CellLists.assemble`), the simplices' vertices
    marked in ``used``."""
    box_lo = s.box[0] - margin
    box_hi = s.box[1] + margin
    ext = s.box[1] - s.box[0]
    band = 1e-7 * float(ext.max() + 2 * margin)
    passes, status, count, status_all = clip_cells(K, s, box_lo, box_hi, band, stats)
    laps("cells")
    cells = CellLists.from_passes(K, s.n, s.d, passes, count)
    del passes
    certify(K, s, cells, status_all, box_lo, box_hi, band, check, stats)
    laps("check")
    out = cells.assemble(K, s.P, used)
    laps("assemble")
    return out
