"""Boundary-preserving tetrahedral mesh improvement: ``improve_tets(vertices, tets, fixed=None)``.

Each sweep runs, as Taichi kernels over the whole mesh:

1. smoothing: every free interior vertex of a tet below quality 0.6 climbs the worst quality of
   its star (min-norm ascent direction of the nearly-worst tets, backtracking, kept only if the
   worst tet improves); an independent set of the proposals (no two on one edge, worse stars
   first) is applied; up to 20 such passes per sweep (three passes per sweep left the test
   family near 25 degrees, twenty reach about 30);
2. topological passes until none applies: 2-3 flips of interior faces and removal of interior
   edges with 3..7 tets around them (3-2 and 4-4 flips are the n = 3, 4 cases; the best
   triangulation of the ring is chosen among all of them);
3. when a sweep stalls: vertex insertion on interior edges of the worst tets (an edge split
   whose new vertex is placed by compass search on the worst of its new tets).

A move is kept only if it raises the worst quality of the tets it replaces, so no tet is ever
made worse than the worst it replaced, none can invert, and the boundary faces (never touched:
moves act on interior faces and edges only, boundary vertices never move) stay as they were.
Moves that touch a common tet are resolved by priority (the worst replaced tet first, an atomic
claim per tet), so the worst elements improve first and every pass is parallel. Between passes
the vertex stars, face adjacency and edge list are rebuilt by kernels (``_topology``); the host
compacts the tets and sorts the edges.

The quality is the smallest dihedral sine of a tet (see ``_kernels``): it penalises small and
large angles alike, and a mesh whose every tet has quality >= 0.5 has every dihedral angle
within [30, 150] degrees.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .. import _device, runtime
from .._progress import progress_bar
from ._topology import MeshTopology
from .quality import signed_volumes, tet_quality, validate_mesh

logger = logging.getLogger(__name__)

SMOOTH_ROUNDS = 20  # smoothing passes per sweep (each moves an independent set of vertices)
ACTIVE_SINE = 0.6  # smoothing moves the vertices of tets whose quality is below this (~37 deg)


@dataclass
class ImproveResult:
    """Output of :func:`improve_tets`: the mesh plus before/after figures and the run's history."""

    vertices: np.ndarray
    tets: np.ndarray
    before: dict
    after: dict
    history: list = field(default_factory=list)  # per sweep: min dihedral, min sine, tets, counts
    stats: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- topology (numpy)


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


def _triangulation_table(max_n: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Every triangulation of the n-gon 0..n-1 for n = 3..max_n, rows of 3 (n - 2) positions."""
    def tris(lo, hi):
        if hi - lo < 2:
            return [[]]
        out = []
        for k in range(lo + 1, hi):
            for left in tris(lo, k):
                for right in tris(k, hi):
                    out.append(left + [(lo, k, hi)] + right)
        return out

    rows, off = [], [0] * (max_n + 3)
    for n in range(3, max_n + 1):
        off[n] = len(rows)
        for tr in tris(0, n - 1):
            row = [i for tri in tr for i in tri]
            rows.append(row + [0] * (3 * (max_n - 2) - len(row)))
        off[n + 1] = len(rows)
    for n in range(max_n + 2, len(off)):
        off[n] = len(rows)
    return np.array(rows, np.int32), np.array(off, np.int32)


def _orient_flat(v: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Give zero-volume tets the orientation their neighbours imply (a shared face must be seen
    with opposite orientations from its two tets)."""
    vol = signed_volumes(v, t)
    flat = vol == 0
    if not flat.any():
        return t
    t = t.copy()
    for _ in range(8):
        nb = face_adjacency(t)
        changed = False
        for i in np.flatnonzero(flat):
            for k in range(4):
                j = nb[i, k]
                if j < 0 or flat[j]:
                    continue
                if _face_parity(t[i], k) == _face_parity(t[j], int(np.flatnonzero(~np.isin(t[j], t[i]))[0])):
                    t[i, [2, 3]] = t[i, [3, 2]]
                    changed = True
                break
        if not changed:
            break
    return t


def _face_parity(tet, k) -> int:
    f = [tet[j] for j in range(4) if j != k]
    if (3 - k) % 2:
        f[0], f[1] = f[1], f[0]
    inv = sum(f[a] > f[b] for a in range(3) for b in range(a + 1, 3))
    return inv % 2


# --------------------------------------------------------------------------- driver


def _check_fixed(fixed, n: int) -> np.ndarray:
    mask = np.zeros(n, bool)
    if fixed is None:
        return mask
    arr = np.asarray(fixed)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"fixed: a boolean mask must have shape ({n},), got {arr.shape}")
        return arr.copy()
    if arr.size == 0:
        return mask
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"fixed: expected vertex indices (K,) or a boolean mask ({n},), got {arr.dtype} {arr.shape}")
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"fixed: index out of range [0, {n})")
    mask[arr] = True
    return mask


