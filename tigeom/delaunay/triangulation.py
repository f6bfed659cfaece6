"""Weighted Delaunay (regular) triangulation in 2D and 3D: the public entry point and its results.

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

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from .. import runtime
from .._core import device as _device
from .._core.keys import decode_keys, row_keys, unique_keys
from .._core.validate import as_array, as_points
from ..spatial.grid import bounding_box
from .cells import Laps, cell_pass, prepare
from .hull import complete_hull, wrap_boxes
from .simplices import adjacency, orthocenters, signed_volumes

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
            cache["neighbors"] = adjacency(self.simplices)
        return cache["neighbors"]

    @property
    def power_centers(self) -> np.ndarray:
        """(M, d): the power centre (orthocentre) of every simplex: the power diagram's vertices."""
        cache = self.stats.setdefault("_cache", {})
        if "centers" not in cache:
            cache["centers"] = orthocenters(self.points, self.weights, self.simplices)
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
        return float(np.abs(signed_volumes(self.points, self.simplices)).sum())


# --------------------------------------------------------------------------- entry point


def unit_scale(lo: np.ndarray, hi: np.ndarray) -> float:
    """The power of two s that brings the largest side of the bounding box [lo, hi] into
    [0.5, 1). Multiplying by a power of two is exact in floating point (short of underflow), and
    the regular triangulation does not change when points scale by s and weights by s^2, so
    triangulating the scaled input gives the same simplices for any finite input scale, with
    every intermediate quantity of unit size."""
    half = float((hi * 0.5 - lo * 0.5).max())  # halves: no overflow
    if not half > 0.0:
        return 1.0
    _, e = np.frexp(half)  # half = m 2^e, m in [0.5, 1): the side is m 2^(e + 1)
    return float(np.ldexp(1.0, -(int(e) + 1)))


def _validate(K, points, weights):
    """(points, weights, scale, box, P): the input checked and scaled by ``unit_scale`` (weights
    by its square), the scaled points' bounding box (lo, hi), and the points as a kernel array
    (None when scaled: the kernels then get the scaled copy). The box and the count of NaN and
    infinite coordinates come from one kernel over the uploaded points. Duplicates and flatness
    are checked after the grid is built (``_check_spread``)."""
    pts = as_points(points, "points", finite=False)
    n, d = pts.shape
    if n < d + 1:
        raise ValueError(f"points: need at least {d + 1} distinct points in {d}D, got {n}")
    P = _device.upload(pts)
    box = _device.upload(np.array([[np.inf] * 3, [-np.inf] * 3]))
    bad = _device.zeros((1,), np.int32)
    K.point_box(P, box, bad)
    lo, hi = (np.array(r[:d]) for r in _device.fetch(box))
    if int(_device.fetch(bad)[0]):
        as_points(points, "points")  # raises, with the count
    if weights is None:
        w = np.zeros(n)
    else:
        w = as_array(weights, "weights")
        if w.ndim != 1 or len(w) != n:
            raise ValueError(f"weights: expected shape ({n},) to match points, got {w.shape}")
    scale = unit_scale(lo, hi)
    if scale != 1.0:
        P = None
        pts = pts * scale
        lo, hi = lo * scale, hi * scale
        with np.errstate(over="ignore", under="ignore"):
            w = w * scale * scale
        if not np.isfinite(w).all():
            raise ValueError("weights: too large for the points' extent (a weight beyond about 1e300 times the "
                             "squared side of the points' bounding box)")
    return pts, w, scale, (lo, hi), P


FLAT_SAMPLE = 65536  # the flatness test looks at a strided sample of this many points first


