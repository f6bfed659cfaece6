"""Hull completion: the simplices whose power centre lies outside the clipping box (thin ones
on the convex hull), found by gift wrapping outward from the faces with a simplex on one side
only; and the final orientation of every simplex."""

from __future__ import annotations

import numpy as np

from .._core import device as _device
from .._core.keys import keys_fit, row_keys


def _row_order(rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(o, step) for rows of indices in [0, n): ``o`` a stable order that sorts the rows
    lexicographically, ``step[k]`` whether sorted row k + 1 differs from row k. The columns are
    packed into as few int64 keys as hold them (one sort of one key when the rows fit one)."""
    k = rows.shape[1]
    per = max(c for c in range(1, k + 1) if keys_fit(n, c))
    keys = [row_keys(rows[:, a:a + per], n) for a in range(0, k, per)]
    o = np.argsort(keys[0], kind="stable") if len(keys) == 1 else np.lexsort(keys[::-1])
    step = np.zeros(max(len(rows) - 1, 0), bool)
    for key in keys:
        ks = key[o]
        step |= ks[1:] != ks[:-1]
    return o, step


def _first_of_groups(rows: np.ndarray, n: int) -> np.ndarray:
    """Index of the first occurrence of every distinct row, in the rows' lexicographic order."""
    if len(rows) == 0:
        return np.zeros(0, np.int64)
    o, step = _row_order(rows, n)
    return o[np.concatenate([[True], step])]


def wrap_boxes(K, P, start, order, res, d):
    """The gift wrap's box hierarchy: the point bounding boxes of the grid cells (level 0), then
    of 2^3 groups of the level below, up to one root box, all in one array; and the table of the
    levels' first rows and resolutions (see K.gift_wrap)."""
    r = np.asarray(res, np.int64)
    table = []
    rows = 0
    while True:
        table.append([rows, *r])
        rows += int(np.prod(r))
        if (r == 1).all():
            break
        r = (r + 1) // 2
    lvl = np.array(table, np.int32)
    box = _device.empty((rows, 6), np.float64)
    lvl_d = _device.upload(lvl)
    K.cell_boxes(P, start, order, box, d)
    for level in range(1, len(lvl)):
        K.merge_boxes(box, lvl_d, level)
    return box, lvl_d


class _FaceKeys:
    """int64 keys of faces (rows of d sorted vertex indices) for the hull rounds: equal faces get
    equal keys. The vertices met get compact ids in order of appearance, so the d ids fit one key
    for any number of points (up to 2^KEY_BITS distinct vertices along the hull)."""

    KEY_BITS = 21

    def __init__(self, n: int):
        self.ids = np.full(n, -1, np.int32)
        self.m = 0

    def add(self, vertices: np.ndarray) -> None:
        """Give the vertices met for the first time their compact ids."""
        fresh = vertices[self.ids[vertices] < 0]
        if len(fresh):
            if len(fresh) > len(self.ids) >> 6:  # many: a mark per point beats a sort
                seen = np.zeros(len(self.ids), bool)
                seen[fresh] = True
                fresh = np.flatnonzero(seen)
            else:
                fresh = np.unique(fresh)
            self.ids[fresh] = np.arange(self.m, self.m + len(fresh), dtype=np.int32)
            self.m += len(fresh)
            if self.m > 1 << self.KEY_BITS:
                raise MemoryError(f"weighted_delaunay: more than {1 << self.KEY_BITS} points along the hull")

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """Keys of ``rows``, whose vertices must have been added."""
        c = self.ids[rows].astype(np.int64)
        key = c[:, 0].copy()
        for k in range(1, rows.shape[1]):
            key = (key << self.KEY_BITS) | c[:, k]
        return key


def _sorted_rows(rows: np.ndarray) -> np.ndarray:
    """Each row of a (m, 3|4) array sorted ascending, by a sorting network over its columns
    (np.sort along rows of four is several times slower)."""
    c = [rows[:, k].copy() for k in range(rows.shape[1])]
    pairs = ((0, 1), (1, 2), (0, 1)) if len(c) == 3 else ((0, 1), (2, 3), (0, 2), (1, 3), (1, 2))
    for a, b in pairs:
        lo = np.minimum(c[a], c[b])
        np.maximum(c[a], c[b], out=c[b])
        c[a] = lo
    return np.column_stack(c)


def _groups(key: np.ndarray):
    """(distinct keys ascending, the index of one occurrence of each, their counts): np.unique
    with return_index and return_counts, but by an unstable sort (several times faster; which
    occurrence is named does not matter to the caller, equal keys being equal faces)."""
    o = np.argsort(key)
    ks = key[o]
    start = np.ones(len(ks), bool)
    start[1:] = ks[1:] != ks[:-1]
    first = np.flatnonzero(start)
    return ks[first], o[first], np.diff(np.append(first, len(ks)))


def _row_hash(s: np.ndarray, keyer: _FaceKeys) -> np.ndarray:
    """One int64 per row of s: the key of all but its last column, mixed with the last."""
    with np.errstate(over="ignore"):
        return keyer(s[:, :-1]) * np.int64(-7046029254386353131) + keyer.ids[s[:, -1]].astype(np.int64)


def _first_of_simplices(s: np.ndarray, keyer: _FaceKeys) -> np.ndarray:
    """Indices of the first occurrence of every distinct row of ``s`` (sorted rows of vertices
    that ``keyer`` knows), in row order. The rows are hashed to one int64 (the key of all but the
    last column, mixed with the last), so one sort of one key brings equal rows together; when
    every pair of neighbours in that order with equal hashes also has equal rows, each run of
    equal hashes is one row repeated, and its smallest index is kept. A run that mixes rows (a hash
    collision) sends the whole set to the exact lexicographic sort."""
    if len(s) < 2:
        return np.arange(len(s))
    h = _row_hash(s, keyer)
    o = np.argsort(h)
    hs = h[o]
    same = hs[1:] == hs[:-1]
    k = np.flatnonzero(same)
    if not np.array_equal(s[o[k]], s[o[k + 1]]):
        return np.sort(_first_of_groups(s, len(keyer.ids)))
    run = np.ones(len(s), bool)
    run[1:] = ~same
    return np.sort(np.minimum.reduceat(o, np.flatnonzero(run)))


def complete_hull(K, P, Wd, skip_d, grid, open_rows, d, stats):
    """The simplices whose power centre lies outside the clipping box, found by gift wrapping from
    every face that has a simplex on one side only (``open_rows``: (face..., opposite vertex));
    a face with no point beyond it is on the hull. Returns the simplices, (k, d + 1) int64 with
    sorted rows, round by round, not yet oriented, and a list of arrays of the faces they add.

    One kernel call per round finds the simplex beyond every open face. The host keeps the
    sorted keys of the faces met so far; a new simplex's faces that are not among them are
    recorded, and those met once in the round are the next round's open faces. A simplex comes
    twice in a round when two of its faces were open (the copies are dropped); across rounds it
    cannot, its faces being all known after its round. Every step is deterministic, so the
    output's order is too."""
    n = P.shape[0]
    keyer = _FaceKeys(n)
    front, fopp = open_rows[:, :d].astype(np.int64), open_rows[:, d].astype(np.int64)
    keyer.add(front.reshape(-1))
    known = np.sort(keyer(front))  # keys of the faces seen once by the cells, then of every new face
    new_s: list[np.ndarray] = []
    new_f: list[np.ndarray] = []
    while len(front):
        out = _device.empty((len(front),), np.int32)  # the kernel writes every entry
        K.gift_wrap(P, Wd, skip_d, _device.upload(front.astype(np.int32)), _device.upload(fopp.astype(np.int32)),
                    out, *grid, d)
        q = _device.fetch(out, len(front)).astype(np.int64)
        ok = q >= 0
        keyer.add(q[ok])  # only an apex can be a vertex not met before
        s = _sorted_rows(np.column_stack([front[ok], q[ok]]))
        s = s[_first_of_simplices(s, keyer)]
        new_s.append(s)
        # their faces, each with its opposite vertex; the ones not known yet are recorded (one
        # sort of all the keys: the distinct ones are then searched in order)
        fa = np.concatenate([np.delete(s, k, axis=1) for k in range(d + 1)])
        op = s.T.reshape(-1)
        uk, ufirst, ucount = _groups(keyer(fa))
        pos = np.searchsorted(known, uk)
        fresh = known[np.minimum(pos, max(len(known) - 1, 0))] != uk if len(known) else np.ones(len(uk), bool)
        known = np.insert(known, pos[fresh], uk[fresh])
        fa_new, op_new, ucount = fa[ufirst[fresh]], op[ufirst[fresh]], ucount[fresh]
        new_f.append(fa_new)
        # a face met twice in this round is closed on both sides
        front, fopp = fa_new[ucount == 1], op_new[ucount == 1]
    wrapped = np.concatenate(new_s) if new_s else np.zeros((0, d + 1), np.int64)
    stats["wrapped"] = len(wrapped)
    return wrapped, new_f


def orient(K, P, s, used):
    """The simplices ``s`` uploaded and positively oriented (the first two vertices swapped where
    the signed volume is negative), their vertices marked in the device array ``used``."""
    d = P.shape[1]
    s_d = _device.upload(s.astype(np.int32).reshape(-1, d + 1))
    if len(s):
        K.orient_simplices(P, s_d, len(s), used, d)
    return s_d
