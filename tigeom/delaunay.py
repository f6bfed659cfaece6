"""Weighted Delaunay (regular) triangulation in 2D and 3D, computed by Taichi kernels.

>>> tri = weighted_delaunay(points, weights)       # points (N, 2|3), weights (N,) or None
>>> tri.simplices, tri.faces, tri.hidden
>>> tri.neighbors                                   # (M, d+1) adjacency, -1 on the hull
>>> cells = tri.power_cells()                       # per point: neighbours and cell vertices

Algorithm (docs/delaunay.md): every point's power cell is clipped, in parallel, from a box
around the data by the power bisectors of its grid neighbours, visited ring by ring until a
security radius proves that no further point can cut it. Cell vertices made of bisectors name
the simplices. Decisions near a tie use the lifted predicate on input coordinates with a
floating-point filter and symbolic perturbation of the weights, so all cells agree. The host
then certifies the result: each simplex must be reported by all its d + 1 cells; cells that
disagree are recomputed with exact rational arithmetic. Simplices whose power centre falls
outside the box (thin ones on the convex hull) are added by gift wrapping from the boundary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
import os
import time
from fractions import Fraction
from itertools import combinations

import numpy as np

from . import _device, runtime
from ._keys import decode_keys, keys_fit, row_keys, unique_keys
from ._scan import ExclusiveScan, compact_rows
from ._validate import as_array, as_points

logger = logging.getLogger(__name__)

__all__ = ["weighted_delaunay", "Triangulation", "PowerCells"]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PowerCells:
    """The power diagram, cell by cell, in CSR form.

    ``neighbors[neighbor_ptr[i]:neighbor_ptr[i+1]]``: the points whose cells share a facet with
    point i's cell (its neighbours in the triangulation), sorted. ``vertex_ids[vertex_ptr[i]:
    vertex_ptr[i+1]]``: rows of ``vertices`` (the power centres of the simplices around i) that
    are the finite corners of i's cell. ``unbounded[i]``: the cell is infinite (i on the hull).
    Hidden points have empty cells.
    """

    neighbor_ptr: np.ndarray
    neighbors: np.ndarray
    vertex_ptr: np.ndarray
    vertex_ids: np.ndarray
    vertices: np.ndarray
    unbounded: np.ndarray

    def cell(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(neighbour indices, cell vertex coordinates) of point i."""
        nb = self.neighbors[self.neighbor_ptr[i]:self.neighbor_ptr[i + 1]]
        return nb, self.vertices[self.vertex_ids[self.vertex_ptr[i]:self.vertex_ptr[i + 1]]]


