"""Taichi kernels of the hull rounds' bookkeeping (see ``hull.complete_hull``): compact vertex
ids, int64 face keys, open-addressing sets of keys, and the per-round steps that turn the apexes
the gift wrap found into new simplices, new faces and the next front, all on the device.

Face keys. The vertices met by the rounds get compact ids (in order of claim, which may differ
from run to run: the ids only name faces, no output depends on their values). A face's key
packs the ids of its vertices, in the order of the vertices' labels, KEY_BITS each; equal faces
get equal keys and different faces different ones.

Key sets. A set is an int64 array of 2^bits slots, EMPTY where free, with linear probing from
a multiplicative hash. Taichi has no compare-and-swap, so a key is inserted with ``atomic_min``
(ordered linear probing): a slot holding a larger key (or EMPTY) takes the smaller one, and the
key it held moves on to the next slots. Slots only ever decrease and never become EMPTY again,
so after the inserting kernel ends every key lies in the run of non-empty slots that starts at
its home slot, exactly once (two threads carrying one key meet at the slot where the first of
them leaves it). Lookups therefore run in a later kernel than the inserts. Values kept beside
a set are indexed by a key's final slot, so they too are written after the inserts.
"""

import taichi as ti

from .._core.launch import fast_module_kernels
from .._core.scan import scan_in_thread, scan_two_levels
from ._kernels import _sort_small

nd_i32 = ti.types.ndarray(dtype=ti.i32, ndim=1)
nd_i32_2 = ti.types.ndarray(dtype=ti.i32, ndim=2)
nd_i64 = ti.types.ndarray(dtype=ti.i64, ndim=1)

EMPTY = (1 << 63) - 1  # a free slot of a key set
NO_KEY = -1  # an entry with no key (no face)
FIRST_NONE = (1 << 31) - 1
SCAN_SERIAL, SCAN_BLOCKED, SCAN_DONE = 0, 1, 2


def key_bits(d: int) -> int:
    """Bits per vertex id in a face key: d ids fill at most 63 bits."""
    return 21 if d == 3 else 31


@ti.func
def _home(key, bits):
    """The home slot of a key in a set of 2^bits slots (Fibonacci hashing)."""
    h = ti.cast(key, ti.u64) * ti.u64(0x9E3779B97F4A7C15)
    return ti.cast(h >> ti.cast(64 - bits, ti.u64), ti.i32)


@ti.func
def _insert(T: ti.template(), key, bits):
    """Insert key into the set T (ordered linear probing, see the module docstring)."""
    mask = (1 << bits) - 1
    s = _home(key, bits)
    k = key
    while k != ti.i64(EMPTY):
        old = ti.atomic_min(T[s], k)
        if old == ti.i64(EMPTY) or old == k:
            k = ti.i64(EMPTY)  # placed, or there already
        else:
            if old > k:
                k = old  # took the slot: the larger key moves on
            s = (s + 1) & mask


@ti.func
def _find(T: ti.template(), key, bits):
    """The slot holding key in the set T, or -1."""
    mask = (1 << bits) - 1
    s = _home(key, bits)
    found = -1
    while found == -1:
        v = T[s]
        if v == key:
            found = s
        elif v == ti.i64(EMPTY):
            found = -2
        else:
            s = (s + 1) & mask
    return ti.max(found, -1)


@ti.func
def _key(ids: ti.template(), v: ti.template(), d: ti.template()):
    """The key of the face with vertices v (d labels, ascending)."""
    key = ti.i64(0)
    for a in ti.static(range(d)):
        key = (key << ti.static(key_bits(d))) | ti.cast(ids[v[a]], ti.i64)
    return key


@ti.func
def _claim(x, ids: ti.template(), claim: ti.template(), counter: ti.template()):
    """Give vertex x (skipped when negative) a compact id unless it has one: its first claimer
    takes the next one (counter[0])."""
    if x >= 0 and ids[x] < 0:
        if ti.atomic_max(claim[x], 1) == 0:
            ids[x] = ti.atomic_add(counter[0], 1)


@ti.kernel
def assign_ids(v: nd_i32_2, m: ti.i32, cols: ti.template(), ids: nd_i32, claim: nd_i32, counter: nd_i32):
    """Compact ids for the vertices of the first m rows of v (their first cols columns)."""
    for e in range(m):
        for c in ti.static(range(cols)):
            _claim(v[e, c], ids, claim, counter)


@ti.kernel
def fill64(a: nd_i64, v: ti.i64):
    for i in range(a.shape[0]):
        a[i] = v


@ti.kernel
def fill32(a: nd_i32, v: ti.i32):
    for i in range(a.shape[0]):
        a[i] = v


