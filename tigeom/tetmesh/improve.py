"""Boundary-preserving tetrahedral mesh improvement: ``improve_tets(vertices, tets, fixed=None)``.

Each sweep runs, as Taichi kernels over the whole mesh:

1. smoothing: every free interior vertex of a tet below quality 0.6 climbs the worst quality of
   its star (min-norm ascent direction of the nearly-worst tets, backtracking, kept only if the
   worst tet improves by more than 1e-4); a nearly maximal independent set of the proposals (no
   two on one edge, worse stars first, chosen in a few priority rounds) is applied; up to 6 such
   passes per sweep. Taking only the local minima of the priority moved about 8 vertices a
   pass out of about 400 that could, and left the test family near 33 degrees after 40 sweeps;
   the fuller set reaches 31-36 in 30;
2. topological passes until none applies: 2-3 flips of interior faces and removal of interior
   edges with 3..7 tets around them (3-2 and 4-4 flips are the n = 3, 4 cases; the best
   triangulation of the ring is chosen among all of them);
3. when a sweep stalls: vertex insertion on interior edges and interior faces of the worst tets
   (an edge split, n tets -> 2n, or a face split, 2 tets -> 6, whose new vertex is placed by
   compass search on the worst of its new tets). The face split frees a tet whose three other
   faces lie on the boundary: no smoothing, flip or edge split can change such a tet.
   Then cavity moves: from each tet within 0.01 (in sine) of the worst, from the star of one
   of its free vertices, or from the stars of two of them, a cavity of up to 40 tets grown
   greedily across its worst face,
   replaced by its boundary faces joined to one vertex (a new one, or the star's vertex
   relocated, the pair's other vertex then removed), placed by compass search. They lift
   worst tets that are local optima of every single move above (a vertex serving two surface
   triangles at a crease, a cap whose best apex needs different neighbours, two vertices that
   leave three tets around each boundary edge at a cube corner).
4. on a plateau (three sweeps that barely raise the worst, or a stall): an escape, pair moves
   at the worst tets that may lose up to 0.25 in sine, at most four times a run; the best
   state seen before is restored at the end if the run does not beat it. A stalled sweep's
   cavity moves start from at most the 4,096 worst tets.

A move is kept only if it raises the worst quality of the tets it replaces, so no tet is ever
made worse than the worst it replaced, none can invert, and the boundary faces (never touched:
moves act on interior faces and edges only, boundary vertices never move) stay as they were.
Moves that touch a common tet are resolved by priority (the worst replaced tet first, an atomic
claim per tet), so the worst elements improve first and every pass is parallel. The mesh stays on
the device for the whole run; between passes the vertex stars, face adjacency and edge list are
rebuilt by kernels (:mod:`.topology`) and the tets are compacted by a scan. The edge list keeps
the order the kernels emit it in (by owner tet, then local edge), which is deterministic and
fixes the priority order of edge moves.

The quality is the smallest dihedral sine of a tet (see ``_kernels``): it penalises small and
large angles alike, and a mesh whose every tet has quality >= 0.5 has every dihedral angle
within [30, 150] degrees.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .. import runtime
from .._core import device as _device
from .._core.progress import progress_bar
from .._core.scan import compact_rows, copy_rows, count_positive, exclusive_offsets, min_value
from .topology import MeshTopology, boundary_faces, face_adjacency
from .quality import boundary_crease_min, signed_volumes, tet_quality, validate_mesh

logger = logging.getLogger(__name__)

SMOOTH_ROUNDS = 6  # smoothing passes per sweep (each moves a nearly maximal independent set of vertices)
ACTIVE_SINE = 0.6  # smoothing moves the vertices of tets whose quality is below this (~37 deg)
CAV_BAND = 0.01  # cavity moves start from the tets within this much of the worst quality (sine)
FLIP_ROUNDS = 12  # at most this many rounds of flips per sweep (until a round applies none)
STALL_SWEEPS = 4  # the run stops after this many sweeps in a row without progress (see _Improver.sweeps)
NEAR_WORST = 1e-5  # tets within this much (sine) of the worst count as at the worst, for progress
CREEP = 3e-4  # a sweep that raises the worst sine by less than this inserts vertices, as a stalled one does
ESCAPE_CREEP = 3  # sweeps in a row that raise the worst sine by less than CREEP before an escape
ESCAPE_BAND = 1e-3  # an escape's pair moves start from the tets within this much (sine) of the worst
ESCAPE_DROP = 0.25  # and may lower the worst of the tets they replace by this much (sine)
MAX_ESCAPES = 4  # escapes per run
WIDE_SEEDS = 4096  # a stalled sweep's cavity moves start from at most this many of the worst tets


@dataclass
class ImproveResult:
    """Output of :func:`improve_tets`: the mesh plus before/after figures and the run's history."""

    vertices: np.ndarray
    tets: np.ndarray
    before: dict
    after: dict
    history: list = field(default_factory=list)  # per sweep: min dihedral, min sine, tets, counts
    stats: dict = field(default_factory=dict)
    # per output vertex, its index in the input (-1: inserted); output_index() inverts it
    input_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