@dataclass(frozen=True, eq=False)
class Triangulation:
    """A regular triangulation: numpy arrays, float64 coordinates, int64 indices.

    Attributes
    ----------
    points, weights : the input, (N, d) and (N,).
    simplices : (M, d+1), positively oriented (CCW triangles, positive-volume tets).
    hidden : (N,) bool, points that are no vertex (redundant, or a duplicate no heavier than
        its twin).
    faces : (K, d) unique (d-1)-faces, each row sorted ascending (rows in a fixed, deterministic order).
    stats : how the result was obtained (cells recomputed exactly, hull simplices wrapped, ...).
    """

    points: np.ndarray
    weights: np.ndarray
    simplices: np.ndarray
    hidden: np.ndarray
    faces: np.ndarray
    stats: dict = field(default_factory=dict, repr=False)

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    @property
    def neighbors(self) -> np.ndarray:
        """(M, d+1): the simplex across the face opposite vertex k of each simplex, -1 on the hull."""
        cache = self.stats.setdefault("_cache", {})
        if "neighbors" not in cache:
            cache["neighbors"] = _adjacency(self.simplices)
        return cache["neighbors"]

    @property
    def power_centers(self) -> np.ndarray:
        """(M, d): the power centre (orthocentre) of every simplex: the power diagram's vertices."""
        cache = self.stats.setdefault("_cache", {})
        if "centers" not in cache:
            cache["centers"] = _orthocenters(self.points, self.weights, self.simplices)
        return cache["centers"]

    def power_cells(self) -> PowerCells:
        """Power cells of all points (see :class:`PowerCells`)."""
        n, d = self.points.shape
        s = self.simplices
        m = len(s)
        # cell vertices: the simplices around each point
        owner = s.reshape(-1)
        sid = np.repeat(np.arange(m), d + 1)
        order = np.argsort(owner, kind="stable")
        vptr = np.zeros(n + 1, np.int64)
        vptr[1:] = np.cumsum(np.bincount(owner, minlength=n))
        vids = sid[order]
        # neighbours: the edges of the triangulation, as int64 keys lo * n + hi (sorting 1D keys
        # is ~10x faster than np.unique(axis=0) on rows: 4.7 s -> 0.5 s at 1e5 points in 3D)
        e = np.concatenate([s[:, [a, b]] for a, b in combinations(range(d + 1), 2)])
        e = decode_keys(unique_keys(row_keys(np.sort(e, axis=1), n)), n, 2)
        both = np.concatenate([e, e[:, ::-1]])
        both = both[np.argsort(row_keys(both, n))]
        src, dst = both[:, 0], both[:, 1].copy()
        nptr = np.zeros(n + 1, np.int64)
        nptr[1:] = np.cumsum(np.bincount(src, minlength=n))
        unb = np.zeros(n, bool)
        hull = self.hull_faces()
        unb[hull.reshape(-1)] = True
        return PowerCells(nptr, dst, vptr, vids, self.power_centers, unb)

    def hull_faces(self) -> np.ndarray:
        """(H, d): the faces on the convex hull (one simplex only), sorted rows."""
        nb = self.neighbors
        rows, k = np.nonzero(nb < 0)
        d = self.dim
        f = np.array([[c for c in range(d + 1) if c != kk] for kk in range(d + 1)])
        out = np.take_along_axis(self.simplices[rows], f[k], axis=1) if len(rows) else np.zeros((0, d), np.int64)
        return np.sort(out, axis=1)

    def volume(self) -> float:
        """Total area (2D) or volume (3D) of the simplices."""
        return float(np.abs(_signed_volumes(self.points, self.simplices)).sum())


# --------------------------------------------------------------------------- helpers (numpy)


def _signed_volumes(p: np.ndarray, s: np.ndarray) -> np.ndarray:
    if len(s) == 0:
        return np.zeros(0)
    p0 = p[s[:, 0]]
    a, b = p[s[:, 1]] - p0, p[s[:, 2]] - p0
    if p.shape[1] == 2:
        return 0.5 * (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])
    c = p[s[:, 3]] - p0
    return np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0


def _orthocenters(p, w, s) -> np.ndarray:
    if len(s) == 0:
        return np.zeros((0, p.shape[1]))
    p0 = p[s[:, 0]]
    e = p[s[:, 1:]] - p0[:, None, :]
    rhs = 0.5 * ((e * e).sum(-1) - w[s[:, 1:]] + w[s[:, :1]])
    return p0 + np.linalg.solve(e, rhs[..., None])[..., 0]


def _adjacency(s: np.ndarray, require_manifold: bool = False) -> np.ndarray:
    """(M, k): the simplex across the facet opposite local vertex c, -1 on the boundary.

    ``require_manifold``: ValueError (naming ``tets``/``simplices``) when a facet is shared by
    more than two simplices; otherwise such facets pair up arbitrarily.
    """
    m, k = s.shape
    nb = -np.ones((m, k), np.int64)
    if m == 0:
        return nb
    f = np.concatenate([np.sort(np.delete(s, c, axis=1), axis=1) for c in range(k)]).astype(np.int64)
    sid = np.tile(np.arange(m), k)
    opp = np.repeat(np.arange(k), m)
    n = int(f.max()) + 1
    if keys_fit(n, k - 1):  # one int64 key per facet: a 1D sort, ~3x faster than lexsort
        key = row_keys(f, n)
        order = np.argsort(key, kind="stable")
        ks = key[order]
        same = ks[1:] == ks[:-1]
    else:
        order = np.lexsort(f.T[::-1])
        fs = f[order]
        same = np.all(fs[1:] == fs[:-1], axis=1)
    if require_manifold and (same[1:] & same[:-1]).any():
        name = "tets" if k == 4 else "simplices"
        raise ValueError(f"{name}: a face is shared by more than two {name} (the mesh is not a manifold)")
    a, b = order[:-1][same], order[1:][same]
    nb[sid[a], opp[a]] = sid[b]
    nb[sid[b], opp[b]] = sid[a]
    return nb


