"""Multi-view reconstruction with a DMesh: depth and coverage images in, a triangle mesh out.

Pipeline (``reconstruct_multiview``):

1. Back-projection. Every pixel whose coverage is at least one half and whose depth is finite
   and smooth (no 4-neighbour of it uncovered or more than ``EDGE_JUMP`` apart in relative depth)
   becomes a world point. The remaining pixels sit on silhouettes and occlusion contours, where
   antialiasing mixes the depths of two surfaces.
2. Coarse-to-fine DMesh on those points (:func:`tigeom.dmesh.reconstruct`): stages at halving
   point spacings, real and imaginary points, Adam on positions and real values against the
   expected Chamfer distance, real-value consistency and face quality.
3. Refinement against the images themselves (``refine_iterations`` steps, none by default: on
   exact depth images it did not improve on step 2, see docs/dmesh.md). Each step renders the
   DMesh's candidate faces
   with their probabilities as opacities (:func:`tigeom.render.rasterize`) from ``views_per_step``
   views drawn at random. The loss is the squared error of coverage and of depth, where both the
   render and the image have depth. Its gradient reaches the positions and the probabilities
   through the renderer's vjp, silhouette edges included. The expected Chamfer and consistency
   terms of the last stage stay in the loss.
4. Extraction: faces with probability above one half and an empty minimum ball.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import render
from .._core.validate import as_array
from . import losses
from .probabilities import SATURATION
from .reconstruct import Reconstruction, _combine, reconstruct

EDGE_JUMP = 0.05  # relative depth step between neighbouring pixels treated as a contour
MIN_OPACITY = 1e-3  # candidate faces below this probability are not drawn (they add < 1e-3 coverage)


@dataclass(eq=False)
class MultiviewReconstruction(Reconstruction):
    """:class:`~tigeom.dmesh.Reconstruction` with the back-projected samples and the refinement's
    loss history (``history`` holds the point-cloud stages, ``render_history`` the refinement)."""

    samples: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    render_history: list = field(default_factory=list)


def back_project(images, cams: render.Cameras, max_samples: int | None = 200_000, seed: int = 0) -> np.ndarray:
    """World points of the covered, smooth pixels of every view (step 1 of the pipeline)."""
    alpha, depth = _check_images(images, cams)
    pts = []
    for c in range(len(cams)):
        a, z = alpha[c], depth[c]
        ok = (a >= 0.5) & np.isfinite(z)
        zz = np.where(ok, z, np.nan)
        pad = np.pad(zz, 1, constant_values=np.nan)
        nb = np.stack([pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]])
        with np.errstate(invalid="ignore"):
            smooth = (np.abs(nb - zz) <= EDGE_JUMP * zz).all(0)
        v, u = np.nonzero(ok & smooth)
        if not len(u):
            continue
        ray = np.stack([u + 0.5, v + 0.5, np.ones(len(u))], 1) @ np.linalg.inv(cams.K[c]).T
        X = ray * z[v, u][:, None]
        R, t = cams.view[c, :3, :3], cams.view[c, :3, 3]
        pts.append((X - t) @ R)
    p = np.concatenate(pts) if pts else np.zeros((0, 3))
    if max_samples is not None and len(p) > max_samples:
        p = p[np.random.default_rng(seed).choice(len(p), int(max_samples), replace=False)]
    return p


def _check_images(images, cams):
    if not isinstance(cams, render.Cameras):
        raise TypeError(f"cams: expected tigeom.render.Cameras, got {type(cams).__name__}")
    try:
        alpha, depth = images["alpha"], images["depth"]
    except (KeyError, TypeError):
        raise ValueError("images: expected a mapping with 'alpha' and 'depth' (as tigeom.render.rasterize gives)") from None
    shape = (len(cams), *cams.resolution)
    alpha = as_array(alpha, "images['alpha']")
    depth = as_array(depth, "images['depth']", finite=False)
    for name, arr in (("alpha", alpha), ("depth", depth)):
        if arr.shape != shape:
            raise ValueError(f"images['{name}']: expected shape {shape} (views, H, W), got {arr.shape}")
    if np.isnan(depth).any():
        raise ValueError("images['depth']: contains NaN (use inf where nothing is seen)")
    return alpha, depth


def reconstruct_multiview(images, cams: render.Cameras, seed: int = 0, *, resolution: float | None = None,
                          iterations: int = 60, stages: int = 2, refine_iterations: int = 0,
                          views_per_step: int = 8, depth_weight: float = 1.0, refine_lr: float = 0.002,
                          max_samples: int = 200_000,
                          callback: Callable | None = None, progress: bool = False) -> MultiviewReconstruction:
    """Reconstruct a surface from coverage and depth images (see the module docstring).

    images : mapping with "alpha" (C, H, W) and "depth" (C, H, W, inf where nothing is seen), in
        the convention of :func:`tigeom.render.rasterize`.
    cams : the :class:`tigeom.render.Cameras` of the images.
    resolution, iterations, stages : of the point-cloud stages (:func:`reconstruct`).
    refine_iterations : Adam steps against the images; views_per_step views each.
    depth_weight : weight of the depth term (depths in units of the bounding-box diagonal).
    refine_lr : the refinement's Adam step on positions, in point spacings (the point-cloud
        stages take 0.02), and ten times it on real values.
    """
    t0 = time.perf_counter()
    alpha, depth = _check_images(images, cams)
    if int(views_per_step) < 1 or int(refine_iterations) < 0:
        raise ValueError(f"views_per_step, refine_iterations: expected >= 1 and >= 0, got {views_per_step}, "
                         f"{refine_iterations}")
    samples = back_project({"alpha": alpha, "depth": depth}, cams, max_samples, seed)
    if len(samples) < 10:
        raise ValueError(f"images: only {len(samples)} covered pixels with a depth; need at least 10")
    rec = reconstruct(samples, seed, resolution=resolution, iterations=iterations, stages=stages,
                      callback=None if callback is None else (lambda s, it, m, r: callback("points", it, m, r)),
                      progress=progress)
    mesh, lo, diag = rec.mesh, rec.origin, rec.scale
    target = losses.Targets((samples - lo) / diag)
    h = rec.stats["stages"][-1]["spacing"] / diag
    rng = np.random.default_rng(seed)

    def loss_fn(m, fp):
        views = np.sort(rng.choice(len(cams), min(int(views_per_step), len(cams)), replace=False))
        ren = _render_loss(m, fp, cams[views], alpha[views], depth[views], lo, diag, depth_weight)
        ch = losses.expected_chamfer(m, m.prepared_faces, fp, target)
        rc = losses.real_consistency(m, m.prepared_faces, fp)
        return _combine([(ren, 1.0), (ch, 1.0 / h ** 2), (rc, 0.1)])

    def cb(it, m, record):
        if callback is not None:
            callback("images", it, m, record)

    # a fresh Adam state moves every point by about its learning rate in the first steps; at the
    # point-cloud stages' rate that undoes part of their fit, so the refinement runs at a tenth
    step = SATURATION * 2.5 / mesh.sharpness  # the point spacing the sharpness was made for
    render_history = mesh.optimize(loss_fn, int(refine_iterations), callback=cb, progress=progress,
                                   lr=refine_lr * step, lr_reals=0.1 * refine_lr) if refine_iterations else []
    v, f = mesh.extract()
    stats = dict(rec.stats, samples=len(samples), seconds=time.perf_counter() - t0)
    return MultiviewReconstruction(vertices=v * diag + lo, faces=f, mesh=mesh, origin=lo, scale=diag,
                                   history=rec.history, stats=stats, samples=samples,
                                   render_history=render_history)


def _render_loss(m, fp, cams, alpha, depth, lo, diag, wd) -> losses.Loss:
    """Mean squared coverage error plus ``wd`` times the mean squared depth error (in units of
    the diagonal) where render and image both have depth, over the views of ``cams``; as a host
    :class:`~tigeom.dmesh.Loss` on the DMesh's points and probabilities."""
    probs = np.asarray(fp.probs, float)
    faces = m.faces
    keep = np.flatnonzero(probs > MIN_OPACITY)
    pts = m.points * diag + lo
    img = render.rasterize(pts, faces[keep], cams, probs[keep])
    n = alpha.size
    ea = img.alpha - alpha
    both = np.isfinite(img.depth) & np.isfinite(depth)
    ed = np.where(both, (np.where(both, img.depth, 0.0) - np.where(both, depth, 0.0)) / diag, 0.0)
    la, ld = float((ea ** 2).sum() / n), float((ed ** 2).sum() / n)

    def backward(g):
        gv, gop = img.vjp(grad_alpha=2 * g * ea / n, grad_depth=np.where(both, 2 * g * wd * ed / (n * diag), 0.0))
        gprob = np.zeros(len(probs))
        gprob[keep] = gop
        return gv * diag, gprob, np.zeros(len(m.points))

    return losses.Loss(la + wd * ld, {"coverage": la, "depth": ld}, backward, None)