def _check_spread(uniq: np.ndarray, box: tuple | None = None) -> None:
    """ValueError unless the distinct points ``uniq`` (M, d) number at least d + 1 and do not
    all lie on one line (2D) or plane (3D): the smallest singular value of the centred points
    must exceed 1e-12 times the largest.

    Above FLAT_SAMPLE points a strided sample decides first: the full set's smallest singular
    value is at least the sample's (its sum of squares along any direction only grows, and the
    sample's own mean minimises the sample's part), and its largest is at most sqrt(M) times the
    bounding box's diagonal. So a sample whose smallest value exceeds 1e-12 sqrt(M) times the
    diagonal proves the full test passes; otherwise the full set is tested."""
    m, d = uniq.shape
    if m < d + 1:
        raise ValueError(f"points: need at least {d + 1} distinct points in {d}D, got {m}")
    if m > FLAT_SAMPLE:
        smp = uniq[::m // FLAT_SAMPLE]
        sv = np.linalg.svd(smp - smp.mean(0), compute_uv=False)
        lo, hi = bounding_box(uniq) if box is None else box
        if sv[-1] > 1e-12 * np.sqrt(m) * float(np.linalg.norm(hi - lo)):
            return
    sv = np.linalg.svd(uniq - uniq.mean(0), compute_uv=False)
    if sv[-1] <= 1e-12 * sv[0]:
        what = "one line" if d == 2 else "one plane"
        raise ValueError(f"points: all points lie on {what}; the triangulation would be degenerate")


def _duplicates(pts: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mask of points hidden by a twin at the same position: the heavier stays, ties keep the
    smaller index.

    Twins have equal coordinates, so they share a hash of their coordinates' bits: one sort of
    one uint64 key per point finds the few points whose key is not unique, and only those go
    through the exact comparison (a lexicographic sort), which also separates hash collisions.
    At 1e6 points this takes a fraction of the time of sorting every point lexicographically."""
    n = len(pts)
    key = _coord_keys(pts)
    order = np.argsort(key)  # the order among equal keys does not matter: they go to the exact pass
    ks = key[order]
    shared = np.zeros(n, bool)
    shared[1:] = ks[1:] == ks[:-1]
    shared[:-1] |= shared[1:]
    cand = np.sort(order[shared])  # points whose key another point has
    dup = np.zeros(n, bool)
    if len(cand):
        dup[cand] = _duplicates_exact(pts[cand], w[cand])
    return dup


def _coord_keys(pts: np.ndarray) -> np.ndarray:
    """One uint64 hash per point of its coordinates' bits (equal coordinates, equal keys)."""
    bits = np.ascontiguousarray(pts + 0.0, np.float64).view(np.uint64)  # + 0.0: -0.0 gets 0.0's bits
    key = np.zeros(len(pts), np.uint64)
    with np.errstate(over="ignore"):
        for j, mult in enumerate((0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)[:pts.shape[1]]):
            key ^= bits[:, j] * np.uint64(mult)
            key ^= key >> np.uint64(29)
    return key


def _duplicates_exact(pts: np.ndarray, w: np.ndarray) -> np.ndarray:
    """:func:`_duplicates` by a lexicographic sort of every point (its reference); ``pts`` in
    index order, so ties keep the smaller index."""
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

    Any finite input scale works: the points are scaled internally by the power of two that
    brings their bounding box to unit size (weights by its square), which is exact and leaves
    the triangulation unchanged (``stats["scale"]``).

    Raises ValueError for a wrong shape or dimension, NaN/inf, weights of the wrong length,
    fewer than d + 1 distinct points, or all points on one line (2D) / plane (3D).
    """
    stats: dict = {"exact_cells": 0, "wrapped": 0, "retries": 0, "seconds": {}}
    laps = Laps(stats)
    runtime.ensure_init()
    from . import _kernels as K

    pts, w, scale, box, P = _validate(K, points, weights)
    n, d = pts.shape
    s = prepare(K, pts, w, _duplicates, box, weights is not None, P)
    if s.n_live == n:
        _check_spread(pts, box)
    else:
        _check_spread(pts[s.perm[:s.n_live]])
    laps("setup")
    used = _device.zeros((n,), np.int32)  # vertices of the simplices, marked as they are oriented
    simp, ms, faces_d, nf, open_rows = _cells_in_box(K, s, check, stats, laps, used)
    # hull completion: boundary faces of what the cells produced, wrapped outward
    grid = (s.glo, s.res_d, s.start, s.order_d, _device.upload(np.array([s.h, s.wmax], np.float64)),
            *wrap_boxes(K, s.P, s.start, s.order_d, s.res, d))
    wrapped_d, nw, new_d, nnew = complete_hull(K, s.P, s.Wd, s.skip_d, grid, *open_rows, d, stats)
    if nw:
        K.orient_simplices(s.P, wrapped_d, nw, used, d)
    laps("hull")
    # hidden = no vertex. A cell that lies wholly outside the clipping box (possible next to very
    # heavy points) comes out empty from the clipping, but its simplices are found by the wrapping.
    # (the kernels' labels are grid positions: the outputs go back to the input's indices)
    hid = _device.empty((n,), np.uint8)
    K.hidden_mask(used, s.perm_d, hid)
    hidden = _device.fetch(hid).view(bool)
    simplices = _stack_int64(K, simp, ms, wrapped_d, nw, d + 1, s.perm_d, False)
    faces = _stack_int64(K, faces_d, nf, new_d, nnew, d, s.perm_d, True)
    laps("finish")
    stats["cells_recomputed_exactly"] = stats.pop("exact_cells")
    stats["scale"] = scale
    if scale != 1.0:  # the caller's points and weights, not the scaled copies
        pts = as_points(points, "points")
        w = np.zeros(n) if weights is None else as_array(weights, "weights")
    return Triangulation(pts, w, simplices, hidden, faces, stats)


def _stack_int64(K, a, na: int, b, nb: int, cols: int, label, sort_rows: bool) -> np.ndarray:
    """The first na rows of the device array a, then the first nb of b, fetched as one int64
    array of ``cols`` columns, each entry k replaced by label[k] (and each row sorted with
    ``sort_rows``): relabelled, converted and stacked on the device."""
    if na + nb == 0:
        return np.zeros((0, cols), np.int64)
    out = _device.empty((na + nb, cols), np.int64)
    K.stack_int64(a, na, b, nb, label, out, cols, sort_rows)
    return _device.fetch(out)


def _cells_in_box(K, s, check: bool, stats: dict, laps: Laps, used):
    """The cell pass over the bounding box plus one grid cell; when no cell of the triangulation
    falls inside it (a few points with weights far larger than their spacing), widen the box and
    try again."""
    margin = 1.0 * s.h
    for _attempt in range(4):
        out = cell_pass(K, s, margin, check, stats, laps, used)
        if out[1]:
            break
        margin = 1000.0 * margin + float(np.sqrt(max(s.wmax - float(s.w[s.live].min()), 0.0)))
        stats["retries"] += 1
    return out
