"""tigeom.sim: differentiable physics linked to tigeom's geometry.

Depends on the geometry (public names and tigeom._core), never the other way round.

- :class:`Flow2D`: steady 2D channel flow around polygonal bodies (lattice Boltzmann), the
  force on the body and its exact gradient with respect to the vertices (discrete adjoint).
- :class:`TetElasticity`: linear elasticity on tets (CG iterations, condition number, stable
  explicit time step): what mesh quality does to a simulation.
- :class:`Flow3D`: the same in 3D, around closed triangle meshes (D3Q19).
- :mod:`tigeom.sim.polygons`: polygons (circles, ellipses) and their signed distance.
- :mod:`tigeom.sim.meshes`: closed triangle meshes of spheres, spheroids and cylinders.
"""

if __name__ != "tigeom.sim":  # the folder installs as tigeom.sim; a bare `import sim` is not this package
    raise ImportError("sim/ is the package tigeom.sim: use `import tigeom.sim`")


from . import meshes, polygons
from .fem import StaticSolve, TetElasticity
from ._steady import ConvergenceWarning
from .flow2d import Flow2D, FlowResult
from .flow3d import Flow3D, FlowResult3D

__all__ = ["Flow2D", "FlowResult", "Flow3D", "FlowResult3D", "ConvergenceWarning", "polygons", "meshes", "TetElasticity", "StaticSolve"]
