"""Test meshes built in code: sliver-rich families of the unit cube and the unit ball.

Both are Delaunay tetrahedralisations (:func:`tigeom.weighted_delaunay`, zero weights) of points
on planar grids or on a sphere plus random interior points: the most degenerate inputs there
are (ties are broken by the triangulation's symbolic perturbation, deterministically), and
they leave the slivers that mesh improvement is measured on.
"""

from __future__ import annotations

import numpy as np

from ..delaunay import weighted_delaunay


def _delaunay(points: np.ndarray) -> np.ndarray:
    return weighted_delaunay(points).simplices


def _with_interior(surface: np.ndarray, n_interior: int, inside, lo, hi, margin: float, rng) -> np.ndarray:
    pts = []
    while sum(len(p) for p in pts) < n_interior:
        c = rng.uniform(lo + margin, hi - margin, size=(2 * n_interior + 16, 3))
        pts.append(c[inside(c)])
    return np.vstack([surface, np.concatenate(pts)[:n_interior]])


def cube_mesh(grid: int = 6, n_interior: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit cube: a regular ``grid`` x ``grid`` surface grid plus random interior points, Delaunay.

    The family REFERENCE.md measures MMG3D on (min dihedral about 0.5-0.7 degrees): Delaunay
    tetrahedralisation leaves slivers between the random points and next to the planar faces.
    """
    pts = cube_points(grid, n_interior, seed)
    return pts, _delaunay(pts)


def cube_points(grid: int = 6, n_interior: int = 400, seed: int = 0) -> np.ndarray:
    """The points of :func:`cube_mesh`: the surface grid, then the random interior points."""
    if grid < 1 or n_interior < 0:
        raise ValueError(f"grid must be >= 1 and n_interior >= 0, got {grid}, {n_interior}")
    g = np.linspace(0.0, 1.0, grid + 1)
    P = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    surf = P[np.any((P == 0) | (P == 1), axis=1)]
    rng = np.random.default_rng(seed)
    return _with_interior(surf, n_interior, lambda c: np.ones(len(c), bool), 0.0, 1.0, 0.25 / grid, rng)


def sphere_mesh(subdivisions: int = 2, n_interior: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit ball: icosphere surface points (all cospherical) plus random interior points, Delaunay."""
    if subdivisions < 0 or n_interior < 0:
        raise ValueError(f"subdivisions and n_interior must be >= 0, got {subdivisions}, {n_interior}")
    import trimesh

    surf = np.asarray(trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0).vertices, np.float64)
    h = 2.0 / (2 ** subdivisions * 2.0)  # about the surface edge length
    rng = np.random.default_rng(seed)
    pts = _with_interior(surf, n_interior, lambda c: (c * c).sum(1) < (1.0 - 0.25 * h) ** 2, -1.0, 1.0, 0.0, rng)
    return pts, _delaunay(pts)
