"""Losses on a probabilistic mesh, each with its exact vector-Jacobian product.

Every loss returns a :class:`Loss`: ``loss.value`` and ``loss.vjp(g=1.0)`` ->
``(grad_points (N, d), grad_probs (K,), grad_reals (N,))`` (zeros for what it does not depend
on). Chain ``grad_probs`` through :meth:`FaceProbabilities.vjp` to reach points, weights, reals.

- :func:`expected_chamfer`: DMesh's expected Chamfer distance between the probabilistic mesh and
  a point cloud, both directions (squared distances).
- :func:`real_consistency`: pulls the real values of a likely face's vertices toward their mean.
- :func:`face_quality`: penalises badly shaped likely faces (3D) or long likely edges (2D).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import runtime
from .._core import device as _device
from .._core.validate import as_array, as_points, as_scalar
from ..spatial import NearestIndex, PointGrid, bounding_box, pad3, spacing
from .probabilities import FaceProbabilities, _nd, prepare_faces

# quadrature points of a face (barycentric rows): 4 per edge, 4 per triangle
BARY = {2: np.array([[1 - t, t] for t in (0.125, 0.375, 0.625, 0.875)]),
        3: np.array([[2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3], [1 / 3, 1 / 3, 1 / 3]])}
K_NEAREST = 8  # face samples looked at per target point
ACC_SLOTS = 1024  # kernels spread each sum over this many slots (summed on the host)


@dataclass(eq=False)
class Loss:
    """A scalar loss with its vector-Jacobian product."""

    value: float
    terms: dict
    _backward: object = field(repr=False, default=None)
    _accumulate: object = field(repr=False, default=None)

    def vjp(self, g: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(grad_points, grad_probs, grad_reals)`` of ``g * value``."""
        return self._backward(float(g))

    @property
    def on_device(self) -> bool:
        """Whether :meth:`accumulate` can run: the loss was built on a :class:`DMesh`'s device
        state (``points``/``reals`` given as the mesh itself inside ``DMesh.optimize``)."""
        return self._accumulate is not None

    def accumulate(self, g: float = 1.0) -> None:
        """Reverse mode on the device: add the gradient of ``g * value`` to the mesh state's and
        the probabilities' gradient buffers (nothing is zeroed, nothing comes to the host)."""
        if self._accumulate is None:
            raise ValueError("accumulate: this loss was built from host arrays; use vjp()")
        self._accumulate(float(g))


class Targets:
    """A target point cloud prepared once for repeated :func:`expected_chamfer` calls."""

    def __init__(self, targets):
        self.points = as_points(targets, "targets")
        if len(self.points) == 0:
            raise ValueError("targets: need at least one point")
        self.dim = self.points.shape[1]
        self.grid = NearestIndex(self.points)
        self.array = _device.upload(self.points.astype(runtime.real_dtype()))
        self.generation = runtime.generation()
        self.spacing = spacing(self.points)
        self.diagonal = float(np.linalg.norm(self.points.max(0) - self.points.min(0))) or 1.0
        # the length (2D) or area (3D) the targets sample, estimated as T spacing^(d-1)
        self.measure = len(self.points) * self.spacing ** (self.dim - 1)
        self._scratch = None

    def scratch(self):
        """(T, K_NEAREST) real and i32 kernel scratch, allocated once (nothing keeps it after a call)."""
        if self._scratch is None:
            shape = (len(self.points), K_NEAREST)
            self._scratch = (_device.empty(shape, runtime.real_dtype()), _device.empty(shape, np.int32))
        return self._scratch


def _slots(*cols):
    """A zeroed (ACC_SLOTS, *cols) kernel sum buffer with a gradient (see :data:`ACC_SLOTS`)."""
    return _nd(np.zeros((ACC_SLOTS, *cols), runtime.real_dtype()), True)


def _summed(acc) -> np.ndarray:
    """The slots of ``acc`` added up in float64: a scalar, or one value per column."""
    return acc.to_numpy().astype(np.float64).sum(axis=0)


