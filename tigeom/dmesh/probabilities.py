"""Face existence probabilities of a DMesh, with their exact vector-Jacobian products.

Two methods (``../docs/dmesh.md`` has the formulas):

- ``"wdt"`` (DMesh): Λ = σ(α Δ(F)) · Λ_real(F), Δ the signed distance between F's dual element
  of the power diagram and its vertices' reduced power cells (positive iff F is a face of the
  weighted Delaunay triangulation).
- ``"minball"`` (DMesh++): Λ = σ(α d(F)) · Λ_real(F), d(F) = min over points p not in F of
  |p - c_F| - r_F for F's minimum ball (c_F, r_F), clamped to [-2 cap, cap] with cap = 8/α
  (σ is 1e-7 or 0.9997 there). Positive d means the ball is empty, and then F is a Delaunay face,
  so faces that pass never cross.

Λ_real is a smooth minimum of the vertices' real values, their power mean with exponent -32:
ψ when all are ψ, between min ψ and 1.035 min ψ (and never above max ψ), 0 when a vertex is 0,
increasing in every ψ, with a gradient to every vertex.
"""

from __future__ import annotations


import numpy as np

from .. import runtime
from .._core import device as _device
from .._core.keys import keys_fit, row_keys
from .._core.validate import as_array, as_index_array, as_points, as_scalar
from ..spatial import PointGrid, spacing

METHODS = ("wdt", "minball")
SHARPNESS_SCALE = 20.0  # default α = SHARPNESS_SCALE / (mean nearest-neighbour distance)
SATURATION = 8.0  # a margin of SATURATION / α counts as certain (σ(8) = 0.99966)
LOW = 2.0  # "minball" margins below -LOW * SATURATION / α (σ = 1.1e-7) are clamped there
SHELLS = 4  # "minball": faces whose grid search needs more shells get a parallel brute-force scan
BRUTE_CHUNK = 1024  # points per thread in that scan


def default_sharpness(points) -> float:
    """α = 20 / h, h the mean nearest-neighbour distance: a margin of h/10 gives σ = 0.88, h/4
    gives 0.993."""
    return SHARPNESS_SCALE / spacing(points)


class PreparedFaces:
    """Candidate faces checked once and uploaded once, for repeated calls in an optimisation loop.

    Pass it wherever ``faces`` is expected (:func:`face_probabilities`, the losses) to skip the
    per-call validation and upload; :class:`DMesh` keeps its candidates in this form.
    """

    def __init__(self, faces, n: int, d: int, *, checked: bool = False):
        # checked: the rows come from candidate_faces (int64, in range, distinct vertices)
        self.rows = np.asarray(faces, np.int64) if checked else _check_rows(faces, n, d)
        self.n, self.d, self.K = int(n), int(d), len(self.rows)
        self.i32 = self.rows.astype(np.int32) if self.K else np.zeros((1, d), np.int32)
        self.dev = _device.upload(self.i32)
        self.generation = runtime.generation()
        self._scratch = {}

    def scratch(self, tag: str, shape, dtype) -> object:
        """A kernel scratch array kept for this face set (one allocation per refresh, not per call)."""
        key = (tag, tuple(shape), np.dtype(dtype))
        if key not in self._scratch:
            self._scratch[key] = _device.empty(shape, dtype)
        return self._scratch[key]

    def __len__(self):
        return self.K


def _check_rows(faces, n: int, d: int) -> np.ndarray:
    f = as_index_array(faces, "faces", n, width=d)
    if len(f):
        srt = np.sort(f, axis=1)
        if (srt[:, 1:] == srt[:, :-1]).any():
            bad = int(np.nonzero((srt[:, 1:] == srt[:, :-1]).any(1))[0][0])
            raise ValueError(f"faces: row {bad} repeats a vertex ({f[bad].tolist()})")
    return f


