"""Marching squares / cubes case tables, derived in code rather than typed in.

Conventions
-----------
Corner ``c`` of a cell has offsets ``(c & 1, (c >> 1) & 1, (c >> 2) & 1)`` along (x, y, z)
(2D: the first two). A corner is *inside* when its value is ``< level`` and *outside* when it is
``>= level``; the case index has bit ``c`` set when corner ``c`` is inside.

Cell edge ``e`` runs from corner ``EDGE_CORNER[e]`` one step along axis ``EDGE_AXIS[e]``. In the
grid it is the edge owned by the node at that corner, so a vertex is indexed by (node, axis) and
shared by every cell around that grid edge.

Derivation (3D)
---------------
For each of the 256 cases the iso-contour on each of the six cube faces is a set of segments
between crossing edges:

* 1 inside corner: a segment between its two edges; 3 inside: around the single outside corner;
  2 adjacent inside: between the two crossing edges.
* 2 diagonal inside corners (the ambiguous face): two segments, each cutting off one inside
  corner, i.e. inside corners are kept apart across the face. The rule reads only the face's own
  four signs, so the two cells sharing a face always draw the same segments: the surface is
  crack-free (watertight) with no cross-cell look-up.

Each segment is directed so that, seen from outside the cube, the inside corners lie on its
right. Walking those segments edge to edge gives closed loops on the cube surface (every crossing
edge starts exactly one segment and ends exactly one). Each loop is triangulated so that no
interior diagonal joins two vertices on a common cube face (the neighbouring cell might draw the
same pair: a non-manifold edge); the direction makes right-hand normals point to
``values > level``.

2D uses the same face rule on the single square; segments are directed so that inside corners
lie on their left, so curves run counter-clockwise around ``values < level``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np


class CellEdge(NamedTuple):
    corner: int  # corner the edge starts from (the node that owns the grid edge)
    axis: int  # 0 = x, 1 = y, 2 = z


def _corner_offset(c: int, dim: int) -> tuple[int, ...]:
    return tuple((c >> a) & 1 for a in range(dim))


def _edges(dim: int) -> tuple[CellEdge, ...]:
    """Cell edges ordered by axis, then by the starting corner."""
    out = []
    for axis in range(dim):
        for c in range(1 << dim):
            if not (c >> axis) & 1:
                out.append(CellEdge(c, axis))
    return tuple(out)


SQUARE_EDGES = _edges(2)  # 4 edges
CUBE_EDGES = _edges(3)  # 12 edges


def _edge_index(edges, c0: int, c1: int) -> int:
    lo, hi = min(c0, c1), max(c0, c1)
    axis = (hi ^ lo).bit_length() - 1
    return edges.index(CellEdge(lo, axis))


def _edge_mid(edges, e: int, dim: int) -> np.ndarray:
    p = np.array(_corner_offset(edges[e].corner, dim), float)
    p[edges[e].axis] += 0.5
    return p


def _face_segments(cyc: list[int], inside: list[bool]) -> list[tuple[tuple[int, int], int]]:
    """Segments on one square face: list of ((corner pair of edge A), (corner pair of edge B))
    with a representative inside corner. ``cyc`` are the 4 corners in cyclic order."""
    n_in = sum(inside)
    if n_in in (0, 4):
        return []
    crossing = [(cyc[i], cyc[(i + 1) % 4]) for i in range(4) if inside[i] != inside[(i + 1) % 4]]
    if len(crossing) == 2:
        if n_in == 3:
            out_i = inside.index(False)
            rep = cyc[(out_i + 2) % 4]  # the inside corner diagonal to the outside one
        else:
            rep = cyc[inside.index(True)]
        return [(crossing[0], crossing[1], rep)]
    # ambiguous: two diagonal inside corners, each cut off on its own
    segs = []
    for i in range(4):
        if inside[i]:
            prev_e = (cyc[(i - 1) % 4], cyc[i])
            next_e = (cyc[i], cyc[(i + 1) % 4])
            segs.append((prev_e, next_e, cyc[i]))
    return segs


@lru_cache(maxsize=None)
def cube_cases() -> tuple[tuple[tuple[int, int, int], ...], ...]:
    """Triangles (as triples of cube-edge indices) for each of the 256 cases."""
    dim = 3
    edges = CUBE_EDGES
    faces = []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        for side in (0, 1):
            base = side << axis
            cyc = [base, base | (1 << u), base | (1 << u) | (1 << v), base | (1 << v)]
            normal = np.zeros(3)
            normal[axis] = 2 * side - 1
            faces.append((cyc, normal))
    edge_faces = [set() for _ in edges]
    for f, (cyc, _) in enumerate(faces):
        for i in range(4):
            edge_faces[_edge_index(edges, cyc[i], cyc[(i + 1) % 4])].add(f)
    table = []
    for case in range(256):
        nxt: dict[int, int] = {}
        for cyc, normal in faces:
            inside = [bool((case >> c) & 1) for c in cyc]
            for ea, eb, rep in _face_segments(cyc, inside):
                a, b = _edge_index(edges, *ea), _edge_index(edges, *eb)
                pa, pb = _edge_mid(edges, a, dim), _edge_mid(edges, b, dim)
                q = np.array(_corner_offset(rep, dim), float)
                # inside on the right seen from outside: n . ((B - A) x (q - A)) < 0
                if np.dot(normal, np.cross(pb - pa, q - pa)) > 0:
                    a, b = b, a
                if a in nxt:
                    raise RuntimeError(f"table derivation: edge {a} starts two segments in case {case}")
                nxt[a] = b
        if sorted(nxt) != sorted(nxt.values()):
            raise RuntimeError(f"table derivation: open contour in case {case}")
        tris = []
        todo = dict(nxt)
        while todo:
            start = min(todo)
            loop = [start]
            e = todo.pop(start)
            while e != start:
                loop.append(e)
                e = todo.pop(e)
            tris.extend(_triangulate(loop, edge_faces))
        table.append(tuple(tris))
    return tuple(table)


def _triangulate(loop: list[int], edge_faces: list[set]) -> list[tuple[int, int, int]]:
    """Triangles of one closed loop whose interior diagonals never join two vertices on a common
    cube face: such a diagonal could coincide with an edge drawn by the neighbouring cell and make
    the mesh edge non-manifold. Fans are tried first (from each start), then any triangulation."""

    def on_face(a: int, b: int) -> bool:
        return bool(edge_faces[a] & edge_faces[b])

    n = len(loop)
    for r in range(n):
        rot = loop[r:] + loop[:r]
        if all(not on_face(rot[0], rot[i]) for i in range(2, n - 1)):
            return [(rot[0], rot[i], rot[i + 1]) for i in range(1, n - 1)]

    def solve(poly: list[int]):
        if len(poly) == 3:
            return [tuple(poly)]
        a, b = poly[0], poly[-1]  # triangle on edge (a, b) with apex poly[k]
        for k in range(1, len(poly) - 1):
            c = poly[k]
            if (k > 1 and on_face(a, c)) or (k < len(poly) - 2 and on_face(c, b)):
                continue
            left = solve(poly[: k + 1]) if k > 1 else []
            right = solve(poly[k:]) if k < len(poly) - 2 else []
            if left is not None and right is not None:
                return left + [(a, c, b)] + right
        return None

    tris = solve(loop)
    if tris is None:
        raise RuntimeError(f"table derivation: no face-free triangulation of loop {loop}")
    return tris


@lru_cache(maxsize=None)
def square_cases() -> tuple[tuple[tuple[int, int], ...], ...]:
    """Directed segments (pairs of square-edge indices) for each of the 16 cases."""
    dim = 2
    edges = SQUARE_EDGES
    cyc = [0, 1, 3, 2]
    table = []
    for case in range(16):
        inside = [bool((case >> c) & 1) for c in cyc]
        segs = []
        for ea, eb, rep in _face_segments(cyc, inside):
            a, b = _edge_index(edges, *ea), _edge_index(edges, *eb)
            pa, pb = _edge_mid(edges, a, dim), _edge_mid(edges, b, dim)
            q = np.array(_corner_offset(rep, dim), float)
            d, w = pb - pa, q - pa
            if d[0] * w[1] - d[1] * w[0] < 0:  # inside must be on the left
                a, b = b, a
            segs.append((a, b))
        table.append(tuple(segs))
    return tuple(table)


def packed(dim: int) -> dict[str, np.ndarray]:
    """Tables as flat int32 arrays for the kernels.

    ``count[case]`` elements (triangles in 3D, segments in 2D); ``elems[case * stride + 3 * t + m]``
    the cell edge of vertex m of element t (2D: ``2 * t + m``); ``edge_corner``/``edge_axis`` per
    cell edge.
    """
    if dim == 3:
        cases, edges, per = cube_cases(), CUBE_EDGES, 3
    elif dim == 2:
        cases, edges, per = square_cases(), SQUARE_EDGES, 2
    else:
        raise ValueError(f"dim: expected 2 or 3, got {dim}")
    stride = per * max(len(c) for c in cases)
    elems = np.full((len(cases), stride), -1, np.int32)
    for i, c in enumerate(cases):
        flat = [e for el in c for e in el]
        elems[i, : len(flat)] = flat
    return {
        "count": np.array([len(c) for c in cases], np.int32),
        "elems": elems.ravel(),
        "stride": np.int32(stride),
        "edge_corner": np.array([e.corner for e in edges], np.int32),
        "edge_axis": np.array([e.axis for e in edges], np.int32),
    }
