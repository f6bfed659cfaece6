"""tigeom: a Taichi-based, simulation-aware, differentiable geometry engine.

Nothing runs at import: Taichi initialises on the first call of an entry point, or through
:func:`tigeom.init`. The physics (:mod:`tigeom.sim`) and the scenes (:mod:`tigeom.scenes`) are
subpackages that depend on the geometry, never the reverse; ``tigeom.sim`` and ``tigeom.scenes``
are loaded on first access.
"""

import importlib

from . import dmesh, io, render, spatial, tetmesh
from .delaunay import Triangulation, weighted_delaunay
from .isosurface import Curve, Surface, marching_cubes, marching_squares
from .runtime import init
from .tetmesh import improve_tets, tet_quality

__version__ = "0.2.0"

__all__ = [
    "init", "io", "marching_cubes", "marching_squares", "Surface", "Curve", "weighted_delaunay", "Triangulation",
    "tet_quality", "improve_tets", "dmesh", "render", "spatial", "tetmesh", "sim", "scenes",
    "__version__",
]

_LAZY = ("sim", "scenes")


def __getattr__(name):
    # `tigeom.sim.Flow2D` after a plain `import tigeom`: the layers above the geometry are
    # imported by name on first use, so importing the geometry never imports them
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