def prepare_faces(faces, n: int, d: int) -> PreparedFaces:
    """``faces`` as :class:`PreparedFaces` for n points in d dimensions (checked, or reused when
    already prepared for the same shape and runtime)."""
    if isinstance(faces, PreparedFaces):
        if (faces.n, faces.d) != (n, d):
            raise ValueError(f"faces: prepared for {faces.n} points in {faces.d}D, used with {n} in {d}D")
        if faces.generation == runtime.generation():
            return faces
        faces = faces.rows
    return PreparedFaces(faces, n, d)


def validate_inputs(points, weights, reals, faces, method="minball", sharpness=None):
    """Checked float64 copies of the face-probability inputs and the faces as
    :class:`PreparedFaces` (ValueError naming the argument)."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    p = as_points(points, "points")
    n, d = p.shape
    if n < d + 1:
        raise ValueError(f"points: need at least {d + 1} points in {d}D, got {n}")
    if weights is None:
        w = np.zeros(n)
    else:
        w = as_array(weights, "weights", ndim=1)
        if len(w) != n:
            raise ValueError(f"weights: expected {n} values (one per point), got {len(w)}")
    r = as_array(reals, "reals", ndim=1)
    if len(r) != n:
        raise ValueError(f"reals: expected {n} values (one per point), got {len(r)}")
    if len(r) and (r.min() < 0 or r.max() > 1):
        raise ValueError(f"reals: must lie in [0, 1], got range [{r.min():.6g}, {r.max():.6g}]")
    f = prepare_faces(faces, n, d)
    if sharpness is not None:
        sharpness = as_scalar(sharpness, "sharpness")
        if sharpness <= 0:
            raise ValueError(f"sharpness: must be > 0, got {sharpness}")
    return p, w, r, f, sharpness


def _nd(arr: np.ndarray, grad: bool):
    """A Taichi ndarray (autodiff needs ndarrays, also on the CPU)."""
    nd = _device.ndarray(arr.dtype, arr.shape, needs_grad=grad)
    nd.from_numpy(np.ascontiguousarray(arr))
    return nd


def _grad(nd, n: int, shape) -> np.ndarray:
    return nd.grad.to_numpy()[:n].astype(np.float64).reshape(shape)


class FaceProbabilities:
    """Result of :func:`face_probabilities`.

    probs : (K,) existence probability of each face.
    margin : (K,) the signed margin the sigmoid sees (Δ(F) for "wdt", d(F) for "minball").
    geometric : (K,) σ(α · margin), the probability before the real values.
    sharpness : the α used.
    in_triangulation : (K,) bool, "wdt" only: F is a face of the weighted Delaunay triangulation.
    witness : (K,) "minball" only: the point (not in F) nearest F's ball centre, which sets d(F);
        -1 when no point is within r_F + 8/α (Λ_min saturated). When d(F) is clamped at -16/α,
        the witness is some point that deep inside the ball, not necessarily the nearest.

    ``margin`` and ``witness`` are copied from the device on first access (an optimisation loop
    that only needs ``probs`` never moves them).
    """

    def __init__(self, probs, margin, sharpness, method, in_triangulation=None, witness=None, _replay=()):
        self.probs = probs
        self._margin, self._witness = margin, witness
        self.sharpness, self.method = float(sharpness), method
        self.in_triangulation = in_triangulation
        self._replay = _replay
        self._generation = runtime.generation()

    def _device_probs(self):
        """The kernel array holding ``probs`` (with a gradient buffer), None when stale or empty."""
        if not self._replay or self._generation != runtime.generation() or not len(self.probs):
            return None
        return self._replay[1][-2]

    @property
    def margin(self) -> np.ndarray:
        if callable(self._margin):
            self._margin = self._margin()
        return self._margin

    @property
    def witness(self) -> np.ndarray | None:
        if callable(self._witness):
            self._witness = self._witness()
        return self._witness

    def __repr__(self):
        return f"FaceProbabilities(method={self.method!r}, faces={len(self.probs)}, sharpness={self.sharpness:.6g})"

    @property
    def geometric(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.sharpness * self.margin, -500, 500)))

    def vjp(self, grad_probs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact vector-Jacobian product (the arg-min choices held fixed):
        ``(grad_points (N, d), grad_weights (N,), grad_reals (N,))`` of Σ grad_probs · probs."""
        g = as_array(grad_probs, "grad_probs", ndim=1)
        if len(g) != len(self.probs):
            raise ValueError(f"grad_probs: expected {len(self.probs)} values, got {len(g)}")
        kernel, args, grads, n, d = self._replay
        if not len(g):
            return np.zeros((n, d)), np.zeros(n), np.zeros(n)
        probs_nd, margin_nd = args[-2], args[-1]
        for nd in grads:
            nd.grad.fill(0)
        margin_nd.grad.fill(0)
        probs_nd.grad.from_numpy(g.astype(runtime.real_dtype()))
        kernel.grad(*args)
        gp = _grad(grads[0], n, (n, d))
        if len(grads) == 3:
            return gp, _grad(grads[1], n, (n,)), _grad(grads[2], n, (n,))
        return gp, np.zeros(n), _grad(grads[1], n, (n,))

    def accumulate(self) -> None:
        """Reverse mode on the device: add d(Σ probs.grad · probs) to the gradients of the
        positions, weights and real values the probabilities were evaluated from, with
        ``probs.grad`` as the loss left it (nothing is zeroed but the margin's)."""
        kernel, args, grads, n, d = self._replay
        if len(self.probs):
            args[-1].grad.fill(0)
            kernel.grad(*args)