# --------------------------------------------------------------------------- exact fallback


def _fr(x) -> list[Fraction]:
    return [Fraction(float(v)) for v in x]


def _det_exact(rows: list[list[Fraction]]) -> Fraction:
    a = [list(r) for r in rows]
    n = len(a)
    det = Fraction(1)
    for c in range(n):
        piv = next((r for r in range(c, n) if a[r][c] != 0), None)
        if piv is None:
            return Fraction(0)
        if piv != c:
            a[c], a[piv] = a[piv], a[c]
            det = -det
        det *= a[c][c]
        for r in range(c + 1, n):
            if a[r][c] != 0:
                f = a[r][c] / a[c][c]
                a[r] = [x - f * y for x, y in zip(a[r], a[c])]
    return det


class _Exact:
    """Exact rational predicates with the same symbolic perturbation as the kernels."""

    def __init__(self, points: np.ndarray, weights: np.ndarray):
        self.p = points
        self.w = weights
        self._pf: dict[int, list[Fraction]] = {}
        self._wf: dict[int, Fraction] = {}

    def pt(self, i):
        if i not in self._pf:
            self._pf[i] = _fr(self.p[i])
            self._wf[i] = Fraction(float(self.w[i]))
        return self._pf[i], self._wf[i]

    def orient(self, idx) -> int:
        """Sign of the homogeneous det [x 1] of the sorted points idx."""
        rows = [self.pt(i)[0] + [Fraction(1)] for i in idx]
        d = _det_exact(rows)
        return (d > 0) - (d < 0)

    def lifted(self, idx) -> int:
        """Sign of the homogeneous det [x |x|^2-w 1] of sorted idx, perturbed weights."""
        rows = []
        for i in idx:
            x, w = self.pt(i)
            rows.append(x + [sum(v * v for v in x) - w, Fraction(1)])
        d = _det_exact(rows)
        if d != 0:
            return (d > 0) - (d < 0)
        dim = len(idx) - 2
        for r in range(len(idx)):
            h = self.orient([v for q, v in enumerate(idx) if q != r])
            if h != 0:
                return (-1 if (r + dim) % 2 == 0 else 1) * h
        return 0

    def conflict(self, i, S, j) -> bool:
        u = [i, *S]
        h = self.orient(sorted(u)) * _parity(u)
        if h == 0:
            return False
        v = u + [j]
        return self.lifted(sorted(v)) * _parity(v) * h > 0


def _parity(v) -> int:
    v = list(v)
    par = 1
    for a in range(len(v)):
        for b in range(len(v) - 1 - a):
            if v[b] > v[b + 1]:
                v[b], v[b + 1] = v[b + 1], v[b]
                par = -par
    return par


def _solve_exact(A: list[list[Fraction]], b: list[Fraction]) -> list[Fraction] | None:
    n = len(A)
    M = [list(A[r]) + [b[r]] for r in range(n)]
    for c in range(n):
        piv = next((r for r in range(c, n) if M[r][c] != 0), None)
        if piv is None:
            return None
        M[c], M[piv] = M[piv], M[c]
        for r in range(n):
            if r != c and M[r][c] != 0:
                f = M[r][c] / M[c][c]
                M[r] = [x - f * y for x, y in zip(M[r], M[c])]
    return [M[r][n] / M[r][r] for r in range(n)]


