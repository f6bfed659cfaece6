"""sim: differentiable physics linked to tigeom's geometry.

Depends on tigeom, never the other way round.

- :class:`Flow2D`: steady 2D channel flow around polygonal bodies (lattice Boltzmann), the
  force on the body and its exact gradient with respect to the vertices (discrete adjoint).
- :class:`TetElasticity`: linear elasticity on tets (CG iterations, condition number, stable
  explicit time step): what mesh quality does to a simulation.
- :mod:`sim.shapes`: polygons (circles, ellipses) and their signed distance.
"""

from . import shapes
from .fem import StaticSolve, TetElasticity
from .flow2d import ConvergenceWarning, Flow2D, FlowResult

__all__ = ["Flow2D", "FlowResult", "ConvergenceWarning", "shapes", "TetElasticity", "StaticSolve"]
