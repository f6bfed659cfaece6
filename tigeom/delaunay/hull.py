"""Hull completion: the simplices whose power centre lies outside the clipping box (thin ones
on the convex hull), found by gift wrapping outward from the faces with a simplex on one side
only, round by round, with the rounds' bookkeeping on the device (``_hull_kernels``)."""

from __future__ import annotations

import numpy as np

from .._core import device as _device
from .._core.scan import ExclusiveScan
from . import _hull_kernels as H


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


def _bits(n: int) -> int:
    """log2 of the slots of a key set for n keys: a power of two at least 2n (load <= 1/2)."""
    return max(int(2 * max(n, 1) - 1).bit_length(), 4)


class _Scratch:
    """Device arrays reused across the rounds, reallocated only when a round needs more rows."""

    def __init__(self):
        self.arrays: dict = {}

    def __call__(self, name: str, rows: int, cols: int, dtype):
        a = self.arrays.get(name)
        if a is None or a.shape[0] < rows:
            a = _device.empty((max(rows, 16),) if cols == 0 else (max(rows, 16), cols), dtype)
            self.arrays[name] = a
        return a


class _Known:
    """The set of every face met so far (open faces of the cells' triangulation, then every new
    face), grown when it would fill past half. A round's new faces go in at the start of the
    next round (``round_clear``); ``pending`` holds them until then."""

    SLACK = 4  # slots per key at first

    def __init__(self, keys, m: int):
        self.count = self.rehashes = 0
        self.bits = _bits(int(self.SLACK * m))
        self.T = _device.empty((1 << self.bits,), np.int64)
        H.fill64(self.T, H.EMPTY)
        self.reserve(m)
        if m:
            H.set_insert(keys, m, self.T, self.bits)
        self.pending = (keys, 0)

    def reserve(self, m: int) -> None:
        """Room for m more keys (a rehash into a larger set when needed)."""
        if 2 * (self.count + m) > (1 << self.bits):
            self.rehashes += 1
            bits = _bits(4 * (self.count + m))
            T2 = _device.empty((1 << bits,), np.int64)
            H.fill64(T2, H.EMPTY)
            H.set_rehash(self.T, T2, bits)
            self.T, self.bits = T2, bits
        self.count += m


def complete_hull(K, P, Wd, skip_d, grid, open_d, k0: int, d: int, stats):
    """The simplices whose power centre lies outside the clipping box, found by gift wrapping from
    every face that has a simplex on one side only (``open_d``, k0 device rows (face...,
    opposite vertex)); a face with no point beyond it is on the hull. Returns, as device arrays
    with their row counts, the new simplices (rows sorted, not yet oriented) and the faces they
    add: ``(simp, ms, faces, mf)``.

    One gift-wrap call per round finds the apex beyond every face of the front; the rest of the
    round runs on the device too (``_hull_kernels``): a simplex found from two of its faces is
    kept once, its faces that hold the apex are looked up among the faces met so far, and those
    not met are recorded and, where one new simplex only holds them, form the next front. One
    fetch of four counts per round reaches the host. Every choice depends on entry order only,
    never on hash slots or id values, so the output and its order are deterministic; across
    rounds a simplex cannot come twice, its faces being all known after its round."""
    n = P.shape[0]
    scratch = _Scratch()
    ids = _device.empty((n,), np.int32)
    H.fill32(ids, -1)
    claim = _device.zeros((n,), np.int32)
    counter = _device.zeros((1,), np.int32)
    if k0:
        H.assign_ids(open_d, k0, d, ids, claim, counter)
    front = scratch("front", k0, d, np.int32)
    fopp = scratch("fopp", k0, 0, np.int32)
    fkey = scratch("fkey", k0, 0, np.int64)
    if k0:
        H.split_open(open_d, k0, ids, front, fopp, fkey, d)
    known = _Known(fkey, k0)
    out_s, out_f = _Rows(2 * k0, d + 1), _Rows(3 * k0, d)  # grown when a round needs more
    k, r = k0, 0
    while k:
        front, fopp, fkey, k = _round(K, P, Wd, skip_d, grid, d, scratch, ids, claim, counter, known,
                                      front, fopp, fkey, k, out_s, out_f, r)
        r += 1
    stats["wrapped"] = out_s.rows
    return out_s.a, out_s.rows, out_f.a, out_f.rows


