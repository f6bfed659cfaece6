"""Reading and writing meshes: surfaces through trimesh, volume meshes through meshio, 2D curves as .npz.

Writers are atomic: they write a temporary file beside the target and rename it into place, so a
crash never leaves a half-written mesh behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from ._core.validate import as_index_array, as_points

SURFACE_FORMATS = (".obj", ".ply", ".stl", ".off")
VOLUME_FORMATS = (".msh", ".vtu", ".mesh", ".vtk", ".xdmf", ".med", ".inp")
CURVE_FORMATS = (".npz",)


def _suffix(path, allowed, what: str) -> str:
    suf = Path(path).suffix.lower()
    if suf not in allowed:
        raise ValueError(f"path: unknown {what} format {suf!r} for {str(path)!r}; expected one of {allowed}")
    return suf


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _readable(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    return path


def read_surface(path) -> tuple[np.ndarray, np.ndarray]:
    """Triangle surface from OBJ/PLY/STL/OFF: ``(vertices (V, 3) float64, faces (F, 3) int64)``."""
    _suffix(path, SURFACE_FORMATS, "surface mesh")
    path = _readable(path)
    import trimesh

    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:
        raise ValueError(f"path: cannot read {str(path)!r} as a surface mesh ({exc})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"path: {str(path)!r} holds no triangles")
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)


def _ply_bytes(v: np.ndarray, f: np.ndarray) -> bytes:
    """Binary PLY with float64 vertices, so coordinates survive a round trip exactly."""
    head = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(v)}\nproperty double x\n"
            f"property double y\nproperty double z\nelement face {len(f)}\n"
            "property list uchar int vertex_indices\nend_header\n").encode()
    rows = np.zeros(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    rows["n"], rows["i"] = 3, f
    return head + np.ascontiguousarray(v, "<f8").tobytes() + rows.tobytes()


def write_surface(path, vertices, faces) -> None:
    """Write a triangle surface (OBJ/PLY/STL/OFF) atomically; PLY keeps float64 coordinates."""
    suf = _suffix(path, SURFACE_FORMATS, "surface mesh")
    v = as_points(vertices, "vertices", dims=(3,))
    f = as_index_array(faces, "faces", len(v), width=3)
    if suf == ".ply":
        write_bytes_atomic(path, _ply_bytes(v, f))
        return
    import trimesh

    mesh = trimesh.Trimesh(v, f, process=False)
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type=suf[1:])


def read_volume(path, cell_type: str = "tetra") -> tuple[np.ndarray, np.ndarray]:
    """Volume mesh through meshio: ``(points (N, 3) float64, cells (M, k) int64)`` of ``cell_type``."""
    _suffix(path, VOLUME_FORMATS, "volume mesh")
    path = _readable(path)
    import meshio

    try:
        mesh = meshio.read(path)
    except (Exception, SystemExit) as exc:  # meshio calls sys.exit(1) on some unreadable files
        raise ValueError(f"path: cannot read {str(path)!r} as a volume mesh ({exc or type(exc).__name__})") from None
    blocks = [c.data for c in mesh.cells if c.type == cell_type]
    if not blocks:
        found = sorted({c.type for c in mesh.cells})
        raise ValueError(f"path: {str(path)!r} holds no {cell_type!r} cells (found {found})")
    pts = np.asarray(mesh.points, np.float64)
    if pts.shape[1] == 2:
        pts = np.column_stack([pts, np.zeros(len(pts))])
    return pts, np.concatenate(blocks).astype(np.int64)


def write_volume(path, points, cells, cell_type: str = "tetra", cell_data: dict | None = None,
                 point_data: dict | None = None) -> None:
    """Write a volume mesh through meshio (format from the suffix), atomically; ``cell_data`` and
    ``point_data`` map names to one value (or vector) per cell or point."""
    suf = _suffix(path, VOLUME_FORMATS, "volume mesh")
    p = as_points(points, "points", dims=(3,))
    width = {"tetra": 4, "triangle": 3, "hexahedron": 8}.get(cell_type)
    c = as_index_array(cells, "cells", len(p), width=width)
    import meshio

    data = {k: [np.asarray(v)] for k, v in (cell_data or {}).items()}
    pdata = {k: np.asarray(v) for k, v in (point_data or {}).items()}
    for k, v in pdata.items():
        if len(v) != len(p):
            raise ValueError(f"point_data: {k!r} has {len(v)} rows for {len(p)} points")
    mesh = meshio.Mesh(p, [(cell_type, c)], cell_data=data, point_data=pdata)
    fmt = {".msh": "gmsh", ".mesh": "medit", ".vtk": "vtk", ".vtu": "vtu"}.get(suf)
    with atomic_path(path) as tmp:
        meshio.write(tmp, mesh, file_format=fmt)


POINT_FORMATS = (".npy", ".xyz", ".txt", ".ply")


def read_points(path) -> np.ndarray:
    """A 3D point cloud (N, 3) float64: .npy (an (N, 3) array), .xyz/.txt (whitespace columns,
    the first three used) or .ply (its vertices, through trimesh)."""
    suf = _suffix(path, POINT_FORMATS, "point cloud")
    p = _readable(path)
    if suf == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif suf == ".ply":
        import trimesh

        arr = np.asarray(trimesh.load(p, process=False).vertices)
    else:
        arr = np.loadtxt(p, ndmin=2)[:, :3]
    return as_points(arr, "points", dims=(3,))


def read_curve(path) -> tuple[np.ndarray, np.ndarray]:
    """2D curve from .npz with arrays ``vertices`` (V, 2) and ``segments`` (E, 2)."""
    _suffix(path, CURVE_FORMATS, "curve")
    path = _readable(path)
    try:
        with np.load(path) as data:
            if "vertices" not in data or "segments" not in data:
                raise ValueError(f"path: {str(path)!r} lacks the arrays 'vertices' and 'segments' "
                                 f"(found {sorted(data.files)})")
            v, s = data["vertices"], data["segments"]
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"path: cannot read {str(path)!r} as .npz ({exc})") from None
    v = as_points(v, "vertices", dims=(2,))
    return v, as_index_array(s, "segments", len(v), width=2)


def write_curve(path, vertices, segments, **extra) -> None:
    """Write a 2D curve as .npz (``vertices``, ``segments`` and any extra arrays), atomically."""
    _suffix(path, CURVE_FORMATS, "curve")
    v = as_points(vertices, "vertices", dims=(2,))
    s = as_index_array(segments, "segments", len(v), width=2)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, vertices=v, segments=s, **extra)
