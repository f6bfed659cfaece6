"""The :class:`DMesh` object: points with weights and real values, candidate faces, probabilities,
optimisation with a user loss, extraction and export."""

from __future__ import annotations

from itertools import combinations
from typing import Callable

import numpy as np

from .. import runtime
from .._core.keys import decode_keys, unique_keys
from .._core.validate import as_array, as_points
from .._core.progress import progress_bar
from ..spatial import PointGrid
from .probabilities import (SATURATION, FaceProbabilities, PreparedFaces, default_sharpness, evaluate,
                            face_probabilities, validate_inputs)

DEFAULT_K = {2: 8, 3: 10}
PRUNE_MARGIN = 10.0  # candidates with sharpness * margin below -PRUNE_MARGIN (p < 5e-5) are dropped


def candidate_faces(points, k: int | None = None, triangulation=None) -> np.ndarray:
    """Candidate faces of a point set, rows sorted ascending and unique.

    2D: the edges from every point to its k nearest neighbours (k = 8). 3D: the triangles
    (i, j, l) with j and l among the k nearest neighbours of i (k = 10). With a
    ``triangulation``, its faces are added (DMesh's candidates: the weighted Delaunay faces plus
    nearby non-faces, so faces can appear as well as disappear).
    """
    p = as_points(points, "points")
    n, d = p.shape
    if n ** d >= 2 ** 63:
        raise ValueError(f"points: at most {int(round((2 ** 63) ** (1 / d))) - 1} points in {d}D for candidate faces, got {n}")
    k = DEFAULT_K[d] if k is None else int(k)
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    k = min(k, n - 1)
    keys = []
    if k >= d - 1 and n > d:
        idx, _ = PointGrid(p).knn(k)
        i = np.broadcast_to(np.arange(n)[:, None], idx.shape)
        if d == 2:
            keys.append(_face_keys([i, idx], n))
        else:
            pairs = np.array(list(combinations(range(k), 2)))
            keys.append(_face_keys([np.repeat(np.arange(n), len(pairs)), idx[:, pairs[:, 0]].reshape(-1),
                                    idx[:, pairs[:, 1]].reshape(-1)], n))
    if triangulation is not None and len(triangulation.faces):
        keys.append(_face_keys(list(np.asarray(triangulation.faces).T), n))
    if not keys:
        return np.zeros((0, d), np.int64)
    return decode_keys(unique_keys(np.concatenate(keys)), n, d)


def _face_keys(cols, n: int) -> np.ndarray:
    """One int64 per face (vertex columns ``cols``, -1 = missing: dropped), equal for the same
    vertex set: :func:`tigeom._keys.row_keys` of the sorted rows, sorted here by min/max (faster
    than np.sort along rows). Needs n^d < 2^63 (n < 2e6 in 3D)."""
    cols = [np.asarray(c, np.int64).reshape(-1) for c in cols]
    ok = np.ones(len(cols[0]), bool)
    for c in cols:
        ok &= c >= 0
    cols = [c[ok] for c in cols]
    if len(cols) == 2:
        lo, hi = np.minimum(*cols), np.maximum(*cols)
        return lo * n + hi
    x, y, z = cols
    lo = np.minimum(np.minimum(x, y), z)
    hi = np.maximum(np.maximum(x, y), z)
    mid = x + y + z - lo - hi
    return (lo * n + mid) * n + hi


def _synced_array(attr: str, doc: str) -> property:
    """A DMesh array attribute read from the device state when that is ahead (during optimize)."""

    def get(self) -> np.ndarray:
        self._sync()
        return getattr(self, attr)

    def put(self, value) -> None:
        self._sync()
        arr = np.asarray(value, np.float64)
        setattr(self, attr, arr)
        if self._device_state is not None:  # set inside optimize (a callback): the state follows
            self._device_state.set(attr.lstrip("_"), arr)

    return property(get, put, doc=doc)