def _probs_arg(probs, nf: int):
    """``(probs (K,) float64, kernel array with a gradient)`` of a ``probs`` argument: an array
    (checked, uploaded), or a :class:`FaceProbabilities` whose device copy is used as it is (no
    check or upload: a loss inside an optimisation loop should be given ``fp``, not ``fp.probs``)."""
    on_device = probs._device_probs() if isinstance(probs, FaceProbabilities) else None
    if on_device is not None:
        if len(probs.probs) != nf:
            raise ValueError(f"probs: expected {nf} values (one per face), got {len(probs.probs)}")
        return probs.probs, on_device
    pr = as_array(probs.probs if isinstance(probs, FaceProbabilities) else probs, "probs", ndim=1)
    if len(pr) != nf:
        raise ValueError(f"probs: expected {nf} values (one per face), got {len(pr)}")
    if len(pr) and (pr.min() < 0 or pr.max() > 1):
        raise ValueError(f"probs: must lie in [0, 1], got range [{pr.min():.6g}, {pr.max():.6g}]")
    return pr, _nd(np.concatenate([pr, [0.0]]).astype(runtime.real_dtype()), True)


def _state_of(x):
    """The device state of a DMesh given in place of its points or reals (inside
    ``DMesh.optimize``), else None."""
    return getattr(x, "_device_state", None)


def _mesh_inputs(points, faces, probs):
    p = as_points(points, "points")
    n, d = p.shape
    f = prepare_faces(faces, n, d)
    pr, PR = _probs_arg(probs, len(f))
    return p, f, pr, PR


def _device_points(points, faces, probs):
    """``(host points or None, faces, probs, probs array, positions array (with a gradient),
    padded positions, box (lo, hi) padded to 3, state or None)`` of a loss's mesh arguments."""
    st = _state_of(points)
    if st is not None:
        f = prepare_faces(faces, st.n, st.d)
        pr, PR = _probs_arg(probs, len(f))
        return None, f, pr, PR, st.P, st.P3, st.box(), st
    p, f, pr, PR = _mesh_inputs(points, faces, probs)
    rdt = runtime.real_dtype()
    lo, hi = bounding_box(p)
    box = (pad3(lo[None])[0], pad3(hi[None])[0])
    return p, f, pr, PR, _nd(p.astype(rdt), True), _device.upload(pad3(p).astype(rdt)), box, None


def _accumulate_fn(kernels):
    """Replays ``kernels`` [(kernel, args, acc, acc_grad)] in reverse mode, adding into the
    gradient buffers of their inputs (the device path of :meth:`Loss.accumulate`)."""

    def accumulate(g):
        for kernel, args, acc, acc_grad in kernels:
            row = g * np.asarray(acc_grad, np.float64)
            acc.grad.from_numpy(np.ascontiguousarray(np.broadcast_to(row, acc.shape)).astype(runtime.real_dtype()))
            kernel.grad(*args)

    return accumulate


def _backward_fn(kernels, grads_of, n, d, nf):
    """Replays ``kernels`` [(kernel, args, acc, acc_grad)] in reverse mode."""

    def backward(g):
        for nd in grads_of.values():
            if nd is not None:
                nd.grad.fill(0)
        for kernel, args, acc, acc_grad in kernels:
            row = g * np.asarray(acc_grad, np.float64)
            acc.grad.from_numpy(np.ascontiguousarray(np.broadcast_to(row, acc.shape)).astype(runtime.real_dtype()))
            kernel.grad(*args)

        def get(key, shape):
            nd = grads_of.get(key)
            if nd is None or not np.prod(shape):
                return np.zeros(shape)
            return nd.grad.to_numpy().reshape(-1)[:int(np.prod(shape))].astype(np.float64).reshape(shape)

        return get("points", (n, d)), get("probs", (nf,)), get("reals", (n,))

    return backward