# --------------------------------------------------------------------------- helpers


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


def worst_below(q: np.ndarray, below: float, cap: int) -> np.ndarray:
    """Indices of the entries of ``q`` below ``below``, at most ``cap`` of them: the smallest,
    ties broken by the lower index; ascending, int32."""
    idx = np.flatnonzero(q < below)
    if len(idx) > cap:
        idx = np.sort(idx[np.lexsort((idx, q[idx]))[:cap]])
    return idx.astype(np.int32)


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


def improve_tets(vertices, tets, fixed=None, *, max_sweeps: int = 30, insert: bool = True,
                 target: float | None = None,
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
    target : degrees in (0, 70.5): stop as soon as every dihedral angle lies within
        [target, 180 - target] (the worst dihedral sine reaches sin(target)), e.g. 30 for a
        mesh whose angles must be in [30, 150]. None (default): run until the worst stops rising.
    insert : allow vertex insertion (edge and face splits) and cavity moves when smoothing and
        flips stall.
    smooth_iters, smooth_rounds : ascent steps per vertex proposal, and smoothing passes per
        sweep. Fewer rounds are faster but stop lower: on the test family 3 rounds reach about
        25 degrees in a third of the time that 20 rounds (the default) take to reach about 30.
    time_limit : seconds after which the run stops: checked between smoothing passes and between
        topological passes, so a sweep can end early; whatever was applied until then is kept
        (every pass leaves a valid mesh) and ``stats["time_limited"]`` says so.
    progress : a progress bar (rich) over the sweeps.
    callback : called after every sweep with the history entry (a dict).

    Returns an :class:`ImproveResult`: ``vertices`` (the input's that remain, in their order, then
    any inserted ones), ``tets``, ``input_index`` (each output vertex's index in the input, -1 for
    an inserted one; :func:`output_index` gives the other direction), ``before``/``after``
    quality summaries and the per-sweep history. Interior vertices that may move can be removed
    (``stats["removed_vertices"]``); boundary and ``fixed`` vertices always remain.
    ``stats["boundary_crease_min_deg"]`` is the boundary's sharpest interior angle at an edge:
    the tets around that edge split it, so no result can have a larger minimum dihedral angle.
    The boundary triangles, the boundary and fixed vertices' coordinates and the total volume are
    those of the input; every tet has positive volume (checked; a violation is a RuntimeError).
    """
    v, t = validate_mesh(vertices, tets)
    if len(t) == 0:
        raise ValueError("tets: the mesh has no tets")
    fixed_mask = _check_fixed(fixed, len(v))
    if max_sweeps < 0:
        raise ValueError(f"max_sweeps: must be >= 0, got {max_sweeps}")
    if target is not None and not 0.0 < float(target) < 70.5:
        raise ValueError(f"target: a dihedral angle in degrees within (0, 70.5) (the regular tet has 70.53), "
                         f"got {target}")
    stop_sine = 2.0 if target is None else float(np.sin(np.radians(float(target))))
    for name, val in (("smooth_iters", smooth_iters), ("smooth_rounds", smooth_rounds)):
        if int(val) != val or val < 1:
            raise ValueError(f"{name}: must be an integer >= 1, got {val}")
    t = _orient_flat(v, t)
    runtime.ensure_init()
    t0 = time.perf_counter()
    bfaces0 = boundary_faces(t)
    vol0 = float(signed_volumes(v, t).sum())
    pinned = np.zeros(len(v), bool)
    pinned[bfaces0.ravel()] = True
    pinned |= fixed_mask
    before = tet_quality(v, t).summary()
    run = _Improver(v, t, pinned, int(smooth_iters), time_limit, t0)
    history = run.sweeps(max_sweeps, int(smooth_rounds), insert, progress, callback, stop_sine)
    V, T, src = run.result()
    _verify(v, V, T, src, bfaces0, vol0, pinned)
    q_out = tet_quality(V, T)
    after = q_out.summary()
    crease = boundary_crease_min(T, q_out["dihedrals"], boundary_faces(T))  # every output tet is positive
    stats = dict(run.counts, seconds=round(time.perf_counter() - t0, 3), sweeps=len(history),
                 inserted_vertices=int((src < 0).sum()), removed_vertices=int(len(v) - (src >= 0).sum()),
                 time_limited=run.limited,
                 boundary_crease_min_deg=round(crease, 3))
    return ImproveResult(V, T, before, after, history, stats, src)


class _Improver:
    """The mesh on the device for the whole run: vertices ``Vd`` (nv, 3) float64 and tets ``Td``
    (m, 4) int32 kernel arrays. A pass builds its scratch on the device, applies the winning
    moves there and compacts the tets there; what comes back to the host per pass is a few
    counts, and the per-tet qualities (with the tets, once per smoothing) to choose the movable
    vertices and the insertion thresholds."""

    EPS = 1e-9

    def __init__(self, v: np.ndarray, t: np.ndarray, pinned: np.ndarray, smooth_iters: int,
                 time_limit: float | None, t0: float, n_input: int | None = None):
        """``n_input``: the vertices from that index on count as inserted ones, which a move may
        remove (default: none; a mesh saved from an earlier run's state can name its own)."""
        from . import _kernels as K

        self.K = K
        self.n_in = len(v) if n_input is None else int(n_input)
        # a copy: on the CPU an upload is the array itself, and the passes move vertices in place
        self.Vd, self.nv = _device.upload(np.array(v, np.float64, copy=True)), len(v)
        self.Td, self.m = _device.upload(t.astype(np.int32)), len(t)
        self.free_in = (~pinned[:self.n_in]).astype(np.int32)  # input vertices that may move (host)
        self.unused_in = np.ones(self.n_in, bool)  # input vertices of no input tet: kept in the output
        self.unused_in[t[t < self.n_in]] = False
        self.smooth_iters = smooth_iters
        self.time_limit, self.t0 = time_limit, t0
        self.limited = False  # set once the time limit cut the run short
        tab, tab_off = _triangulation_table(7)
        self.tab_d, self.tab_off_d = _device.upload(tab), _device.upload(tab_off)
        self.counts = {"smooth_moves": 0, "flip23": 0, "edge_removal": 0, "splits": 0, "face_splits": 0,
                       "cavity_moves": 0, "escapes": 0, "escapes_undone": 0}
        self._best = None  # (worst quality, state, counts) kept by an escape
        self._ctx = None  # topology, adjacency, qualities and edges of the current mesh, built lazily

    # ----------------------------------------------------------------- helpers

    def out_of_time(self) -> bool:
        self.limited = self.limited or (self.time_limit is not None
                                        and time.perf_counter() - self.t0 > self.time_limit)
        return self.limited

    def qualities(self):
        q = _device.empty((self.m,), np.float64)
        self.K.qualities(self.Vd, self.Td, q)
        return q

    def _padded_tets(self, extra: int):
        Tb = _device.empty((self.m + extra, 4), np.int32)
        Tb.fill(-1)
        copy_rows(self.Td, Tb, self.m)
        return Tb

    def _resolve(self, ctets, cn, key, nc: int):
        """Winners among nc candidates over the m tets: each holds every tet it claimed."""
        owner = _device.empty((self.m,), np.int64)
        owner.fill(-1)
        win = _device.empty((nc,), np.int32)
        self.K.claim(ctets, cn, key, owner)
        self.K.winners(ctets, cn, key, owner, win)
        return win

    def _appends(self, win, cn, nc: int, kind: int, add=None):
        """Where each winner's appended rows go: (offsets (nc + 1,), total rows appended), an
        exclusive scan, so the output does not depend on the order threads ran in. ``add``: the
        per-candidate counts a candidate kernel left (kind 4), masked to the winners in place."""
        if add is None:
            add = _device.empty((max(nc, 1),), np.int32)
        if nc:
            self.K.append_counts(win, cn, kind, add)
        return exclusive_offsets(add, nc)

    def _commit(self, Tb, used: int) -> None:
        """The first ``used`` rows of ``Tb`` (holes marked -1), compacted."""
        self.Td, self.m = compact_rows(Tb, used)
        self._ctx = None

    def _mesh_state(self) -> dict:
        """Topology, face adjacency and qualities of the current mesh (and its edges once asked
        for), kept until the tets or the positions change: a pass that changes nothing leaves
        them to the next."""
        if self._ctx is None:
            topo = MeshTopology(self.Td, self.m, self.nv)
            self._ctx = {"topo": topo, "nbd": topo.adjacency()}
        if "qd" not in self._ctx:  # dropped when vertices move
            self._ctx["qd"] = self.qualities()
        return self._ctx

    def _edges(self):
        """(E, etet, ne) on the device (:meth:`MeshTopology.edge_arrays`), kept with the mesh state."""
        ctx = self._mesh_state()
        if "edges" not in ctx:
            ctx["edges"] = ctx["topo"].edge_arrays()
        return ctx["edges"]

    # ----------------------------------------------------------------- smoothing

    def _movable(self):
        """Free vertices of tets below ACTIVE_SINE (or near the worst): the rest cannot raise the
        worst tets. Host index array, ascending."""
        q = _device.fetch(self._mesh_state()["qd"], self.m)
        T = _device.fetch(self.Td, self.m)
        mask = np.zeros(self.nv, bool)
        mask[np.unique(T[q < max(ACTIVE_SINE, float(q.min()) + 1e-3)])] = True
        mask[:self.n_in] &= self.free_in != 0
        return np.flatnonzero(mask).astype(np.int32)

    def _half_lengths(self, mov_d, k: int):
        """(E, vidx, hl) on the device: the edges, each vertex's index among the ``k`` movable
        ones ``mov_d`` (-1 for the others), and the ascent's step scale per movable vertex: the
        mean length of the edges at it over the tets of its star, summed in star order (so the
        same on every run, unlike a sum by atomics)."""
        Ed, _etet, _ne = self._edges()
        topo = self._mesh_state()["topo"]
        vidx = _device.empty((self.nv,), np.int32)
        vidx.fill(-1)
        hl = _device.empty((k,), np.float64)
        self.K.star_edge_lengths(self.Vd, self.Td, topo.ptr, topo.vt, mov_d, vidx, hl)
        return Ed, vidx, hl

    def _smooth_args(self, mov) -> tuple:
        """The arguments of ``smooth_round`` after the vertices, for the movable vertices ``mov``:
        (T, vt_ptr, vt, movable, hlen, newpos, gain, qv, iters, dirty, E, vidx, state, moved),
        with every star dirty (new)."""
        topo = self._mesh_state()["topo"]
        k = len(mov)
        mov_d = _device.upload(mov)
        Ed, vidx_d, hl_d = self._half_lengths(mov_d, k)
        newpos = _device.empty((k, 3), np.float64)
        gain, qv = _device.empty((k,), np.float64), _device.empty((k,), np.float64)
        dirty, state = _device.empty((k,), np.int32), _device.empty((k,), np.int32)
        dirty.fill(1)  # every star is new; later rounds re-propose only where a star changed
        return (self.Td, topo.ptr, topo.vt, mov_d, hl_d, newpos, gain, qv, self.smooth_iters, dirty,
                Ed, vidx_d, state, _device.empty((1,), np.int32))

    def smooth(self, rounds: int) -> int:
        """Up to ``rounds`` smoothing passes on a fixed connectivity; stops early when a pass
        moves nothing. Returns the number of moves."""
        mov = self._movable()
        if len(mov) == 0:
            return 0
        args = self._smooth_args(mov)
        moved = args[-1]
        total = 0
        for _ in range(rounds):
            if self.out_of_time():
                break
            self.K.smooth_round(self.Vd, *args)
            k = int(_device.fetch(moved)[0])
            total += k
            if k:
                self._ctx.pop("qd", None)  # the connectivity stays
            if k == 0:
                break
        return total

    # ----------------------------------------------------------------- topological passes

    def flip23(self) -> int:
        """One parallel pass of 2-3 flips over every interior face; the number applied."""
        K, m = self.K, self.m
        ctx = self._mesh_state()
        nbd, qd = ctx["nbd"], ctx["qd"]
        nc = 4 * m
        ctets = _device.empty((nc, 2), np.int32)
        cn = _device.empty((nc,), np.int32)
        key = _device.empty((nc,), np.int64)
        K.flip23_candidates(self.Vd, self.Td, nbd, qd, ctets, cn, key, self.EPS)
        win = self._resolve(ctets, cn, key, nc)
        off, added = self._appends(win, cn, nc, 0)
        if added:  # otherwise nothing changed
            Tb = self._padded_tets(nc // 2 + 1)  # the tets with room for the appended rows
            K.flip23_apply(Tb, nbd, win, off, m)
            self._commit(Tb, m + added)
        return added

    def _edge_scratch(self):
        Ed, etd, ne = self._edges()
        ctets = _device.empty((ne, self.K.MAXRING), np.int32)
        cn = _device.empty((ne,), np.int32)
        key = _device.empty((ne,), np.int64)
        return ne, Ed, etd, ctets, cn, key

    def edge_removal(self) -> int:
        """One parallel pass of interior edge removals (3-2 and 4-4 flips included)."""
        K, m = self.K, self.m
        ctx = self._mesh_state()
        nbd, qd = ctx["nbd"], ctx["qd"]
        ne, Ed, etd, ctets, cn, key = self._edge_scratch()
        cinfo = _device.empty((ne, 1), np.int32)
        K.edge_removal_candidates(self.Vd, self.Td, nbd, qd, Ed, etd, self.tab_d, self.tab_off_d, ctets, cn, cinfo, key,
                                  self.EPS)
        win = self._resolve(ctets, cn, key, ne)
        removed = count_positive(win, ne)
        if removed:  # otherwise nothing changed
            off, added = self._appends(win, cn, ne, 1)
            Tb = self._padded_tets(6 * ne // 5 + 8)  # an n-ring gives n - 4 extra tets
            K.edge_removal_apply(Tb, nbd, Ed, etd, self.tab_d, win, cinfo, off, m)
            self._commit(Tb, m + added)
        return removed

    def split(self, below: float) -> int:
        """Vertex insertion on interior edges of the tets below quality ``below`` (n tets -> 2n)."""
        ctx = self._mesh_state()
        nbd, qd = ctx["nbd"], ctx["qd"]
        ne, Ed, etd, ctets, cn, key = self._edge_scratch()
        cpos = _device.empty((ne, 3), np.float64)
        self.K.split_candidates(self.Vd, self.Td, nbd, qd, Ed, etd, ctets, cn, cpos, key, below, self.EPS)
        return self._insert(ctets, cn, key, ne, 2,
                            lambda Vb, Tb, win, off, voff: self.K.split_apply(Vb, Tb, nbd, Ed, etd, win, cpos, off,
                                                                               self.m, voff, self.nv))

    def face_split(self, below: float) -> int:
        """Vertex insertion on interior faces of the tets below quality ``below`` (2 tets -> 6)."""
        ctx = self._mesh_state()
        nbd, qd = ctx["nbd"], ctx["qd"]
        nc = 4 * self.m
        ctets = _device.empty((nc, 2), np.int32)
        cn = _device.empty((nc,), np.int32)
        key = _device.empty((nc,), np.int64)
        cpos = _device.empty((nc, 3), np.float64)
        self.K.face_split_candidates(self.Vd, self.Td, nbd, qd, ctets, cn, cpos, key, below, self.EPS)
        return self._insert(ctets, cn, key, nc, 3,
                            lambda Vb, Tb, win, off, voff: self.K.face_split_apply(Vb, Tb, nbd, win, cpos, off,
                                                                                    self.m, voff, self.nv))

    def cavity(self, below: float, pair_eps: float | None = None) -> int:
        """Cavity moves around each tet below quality ``below``: up to MAXCAV tets replaced by the
        cavity's faces joined to a new vertex, or to a relocated free vertex whose star seeded the
        cavity. ``pair_eps``: the gain a pair's move (an edge collapse) must beat, EPS unless
        given (negative: the move may lose that much). Returns the number of moves."""
        ctx = self._mesh_state()
        nbd, qd, topo = ctx["nbd"], ctx["qd"], ctx["topo"]
        bad = worst_below(_device.fetch(qd, self.m), below, WIDE_SEEDS)
        if len(bad) == 0:
            return 0
        free = np.full(self.nv, 2, np.int32)  # 2: inserted (may move and be removed)
        free[:self.n_in] = self.free_in
        nc = self.K.CAV_MODES * len(bad)
        ctets = _device.empty((nc, self.K.MAXCAV), np.int32)
        cn, crel, rows = (_device.empty((nc,), np.int32), _device.empty((nc,), np.int32),
                          _device.empty((nc + 1,), np.int32))
        key = _device.empty((nc,), np.int64)
        cpos = _device.empty((nc, 3), np.float64)
        self.K.cavity_candidates(self.Vd, self.Td, nbd, qd, topo.ptr, topo.vt, _device.upload(free),
                                 _device.upload(bad), ctets, cn, cpos, crel, rows, key, self.EPS, below,
                                 self.EPS if pair_eps is None else pair_eps)
        return self._insert(ctets, cn, key, nc, 4,
                            lambda Vb, Tb, win, off, voff: self.K.cavity_apply(Vb, Tb, nbd, win, ctets, cn, cpos, crel,
                                                                                off, self.m, voff, self.nv), rows)

    def _insert(self, ctets, cn, key, nc: int, kind: int, apply, add=None) -> int:
        """Resolve vertex-insertion candidates, give each winner its new vertex row and appended
        tet rows (exclusive scans), ``apply`` them and commit: the number of vertices added."""
        win = self._resolve(ctets, cn, key, nc)
        voff, nwin = exclusive_offsets(win, nc)
        if nwin == 0:
            return 0
        off, added = self._appends(win, cn, nc, kind, add)
        Tb = self._padded_tets(added)
        Vb = _device.zeros((self.nv + nwin, 3), np.float64)
        copy_rows(self.Vd, Vb, self.nv)
        apply(Vb, Tb, win, off, voff)
        self.Vd, self.nv, m = Vb, self.nv + nwin, self.m
        self._commit(Tb, m + added)  # drops the mesh state too
        return nwin

    # ----------------------------------------------------------------- driver

    def flips(self) -> None:
        """2-3 flips and edge removals until a round applies none (at most 12 rounds)."""
        for _ in range(FLIP_ROUNDS):
            if self.out_of_time():
                break
            a = self.flip23()
            b = self.edge_removal()
            self.counts["flip23"] += a
            self.counts["edge_removal"] += b
            if a + b == 0:
                break

    def sweep(self, rounds: int, insert: bool, best: float, stalled: bool = False) -> dict:
        """Smoothing, flips and, when the worst quality stalled, insertion: the history entry.
        Cavity moves start from the tets within CAV_BAND of the worst, or, after a sweep that did
        not raise the worst (``stalled``), from all the tets the splits start from."""
        t0 = time.perf_counter()
        n_s = self.smooth(rounds)
        self.counts["smooth_moves"] += n_s
        t1 = time.perf_counter()
        self.flips()
        q = _device.fetch(self._mesh_state()["qd"], self.m)
        t2 = time.perf_counter()
        qmin = float(q.min())
        split = 0
        if insert and qmin <= best + CREEP and not self.out_of_time():
            # stalled or creeping: insert vertices on edges of the worst tets (the worst 1% or below 0.5)
            below = max(float(np.quantile(q, 0.01)), min(0.5, qmin + 1e-3))
            split = self.split(below)
            self.counts["splits"] += split
            fsplit = self.face_split(below)
            self.counts["face_splits"] += fsplit
            csplit = self.cavity(below if stalled else min(below, qmin + CAV_BAND))
            self.counts["cavity_moves"] += csplit
            split += fsplit + csplit
            q = _device.fetch(self._mesh_state()["qd"], self.m)  # the next sweep's state too
            qmin = float(q.min())
        return {"min_sine": qmin, "near_worst": int((q < qmin + NEAR_WORST).sum()), "tets": self.m,
                "vertices": self.nv, "smooth_moves": n_s, "splits": split,
                "seconds": round(time.perf_counter() - self.t0, 3),
                "phase_seconds": {"smooth": round(t1 - t0, 4), "flips": round(t2 - t1, 4),
                                  "insert": round(time.perf_counter() - t2, 4)}}

    def sweeps(self, max_sweeps: int, rounds: int, insert: bool, progress: bool, callback,
               stop_sine: float = 2.0) -> list[dict]:
        """Sweeps until the worst quality stops making progress for STALL_SWEEPS sweeps, reaches
        ``stop_sine``, or the limits. Progress is a rise of the worst quality, or, at the same
        worst, fewer tets within NEAR_WORST of it: on a plateau (three tets around each cube edge
        cap the worst at exactly 30 degrees) each move that frees one such edge is progress, and
        the worst rises only once the last one is freed."""
        history: list[dict] = []
        best = min_value(self.qualities(), self.m)
        near = None
        stall = creep = 0
        with progress_bar(progress, max_sweeps, "improve_tets") as advance:
            for sweep in range(max_sweeps):
                if self.out_of_time() or best >= stop_sine:
                    break
                entry = {"sweep": sweep, **self.sweep(rounds, insert, best, stall > 0)}
                history.append(entry)
                qmin = entry["min_sine"]
                advance(f"improve_tets min sine {qmin:.3f}")
                if self.out_of_time():
                    if callback is not None:
                        callback(entry)
                    break
                rose = qmin > best + 1e-6
                fewer = near is not None and entry["near_worst"] < near
                creep = creep + 1 if qmin <= best + CREEP else 0
                if rose or fewer or near is None:
                    near = entry["near_worst"]
                best = max(best, qmin)
                stall = 0 if rose or fewer else stall + 1
                if insert and (creep >= ESCAPE_CREEP or stall >= STALL_SWEEPS):
                    low = self.escape(qmin)
                    if low is not None:  # progress is measured from the state the escape left
                        best, near, stall, creep = low, None, 0, 0
                        entry["escape_min_sine"] = low
                if callback is not None:
                    callback(entry)
                if stall >= STALL_SWEEPS:
                    break
        self.restore_best()
        return history

    # ----------------------------------------------------------------- plateau escape

    def _copy_state(self) -> tuple:
        V = _device.empty((self.nv, 3), np.float64)
        T = _device.empty((self.m, 4), np.int32)
        copy_rows(self.Vd, V, self.nv)
        copy_rows(self.Td, T, self.m)
        return V, T, self.nv, self.m

    def escape(self, qmin: float) -> float | None:
        """The way off a plateau that every improving move has left: the pair moves (edge
        collapses with the kept vertex placed anew) seeded by the tets within ESCAPE_BAND of the
        worst may lose up to ESCAPE_DROP. Three tets around a 90-degree boundary edge cap the
        worst at 30 degrees; when their two interior vertices sit close to the edge, no
        collapse gains, but one that loses a little leaves two tets there, and the sweeps that
        follow raise what it lost. The state before the first escape, or any better one, is
        kept and restored at the end when the run did not beat it (:meth:`restore_best`). At
        most MAX_ESCAPES per run. Returns the new worst quality, or None when no move applied."""
        if self.counts["escapes"] >= MAX_ESCAPES or self.out_of_time():
            return None
        if self._best is None or qmin > self._best[0]:
            self._best = (qmin, self._copy_state(), dict(self.counts))
        moved = self.cavity(qmin + ESCAPE_BAND, pair_eps=-ESCAPE_DROP)
        if moved == 0:
            return None
        self.counts["escapes"] += 1
        self.counts["cavity_moves"] += moved
        return min_value(self._mesh_state()["qd"], self.m)

    def restore_best(self) -> None:
        """Back to the state kept by :meth:`escape` when the mesh now is worse than it."""
        if self._best is None:
            return
        qmin = min_value(self._mesh_state()["qd"], self.m)
        if qmin < self._best[0]:
            (self.Vd, self.Td, self.nv, self.m), counts = self._best[1], self._best[2]
            self.counts.update(counts, escapes=self.counts["escapes"], escapes_undone=1)
            self._ctx = None

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vertices, tets, input_index) on the host, without the vertices that moves removed:
        the input's vertices first, in their order, then the inserted ones; ``input_index`` gives
        each output vertex's index in the input, or -1 for an inserted one. Input vertices that
        no input tet used stay (they were never the mesh's to remove)."""
        V = _device.fetch(self.Vd, self.nv).copy()
        T = _device.fetch(self.Td, self.m).astype(np.int64)
        used = np.zeros(len(V), bool)
        used[T.ravel()] = True
        used[:self.n_in] |= self.unused_in
        keep = np.flatnonzero(used)
        remap = -np.ones(len(V), np.int64)
        remap[keep] = np.arange(len(keep))
        return V[keep], remap[T], np.where(keep < self.n_in, keep, -1)


def output_index(input_index: np.ndarray, n_input: int) -> np.ndarray:
    """Per input vertex, its index in the output (-1: removed), from ``ImproveResult.input_index``.

    ValueError when ``input_index`` is not a 1D integer array of values in [-1, n_input) whose
    non-negative entries are distinct."""
    input_index = np.asarray(input_index)
    if input_index.ndim != 1 or not np.issubdtype(input_index.dtype, np.integer):
        raise ValueError(f"input_index: expected a 1D integer array, got shape {input_index.shape} "
                         f"and dtype {input_index.dtype}")
    kept_in = input_index[input_index >= 0]
    if (input_index < -1).any() or (kept_in >= n_input).any() or len(np.unique(kept_in)) != len(kept_in):
        raise ValueError(f"input_index: entries must be -1 or distinct indices below n_input={n_input}")
    out = -np.ones(n_input, np.int64)
    kept = np.flatnonzero(input_index >= 0)
    out[input_index[kept]] = kept
    return out


def _verify(v_in, V, T, src, bfaces0, vol0, pinned):
    """The promises of improve_tets, checked on the output (a failure is a bug: RuntimeError)."""
    vol = signed_volumes(V, T)
    if not (vol > 0).all():
        raise RuntimeError(f"improve_tets: {int((vol <= 0).sum())} tet(s) not positive in the output")
    ids = np.where(src >= 0, src, len(v_in) + np.arange(len(src)))  # inserted vertices after the input's
    if not np.array_equal(boundary_faces(ids[T]), bfaces0):
        raise RuntimeError("improve_tets: the boundary triangles changed")
    pos = output_index(src, len(v_in))[pinned]
    if (pos < 0).any() or not np.array_equal(V[pos], v_in[pinned]):
        raise RuntimeError("improve_tets: a boundary or fixed vertex moved or was removed")
    if abs(vol.sum() - vol0) > 1e-9 * abs(vol0):
        raise RuntimeError(f"improve_tets: total volume changed from {vol0!r} to {vol.sum()!r}")
