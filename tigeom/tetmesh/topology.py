"""Tet-mesh topology built by kernels: vertex stars, face adjacency, the edge list and the
boundary triangles.

Public: :func:`face_adjacency` and :func:`boundary_faces` (numpy in and out). Inside the part,
:class:`MeshTopology` keeps a connectivity on the device for the improvement passes.

Every improvement pass changes the connectivity, so these are rebuilt many times per sweep; at
1e6 tets numpy sorts over 4e6 faces and 6e6 edges made the passes host-bound. Here:

* the star of each vertex (the tets around it, ascending) is a CSR built by counting, a scan
  and a scatter, then sorted per vertex (a few dozen entries), so it does not depend on the
  order the atomics ran in;
* the tet across face k of tet t is found by scanning the star of one of the face's vertices
  for the other tet holding all three (a manifold mesh has at most one);
* an edge belongs to the lowest-numbered tet that holds it (the first match in a sorted star);
  the owners write the edges through a scan, and the host sorts the ~M edges by key.

The results equal numpy sort-based versions (same rows, same order; tests compare them).
"""

import numpy as np
import taichi as ti

from .. import runtime
from .._core import device as _device
from .._core.keys import row_keys
from .._core.launch import fast_module_kernels
from .._core.scan import ExclusiveScan, element, sort_segments
from ._kernels import EDGES  # the tet's local edge numbering, shared with the move kernels

nd_i32 = ti.types.ndarray(dtype=ti.i32, ndim=1)
nd_i32_2 = ti.types.ndarray(dtype=ti.i32, ndim=2)


@ti.kernel
def _star_count(T: nd_i32_2, cnt: nd_i32):
    for t, k in ti.ndrange(T.shape[0], 4):
        ti.atomic_add(cnt[T[t, k]], 1)


@ti.kernel
def _star_fill(T: nd_i32_2, ptr: nd_i32, fill: nd_i32, vt: nd_i32):
    for t, k in ti.ndrange(T.shape[0], 4):
        v = T[t, k]
        s = ti.atomic_add(fill[v], 1)
        vt[ptr[v] + s] = t


@ti.func
def _holds(T: ti.template(), j, v):
    return T[j, 0] == v or T[j, 1] == v or T[j, 2] == v or T[j, 3] == v


@ti.kernel
def _face_adjacency(T: nd_i32_2, ptr: nd_i32, vt: nd_i32, nb: nd_i32_2, shared: nd_i32):
    for t, k in ti.ndrange(T.shape[0], 4):
        a = T[t, (k + 1) % 4]
        b = T[t, (k + 2) % 4]
        c = T[t, (k + 3) % 4]
        found = -1
        hits = 0
        for s in range(ptr[a], ptr[a + 1]):
            j = vt[s]
            if j != t:
                if _holds(T, j, b) and _holds(T, j, c):
                    if found < 0:
                        found = j
                    hits += 1
        nb[t, k] = found
        if hits > 1:
            shared[0] = 1


@ti.kernel
def _edge_owner(T: nd_i32_2, ptr: nd_i32, vt: nd_i32, own: nd_i32):
    for t in range(T.shape[0]):
        for e in ti.static(range(6)):
            a = T[t, EDGES[e][0]]
            b = T[t, EDGES[e][1]]
            first = -1
            s = ptr[a]
            while first < 0 and s < ptr[a + 1]:
                if _holds(T, vt[s], b):
                    first = vt[s]
                s += 1
            own[6 * t + e] = 1 if first == t else 0


@ti.kernel
def _edge_emit(T: nd_i32_2, own: nd_i32, slot: nd_i32, E: nd_i32_2, etet: nd_i32):
    for t in range(T.shape[0]):
        for e in ti.static(range(6)):
            if own[6 * t + e] == 1:
                a = T[t, EDGES[e][0]]
                b = T[t, EDGES[e][1]]
                r = slot[6 * t + e]
                E[r, 0] = ti.min(a, b)
                E[r, 1] = ti.max(a, b)
                etet[r] = t