class _Rows:
    """A device array of int32 rows filled round by round, grown (doubled) when a round needs
    more room."""

    MIN_ROWS = 1024

    def __init__(self, cap: int, cols: int):
        self.cols, self.rows = cols, 0
        self.a = _device.empty((max(cap, self.MIN_ROWS, 1), cols), np.int32)

    def reserve(self, m: int) -> int:
        """Make room for m more rows; returns the first row they go to."""
        if self.rows + m > self.a.shape[0]:
            a = _device.empty((max(2 * self.a.shape[0], self.rows + m), self.cols), np.int32)
            if self.rows:
                H.copy_rows_at(self.a, self.rows, a, 0, self.cols)
            self.a = a
        at = self.rows
        self.rows += m
        return at


def _round(K, P, Wd, skip_d, grid, d, scratch, ids, claim, counter, known, front, fopp, fkey, k, out_s, out_f, r):
    """Hull round r over the front's k faces: appends its simplices and new faces to out_s and
    out_f; returns the next front (faces, opposite vertices, keys, count), in the scratch
    arrays of the round's parity. Ten launches and one fetch of four counts."""
    kd = k * d
    bits_f, bits_r = _bits(k), _bits(kd)
    Tf = scratch("Tf", 1 << bits_f, 0, np.int64)
    Tr = scratch("Tr", 1 << bits_r, 0, np.int64)
    bits_f, bits_r = int(Tf.shape[0]).bit_length() - 1, int(Tr.shape[0]).bit_length() - 1
    cnt = scratch("cnt", 1 << bits_r, 0, np.int32)
    first = scratch("first", 1 << bits_r, 0, np.int32)
    H.round_clear(Tf, Tr, cnt, first, *known.pending, known.T, known.bits)
    apex = scratch("apex", k, 0, np.int32)
    K.gift_wrap(P, Wd, skip_d, front, fopp, k, apex, *grid, d)
    H.round_front(fkey, k, Tf, bits_f, apex, ids, claim, counter)
    fval = scratch("fval", 1 << bits_f, 0, np.int32)
    H.set_index(fkey, k, Tf, bits_f, fval)
    keep = scratch("keep", k, 0, np.int32)
    srow = scratch("srow", k, d + 1, np.int32)
    gkey = scratch("gkey", kd, 0, np.int64)
    gleft = scratch("gleft", kd, 0, np.int32)
    H.new_simplices(front, apex, k, ids, Tf, bits_f, fval, keep, srow, gkey, gleft, d)
    fresh = scratch("fresh", kd, 0, np.int32)
    H.round_insert(gkey, kd, known.T, known.bits, Tr, bits_r, fresh)
    H.round_count(gkey, fresh, kd, Tr, bits_r, cnt, first)
    new = scratch("new", kd, 0, np.int32)
    nxt = scratch("next", kd, 0, np.int32)
    H.round_flags(gkey, fresh, kd, Tr, bits_r, cnt, first, new, nxt)
    scan = scratch.arrays.get("_scan")
    if scan is None or scan.capacity < kd:
        scan = scratch.arrays["_scan"] = ExclusiveScan(max(kd, 1024))
    soff = scratch("soff", k + 1, 0, np.int32)
    noff = scratch("noff", kd + 1, 0, np.int32)
    foff = scratch("foff", kd + 1, 0, np.int32)
    tot = scratch("tot", 4, 0, np.int32)
    if scan.serial(kd):
        mode = H.SCAN_SERIAL
    elif scan.one_launch:
        mode = H.SCAN_BLOCKED
    else:  # beyond BLOCK^3 entries: the scans' own recursion
        for x, y, m in ((keep, soff, k), (new, noff, kd), (nxt, foff, kd)):
            scan.run(x, y, m)
        mode = H.SCAN_DONE
    H.round_scans(keep, soff, k, new, noff, nxt, foff, kd, counter, tot, *scan.scratch(), mode)
    ms, mf, k2, nid = (int(v) for v in _device.fetch(tot, 4))
    if nid >= (1 << H.key_bits(d)) - 1:
        raise MemoryError(f"weighted_delaunay: more than {(1 << H.key_bits(d)) - 2} points along the hull")
    nkey = scratch(f"nkey{r % 2}", mf, 0, np.int64)  # inserted into the known set by the next round
    nxt_f = f"front{r % 2}", f"fopp{r % 2}", f"fkey{r % 2}"
    front2 = scratch(nxt_f[0], k2, d, np.int32)
    fopp2, fkey2 = scratch(nxt_f[1], k2, 0, np.int32), scratch(nxt_f[2], k2, 0, np.int64)
    at_s, at_f = out_s.reserve(ms), out_f.reserve(mf)  # may grow the arrays: before reading them
    H.round_emit(srow, keep, soff, k, out_s.a, at_s, gkey, gleft, new, noff, out_f.a, at_f, nkey, nxt, foff,
                 front2, fopp2, fkey2, d)
    known.reserve(mf)
    known.pending = (nkey, mf)
    return front2, fopp2, fkey2, k2