def expected_chamfer(points, faces, probs, targets, *, min_prob: float = 1e-3, miss: float | None = None,
                     reach: float | None = None, tolerance: float | None = None) -> Loss:
    """Expected Chamfer distance between a probabilistic mesh and a point cloud (DMesh §4).

    Only the likely faces, p_F >= ``min_prob`` (default 1e-3), enter either direction: an
    unlikely face would change the mesh -> targets term by less than min_prob times its share,
    and most candidates are unlikely, so they would dominate the cost.

    mesh -> targets: Σ_F p_F |F| mean_x (min(|x - nearest target|, reach) - tolerance)_+^2 / A
    over quadrature points x of every likely face, |F| the face's length or area and A = T s^(d-1) the
    targets' length or area estimated from their count T and mean spacing s (a constant, so a
    face is never dropped just because it is farther than average). ``reach`` defaults to 5% of
    the targets' bounding-box diagonal; the truncation bounds the search for far faces.
    ``tolerance`` (default: the targets' mean spacing) discounts the distance that sampling
    alone explains: a point on the true surface is about that far from the nearest sample.

    targets -> mesh: for each target point, the expected squared distance to the nearest
    *existing* face among the faces of its 8 nearest face samples (likely faces only), sorted
    by distance: Σ_j p_j Π_{i<j} (1 - p_i) d_j^2,
    plus Π_j (1 - p_j) (d_last^2 + miss^2) for the event that none exists. ``miss`` defaults to
    the targets' mean nearest-neighbour distance.

    ``loss.terms`` has both directions. ``targets`` may be an array (T, d) or a :class:`Targets`.
    """
    p, f, pr, PR, P, p3d, (lo3, hi3), st = _device_points(points, faces, probs)
    min_prob = check_min_prob(min_prob)
    tg = as_targets(targets, P.shape[1])
    if len(f) == 0:
        raise ValueError("faces: the mesh has no faces, the Chamfer distance to it is undefined")
    keep = np.flatnonzero(pr >= min_prob).astype(np.int32)
    acc1, acc2, kernels = chamfer_kernels(P, p3d, (lo3, hi3), f.dev, PR, _device.upload(keep), len(keep), tg,
                                          reach=reach, tolerance=tolerance, miss=miss)
    mt = float(_summed(acc1)[0]) / tg.measure
    tm = float(_summed(acc2)) / len(tg.points)
    n, d = P.shape
    return Loss(value=mt + tm, terms={"mesh_to_target": mt, "target_to_mesh": tm},
                _backward=_backward_fn(kernels, {"points": P, "probs": PR}, n, d, len(f)),
                _accumulate=_accumulate_fn(kernels) if st is not None else None)


def check_min_prob(min_prob) -> float:
    min_prob = as_scalar(min_prob, "min_prob")
    if not 0 <= min_prob < 1:
        raise ValueError(f"min_prob: must lie in [0, 1), got {min_prob}")
    return min_prob


def as_targets(targets, d: int) -> Targets:
    """``targets`` (an array (T, d) or a :class:`Targets`) as :class:`Targets` of this runtime."""
    tg = targets if isinstance(targets, Targets) and targets.generation == runtime.generation() else \
        Targets(targets.points if isinstance(targets, Targets) else targets)
    if tg.dim != d:
        raise ValueError(f"targets: expected {d}D points like points, got {tg.dim}D")
    return tg


def chamfer_kernels(P, p3d, box, F, PR, keep, Kk: int, tg: Targets, *, reach=None, tolerance=None, miss=None,
                    slots=_slots):
    """Launches the expected-Chamfer kernels on kernel arrays already on the device: positions
    ``P`` (n, d) with a gradient, the same padded to three coordinates ``p3d`` and their ``box``
    (lo, hi), faces ``F``, probabilities ``PR`` (with a gradient) and the ``Kk`` likely faces
    ``keep``. ``slots(*cols)`` allocates a zeroed sum buffer with a gradient. Returns ``(acc1,
    acc2, kernels)``: the mesh -> targets sums (first column) and the targets -> mesh sums, and
    the [(kernel, args, acc, acc_grad)] list that :func:`_backward_fn` replays."""
    from . import _kernels as K

    n, d = P.shape
    rdt = runtime.real_dtype()
    bary = BARY[d]
    M = len(bary)
    B = _device.upload(bary.astype(rdt))
    acc1, acc2 = slots(2), slots()
    T = len(tg.points)
    cand = _device.empty((T, K_NEAREST), np.int32)
    cand.fill(-1)
    kernels = []
    if Kk:
        X = _device.empty((Kk * M, 3), rdt)
        K.face_samples(p3d, F, keep, B, d, X)
        # mesh -> targets: nearest target of every quadrature point, found on the device
        reach = float(reach if reach is not None else tg.diagonal * 0.05)
        near = tg.grid.nearest_on_device(X, Kk * M, reach)
        tol = float(tolerance if tolerance is not None else tg.spacing)
        args1 = (P, F, keep, PR, B, tg.array, near, reach, tol, d, acc1)
        K.mesh_to_target(*args1)
        kernels.append((K.mesh_to_target, args1, acc1, [1.0 / tg.measure, 0.0]))
        # targets -> mesh: candidate faces of each target from its nearest samples of likely
        # faces (a grid over the samples, built where they are; they lie in the points' box)
        grid = PointGrid.on_device(X, Kk * M, *box)
        kd2, kid = tg.scratch()
        K.knn_faces(grid.pts, tg.grid.pts, keep, M, grid.lo, grid.h, grid.res, grid.start, grid.order, p3d, F,
                    d, kd2, kid, cand)
    miss2 = float(miss if miss is not None else tg.spacing) ** 2
    args2 = (P, F, PR, tg.array, cand, miss2, d, K_NEAREST, acc2)
    K.target_to_mesh(*args2)
    kernels.insert(0, (K.target_to_mesh, args2, acc2, [1.0 / T]))
    return acc1, acc2, kernels


