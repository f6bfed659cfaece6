"""Test shapes for reconstruction: glyph outlines (matplotlib TextPath), a torus and an open
patch, sampled uniformly, plus the Chamfer / F1 metrics used to score a reconstruction."""

from __future__ import annotations

import numpy as np

from .._core.validate import as_points


def glyph_outlines(text: str, size: float = 1.0, family: str = "DejaVu Sans") -> list[np.ndarray]:
    """Closed polylines (each (n, 2), first point not repeated) of ``text`` rendered by
    matplotlib's TextPath, Bézier segments flattened; scaled so the text is ``size`` tall."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text: expected a non-empty string, got {text!r}")
    path = TextPath((0, 0), text, size=1.0, prop=FontProperties(family=family))
    polys = [np.asarray(p, float) for p in path.to_polygons(closed_only=True)]
    polys = [p[:-1] if np.allclose(p[0], p[-1]) else p for p in polys if len(p) >= 3]
    allp = np.concatenate(polys)
    lo, hi = allp.min(0), allp.max(0)
    scale = size / (hi[1] - lo[1])
    return [(p - lo) * scale for p in polys]


def sample_polylines(polys: list[np.ndarray], n: int, rng=None, closed: bool = True) -> np.ndarray:
    """n points uniformly (by length) on a set of polylines."""
    rng = np.random.default_rng(rng)
    segs = []
    for p in polys:
        q = np.concatenate([p, p[:1]]) if closed else p
        segs.append(np.stack([q[:-1], q[1:]], 1))
    segs = np.concatenate(segs)
    length = np.linalg.norm(segs[:, 1] - segs[:, 0], axis=1)
    idx = rng.choice(len(segs), size=int(n), p=length / length.sum())
    t = rng.random(int(n))[:, None]
    return segs[idx, 0] * (1 - t) + segs[idx, 1] * t


def torus_samples(n: int, R: float = 1.0, r: float = 0.4, rng=None) -> np.ndarray:
    """n points uniformly (by area) on a torus around the z axis."""
    rng = np.random.default_rng(rng)
    out = np.zeros((0, 3))
    while len(out) < n:  # rejection sampling of the tube angle (area element ∝ R + r cos v)
        m = 2 * (int(n) - len(out)) + 16
        u, v, a = rng.uniform(0, 2 * np.pi, m), rng.uniform(0, 2 * np.pi, m), rng.uniform(0, R + r, m)
        ok = a < R + r * np.cos(v)
        u, v = u[ok], v[ok]
        pts = np.column_stack([(R + r * np.cos(v)) * np.cos(u), (R + r * np.cos(v)) * np.sin(u), r * np.sin(v)])
        out = np.concatenate([out, pts])
    return out[:int(n)]


def capsule_samples(n: int, length: float = 1.0, radius: float = 0.12, rng=None) -> np.ndarray:
    """n points uniformly (by area) on a capsule along x: a cylinder of ``length`` and ``radius``
    from x = 0 to x = length, closed by hemispheres (volume pi r^2 L + 4/3 pi r^3)."""
    rng = np.random.default_rng(rng)
    n = int(n)
    a_cyl, a_caps = 2 * np.pi * radius * length, 4 * np.pi * radius ** 2
    on_cyl = rng.random(n) < a_cyl / (a_cyl + a_caps)
    k = int(on_cyl.sum())
    th = rng.uniform(0, 2 * np.pi, k)
    cyl = np.column_stack([rng.uniform(0, length, k), radius * np.cos(th), radius * np.sin(th)])
    d = rng.normal(size=(n - k, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    caps = radius * d
    caps[:, 0] += np.where(d[:, 0] > 0, length, 0.0)
    return np.concatenate([cyl, caps])[rng.permutation(n)]


def capsule_volume(length: float = 1.0, radius: float = 0.12) -> float:
    return float(np.pi * radius ** 2 * length + 4.0 / 3.0 * np.pi * radius ** 3)


def patch_samples(n: int, rng=None) -> np.ndarray:
    """n points uniformly (by parameter) on an open wavy patch z = 0.15 sin(2x) cos(2y) over [-1, 1]^2."""
    rng = np.random.default_rng(rng)
    xy = rng.uniform(-1, 1, (int(n), 2))
    return np.column_stack([xy, 0.15 * np.sin(2 * xy[:, 0]) * np.cos(2 * xy[:, 1])])


def sample_mesh(vertices, faces, n: int, rng=None) -> np.ndarray:
    """n points uniformly (by length / area) on segments (E, 2) or triangles (F, 3)."""
    rng = np.random.default_rng(rng)
    v = as_points(vertices, "vertices")
    f = np.asarray(faces, np.int64)
    if len(f) == 0:
        return np.zeros((0, v.shape[1]))
    if f.shape[1] == 2:
        a, b = v[f[:, 0]], v[f[:, 1]]
        w = np.linalg.norm(b - a, axis=1)
        i = rng.choice(len(f), size=int(n), p=w / w.sum())
        t = rng.random(int(n))[:, None]
        return a[i] * (1 - t) + b[i] * t
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    w = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    i = rng.choice(len(f), size=int(n), p=w / w.sum())
    r1, r2 = rng.random(int(n)), rng.random(int(n))
    s = np.sqrt(r1)
    return (1 - s)[:, None] * a[i] + (s * (1 - r2))[:, None] * b[i] + (s * r2)[:, None] * c[i]


def chamfer_f1(vertices, faces, reference, *, n: int = 100_000, tau: float = 0.005, rng=0) -> dict:
    """Score a mesh against dense reference points of the true shape.

    Samples n points on the mesh; distances are measured to the nearest reference point and
    from every reference point to the nearest mesh sample, both in units of the reference
    bounding-box diagonal. Returns ``chamfer`` (mean of the two mean distances, the symmetric
    Chamfer distance), both directions, and ``f1`` / ``precision`` / ``recall`` at distance
    ``tau`` (fraction of the diagonal).
    """
    from ..spatial import nearest

    ref = as_points(reference, "reference")
    diag = float(np.linalg.norm(ref.max(0) - ref.min(0)))
    pts = sample_mesh(vertices, faces, n, rng)
    if len(pts) == 0:
        return {"chamfer": float("inf"), "mesh_to_ref": float("inf"), "ref_to_mesh": float("inf"),
                "f1": 0.0, "precision": 0.0, "recall": 0.0}
    _, d1 = nearest(ref, pts)
    _, d2 = nearest(pts, ref)
    d1, d2 = d1 / diag, d2 / diag
    prec, rec = float((d1 < tau).mean()), float((d2 < tau).mean())
    return {"chamfer": 0.5 * float(d1.mean() + d2.mean()), "mesh_to_ref": float(d1.mean()),
            "ref_to_mesh": float(d2.mean()), "f1": 2 * prec * rec / max(prec + rec, 1e-30),
            "precision": prec, "recall": rec}