def face_probabilities(points, weights, reals, faces, method: str = "wdt", sharpness=None, *,
                       triangulation=None) -> FaceProbabilities:
    """Existence probability of each candidate face (edges in 2D, triangles in 3D).

    Parameters
    ----------
    points : (N, d), d = 2 or 3.
    weights : (N,) power weights, or None (zeros). Ignored by "minball".
    reals : (N,) real values ψ in [0, 1].
    faces : (K, d) candidate faces (vertex indices).
    method : "wdt" (DMesh) or "minball" (DMesh++).
    sharpness : the sigmoid's α; None picks 20 / (mean nearest-neighbour distance).
    triangulation : "wdt" only: a :class:`tigeom.Triangulation` of these points and weights, to
        reuse one already computed (it is computed when None).
    """
    p, w, r, f, sharpness = validate_inputs(points, weights, reals, faces, method, sharpness)
    runtime.ensure_init()
    alpha = default_sharpness(p) if sharpness is None else sharpness
    rdt = runtime.real_dtype()
    P = _nd(p.astype(rdt), True)
    R = _nd(r.astype(rdt), True)
    W = _nd(w.astype(rdt), True) if method == "wdt" else None
    grid = (lambda: PointGrid(p)) if method == "minball" else None
    return evaluate(P, W, R, f, method, alpha, grid=grid, host=(p, w), triangulation=triangulation)