class MeshTopology:
    """Stars, face adjacency and edges of one connectivity ``Td`` (M, 4) over ``nv`` vertices,
    already on the device (int32). ``ptr``/``vt``: the star CSR (device arrays)."""

    def __init__(self, Td, m: int, nv: int):
        if m == 0:
            raise ValueError("tets: the mesh has no tets")
        self.Td, self.m, self.nv = Td, m, nv
        cnt = _device.zeros((nv,), np.int32)
        _star_count(Td, cnt)
        self.ptr = _device.empty((nv + 1,), np.int32)
        ExclusiveScan(nv).run(cnt, self.ptr, nv)
        self.vt = _device.empty((4 * m,), np.int32)
        _star_fill(Td, self.ptr, _device.zeros((nv,), np.int32), self.vt)
        sort_segments(self.ptr, self.vt)  # each vertex's star, ascending

    def adjacency(self):
        """(M, 4) int32 device array: the tet across the face opposite local vertex k, -1 on the
        boundary. ValueError when a face is shared by more than two tets."""
        nb = _device.empty((self.m, 4), np.int32)
        shared = _device.zeros((1,), np.int32)
        _face_adjacency(self.Td, self.ptr, self.vt, nb, shared)
        if int(_device.fetch(shared)[0]):
            raise ValueError("tets: a face is shared by more than two tets (the mesh is not a manifold)")
        return nb

    def edge_arrays(self):
        """(E (ne, 2), etet (ne,), ne): the unique edges (a < b) as device arrays, each with the
        lowest-numbered tet holding it, in the order of that tet and then of its local edges
        (so the same connectivity always gives the same order), without a host round trip."""
        n6 = 6 * self.m
        own = _device.empty((n6,), np.int32)
        _edge_owner(self.Td, self.ptr, self.vt, own)
        slot = _device.empty((n6 + 1,), np.int32)
        ExclusiveScan(n6).run(own, slot, n6)
        ne = element(slot, n6)
        E = _device.empty((ne, 2), np.int32)
        etet = _device.empty((ne,), np.int32)
        _edge_emit(self.Td, own, slot, E, etet)
        return E, etet, ne

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Unique edges (a < b), sorted, and for each the lowest-numbered tet holding it (host)."""
        E, etet, ne = self.edge_arrays()
        E, etet = _device.fetch(E, ne), _device.fetch(etet, ne)
        order = np.argsort(row_keys(E, self.nv), kind="stable")
        return E[order], etet[order]

    def stars(self) -> tuple[np.ndarray, np.ndarray]:
        """The star CSR on the host: ptr (nv + 1,) and the tets, ascending per vertex."""
        return _device.fetch(self.ptr).copy(), _device.fetch(self.vt).copy()


def face_adjacency(t: np.ndarray) -> np.ndarray:
    """(M, 4): the tet across the face opposite local vertex k, -1 on the boundary.

    ValueError when a face is shared by more than two tets (not a manifold mesh).
    """
    t = np.asarray(t)
    if t.ndim != 2 or t.shape[1] != 4 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"tets: expected (M, 4) integer vertex indices, got {t.dtype} {t.shape}")
    if len(t) == 0:
        return np.zeros((0, 4), np.int64)
    if t.min() < 0:
        raise ValueError("tets: negative vertex index")
    runtime.ensure_init()
    topo = MeshTopology(_device.upload(t.astype(np.int32)), len(t), int(t.max()) + 1)
    return _device.fetch(topo.adjacency()).astype(np.int64)


_OTHER3 = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])  # the face opposite local vertex k


def boundary_faces(t: np.ndarray, nb: np.ndarray | None = None) -> np.ndarray:
    """Boundary triangles (faces of one tet), sorted per row and lexicographically."""
    nb = face_adjacency(t) if nb is None else nb
    tt, kk = np.nonzero(nb < 0)
    if len(tt) == 0:
        return np.zeros((0, 3), np.int64)
    f = np.sort(np.asarray(t)[tt[:, None], _OTHER3[kk]], axis=1).astype(np.int64)
    return f[np.lexsort(f.T[::-1])]


fast_module_kernels(globals())  # every kernel above launches through a prepared launch context
