"""DMesh: differentiable face probabilities and point-cloud reconstruction (see docs/dmesh.md).

>>> fp = tigeom.dmesh.face_probabilities(points, weights, reals, faces, method="wdt")
>>> grad_points, grad_weights, grad_reals = fp.vjp(grad_probs)
>>> res = tigeom.dmesh.reconstruct(samples)       # res.vertices, res.faces
>>> sol = tigeom.dmesh.solid(res)                 # sol.vertices, sol.tets, sol.faces (watertight)
>>> rec = tigeom.dmesh.reconstruct_multiview(images, cams)   # from tigeom.render images
"""

from . import losses, sampling
from .losses import Loss, Targets, expected_chamfer, face_quality, real_consistency
from .model import DMesh, candidate_faces
from .multiview import MultiviewReconstruction, back_project, reconstruct_multiview
from .probabilities import FaceProbabilities, PreparedFaces, default_sharpness, face_probabilities
from .reconstruct import Reconstruction, reconstruct
from .solid import SolidMesh, solid

__all__ = ["face_probabilities", "FaceProbabilities", "default_sharpness", "candidate_faces", "DMesh",
           "reconstruct", "Reconstruction", "expected_chamfer", "real_consistency", "face_quality", "Loss",
           "Targets", "PreparedFaces", "losses", "sampling", "solid", "SolidMesh", "reconstruct_multiview",
           "MultiviewReconstruction", "back_project"]