class DMesh:
    """A differentiable mesh: points with positions, weights and real values ψ in [0, 1].

    >>> m = DMesh(points, reals)                 # method "minball" (DMesh++) or "wdt" (DMesh)
    >>> fp = m.probabilities()                   # FaceProbabilities of m.faces (the candidates)
    >>> m.optimize(loss_fn, iterations=100)      # loss_fn(m, fp) -> tigeom.dmesh.losses.Loss
    >>> v, f = m.extract()                       # the discrete mesh (faces with Λ > 0.5)
    >>> m.save("mesh.ply")                       # 3D: OBJ/PLY/STL/OFF; 2D: .npz edges

    ``faces`` are the candidate faces, refreshed by :meth:`refresh` (k nearest neighbours, and
    for "wdt" the triangulation's faces); candidates whose geometric probability is below 5e-5
    are pruned at each refresh.
    """

    def __init__(self, points, reals=None, weights=None, *, method: str = "minball", sharpness=None,
                 k: int | None = None):
        p = as_points(points, "points")
        n = len(p)
        r = np.ones(n) if reals is None else as_array(reals, "reals", ndim=1)
        validate_inputs(p, weights, r, np.zeros((0, p.shape[1]), np.int64), method, sharpness)
        self._device_state = None  # set during optimize (see tigeom.dmesh.state)
        self._host_stale = False  # the device state is ahead of the host arrays
        self._points = p.copy()
        self._reals = r.copy()
        self._weights = np.zeros(n) if weights is None else as_array(weights, "weights", ndim=1).copy()
        self.method = method
        self.sharpness = float(sharpness) if sharpness is not None else default_sharpness(p)
        self.k = k
        self._faces = PreparedFaces(np.zeros((0, self.dim), np.int64), n, self.dim)
        self.refresh()

    # positions, real values and weights: numpy on the host; during optimize the device state is
    # the current one and the host copies are refreshed from it when read

    def _sync(self) -> None:
        if self._host_stale and self._device_state is not None:
            self._points, self._weights, self._reals = self._device_state.fetch()
            self._host_stale = False

    points = _synced_array("_points", "(N, d) positions.")
    reals = _synced_array("_reals", "(N,) real values in [0, 1].")
    weights = _synced_array("_weights", '(N,) power weights ("wdt").')

    @property
    def faces(self) -> np.ndarray:
        """(K, d) the current candidate faces."""
        return self._faces.rows

    @property
    def prepared_faces(self) -> PreparedFaces:
        """The candidates checked and uploaded once per refresh: pass them to the losses in a
        ``loss_fn`` (``losses.expected_chamfer(m.points, m.prepared_faces, fp, targets)``)
        to skip the per-call checks."""
        return self._faces

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    def _triangulation(self):
        if self.method != "wdt":
            return None
        from ..delaunay import weighted_delaunay

        return weighted_delaunay(self.points, self.weights)

    def refresh(self) -> None:
        """Recompute the candidate faces at the current positions (and prune the hopeless ones)."""
        tri = self._triangulation()
        n, d = self.points.shape
        cand = candidate_faces(self.points, self.k, tri)
        fp = face_probabilities(self.points, self.weights, self.reals, PreparedFaces(cand, n, d, checked=True),
                                self.method, self.sharpness, triangulation=tri)
        self._faces = PreparedFaces(cand[self.sharpness * fp.margin > -PRUNE_MARGIN], n, d, checked=True)

    def probabilities(self) -> FaceProbabilities:
        """Face probabilities of the candidate faces at the current state."""
        tri = self._triangulation() if self.method == "wdt" else None
        return face_probabilities(self.points, self.weights, self.reals, self._faces, self.method, self.sharpness,
                                  triangulation=tri)

    def optimize(self, loss_fn: Callable, iterations: int = 100, *, lr: float | None = None,
                 lr_reals: float = 0.05, max_step: float | None = None, refresh_every: int = 20,
                 fixed=None, callback: Callable | None = None, progress: bool = False) -> list[dict]:
        """Adam on positions, weights ("wdt") and real values against ``loss_fn(mesh, fp)``.

        ``loss_fn`` returns a :class:`~tigeom.dmesh.losses.Loss`. The state stays on the device
        for the whole run: give the losses the mesh itself where they take points or reals
        (``losses.expected_chamfer(mesh, mesh.prepared_faces, fp, targets)``), and their
        gradient, chained through the face probabilities, accumulates there. A loss built from
        host arrays works too (its ``vjp`` is uploaded each step). Steps are capped at
        ``max_step`` (default: a tenth of the point spacing); ``fixed`` (N,) bool marks points
        that do not move. Returns the loss history.
        """
        from .state import DeviceState

        h = SATURATION * 2.5 / self.sharpness  # = the point spacing for the default sharpness
        lr = 0.02 * h if lr is None else float(lr)
        max_step = 0.1 * h if max_step is None else float(max_step)
        if fixed is not None:
            fixed = np.asarray(fixed, bool)
            if fixed.shape != (len(self._points),):
                raise ValueError(f"fixed: expected a boolean mask of shape ({len(self._points)},), got {fixed.shape}")
        self._sync()
        state = DeviceState(self._points, self._weights, self._reals, lr=lr, max_step=max_step, lr_reals=lr_reals,
                            weight_step=(lr * h, max_step * h) if self.method == "wdt" else None, fixed=fixed)
        self._device_state = state
        history = []
        try:
            with progress_bar(progress, iterations, "DMesh") as advance:
                for it in range(iterations):
                    if it and refresh_every and it % refresh_every == 0:
                        self.refresh()
                    history.append(self._step(state, loss_fn, it))
                    if callback is not None:
                        callback(it, self, history[-1])
                    advance()
        finally:
            self._sync()
            self._device_state = None
        return history

    def _step(self, state, loss_fn: Callable, it: int) -> dict:
        """One optimisation step on the device state: probabilities, loss, reverse mode, Adam."""
        state.refresh_working()
        tri = self._triangulation() if self.method == "wdt" else None
        fp = evaluate(state.P, state.W, state.R, self._faces, self.method, self.sharpness,
                      grid=lambda: PointGrid.on_device(state.P3, state.n, *state.box()),
                      host=(self.points, self.weights) if self.method == "wdt" else None, triangulation=tri)
        probs_nd = fp._device_probs()
        if probs_nd is not None:
            probs_nd.grad.fill(0)
        loss = loss_fn(self, fp)
        if loss.on_device:
            loss.accumulate(1.0)
        else:  # a loss on host arrays: its gradient goes up to the device state
            gp, gprob, gr = loss.vjp(1.0)
            state.add_host_gradients(np.asarray(gp, np.float64), np.asarray(gr, np.float64))
            if probs_nd is not None:
                g = np.zeros(probs_nd.shape[0], runtime.real_dtype())
                g[:len(gprob)] = gprob
                probs_nd.grad.from_numpy(g)
        fp.accumulate()
        state.step()
        self._host_stale = True
        return {"iteration": it, "loss": loss.value, **{k: float(v) for k, v in loss.terms.items()}}

    def extract(self, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """The discrete mesh: candidate faces with Λ > threshold and a positive margin (so with
        "minball" every kept face has an empty minimum ball and faces never cross). Returns
        ``(vertices, faces)`` with unused points dropped."""
        fp = self.probabilities()
        keep = (fp.probs > threshold) & (fp.margin > 0)
        f = self.faces[keep]
        used, inv = np.unique(f.reshape(-1), return_inverse=True)
        return self.points[used].copy(), inv.reshape(f.shape).astype(np.int64)

    def to_trimesh(self, threshold: float = 0.5):
        """3D: the extracted triangle mesh as a ``trimesh.Trimesh`` (not processed or merged)."""
        if self.dim != 3:
            raise ValueError("to_trimesh: a 2D DMesh has edges, not triangles; use save() or extract()")
        import trimesh

        v, f = self.extract(threshold)
        return trimesh.Trimesh(v, f, process=False)

    def save(self, path, threshold: float = 0.5) -> None:
        """Write the extracted mesh atomically: 3D triangles as OBJ/PLY/STL/OFF, 2D edges as .npz
        (``vertices``, ``segments``, like :func:`tigeom.io.write_curve`)."""
        from .. import io

        v, f = self.extract(threshold)
        if self.dim == 3:
            io.write_surface(path, v, f)
        else:
            io.write_curve(path, v, f)