def _exact_cell(i: int, ex: _Exact, cand: np.ndarray, box_lo, box_hi, band, wmax) -> list[tuple] | None:
    """Power cell of point i with exact arithmetic; returns its simplices (sorted tuples of the
    other d points) or None when the cell is empty (hidden). ``cand``: candidate points sorted by
    distance from p_i."""
    p, w = ex.p, ex.w
    d = p.shape[1]
    pi, wi = ex.pt(i)

    def plane(pid):
        if pid >= 0:
            x, wj = ex.pt(pid)
            dv = [a - b for a, b in zip(x, pi)]
            return [2 * v for v in dv], sum(v * v for v in dv) - wj + wi
        k = -1 - pid
        ax, side = divmod(k, 2)
        n = [Fraction(0)] * d
        if side == 0:
            n[ax] = Fraction(-1)
            return n, -(Fraction(float(box_lo[ax])) - pi[ax])
        n[ax] = Fraction(1)
        return n, Fraction(float(box_hi[ax])) - pi[ax]

    verts: dict[frozenset, list[Fraction]] = {}
    for bits in range(2 ** d):
        ids = [-1 - (2 * a + ((bits >> a) & 1)) for a in range(d)]
        rows = [plane(q) for q in ids]
        verts[frozenset(ids)] = _solve_exact([r[0] for r in rows], [r[1] for r in rows])
    for j in cand:
        j = int(j)
        R2 = max(sum(float(v) ** 2 for v in y) for y in verts.values())
        dist = float(np.sqrt(((p[j] - p[i]) ** 2).sum()))
        R = np.sqrt(R2)
        if dist > (R + np.sqrt(R2 + max(wmax - float(w[i]), 0.0))) * (1 + 1e-9):
            break
        nj, cj = plane(j)
        out = {}
        for key, y in verts.items():
            if all(q >= 0 for q in key):
                out[key] = ex.conflict(i, sorted(key), j)
                continue
            g = sum(a * b for a, b in zip(nj, y)) - cj
            if g != 0:
                out[key] = g > 0
                continue
            # tie at a box vertex: the sign of dg under the weight perturbation (as in the kernels)
            keys = sorted(key)
            rows = [plane(q)[0] for q in keys]
            u = _solve_exact([list(col) for col in zip(*rows)], nj)
            coef = {j: Fraction(1), i: sum(u[a] for a, q in enumerate(keys) if q >= 0) - 1}
            for a, q in enumerate(keys):
                if q >= 0:
                    coef[q] = -u[a]
            first = min(k for k, v in coef.items() if v != 0)
            out[key] = coef[first] > 0
        if not any(out.values()):
            continue
        if all(out.values()):
            return None
        new = {}
        for u, fu in out.items():
            if not fu:
                continue
            for v, fv in out.items():
                if fv:
                    continue
                shared = u & v
                if len(shared) == d - 1:
                    key = shared | {j}
                    if key not in new:
                        rows = [plane(q) for q in key]
                        y = _solve_exact([r[0] for r in rows], [r[1] for r in rows])
                        if y is not None:
                            new[key] = y
        verts = {k: y for k, y in verts.items() if not out[k]}
        verts.update(new)
    simp = []
    for key, y in verts.items():
        if all(q >= 0 for q in key):
            x = _orthocenters(p, w, np.array([sorted([i, *key])]))[0]
            if np.all(x > box_lo + band) and np.all(x < box_hi - band):
                simp.append(tuple(sorted(key)))
    return sorted(simp)


# --------------------------------------------------------------------------- main entry


def _validate(points, weights):
    pts = as_points(points, "points")
    n, d = pts.shape
    if weights is None:
        w = np.zeros(n)
    else:
        w = as_array(weights, "weights")
        if w.ndim != 1 or len(w) != n:
            raise ValueError(f"weights: expected shape ({n},) to match points, got {w.shape}")
    dup = _duplicates(pts, w)
    uniq = pts[~dup]
    if len(uniq) < d + 1:
        raise ValueError(f"points: need at least {d + 1} distinct points in {d}D, got {len(uniq)}")
    c = uniq - uniq.mean(0)
    sv = np.linalg.svd(c, compute_uv=False)
    if sv[-1] <= 1e-12 * sv[0]:
        what = "one line" if d == 2 else "one plane"
        raise ValueError(f"points: all points lie on {what}; the triangulation would be degenerate")
    return pts, w, dup


