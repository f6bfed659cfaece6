"""tigeom: a Taichi-based, simulation-aware, differentiable geometry engine.

Nothing runs at import: Taichi initialises on the first call of an entry point, or through
:func:`tigeom.init`.
"""

from . import dmesh, io
from .delaunay import Triangulation, weighted_delaunay
from .isosurface import Curve, Surface, marching_cubes, marching_squares
from .runtime import init
from .tetmesh import improve_tets, tet_quality

__version__ = "0.1.0"

__all__ = [
    "init", "io", "marching_cubes", "marching_squares", "Surface", "Curve", "weighted_delaunay", "Triangulation",
    "tet_quality", "improve_tets", "dmesh",
    "__version__",
]