@ti.kernel
def split_open(rows: nd_i32_2, m: ti.i32, ids: nd_i32, faces: nd_i32_2, opp: nd_i32, key: nd_i64, d: ti.template()):
    """The first front: rows (face..., opposite vertex) into faces, opposite vertices and keys."""
    for e in range(m):
        v = ti.Vector.zero(ti.i32, d)
        for a in ti.static(range(d)):
            v[a] = rows[e, a]
            faces[e, a] = v[a]
        opp[e] = rows[e, d]
        key[e] = _key(ids, v, d)


@ti.kernel
def set_insert(keys: nd_i64, m: ti.i32, T: nd_i64, bits: ti.i32):
    """Insert the first m keys (NO_KEY entries skipped) into the set T of 2^bits slots."""
    for e in range(m):
        if keys[e] != NO_KEY:
            _insert(T, keys[e], bits)


@ti.kernel
def set_index(keys: nd_i64, m: ti.i32, T: nd_i64, bits: ti.i32, val: nd_i32):
    """val[slot of keys[e]] = e, for keys inserted into T by an earlier kernel."""
    for e in range(m):
        val[_find(T, keys[e], bits)] = e


@ti.kernel
def set_rehash(T: nd_i64, T2: nd_i64, bits2: ti.i32):
    """Insert every key of the set T into the (larger) set T2 of 2^bits2 slots."""
    for s in range(T.shape[0]):
        if T[s] != ti.i64(EMPTY):
            _insert(T2, T[s], bits2)


@ti.kernel
def set_lookup(keys: nd_i64, m: ti.i32, T: nd_i64, bits: ti.i32, slot: nd_i32):
    """slot[e]: where keys[e] lies in the set T, or -1 (for tests)."""
    for e in range(m):
        slot[e] = _find(T, keys[e], bits)


@ti.kernel
def new_simplices(faces: nd_i32_2, apex: nd_i32, m: ti.i32, ids: nd_i32, Tf: nd_i64, bits_f: ti.i32, fval: nd_i32,
                  keep: nd_i32, srow: nd_i32_2, gkey: nd_i64, gleft: nd_i32, d: ti.template()):
    """For each front face fi with an apex: its simplex (sorted, into srow) and the d faces that
    hold the apex (keys into gkey[fi d + j], the vertex each leaves out into gleft). keep[fi] = 0
    for a face without apex, and for a simplex that the front face m < fi also found: one of its
    apex faces is front face m (the front's set Tf, its index in fval) and m's apex is the
    vertex that face leaves out. Faces of a dropped simplex get NO_KEY."""
    for fi in range(m):
        q = apex[fi]
        k = 0
        if q >= 0:
            k = 1
            u = ti.Vector.zero(ti.i32, d + 1)
            for a in ti.static(range(d)):
                u[a] = faces[fi, a]
            u[d] = q
            s, _ = _sort_small(u, d + 1)
            for a in ti.static(range(d + 1)):
                srow[fi, a] = s[a]
            for j in ti.static(range(d)):
                x = faces[fi, j]
                g = ti.Vector.zero(ti.i32, d)
                c = 0
                for a in ti.static(range(d + 1)):
                    if s[a] != x:
                        g[c] = s[a]
                        c += 1
                key = _key(ids, g, d)
                gkey[fi * d + j] = key
                gleft[fi * d + j] = x
                slot = _find(Tf, key, bits_f)
                if slot >= 0:
                    mf = fval[slot]
                    if apex[mf] == x and mf < fi:
                        k = 0
        keep[fi] = k
        if k == 0:
            for j in ti.static(range(d)):
                gkey[fi * d + j] = NO_KEY


@ti.kernel
def round_insert(gkey: nd_i64, m: ti.i32, Tk: nd_i64, bits_k: ti.i32, Tr: nd_i64, bits_r: ti.i32, fresh: nd_i32):
    """fresh[e] = 1 for the apex faces not in the known set Tk, which go into this round's set Tr."""
    for e in range(m):
        f = 0
        if gkey[e] != NO_KEY:
            if _find(Tk, gkey[e], bits_k) < 0:
                f = 1
                _insert(Tr, gkey[e], bits_r)
        fresh[e] = f


@ti.kernel
def round_count(gkey: nd_i64, fresh: nd_i32, m: ti.i32, Tr: nd_i64, bits_r: ti.i32, cnt: nd_i32, first: nd_i32):
    """Per fresh face in Tr: how many new simplices hold it, and the first of its entries."""
    for e in range(m):
        if fresh[e] == 1:
            s = _find(Tr, gkey[e], bits_r)
            ti.atomic_add(cnt[s], 1)
            ti.atomic_min(first[s], e)


@ti.kernel
def round_flags(gkey: nd_i64, fresh: nd_i32, m: ti.i32, Tr: nd_i64, bits_r: ti.i32, cnt: nd_i32, first: nd_i32,
                new: nd_i32, front: nd_i32):
    """new[e] = 1 for the first entry of each fresh face; front[e] = 1 where that face is held by
    one new simplex only (open on its other side)."""
    for e in range(m):
        a = 0
        b = 0
        if fresh[e] == 1:
            s = _find(Tr, gkey[e], bits_r)
            if first[s] == e:
                a = 1
                if cnt[s] == 1:
                    b = 1
        new[e] = a
        front[e] = b