def real_consistency(reals, faces, probs) -> Loss:
    """Mean over faces of p_F Σ_{v in F} (ψ_v - mean_F ψ)^2 (DMesh's real-value regulariser).

    ``reals`` may be the :class:`DMesh` itself inside its ``optimize`` (its device state is used)."""
    st = _state_of(reals)
    if st is not None:
        f = prepare_faces(faces, st.n, st.d)
        pr, PR = _probs_arg(probs, len(f))
        return _face_sum("consistency", st.R, f, PR, st.d, st.n, on_device=True)
    r = as_array(reals, "reals", ndim=1)
    if len(r) and (r.min() < 0 or r.max() > 1):
        raise ValueError(f"reals: must lie in [0, 1], got range [{r.min():.6g}, {r.max():.6g}]")
    f = faces
    d = faces.d if hasattr(faces, "d") else (np.shape(faces)[1] if np.ndim(faces) == 2 else 0)
    if d not in (2, 3):
        raise ValueError(f"faces: expected shape (K, 2) or (K, 3), got {f.shape}")
    f = prepare_faces(f, len(r), d)
    pr, PR = _probs_arg(probs, len(f))
    return _face_sum("consistency", _nd(r.astype(runtime.real_dtype()), True), f, PR, d, len(r))


def face_quality(points, faces, probs, scale: float | None = None) -> Loss:
    """Mean over faces of p_F b_F: b = 1 - 4 sqrt(3) A / Σ l^2 for triangles (0 equilateral, 1
    flat); b = (l / scale)^2 for edges, ``scale`` defaulting to the mean edge length.

    ``points`` may be the :class:`DMesh` itself inside its ``optimize`` (its device state is used)."""
    p, f, pr, PR, P, _, _, st = _device_points(points, faces, probs)
    n, d = P.shape
    if scale is None:
        if d == 3:
            scale = 1.0  # triangles do not use it
        else:
            p = p if p is not None else points.points
            scale = float(np.linalg.norm(p[f.rows[:, 1]] - p[f.rows[:, 0]], axis=1).mean()) if len(f) else 1.0
    if not scale > 0:
        raise ValueError(f"scale: must be > 0, got {scale}")
    return _face_sum("quality", P, f, PR, d, n, scale, on_device=st is not None)


def _face_sum(kind, X, f, PR, d, n, scale=1.0, on_device=False) -> Loss:
    """Mean over the faces of a per-face kernel of the real values (``X`` = R, "consistency") or
    the positions (``X`` = P, "quality")."""
    from . import _kernels as K

    nf = len(f)
    if nf == 0:
        zero = (np.zeros((n, d)), np.zeros(0), np.zeros(n))
        return Loss(0.0, {kind: 0.0}, lambda g: zero, (lambda g: None) if on_device else None)
    acc = _slots()
    F = f.dev
    if kind == "consistency":
        args, grads_of, kernel = (X, F, PR, d, acc), {"reals": X, "probs": PR}, K.real_consistency
    else:
        args, grads_of, kernel = (X, F, PR, float(scale), d, acc), {"points": X, "probs": PR}, K.face_quality
    kernel(*args)
    value = float(_summed(acc)) / nf
    kernels = [(kernel, args, acc, [1.0 / nf])]
    return Loss(value, {kind: value}, _backward_fn(kernels, grads_of, n, d, nf),
                _accumulate_fn(kernels) if on_device else None)
