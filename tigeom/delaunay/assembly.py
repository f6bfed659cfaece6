"""Per-cell simplex lists (what the cell kernels emit) to the triangulation's simplices and
faces: scatter into CSR form, neighbour agreement check, row slots, face rows, compaction."""

from __future__ import annotations

import numpy as np

from .._core import device as _device
from .._core.scan import ExclusiveScan, compact_rows, element


class CellLists:
    """Per-cell simplex lists in CSR form by owner point, as device arrays: ``lst`` (rows, d) and
    ``off`` (n + 1,), int32. Cells recomputed exactly on the host replace their rows."""

    def __init__(self, n, d, lst, off, rows):
        self.n, self.d = n, d
        self.lst, self.off, self.rows = lst, off, rows
        self.override: dict[int, list[tuple]] = {}

    @classmethod
    def from_passes(cls, K, n, d, passes, count):
        """Scatter the rows (i, k, S) that the cell kernels emitted to row off[i] + k."""
        total = int(_device.fetch(count).sum(dtype=np.int64))
        if d * total >= 2 ** 31:
            raise MemoryError(f"weighted_delaunay: {total} cell entries exceed the kernels' int32 indexing")
        off = _device.empty((n + 1,), np.int32)
        ExclusiveScan(n).run(count, off, n)
        lst = _device.empty((max(total, 1), d), np.int32)
        for buf, used in passes:
            if used:
                K.scatter_rows(buf, used, off, lst, d)
        return cls(n, d, lst, off, total)

    def replace(self, i, simp):
        self.override[i] = simp

    def _materialise(self):
        if not self.override:
            return
        old_off = _device.fetch(self.off).astype(np.int64)
        old_lst = _device.fetch(self.lst, self.rows)
        counts = np.diff(old_off)
        for i, s in self.override.items():
            counts[i] = len(s)
        off = np.zeros(self.n + 1, np.int64)
        off[1:] = np.cumsum(counts)
        lst = np.zeros((int(off[-1]), self.d), np.int32)
        keep = np.ones(self.n, bool)
        keep[list(self.override)] = False
        # copy untouched cells in one go
        old_owner = np.repeat(np.arange(self.n), np.diff(old_off))
        src = np.flatnonzero(keep[old_owner])
        dst = off[old_owner[src]] + (src - old_off[old_owner[src]])
        lst[dst] = old_lst[src]
        for i, s in self.override.items():
            if s:
                lst[off[i]:off[i + 1]] = np.array(s, np.int32)
        self.rows = len(lst)
        self.off = _device.upload(off.astype(np.int32))
        self.lst = _device.upload(lst if len(lst) else np.zeros((1, self.d), np.int32))
        self.override = {}

    def check(self, K) -> np.ndarray:
        self._materialise()
        bad = _device.zeros((self.n,), np.int32)
        if self.rows:
            mark = _device.zeros((self.rows,), np.int32)
            K.check_owned(self.lst, self.off, mark, bad, self.d)
            K.check_marked(self.lst, self.off, mark, bad, self.d)
        return np.flatnonzero(_device.fetch(bad))

    def assemble(self, K, P, used):
        """The triangulation inside the box, as device arrays: ``(simp, ms, faces, nf, open)``.
        simp: ms simplices (d + 1 columns), each owned by its smallest vertex, listed in cell
        order and positively oriented, their vertices marked in ``used``; faces: nf face rows
        (face..., opposite, multiplicity within the owning cell); open: the rows of faces met
        once, (face..., opposite), as (device array, rows)."""
        self._materialise()
        d, r = self.d, self.rows
        if d * r >= 2 ** 31:
            raise MemoryError(f"weighted_delaunay: {d * r} face slots exceed the kernels' int32 indexing")
        soff = _device.empty((r + 1,), np.int32)
        foff = _device.empty((r + 1,), np.int32)
        ms = nf = 0
        if r:
            own = _device.empty((r,), np.int32)
            nface = _device.empty((r,), np.int32)
            K.row_slots(self.lst, self.off, own, nface, d)
            scan = ExclusiveScan(r)
            scan.run(own, soff, r)
            scan.run(nface, foff, r)
            ms = element(soff, r)  # one value each, not the (rows + 1)-long arrays
            nf = element(foff, r)
        simp = _device.empty((max(ms, 1), d + 1), np.int32)
        fout = _device.empty((max(nf, 1), d + 2), np.int32)
        if r:
            K.cell_faces(self.lst, self.off, fout, foff, simp, soff, d)
        faces, nfk = compact_rows(fout, nf)
        if ms:
            K.orient_simplices(P, simp, ms, used, d)
        single = _device.empty((max(nfk, 1), d + 1), np.int32)
        if nfk:
            K.single_faces(faces, nfk, single, d)
        single, k1 = compact_rows(single, nfk)
        return simp, ms, faces, nfk, (single, k1)
