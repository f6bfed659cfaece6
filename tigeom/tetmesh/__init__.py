"""Tetrahedral meshes: quality measures, boundary-preserving improvement, topology, test meshes."""

from .generate import cube_mesh, cube_points, sphere_mesh
from .improve import ImproveResult, improve_tets, output_index
from .quality import TetQuality, signed_volumes, tet_quality, validate_mesh
from .topology import boundary_faces, face_adjacency

__all__ = ["TetQuality", "tet_quality", "improve_tets", "ImproveResult", "face_adjacency", "boundary_faces",
           "cube_mesh", "cube_points", "sphere_mesh", "validate_mesh", "signed_volumes", "output_index"]
