"""Tetrahedral meshes: quality measures, boundary-preserving improvement, test meshes."""

from .generate import cube_mesh, delaunay_tets, sphere_mesh
from .improve import ImproveResult, boundary_faces, face_adjacency, improve_tets
from .quality import TetQuality, tet_quality

__all__ = ["TetQuality", "tet_quality", "improve_tets", "ImproveResult", "face_adjacency", "boundary_faces",
           "cube_mesh", "sphere_mesh", "delaunay_tets"]
