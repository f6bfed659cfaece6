"""Weighted Delaunay (regular) triangulation in 2D and 3D, computed by Taichi kernels.

>>> tri = tigeom.weighted_delaunay(points, weights)   # points (N, 2|3), weights (N,) or None
>>> tri.simplices, tri.faces, tri.hidden, tri.neighbors

Modules: :mod:`.triangulation` (the public entry point and results), :mod:`.cells` (the
parallel power-cell pass), :mod:`.exact` (exact rational recomputation of disagreeing cells),
:mod:`.assembly` (cell lists to simplices and faces), :mod:`.hull` (hull completion by gift
wrapping), :mod:`._kernels` (the Taichi kernels).
"""

from .triangulation import PowerCells, Triangulation, weighted_delaunay

__all__ = ["weighted_delaunay", "Triangulation", "PowerCells"]
