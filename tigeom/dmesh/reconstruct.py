"""Point-cloud reconstruction with a DMesh (minimum-ball probabilities, expected Chamfer loss).

Pipeline (coordinates normalised so the samples' bounding-box diagonal is 1):

1. Stages at point spacings h = 2 h_f, h_f (``resolution`` = h_f, default 1/96 in 2D and 1/48
   in 3D). Real points (ψ = 1): the samples thinned to one per cell of size h (the sample
   nearest the cell centre); from the second stage on, only samples within 2 h of the previous
   stage's mesh (re-seeding on the current mesh, which also drops outliers).
2. Imaginary points (ψ = 0): a jittered lattice of spacing 3 h away from the samples, the
   previous stage's imaginary points, and the minimum-ball centres of likely faces that stray
   from the data (a face whose ball centre is farther than half the ball's radius and than
   twice the samples' spacing from every sample): an imaginary point there breaks the face's
   empty-ball condition.
3. Adam on all positions and real values against expected Chamfer / h^2 + 0.1 real consistency
   (+ 0.01 triangle quality in 3D), steps capped at h / 10, candidates refreshed every 20 steps.
4. Extraction: faces with Λ > 0.5 and an empty minimum ball. Such faces are Delaunay faces of
   the points, so the mesh never self-intersects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .._core.validate import as_points
from ..spatial import NearestIndex
from . import losses
from .model import DMesh
from .probabilities import SHARPNESS_SCALE

DEFAULT_RESOLUTION = {2: 1 / 96, 3: 1 / 48}


@dataclass(eq=False)
class Reconstruction:
    """Result of :func:`reconstruct`: the mesh in the samples' coordinates.

    vertices : (V, d); faces : (E, 2) segments in 2D, (F, 3) triangles in 3D.
    mesh : the final :class:`DMesh` (normalised coordinates: ``x * scale + origin``).
    history : per-iteration loss records (with their stage); stats : timings and counts.
    """

    vertices: np.ndarray
    faces: np.ndarray
    mesh: DMesh
    origin: np.ndarray
    scale: float
    history: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def _thin(x: np.ndarray, h: float) -> np.ndarray:
    """Indices of one point per grid cell of size h: the one nearest the cell centre."""
    cell = np.floor(x / h).astype(np.int64)
    off = ((x / h - cell - 0.5) ** 2).sum(1)
    order = np.lexsort((off, *cell.T[::-1]))
    c = cell[order]
    first = np.ones(len(c), bool)
    first[1:] = (c[1:] != c[:-1]).any(1)
    return np.sort(order[first])


def _lattice(lo, hi, h, rng) -> np.ndarray:
    axes = [np.arange(a, b + h, h) for a, b in zip(lo, hi)]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(lo))
    return g + rng.uniform(-0.25 * h, 0.25 * h, g.shape)


def _ball_centres(p: np.ndarray, f: np.ndarray) -> np.ndarray:
    if p.shape[1] == 2:
        return 0.5 * (p[f[:, 0]] + p[f[:, 1]])
    a, b, cc = p[f[:, 0]], p[f[:, 1]], p[f[:, 2]]
    u, v = b - a, cc - a
    n = np.cross(u, v)
    return a + ((u * u).sum(1)[:, None] * np.cross(v, n) + (v * v).sum(1)[:, None] * np.cross(n, u)) / (
        2 * (n * n).sum(1)[:, None])


def _killers(real: np.ndarray, imaginary: np.ndarray, tindex: NearestIndex, h: float, gap: float,
             sharpness: float) -> np.ndarray:
    """Imaginary points at the minimum-ball centres of likely faces that stray from the data
    (centre farther than half the ball's radius and than ``gap`` from every sample), except
    those that would break a face lying on the data."""
    pts = np.concatenate([real, imaginary])
    reals = np.concatenate([np.ones(len(real)), np.zeros(len(imaginary))])
    mesh = DMesh(pts, reals, method="minball", sharpness=sharpness)
    fp = mesh.probabilities()
    f = mesh.faces[fp.probs > 0.5]
    if not len(f):
        return np.zeros((0, mesh.dim))
    c = _ball_centres(pts, f)
    _, dist = tindex.query(c)
    rad = np.linalg.norm(c - pts[f[:, 0]], axis=1)
    stray = dist > np.maximum(0.5 * rad, gap)
    cand = c[stray]
    if not len(cand):
        return cand
    cand = cand[_thin(cand, 0.5 * h)]
    good = f[~stray]
    # drop the candidates that would become the witness of a face on the data
    allp = np.concatenate([pts, cand])
    from .probabilities import face_probabilities

    fp2 = face_probabilities(allp, None, np.ones(len(allp)), good, "minball", sharpness)
    hit = fp2.witness[(fp2.margin <= 0) & (fp2.witness >= len(pts))] - len(pts)
    keep = np.ones(len(cand), bool)
    keep[hit] = False
    return cand[keep]


def reconstruct(samples, seed: int = 0, *, resolution: float | None = None, iterations: int = 100,
                stages: int = 2, callback: Callable | None = None, progress: bool = False) -> Reconstruction:
    """Reconstruct a curve (2D samples) or surface (3D samples) from a point cloud.

    Parameters
    ----------
    samples : (S, 2) or (S, 3) points on the curve or surface.
    seed : seeds the imaginary-point lattice jitter (the result is deterministic for a seed).
    resolution : final point spacing as a fraction of the bounding-box diagonal (default 1/96 in
        2D, 1/48 in 3D).
    iterations : Adam steps per stage.
    stages : coarse-to-fine stages (spacing halves each stage).
    callback : ``callback(stage, iteration, mesh, record)`` after every step.
    progress : show a progress bar per stage.
    """
    t0 = time.perf_counter()
    s = as_points(samples, "samples")
    d = s.shape[1]
    if len(s) < 10:
        raise ValueError(f"samples: need at least 10 points, got {len(s)}")
    lo, hi = s.min(0), s.max(0)
    diag = float(np.linalg.norm(hi - lo))
    if not diag > 0:
        raise ValueError("samples: all points coincide")
    if isinstance(iterations, bool) or int(iterations) < 0:
        raise ValueError(f"iterations: must be >= 0, got {iterations}")
    if int(stages) < 1:
        raise ValueError(f"stages: must be >= 1, got {stages}")
    hf = DEFAULT_RESOLUTION[d] if resolution is None else float(resolution)
    if not 0 < hf < 0.5:
        raise ValueError(f"resolution: must be in (0, 0.5) (a fraction of the diagonal), got {resolution}")
    rng = np.random.default_rng(seed)
    x = (s - lo) / diag
    target = losses.Targets(x)
    tindex = target.grid
    history: list[dict] = []
    imaginary = np.zeros((0, d))
    mesh = None
    stats = {"stages": []}
    for stage in range(int(stages)):
        h = hf * 2 ** (int(stages) - 1 - stage)
        ts = time.perf_counter()
        if mesh is None:
            real = x[_thin(x, h)]
        else:
            v, f = mesh.extract()
            near = x
            if len(f):
                q = v[f].mean(1)
                _, dist = NearestIndex(np.concatenate([v, q])).query(x)
                near = x[dist < 2 * h]
            real = near[_thin(near, h)] if len(near) else x[_thin(x, h)]
        lat = _lattice(np.full(d, -3 * h), x.max(0) + 3 * h, 3 * h, rng)
        _, dl = tindex.query(lat)
        imaginary = np.concatenate([imaginary[tindex.query(imaginary)[1] > h] if len(imaginary) else imaginary,
                                    lat[dl > 1.5 * h]])
        sharp = SHARPNESS_SCALE / h
        for _ in range(2):
            extra = _killers(real, imaginary, tindex, h, 2 * target.spacing, sharp)
            if not len(extra):
                break
            imaginary = np.concatenate([imaginary, extra])
        pts = np.concatenate([real, imaginary])
        reals = np.concatenate([np.ones(len(real)), np.zeros(len(imaginary))])
        mesh = DMesh(pts, reals, method="minball", sharpness=sharp)
        wq = 0.01 if d == 3 else 0.0

        def loss_fn(m, fp, h=h, wq=wq):
            # the mesh itself in place of its points and reals: the losses read its device state
            ch = losses.expected_chamfer(m, m.prepared_faces, fp, target)
            rc = losses.real_consistency(m, m.prepared_faces, fp)
            parts = [(ch, 1.0 / h**2), (rc, 0.1)]
            if wq:
                parts.append((losses.face_quality(m, m.prepared_faces, fp), wq))
            return _combine(parts)

        def cb(it, m, rec, stage=stage):
            rec["stage"] = stage
            if callback is not None:
                callback(stage, it, m, rec)

        hist = mesh.optimize(loss_fn, int(iterations), callback=cb, progress=progress, lr_reals=0.01)
        history.extend(hist)
        imaginary = mesh.points[mesh.reals < 0.5]
        v, f = mesh.extract()
        stats["stages"].append({"spacing": h * diag, "points": len(mesh.points), "real_points": int(len(real)),
                                "imaginary_points": int(len(mesh.points) - len(real)),
                                "candidates": int(len(mesh.faces)), "faces": int(len(f)),
                                "seconds": time.perf_counter() - ts})
    v, f = mesh.extract()
    stats["seconds"] = time.perf_counter() - t0
    return Reconstruction(vertices=v * diag + lo, faces=f, mesh=mesh, origin=lo, scale=diag, history=history,
                          stats=stats)


def _combine(parts) -> losses.Loss:
    """Weighted sum of losses with the summed vjp."""
    value = sum(w * l.value for l, w in parts)
    terms = {k: float(v) for l, _ in parts for k, v in l.terms.items()}

    def backward(g):
        outs = [l.vjp(g * w) for l, w in parts]
        return tuple(sum(o[i] for o in outs) for i in range(3))

    def accumulate(g):
        for l, w in parts:
            l.accumulate(g * w)

    on_device = all(l.on_device for l, _ in parts)
    return losses.Loss(value, terms, backward, accumulate if on_device else None)
