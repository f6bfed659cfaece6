"""sim: differentiable physics linked to tigeom's geometry.

Depends on tigeom, never the other way round. The flow solver (``sim.Flow2D``) and the
finite-element model on tets are the subject of open issues and are not implemented yet; this
package holds nothing else so far.
"""