@ti.kernel
def round_scans(keep: nd_i32, soff: nd_i32, m: ti.i32, new: nd_i32, noff: nd_i32, front: nd_i32, foff: nd_i32,
                md: ti.i32, counter: nd_i32, out: nd_i32, s1: nd_i32, o1: nd_i32, s2: nd_i32, o2: nd_i32,
                mode: ti.template()):
    """The three exclusive scans of a round (kept simplices, new faces, next front) and the
    totals into out (with the vertex ids given), for one fetch. mode: SCAN_SERIAL (one thread),
    SCAN_BLOCKED (two levels, see _core.scan) or SCAN_DONE (scanned already: totals only)."""
    if ti.static(mode == SCAN_SERIAL):
        for _ in range(1):  # one thread, one task: the three scans in turn
            scan_in_thread(keep, soff, m)
            scan_in_thread(new, noff, md)
            scan_in_thread(front, foff, md)
    elif ti.static(mode == SCAN_BLOCKED):
        scan_two_levels(keep, soff, s1, o1, s2, o2, m)
        scan_two_levels(new, noff, s1, o1, s2, o2, md)
        scan_two_levels(front, foff, s1, o1, s2, o2, md)
    for _ in range(1):
        out[0] = soff[m]
        out[1] = noff[md]
        out[2] = foff[md]
        out[3] = counter[0]


@ti.kernel
def round_clear(Tf: nd_i64, Tr: nd_i64, cnt: nd_i32, first: nd_i32, nkey: nd_i64, mk: ti.i32, Tk: nd_i64,
                bits_k: ti.i32):
    """Empty the round's key sets and counters, and insert the previous round's mk new faces
    (nkey) into the known set Tk: one loop (one task on a CPU, where each loop costs a dispatch)."""
    for s in range(ti.max(ti.max(Tf.shape[0], Tr.shape[0]), ti.max(cnt.shape[0], mk))):
        if s < Tf.shape[0]:
            Tf[s] = ti.i64(EMPTY)
        if s < Tr.shape[0]:
            Tr[s] = ti.i64(EMPTY)
        if s < cnt.shape[0]:
            cnt[s] = 0
            first[s] = FIRST_NONE
        if s < mk:
            _insert(Tk, nkey[s], bits_k)


@ti.kernel
def round_front(fkey: nd_i64, m: ti.i32, Tf: nd_i64, bits_f: ti.i32, apex: nd_i32, ids: nd_i32, claim: nd_i32,
                counter: nd_i32):
    """The front's keys into its set Tf; compact ids for the apexes found."""
    for e in range(m):
        _insert(Tf, fkey[e], bits_f)
        _claim(apex[e], ids, claim, counter)


@ti.kernel
def round_emit(srow: nd_i32_2, keep: nd_i32, soff: nd_i32, m: ti.i32, simp: nd_i32_2, at_s: ti.i32,
               gkey: nd_i64, gleft: nd_i32, new: nd_i32, noff: nd_i32, nface: nd_i32_2, at_f: ti.i32, nkey: nd_i64,
               front: nd_i32, foff: nd_i32, faces2: nd_i32_2, opp2: nd_i32, key2: nd_i64, d: ti.template()):
    """Write the round's simplices (from row at_s of simp), its new faces (from row at_f of
    nface; their keys from 0 in nkey) and the next front (faces, the vertex each leaves out as
    the opposite vertex, keys), each in entry order."""
    for fi in range(m):
        if keep[fi] == 1:
            s = ti.Vector.zero(ti.i32, d + 1)
            for a in ti.static(range(d + 1)):
                s[a] = srow[fi, a]
                simp[at_s + soff[fi], a] = s[a]
            for j in ti.static(range(d)):
                e = fi * d + j
                if new[e] == 1:
                    x = gleft[e]
                    c = 0
                    r = noff[e]
                    t = foff[e]
                    for a in ti.static(range(d + 1)):
                        if s[a] != x:
                            nface[at_f + r, c] = s[a]
                            if front[e] == 1:
                                faces2[t, c] = s[a]
                            c += 1
                    nkey[r] = gkey[e]
                    if front[e] == 1:
                        opp2[t] = x
                        key2[t] = gkey[e]


@ti.kernel
def copy_rows_at(src: nd_i32_2, n: ti.i32, dst: nd_i32_2, at: ti.i32, cols: ti.template()):
    """dst[at:at + n] = src[:n]."""
    for r in range(n):
        for c in ti.static(range(cols)):
            dst[at + r, c] = src[r, c]


fast_module_kernels(globals())