def _duplicates(pts: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mask of points hidden by a twin at the same position: the heavier stays, ties keep the
    smaller index."""
    n = len(pts)
    order = np.lexsort((np.arange(n), -w, *pts.T[::-1]))
    ps = pts[order]
    same = np.zeros(n, bool)
    same[1:] = np.all(ps[1:] == ps[:-1], axis=1)
    dup = np.zeros(n, bool)
    dup[order[same]] = True
    return dup


def weighted_delaunay(points, weights=None, *, check: bool = True) -> Triangulation:
    """Regular (weighted Delaunay) triangulation of ``points`` (N, 2|3) with ``weights`` (N,).

    The power distance of x to point i is |x - p_i|^2 - w_i; zero weights (None) give the
    Delaunay triangulation. In general position the result is the lower convex hull of the
    lifted points (p, |p|^2 - w); degenerate inputs (grids, co-circular points) get a valid
    triangulation chosen by symbolic perturbation, the same on every run.

    ``check`` (default True) certifies that neighbouring cells agree and recomputes the cells
    that do not with exact arithmetic; switching it off saves one pass.

    Raises ValueError for a wrong shape or dimension, NaN/inf, weights of the wrong length,
    fewer than d + 1 distinct points, or all points on one line (2D) / plane (3D).
    """
    pts, w, dup = _validate(points, weights)
    runtime.ensure_init()
    from . import _delaunay_kernels as K
    from .spatial import build_grid, grid_params

    def lap(key, t0):
        runtime.sync()
        t1 = time.perf_counter()
        stats["seconds"][key] = round(t1 - t0, 4)
        return t1

    n, d = pts.shape
    stats: dict = {"exact_cells": 0, "wrapped": 0, "retries": 0, "seconds": {}}
    t0 = time.perf_counter()
    skip = dup.astype(np.int32)
    live = np.flatnonzero(~dup)

    # grid over the live points; the clipping box is the bounding box plus a margin
    p3 = np.zeros((n, 3))
    p3[:, :d] = pts
    lo, h, res = grid_params(p3[live], 2.0 if d == 2 else 3.0)
    ext = pts[live].max(0) - pts[live].min(0)

    up = _device.upload
    P, Wd, skip_d = up(pts), up(w), up(skip)
    p3live = up(p3[live])
    start, order_live = build_grid(p3live, len(live), up(lo), h, up(res))
    order = live.astype(np.int32)[_device.fetch(order_live)]  # grid order, global indices
    order_d = up(order)
    glo, res_d = up(lo[:d].copy()), up(res)
    wmax = float(w[live].max())
    t0 = lap("setup", t0)

    def cell_pass(margin, t0):
        box_lo = pts[live].min(0) - margin
        box_hi = pts[live].max(0) + margin
        band = 1e-7 * float(ext.max() + 2 * margin)
        blo, bhi = up(box_lo), up(box_hi)
        prm = up(np.array([h, wmax, band], np.float64))
        status = _device.zeros((n,), np.int32)
        count = _device.zeros((n,), np.int32)
        gpu = runtime.on_gpu()
        nworkers = 65536 if gpu else 64 * max(os.cpu_count() or 1, 1)
        cap = 64 if d == 2 else 128
        chunk = 1 if gpu else 64  # rows a worker reserves per atomic (see _emit)
        bufcap = int((6.5 if d == 2 else 30.0) * len(live)) + 4096 + min(nworkers, len(live)) * chunk
        ids = order

        passes = []  # (device buffer, rows used) of every run; a cell emits in one run only
        while True:
            nw = max(1, min(nworkers, len(ids)))
            buf = _device.empty((bufcap, d + 2), np.int32)
            counter = _device.zeros((1,), np.int32)
            ids_d = up(ids.astype(np.int32))
            cand = _device.empty((nw, 192 if d == 2 else 256), np.int32)
            cdist = _device.empty((nw, 192 if d == 2 else 256), np.float64)
            if d == 2:
                planes = _device.empty((nw, 2, cap), np.int32)
                vy = _device.empty((nw, 2, cap, 2), np.float64)
                flag = _device.empty((nw, cap), np.int32)
                K.cells2d(P, Wd, skip_d, ids_d, glo, res_d, start, order_d, blo, bhi, prm,
                          planes, vy, flag, cand, cdist, status, count, buf, counter, cap, chunk,
                          *_cells_schedule(len(ids), nw, gpu))
            else:
                pcap = cap
                tri = _device.empty((nw, cap, 3), np.int32)
                pl = _device.empty((nw, pcap), np.int32)
                vy = _device.empty((nw, cap, 3), np.float64)
                flag = _device.empty((nw, cap), np.int32)
                cl = _device.empty((nw, cap), np.int32)
                be = _device.empty((nw, cap, 2), np.int32)
                K.cells3d(P, Wd, skip_d, ids_d, glo, res_d, start, order_d, blo, bhi, prm,
                          tri, pl, vy, flag, cl, be, cand, cdist, status, count, buf, counter, cap, pcap, chunk,
                          *_cells_schedule(len(ids), nw, gpu))
            used = int(_device.fetch(counter)[0])
            if used > bufcap:
                bufcap = used + 1024
                stats["retries"] += 1
                continue
            # an overflowing cell emits nothing and is rerun with more room
            passes.append((buf, used))
            st = _device.fetch(status)[ids]
            over = ids[(st & K.ST_OVERFLOW) != 0]
            if len(over) == 0 or cap >= 4096:
                break
            ids = over
            cap *= 2
            stats["retries"] += 1

        t0 = lap("cells", t0)
        st_all = _device.fetch(status).copy()
        cells = _CellLists.from_passes(K, n, d, passes, count)
        del passes
        exact = _Exact(pts, w)
        need_exact = set(np.flatnonzero((st_all & (K.ST_BROKEN | K.ST_OVERFLOW)) != 0).tolist())

        def recompute(cells_to_do):
            live_pts = pts[live]
            for i in sorted(cells_to_do):
                dist = ((live_pts - pts[i]) ** 2).sum(1)
                cand = live[np.argsort(dist, kind="stable")]
                cand = cand[cand != i]
                simp = _exact_cell(i, exact, cand, box_lo, box_hi, band, wmax)
                cells.replace(i, simp or [])
            stats["exact_cells"] += len(cells_to_do)

        if need_exact:
            recompute(need_exact)
        if check:
            for _ in range(4):
                bad = cells.check(K)
                if not len(bad):
                    break
                logger.info("weighted_delaunay: %d cells disagree with a neighbour; recomputing them exactly", len(bad))
                recompute(set(bad.tolist()))
            else:
                bad = cells.check(K)
                if len(bad):
                    raise RuntimeError(f"weighted_delaunay: {len(bad)} power cells stay inconsistent after exact "
                                       "recomputation; please report this input")

        t0 = lap("check", t0)
        simplices, faces_rows = cells.assemble(K)
        t0 = lap("assemble", t0)
        return simplices, faces_rows, t0

    # the box is the bounding box plus a cell; when no cell of the triangulation falls inside it
    # (a few points with weights far larger than their spacing), widen it and try again
    margin = 1.0 * h
    for _attempt in range(4):
        simplices, faces_rows, t0 = cell_pass(margin, t0)
        if len(simplices):
            break
        margin = 1000.0 * margin + float(np.sqrt(max(wmax - float(w[live].min()), 0.0)))
        stats["retries"] += 1

    # hull completion: boundary faces of what the cells produced, wrapped outward
    grid = (glo, res_d, start, order_d, up(np.array([h, wmax], np.float64)), *_wrap_boxes(K, P, start, order_d, res, d))
    simplices, faces = _complete_hull(K, P, Wd, skip_d, grid, simplices, faces_rows, d, stats)
    t0 = lap("hull", t0)
    # hidden = no vertex. A cell that lies wholly outside the clipping box (possible next to very
    # heavy points) comes out empty from the clipping, but its simplices are found by the wrapping.
    hidden = np.ones(n, bool)
    hidden[simplices.reshape(-1)] = False
    simplices = _orient(K, P, simplices)
    faces = faces if len(faces) else faces.reshape(0, d)
    lap("finish", t0)
    stats["cells_recomputed_exactly"] = stats.pop("exact_cells")
    return Triangulation(pts, w, simplices.astype(np.int64, copy=False), hidden, faces.astype(np.int64, copy=False),
                         stats)


def _cells_schedule(m: int, nw: int, gpu: bool) -> tuple[int, int, int]:
    """(qa, qs, qlen): worker w of the cell kernels takes ids w qa, w qa + qs, ... below
    w qa + qlen. On a GPU neighbouring threads take neighbouring ids (strided); on the CPU each
    worker takes one contiguous run of the grid-ordered ids, so consecutive cells share their
    neighbours in cache."""
    if gpu:
        return 1, nw, m
    per = -(-m // nw)
    return per, 1, per


class _CellLists:
    """Per-cell simplex lists in CSR form by owner point, as device arrays: ``lst`` (rows, d) and
    ``off`` (n + 1,), int32. Cells recomputed exactly on the host replace their rows."""

    def __init__(self, n, d, lst, off, rows):
        self.n, self.d = n, d
        self.lst, self.off, self.rows = lst, off, rows
        self.override: dict[int, list[tuple]] = {}

    @classmethod
    def from_passes(cls, K, n, d, passes, count):
        """Scatter the rows (i, k, S) that the cell kernels emitted to row off[i] + k."""
        total = int(_device.fetch(count).sum(dtype=np.int64))
        if d * total >= 2 ** 31:
            raise MemoryError(f"weighted_delaunay: {total} cell entries exceed the kernels' int32 indexing")
        off = _device.empty((n + 1,), np.int32)
        ExclusiveScan(n).run(count, off, n)
        lst = _device.empty((max(total, 1), d), np.int32)
        for buf, used in passes:
            if used:
                K.scatter_rows(buf, used, off, lst, d)
        return cls(n, d, lst, off, total)

    def replace(self, i, simp):
        self.override[i] = simp

    def _materialise(self):
        if not self.override:
            return
        old_off = _device.fetch(self.off).astype(np.int64)
        old_lst = _device.fetch(self.lst, self.rows)
        counts = np.diff(old_off)
        for i, s in self.override.items():
            counts[i] = len(s)
        off = np.zeros(self.n + 1, np.int64)
        off[1:] = np.cumsum(counts)
        lst = np.zeros((int(off[-1]), self.d), np.int32)
        keep = np.ones(self.n, bool)
        keep[list(self.override)] = False
        # copy untouched cells in one go
        old_owner = np.repeat(np.arange(self.n), np.diff(old_off))
        src = np.flatnonzero(keep[old_owner])
        dst = off[old_owner[src]] + (src - old_off[old_owner[src]])
        lst[dst] = old_lst[src]
        for i, s in self.override.items():
            if s:
                lst[off[i]:off[i + 1]] = np.array(s, np.int32)
        self.rows = len(lst)
        self.off = _device.upload(off.astype(np.int32))
        self.lst = _device.upload(lst if len(lst) else np.zeros((1, self.d), np.int32))
        self.override = {}

    def check(self, K) -> np.ndarray:
        self._materialise()
        bad = _device.zeros((self.n,), np.int32)
        if self.rows:
            K.check_cells(self.lst, self.off, bad, self.d)
        return np.flatnonzero(_device.fetch(bad))

    def assemble(self, K):
        """(simplices (M, d + 1), each owned by its smallest vertex, listed in cell order; face
        rows (face..., opposite, multiplicity within the owning cell)), numpy int32."""
        self._materialise()
        d, r = self.d, self.rows
        if d * r >= 2 ** 31:
            raise MemoryError(f"weighted_delaunay: {d * r} face slots exceed the kernels' int32 indexing")
        soff = _device.empty((r + 1,), np.int32)
        foff = _device.empty((r + 1,), np.int32)
        ms = nf = 0
        if r:
            own = _device.empty((r,), np.int32)
            nface = _device.empty((r,), np.int32)
            K.row_slots(self.lst, self.off, own, nface, d)
            scan = ExclusiveScan(r)
            scan.run(own, soff, r)
            scan.run(nface, foff, r)
            ms = int(_device.fetch(soff)[r])
            nf = int(_device.fetch(foff)[r])
        simp = _device.empty((max(ms, 1), d + 1), np.int32)
        fout = _device.empty((max(nf, 1), d + 2), np.int32)
        if r:
            K.cell_faces(self.lst, self.off, fout, foff, simp, soff, d)
        faces, nfk = compact_rows(fout, nf)
        return _device.fetch(simp, ms), _device.fetch(faces, nfk)


def _row_groups(rows: np.ndarray, n: int) -> np.ndarray:
    """Group id of every row of indices in [0, n): equal rows share an id, and ids follow the
    rows' lexicographic order (an int64 key sort when the rows fit one key, else lexsort)."""
    if len(rows) == 0:
        return np.zeros(0, np.int64)
    if keys_fit(n, rows.shape[1]):
        key = row_keys(rows, n)
        o = np.argsort(key, kind="stable")
        step = key[o[1:]] != key[o[:-1]]
    else:
        o = np.lexsort(rows.T[::-1])
        step = (rows[o[1:]] != rows[o[:-1]]).any(axis=1)
    g = np.empty(len(rows), np.int64)
    g[o] = np.concatenate([[0], np.cumsum(step)])
    return g


def _wrap_boxes(K, P, start, order, res, d):
    """The gift wrap's box hierarchy: point bounding boxes of the grid cells, of blocks of
    WRAP_B^3 cells and of superblocks of WRAP_B^3 blocks, each with its resolution."""
    B = K.WRAP_B
    bres = (res + B - 1) // B
    sres = (bres + B - 1) // B
    cbox = _device.empty((int(np.prod(res)), 6), np.float64)
    K.cell_boxes(P, start, order, cbox, d)
    bbox = _device.empty((int(np.prod(bres)), 6), np.float64)
    K.merge_boxes(cbox, _device.upload(res), bbox, _device.upload(bres))
    sbox = _device.empty((int(np.prod(sres)), 6), np.float64)
    K.merge_boxes(bbox, _device.upload(bres), sbox, _device.upload(sres))
    return cbox, bbox, _device.upload(bres), sbox, _device.upload(sres)


def _complete_hull(K, P, Wd, skip_d, grid, simplices, faces_rows, d, stats):
    """Add the simplices whose power centre lies outside the clipping box by gift wrapping from
    every face that has a simplex on one side only; a face with no point beyond it is on the hull.

    One kernel call per round finds the simplex beyond every open face; the host keeps the new
    simplices and opens those of their faces that nothing closes yet (numpy on row groups)."""
    n = P.shape[0]
    faces = faces_rows[:, :d]
    single = faces_rows[:, d + 1] == 1
    known = faces[single].astype(np.int64)  # the faces seen once so far (sorted rows) ...
    kcount = np.ones(len(known), np.int64)  # ... and how often they have been met
    front, fopp = known, faces_rows[single, d]
    new_s = np.zeros((0, d + 1), np.int64)
    new_f: list[np.ndarray] = []
    while len(front):
        out = _device.zeros((len(front),), np.int32)
        K.gift_wrap(P, Wd, skip_d, _device.upload(front.astype(np.int32)), _device.upload(fopp.astype(np.int32)),
                    out, *grid, d)
        q = _device.fetch(out, len(front)).astype(np.int64)
        ok = q >= 0
        s = np.sort(np.column_stack([front[ok], q[ok]]), axis=1)
        # keep each simplex once, and only if no earlier round found it
        g = _row_groups(np.concatenate([new_s, s]), n)
        seen = np.zeros(int(g.max()) + 1 if len(g) else 0, bool)
        seen[g[:len(new_s)]] = True
        gs = g[len(new_s):]
        _, first = np.unique(gs, return_index=True)
        s = s[first[~seen[gs[first]]]]
        new_s = np.concatenate([new_s, s])
        # their faces, each with its opposite vertex: known ones are met once more, fresh ones
        # are recorded with how often this round met them
        fa = np.concatenate([np.delete(s, k, axis=1) for k in range(d + 1)])
        op = s.T.reshape(-1)
        g = _row_groups(np.concatenate([known, fa]), n)
        slot = np.full(int(g.max()) + 1 if len(g) else 0, -1, np.int64)
        slot[g[:len(known)]] = np.arange(len(known))
        gf = slot[g[len(known):]]
        hit = gf >= 0
        np.add.at(kcount, gf[hit], 1)
        _, ufirst, ucount = np.unique(g[len(known):][~hit], return_index=True, return_counts=True)
        fa_new, op_new = fa[~hit][ufirst], op[~hit][ufirst]
        known = np.concatenate([known, fa_new])
        kcount = np.concatenate([kcount, ucount])
        new_f.append(fa_new)
        # a face met twice in this round is closed on both sides
        front, fopp = fa_new[ucount == 1], op_new[ucount == 1]
    stats["wrapped"] = len(new_s)
    if len(new_s):
        simplices = np.concatenate([simplices, new_s[np.argsort(_row_groups(new_s, n), kind="stable")]])
    if new_f:
        faces = np.concatenate([faces, *new_f])
    return simplices, faces


def _orient(K, P, s):
    """Simplices with positive signed volume (the first two vertices swapped where negative)."""
    d = P.shape[1]
    if len(s) == 0:
        return s.reshape(0, d + 1)
    s_d = _device.upload(s.astype(np.int32))
    K.orient_simplices(P, s_d, d)
    return _device.fetch(s_d)
