"""Hull completion: the simplices whose power centre lies outside the clipping box (thin ones
on the convex hull), found by gift wrapping outward from the faces with a simplex on one side
only; and the final orientation of every simplex."""

from __future__ import annotations

import numpy as np

from .._core import device as _device
from .._core.keys import keys_fit, row_keys


def _row_groups(rows: np.ndarray, n: int) -> np.ndarray:
    """Group id of every row of indices in [0, n): equal rows share an id, and ids follow the
    rows' lexicographic order (an int64 key sort when the rows fit one key, else lexsort)."""
    if len(rows) == 0:
        return np.zeros(0, np.int64)
    if keys_fit(n, rows.shape[1]):
        key = row_keys(rows, n)
        o = np.argsort(key, kind="stable")
        step = key[o[1:]] != key[o[:-1]]
    else:
        o = np.lexsort(rows.T[::-1])
        step = (rows[o[1:]] != rows[o[:-1]]).any(axis=1)
    g = np.empty(len(rows), np.int64)
    g[o] = np.concatenate([[0], np.cumsum(step)])
    return g


def wrap_boxes(K, P, start, order, res, d):
    """The gift wrap's box hierarchy: point bounding boxes of the grid cells, of blocks of
    WRAP_B^3 cells and of superblocks of WRAP_B^3 blocks, each with its resolution."""
    B = K.WRAP_B
    bres = (res + B - 1) // B
    sres = (bres + B - 1) // B
    cbox = _device.empty((int(np.prod(res)), 6), np.float64)
    K.cell_boxes(P, start, order, cbox, d)
    bbox = _device.empty((int(np.prod(bres)), 6), np.float64)
    K.merge_boxes(cbox, _device.upload(res), bbox, _device.upload(bres))
    sbox = _device.empty((int(np.prod(sres)), 6), np.float64)
    K.merge_boxes(bbox, _device.upload(bres), sbox, _device.upload(sres))
    return cbox, bbox, _device.upload(bres), sbox, _device.upload(sres)


def complete_hull(K, P, Wd, skip_d, grid, simplices, faces_rows, d, stats):
    """Add the simplices whose power centre lies outside the clipping box by gift wrapping from
    every face that has a simplex on one side only; a face with no point beyond it is on the hull.

    One kernel call per round finds the simplex beyond every open face; the host keeps the new
    simplices and opens those of their faces that nothing closes yet (numpy on row groups)."""
    n = P.shape[0]
    faces = faces_rows[:, :d]
    single = faces_rows[:, d + 1] == 1
    known = faces[single].astype(np.int64)  # the faces seen once so far (sorted rows) ...
    kcount = np.ones(len(known), np.int64)  # ... and how often they have been met
    front, fopp = known, faces_rows[single, d]
    new_s = np.zeros((0, d + 1), np.int64)
    new_f: list[np.ndarray] = []
    while len(front):
        out = _device.zeros((len(front),), np.int32)
        K.gift_wrap(P, Wd, skip_d, _device.upload(front.astype(np.int32)), _device.upload(fopp.astype(np.int32)),
                    out, *grid, d)
        q = _device.fetch(out, len(front)).astype(np.int64)
        ok = q >= 0
        s = np.sort(np.column_stack([front[ok], q[ok]]), axis=1)
        # keep each simplex once, and only if no earlier round found it
        g = _row_groups(np.concatenate([new_s, s]), n)
        seen = np.zeros(int(g.max()) + 1 if len(g) else 0, bool)
        seen[g[:len(new_s)]] = True
        gs = g[len(new_s):]
        _, first = np.unique(gs, return_index=True)
        s = s[first[~seen[gs[first]]]]
        new_s = np.concatenate([new_s, s])
        # their faces, each with its opposite vertex: known ones are met once more, fresh ones
        # are recorded with how often this round met them
        fa = np.concatenate([np.delete(s, k, axis=1) for k in range(d + 1)])
        op = s.T.reshape(-1)
        g = _row_groups(np.concatenate([known, fa]), n)
        slot = np.full(int(g.max()) + 1 if len(g) else 0, -1, np.int64)
        slot[g[:len(known)]] = np.arange(len(known))
        gf = slot[g[len(known):]]
        hit = gf >= 0
        np.add.at(kcount, gf[hit], 1)
        _, ufirst, ucount = np.unique(g[len(known):][~hit], return_index=True, return_counts=True)
        fa_new, op_new = fa[~hit][ufirst], op[~hit][ufirst]
        known = np.concatenate([known, fa_new])
        kcount = np.concatenate([kcount, ucount])
        new_f.append(fa_new)
        # a face met twice in this round is closed on both sides
        front, fopp = fa_new[ucount == 1], op_new[ucount == 1]
    stats["wrapped"] = len(new_s)
    if len(new_s):
        simplices = np.concatenate([simplices, new_s[np.argsort(_row_groups(new_s, n), kind="stable")]])
    if new_f:
        faces = np.concatenate([faces, *new_f])
    return simplices, faces


def orient(K, P, s):
    """Simplices with positive signed volume (the first two vertices swapped where negative)."""
    d = P.shape[1]
    if len(s) == 0:
        return s.reshape(0, d + 1)
    s_d = _device.upload(s.astype(np.int32))
    K.orient_simplices(P, s_d, d)
    return _device.fetch(s_d)