def evaluate(P, W, R, f: PreparedFaces, method: str, alpha: float, *, grid=None, host=None,
             triangulation=None, out=None) -> FaceProbabilities:
    """The probabilities of the checked faces ``f`` from kernel arrays already on the device:
    positions ``P`` (n, d), weights ``W`` (n,; "wdt" only) and real values ``R`` (n,), each with
    a gradient buffer (:func:`face_probabilities` checks and uploads; :class:`DMesh` passes its
    device state). ``grid``: a callable giving the point grid ("minball"); ``host``: the
    (positions, weights) as numpy, needed by "wdt" for the triangulation. ``out``: the
    (probabilities, margins) arrays to write, each (max(K, 1),) with a gradient; ``probs`` of the
    result is then a view of the first (nothing is copied to the host)."""
    n, d = P.shape
    cap = SATURATION / alpha
    rdt = runtime.real_dtype()
    nf = len(f)
    if out is None:
        probs = _nd(np.zeros(max(nf, 1), rdt), True)
        margin = _nd(np.zeros(max(nf, 1), rdt), True)
    else:
        probs, margin = out
    from . import _kernels as K

    if method == "minball":
        near_d = _device.empty((max(nf, 1),), np.int32)
        near_d.fill(-1)
        if nf:
            grid = grid()
            deferred = f.scratch("deferred", (nf,), np.int32)
            nd = _device.zeros((1,), np.int32)
            K.minball_select(grid.pts, f.dev, grid.lo, grid.h, grid.res, grid.start, grid.order,
                              cap, LOW * cap, SHELLS, d, near_d, deferred, nd)
            m = int(_device.fetch(nd)[0])
            if m:
                nc = -(-n // BRUTE_CHUNK)
                bd2, bid = _device.empty((m, nc), rdt), _device.empty((m, nc), np.int32)
                K.minball_brute(grid.pts, f.dev, deferred, m, cap, BRUTE_CHUNK, d, bd2, bid)
                K.minball_brute_reduce(deferred, m, bd2, bid, near_d)
        args = (P, R, f.dev, near_d, alpha, cap, LOW * cap, d, probs, margin)
        if nf:
            K.minball_eval(*args)
        replay = (K.minball_eval, args, (P, R), n, d)
        in_tri = None

        def witness():
            return _device.fetch(near_d, nf).astype(np.int64)
    else:
        p, w = host
        if triangulation is None:
            from ..delaunay import weighted_delaunay

            triangulation = weighted_delaunay(p, w)
        tri = triangulation
        if tri.points.shape != p.shape:
            raise ValueError(f"triangulation: built on {tri.points.shape} points, these are {p.shape}")
        s0, s1, in_tri = _face_simplices(tri.simplices, f.rows)
        cells = tri.power_cells()
        S = tri.simplices.astype(np.int32) if len(tri.simplices) else np.zeros((1, d + 1), np.int32)
        dev = [f.dev] + [_device.upload(x) for x in (S, s0, s1)]
        sel = _device.zeros((max(nf, 1), d), np.int32)
        if nf:
            K.wdt_select(P, W, dev[0], dev[1], dev[2],
                          dev[3], *[_device.upload(x.astype(np.int32)) for x in
                                    (cells.neighbor_ptr, cells.neighbors, cells.vertex_ptr, cells.vertex_ids)],
                          d, sel)
        args = (P, W, R, *dev, sel, alpha, cap, d, probs, margin)
        if nf:
            K.wdt_eval(*args)
        replay = (K.wdt_eval, args, (P, W, R), n, d)
        witness = None
    return FaceProbabilities(probs=probs.to_numpy()[:nf].astype(np.float64) if out is None else probs[:nf],
                             margin=lambda: _device.fetch(margin, nf).astype(np.float64), sharpness=float(alpha),
                             method=method, in_triangulation=in_tri, witness=witness, _replay=replay)


def _face_simplices(simplices: np.ndarray, faces: np.ndarray):
    """For each face: its one or two simplices (s0, s1; -1 when absent) and whether it is a face
    of the triangulation at all."""
    nf, d = faces.shape
    s0 = -np.ones(max(nf, 1), np.int32)
    s1 = -np.ones(max(nf, 1), np.int32)
    if nf == 0 or len(simplices) == 0:
        return s0, s1, np.zeros(nf, bool)
    m = len(simplices)
    sf = np.concatenate([np.sort(np.delete(simplices, c, axis=1), axis=1) for c in range(d + 1)])
    sid = np.tile(np.arange(m), d + 1)
    fs = np.sort(faces, axis=1)
    n = int(max(sf.max(), fs.max())) + 1
    if keys_fit(n, d):  # one int64 key per row: 1D sorts (np.unique(axis=0) sorts structured rows)
        ks, kf = row_keys(sf, n), row_keys(fs, n)
    else:
        _, inv = np.unique(np.concatenate([sf, fs]), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        ks, kf = inv[:len(sf)], inv[len(sf):]
    order = np.argsort(ks, kind="stable")
    ks, sid = ks[order], sid[order]
    lo = np.searchsorted(ks, kf, "left")
    hi = np.searchsorted(ks, kf, "right")
    has = hi > lo
    s0[:nf][has] = sid[lo[has]]
    two = hi - lo >= 2
    s1[:nf][two] = sid[lo[two] + 1]
    return s0, s1, has
