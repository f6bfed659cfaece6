"""Closed polygons for bodies, and their signed distance (numpy helpers for scenes and checks)."""

from __future__ import annotations

import numpy as np

from tigeom._core.validate import as_array, as_index_array


def ring(n: int) -> np.ndarray:
    """Segments (n, 2) of one closed ring through vertices 0 .. n-1."""
    i = np.arange(int(n))
    return np.column_stack([i, (i + 1) % n]).astype(np.int64)


def ellipse(center, a: float, b: float, n: int = 128):
    """Vertices (n, 2) and segments (n, 2) of an ellipse with semi-axes a (x) and b (y), CCW."""
    if a <= 0 or b <= 0:
        raise ValueError(f"a, b: semi-axes must be > 0, got {a}, {b}")
    if n < 3:
        raise ValueError(f"n: need at least 3 vertices, got {n}")
    c = as_array(center, "center")
    t = np.linspace(0.0, 2.0 * np.pi, int(n), endpoint=False)
    return np.column_stack([c[0] + a * np.cos(t), c[1] + b * np.sin(t)]), ring(n)


def circle(center, radius: float, n: int = 128):
    return ellipse(center, radius, radius, n)


def equal_area_ellipse(center, area: float, aspect: float, n: int = 128):
    """Ellipse of the given area with length/thickness ratio ``aspect`` along x."""
    b = np.sqrt(area / (np.pi * aspect))
    return ellipse(center, aspect * b, b, n)


def area_centroid(vertices, segments):
    """Signed area (positive for CCW) and centroid of closed polygon(s)."""
    v = np.asarray(vertices, float)
    s = np.asarray(segments)
    a, b = v[s[:, 0]], v[s[:, 1]]
    cr = a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1]
    area = 0.5 * cr.sum()
    if area == 0:
        return 0.0, v.mean(axis=0)
    c = ((a + b) * cr[:, None]).sum(axis=0) / (6.0 * area)
    return float(area), c


def nearest_on_segments(points, vertices, segments, chunk: int = 4096):
    """For each point (P, 2): the distance to the nearest segment, that segment's index and the
    parameter t in [0, 1] of the nearest point on it (a + t (b - a))."""
    p = as_array(points, "points", ndim=2)
    v = as_array(vertices, "vertices", ndim=2)
    s = as_index_array(segments, "segments", len(v), width=2)
    if len(s) == 0:
        raise ValueError("segments: need at least one segment")
    a, b = v[s[:, 0]], v[s[:, 1]]
    e = b - a
    ll = np.maximum((e * e).sum(1), 1e-300)
    dist = np.empty(len(p))
    seg = np.empty(len(p), np.int64)
    par = np.empty(len(p))
    rows = np.arange(min(chunk, len(p)))
    for lo in range(0, len(p), chunk):
        q = p[lo:lo + chunk, None, :]
        t = np.clip(((q - a) * e).sum(-1) / ll, 0.0, 1.0)
        d2 = ((a + t[..., None] * e - q) ** 2).sum(-1)
        k = d2.argmin(axis=1)
        r = rows[:len(k)]
        dist[lo:lo + chunk] = np.sqrt(d2[r, k])
        seg[lo:lo + chunk] = k
        par[lo:lo + chunk] = t[r, k]
    return dist, seg, par


def inside_polygon(points, vertices, segments, chunk: int = 4096) -> np.ndarray:
    """Crossing-parity inside test of points (P, 2) against closed polygons."""
    p = as_array(points, "points", ndim=2)
    v = as_array(vertices, "vertices", ndim=2)
    s = as_index_array(segments, "segments", len(v), width=2)
    a, b = v[s[:, 0]], v[s[:, 1]]
    e = b - a
    out = np.empty(len(p), bool)
    for lo in range(0, len(p), chunk):
        y = p[lo:lo + chunk, None, 1]
        straddle = (a[:, 1] > y) != (b[:, 1] > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = a[:, 0] + (y - a[:, 1]) * e[:, 0] / e[:, 1]
        out[lo:lo + chunk] = (np.sum(straddle & (p[lo:lo + chunk, None, 0] < xi), axis=1) % 2) == 1
    return out


def signed_distance(points, vertices, segments, chunk: int = 4096) -> np.ndarray:
    """Signed distance (negative inside, crossing parity) from points (P, 2) to closed polygons."""
    d, _, _ = nearest_on_segments(points, vertices, segments, chunk)
    return np.where(inside_polygon(points, vertices, segments, chunk), -d, d)