def improve_tets(vertices, tets, fixed=None, *, max_sweeps: int = 40, insert: bool = True,
                 smooth_iters: int = 4, smooth_rounds: int = SMOOTH_ROUNDS, time_limit: float | None = None,
                 progress: bool = False, callback=None) -> ImproveResult:
    """Improve a tetrahedral mesh without touching its boundary.

    Parameters
    ----------
    vertices, tets : (N, 3) floats and (M, 4) vertex indices. Negatively oriented tets are
        reoriented with a logged warning; zero-volume tets are allowed (they get removed).
    fixed : vertex indices or a boolean mask of vertices that must not move, on top of the
        boundary vertices, which never move.
    max_sweeps : upper bound on smoothing + flipping sweeps; the run stops earlier when a sweep
        (insertion included) no longer raises the worst quality.
    insert : allow vertex insertion (edge splits) when smoothing and flips stall.
    smooth_iters, smooth_rounds : ascent steps per vertex proposal, and smoothing passes per
        sweep. Fewer rounds are faster but stop lower: on the test family 3 rounds reach about
        25 degrees in a third of the time that 20 rounds (the default) take to reach about 30.
    time_limit : seconds after which the run stops: checked between smoothing passes and between
        topological passes, so a sweep can end early; whatever was applied until then is kept
        (every pass leaves a valid mesh) and ``stats["time_limited"]`` says so.
    progress : a progress bar (rich) over the sweeps.
    callback : called after every sweep with the history entry (a dict).

    Returns an :class:`ImproveResult`: ``vertices`` (the input's first, in their order, then any
    inserted ones), ``tets``, ``before``/``after`` quality summaries and the per-sweep history.
    The boundary triangles, the boundary and fixed vertices' coordinates and the total volume are
    those of the input; every tet has positive volume (checked; a violation is a RuntimeError).
    """
    v, t = validate_mesh(vertices, tets)
    if len(t) == 0:
        raise ValueError("tets: the mesh has no tets")
    fixed_mask = _check_fixed(fixed, len(v))
    if max_sweeps < 0:
        raise ValueError(f"max_sweeps: must be >= 0, got {max_sweeps}")
    for name, val in (("smooth_iters", smooth_iters), ("smooth_rounds", smooth_rounds)):
        if int(val) != val or val < 1:
            raise ValueError(f"{name}: must be an integer >= 1, got {val}")
    t = _orient_flat(v, t)
    runtime.ensure_init()
    from . import _kernels as K

    t0 = time.perf_counter()
    nb0 = face_adjacency(t)
    bfaces0 = boundary_faces(t, nb0)
    vol0 = float(signed_volumes(v, t).sum())
    n_in = len(v)
    boundary = np.zeros(n_in, bool)
    boundary[bfaces0.ravel()] = True
    pinned = boundary | fixed_mask
    before = tet_quality(v, t).summary()
    tab, tab_off = _triangulation_table(7)
    tab_d, tab_off_d = _device.upload(tab), _device.upload(tab_off)
    V = v.copy()
    T = t.astype(np.int32)
    counts = {"smooth_moves": 0, "flip23": 0, "edge_removal": 0, "splits": 0}
    history: list[dict] = []
    eps = 1e-9

    limited = [False]  # set once the time limit cut the run short

    def out_of_time():
        limited[0] = limited[0] or (time_limit is not None and time.perf_counter() - t0 > time_limit)
        return limited[0]

    def qual_d(Vd, Td, m):
        q = _device.empty((m,), np.float64)
        K.qualities(Vd, Td, q)
        return q

    def qual(V, T):
        return _device.fetch(qual_d(_device.upload(V), _device.upload(T), len(T))).copy()

    def resolve(ctets, cn, key, nc, m):
        """Winners among nc candidates over m tets: each holds every tet it claimed."""
        owner = _device.upload(np.full(m, -1, np.int64))
        win = _device.empty((nc,), np.int32)
        K.claim(ctets, cn, key, owner)
        K.winners(ctets, cn, key, owner, win)
        return win

    def smooth(V, T, rounds):
        """Up to ``rounds`` smoothing passes on a fixed connectivity (built and uploaded once);
        stops early when a pass moves nothing. Returns the new positions and the number of moves."""
        movable_mask = np.zeros(len(V), bool)
        q = qual(V, T)
        # only vertices of tets below ACTIVE_SINE move: the rest cannot raise the worst tets
        movable_mask[np.unique(T[q < max(ACTIVE_SINE, float(q.min()) + 1e-3)])] = True
        movable_mask[:n_in] &= ~pinned
        mov = np.flatnonzero(movable_mask).astype(np.int32)
        if len(mov) == 0:
            return V, 0
        Td = _device.upload(T)
        topo = MeshTopology(Td, len(T), len(V))
        E, _ = topo.edges()
        el = np.linalg.norm(V[E[:, 0]] - V[E[:, 1]], axis=1)
        deg = np.bincount(E.ravel(), minlength=len(V))
        hl = np.bincount(E.ravel(), weights=np.repeat(el, 2), minlength=len(V)) / np.maximum(deg, 1)
        vidx = -np.ones(len(V), np.int32)
        vidx[mov] = np.arange(len(mov), dtype=np.int32)
        Vd, mov_d = _device.upload(V), _device.upload(mov)
        star = (Td, topo.ptr, topo.vt, mov_d, _device.upload(hl[mov]))
        Ed, vidx_d = _device.upload(E.astype(np.int32)), _device.upload(vidx)
        newpos = _device.empty((len(mov), 3), np.float64)
        gain = _device.empty((len(mov),), np.float64)
        qv = _device.empty((len(mov),), np.float64)
        total = 0
        for _ in range(rounds):
            if out_of_time():
                break
            K.smooth_propose(Vd, *star, newpos, gain, qv, smooth_iters)
            blocked = _device.zeros((len(mov),), np.int32)
            K.smooth_block(Ed, vidx_d, gain, qv, blocked)
            moved = _device.zeros((1,), np.int32)
            K.smooth_apply(Vd, mov_d, newpos, gain, blocked, moved)
            k = int(_device.fetch(moved)[0])
            total += k
            if k == 0:
                break
        return _device.fetch(Vd).copy(), total

    def topo_pass(V, T, kind, below=0.0):
        """One parallel pass of one move kind; returns the new (V, T) and the number applied."""
        m = len(T)
        Vd = _device.upload(V)
        Td0 = _device.upload(T)
        topo = MeshTopology(Td0, m, len(V))
        nbd = topo.adjacency()
        qd = qual_d(Vd, Td0, m)
        if kind == "flip23":
            nc = 4 * m
            ctets = _device.empty((nc, 2), np.int32)
            cn = _device.empty((nc,), np.int32)
            key = _device.empty((nc,), np.int64)
            Tb = np.full((m + nc // 2 + 1, 4), -1, np.int32)
            Tb[:m] = T
            Td = _device.upload(Tb)
            K.flip23_candidates(Vd, Td, nbd, qd, ctets, cn, key, eps)
            win = resolve(ctets, cn, key, nc, m)
            cnt = _device.upload(np.array([m], np.int32))
            K.flip23_apply(Td, nbd, win, cnt)
            Vout = V
        else:
            E, etet = topo.edges()
            ne = len(E)
            Ed, etd = _device.upload(E.astype(np.int32)), _device.upload(etet.astype(np.int32))
            ctets = _device.empty((ne, K.MAXRING), np.int32)
            cn = _device.empty((ne,), np.int32)
            key = _device.empty((ne,), np.int64)
            if kind == "edge":
                cinfo = _device.empty((ne, 1), np.int32)
                Tb = np.full((m + 6 * ne // 5 + 8, 4), -1, np.int32)  # an n-ring gives n - 4 extra tets
                Tb[:m] = T
                Td = _device.upload(Tb)
                K.edge_removal_candidates(Vd, Td, nbd, qd, Ed, etd, tab_d, tab_off_d, ctets, cn, cinfo, key, eps)
                win = resolve(ctets, cn, key, ne, m)
                cnt = _device.upload(np.array([m], np.int32))
                K.edge_removal_apply(Td, nbd, Ed, etd, tab_d, win, cinfo, cnt)
                Vout = V
            else:  # split
                cpos = _device.empty((ne, 3), np.float64)
                K.split_candidates(Vd, Td0, nbd, qd, Ed, etd, ctets, cn, cpos, key, below, eps)
                win = resolve(ctets, cn, key, ne, m)
                nwin = int(_device.fetch(win).sum())
                if nwin == 0:
                    return V, T, 0
                Tb = np.full((m + K.MAXRING * nwin, 4), -1, np.int32)
                Tb[:m] = T
                Vb = np.zeros((len(V) + nwin, 3))
                Vb[:len(V)] = V
                Td, Vbd = _device.upload(Tb), _device.upload(Vb)
                cnt = _device.upload(np.array([m], np.int32))
                vcnt = _device.upload(np.array([len(V)], np.int32))
                K.split_apply(Vbd, Td, nbd, Ed, etd, win, cpos, cnt, vcnt)
                Vout = _device.fetch(Vbd).copy()
        used = int(_device.fetch(cnt)[0])
        Tn = _device.fetch(Td)[:used]
        Tn = Tn[Tn[:, 0] >= 0].copy()
        return Vout, Tn, int(_device.fetch(win).sum())

    best = qual(V, T).min()
    stall = 0
    with progress_bar(progress, max_sweeps, "improve_tets") as advance:
        for sweep in range(max_sweeps):
            if out_of_time():
                break
            V, n_s = smooth(V, T, int(smooth_rounds))
            counts["smooth_moves"] += n_s
            for _ in range(12):
                if out_of_time():
                    break
                V, T, a = topo_pass(V, T, "flip23")
                V, T, b = topo_pass(V, T, "edge")
                counts["flip23"] += a
                counts["edge_removal"] += b
                if a + b == 0:
                    break
            q = qual(V, T)
            qmin = float(q.min())
            split = 0
            if insert and qmin <= best + 1e-6 and not out_of_time():
                # stalled: insert vertices on edges of the worst tets (the worst 1% or below 0.5)
                below = max(float(np.quantile(q, 0.01)), min(0.5, qmin + 1e-3))
                V, T, split = topo_pass(V, T, "split", below)
                counts["splits"] += split
                qmin = float(qual(V, T).min())
            entry = {"sweep": sweep, "min_sine": qmin, "tets": len(T), "vertices": len(V), "smooth_moves": n_s,
                     "splits": split, "seconds": round(time.perf_counter() - t0, 3)}
            history.append(entry)
            if callback is not None:
                callback(entry)
            advance(f"improve_tets min sine {qmin:.3f}")
            if out_of_time():
                break
            if qmin > best + 1e-6:
                best = qmin
                stall = 0
            else:
                stall += 1
                if stall >= 2:
                    break

    # drop vertices no tet uses among the inserted ones (input vertices keep their indices)
    used = np.zeros(len(V), bool)
    used[T.ravel()] = True
    keep = np.concatenate([np.arange(n_in), n_in + np.flatnonzero(used[n_in:])])
    remap = -np.ones(len(V), np.int64)
    remap[keep] = np.arange(len(keep))
    V = V[keep]
    T = remap[T.astype(np.int64)]
    _verify(v, V, T, bfaces0, vol0, pinned)
    after = tet_quality(V, T).summary()
    stats = dict(counts, seconds=round(time.perf_counter() - t0, 3), sweeps=len(history),
                 inserted_vertices=int(len(V) - n_in), time_limited=limited[0])
    return ImproveResult(V, T, before, after, history, stats)


def _verify(v_in, V, T, bfaces0, vol0, pinned):
    """The promises of improve_tets, checked on the output (a failure is a bug: RuntimeError)."""
    vol = signed_volumes(V, T)
    if not (vol > 0).all():
        raise RuntimeError(f"improve_tets: {int((vol <= 0).sum())} tet(s) not positive in the output")
    if not np.array_equal(boundary_faces(T), bfaces0):
        raise RuntimeError("improve_tets: the boundary triangles changed")
    if not np.array_equal(V[:len(v_in)][pinned], v_in[pinned]):
        raise RuntimeError("improve_tets: a boundary or fixed vertex moved")
    if abs(vol.sum() - vol0) > 1e-9 * abs(vol0):
        raise RuntimeError(f"improve_tets: total volume changed from {vol0!r} to {vol.sum()!r}")
