"""Steady 3D channel flow around a closed triangle mesh, its force, and the force's exact gradient.

Method (see docs/flow.md): the 2D solver's, on the D3Q19 lattice. The solid fraction of a cell
is a C1 ramp of the signed distance from its centre to the mesh (exact point-triangle distance,
inside by the generalised winding number), so the force is a smooth function of the vertices.
The force is the momentum the Noble-Torczynski solid operator removes; its gradient comes from
the discrete adjoint of the converged step (reverse fixed-point iteration, O(1) memory),
chained through the solid fraction to the vertices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from tigeom import runtime
from tigeom._core import device as _device
from tigeom._core.validate import as_array, as_index_array

from ._steady import SteadyLBM, SteadyResult, reuse

__all__ = ["Flow3D", "FlowResult3D", "check_closed_mesh", "mesh_volume"]


def _kernels():
    from . import _lbm3d_kernels

    return _lbm3d_kernels


def mesh_volume(vertices, faces) -> float:
    """Signed volume enclosed by a closed triangle mesh (positive when its faces point outward)."""
    v = np.asarray(vertices, float)
    t = np.asarray(faces)
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    return float(np.einsum("ij,ij->", a, np.cross(b, c)) / 6.0)


def check_closed_mesh(vertices, faces):
    """Validated (vertices (V, 3) float64, faces (F, 3) int64) of closed, edge-manifold,
    consistently oriented triangle mesh(es); ValueError naming the problem otherwise."""
    v = as_array(vertices, "vertices", ndim=2)
    if v.shape[1] != 3 or v.shape[0] < 4:
        raise ValueError(f"vertices: expected shape (V, 3) with V >= 4, got {v.shape}")
    t = as_index_array(faces, "faces", v.shape[0], width=3)
    if t.shape[0] < 4:
        raise ValueError(f"faces: a closed mesh needs at least 4 triangles, got {t.shape[0]}")
    rep = (t[:, 0] == t[:, 1]) | (t[:, 1] == t[:, 2]) | (t[:, 0] == t[:, 2])
    if rep.any():
        e = int(np.flatnonzero(rep)[0])
        raise ValueError(f"faces: face {e} repeats a vertex ({t[e].tolist()})")
    directed = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]).astype(np.int64)
    n = np.int64(v.shape[0])
    und = np.sort(directed, axis=1)
    keys, counts = np.unique(und[:, 0] * n + und[:, 1], return_counts=True)
    if (counts != 2).any():
        k = keys[np.flatnonzero(counts != 2)[0]]
        c = counts[np.flatnonzero(counts != 2)[0]]
        kind = "open (a boundary edge)" if c == 1 else "non-manifold"
        raise ValueError(f"faces: the mesh is {kind}: edge ({k // n}, {k % n}) is used by {c} face(s); "
                         "every edge of a closed mesh is used by exactly 2")
    dkeys, dcounts = np.unique(directed[:, 0] * n + directed[:, 1], return_counts=True)
    if (dcounts != 1).any():
        k = dkeys[np.flatnonzero(dcounts != 1)[0]]
        raise ValueError(f"faces: the faces are not consistently oriented: edge ({k // n}, {k % n}) runs the "
                         "same way in both its faces")
    return v, t


@dataclass
class FlowResult3D(SteadyResult):
    """Outcome of :meth:`Flow3D.solve`: ``force`` is (drag, lift, side force), density 1."""

    force: np.ndarray
    converged: bool
    steps: int
    residuals: np.ndarray  # (n, 5): step, mean relative velocity change per step, Fx, Fy, Fz
    seconds: float
    flow: "Flow3D" = field(repr=False)
    vertices: np.ndarray = field(repr=False)
    faces: np.ndarray = field(repr=False)
    solid_fraction: np.ndarray = field(repr=False)  # over the body's box (see ``box``)
    box: np.ndarray = field(repr=False)  # i0, i1, j0, j1, l0, l1
    adjoint: dict = field(default_factory=dict)
    _state: np.ndarray | None = field(default=None, repr=False)  # host copy once evicted from the device
    _vjp_cache: dict = field(default_factory=dict, repr=False)
    _token: int = field(default=0, repr=False)


class Flow3D(SteadyLBM):
    """Steady incompressible flow in the channel [0, Lx] x [0, Ly] x [0, Lz] around closed
    triangle meshes.

    Parameters are those of :class:`Flow2D`; ``size`` is (Lx, Ly, Lz). Inflow at x = 0 (a
    "parabolic" profile is 16 U y z (Ly - y)(Lz - z) / (Ly^2 Lz^2)), outflow at x = Lx, walls
    at y = 0, Ly and z = 0, Lz ("no-slip": halfway bounce-back, "slip": specular reflection).
    The body may cross the walls (the part outside the channel is ignored); its part inside
    must keep clear of the inflow and outflow planes.
    """

    DIM = 3
    Q = 19
    NAME = "Flow3D"
    KERNELS = "tigeom.sim._lbm3d_kernels"
    SLIP = 3  # both wall pairs reflect (bit 0: y walls, bit 1: z walls)

    def __init__(self, size=(2.5, 0.41, 0.41), resolution=50, viscosity=1e-3, inflow_velocity=0.45,
                 inflow_profile="parabolic", walls="no-slip", *, lattice_velocity=0.06, smoothing=1.5,
                 retraction=0.3, tol=1e-6, max_steps=200_000, check_every=200):
        self._setup(size, resolution, viscosity, inflow_velocity, inflow_profile, walls, lattice_velocity,
                    smoothing, retraction, tol, max_steps, check_every)
        self.nx, self.ny, self.nz = self.shape

    # ------------------------------------------------------------------ buffers

    def bytes_per_cell(self, adjoint: bool = False) -> int:
        """Device bytes per lattice cell: two population arrays and the momentum snapshot of the
        convergence test; two more population arrays for the adjoint."""
        return (2 * 19 + 3 + (2 * 19 if adjoint else 0)) * runtime.real_dtype().itemsize

    def bytes_needed(self, adjoint: bool = True) -> int:
        return int(np.prod(self.shape)) * self.bytes_per_cell(adjoint)

    def _buffers(self):
        gen = runtime.generation()
        if self._bufs is not None and self._gen == gen:
            return self._bufs
        self._check_memory(self.bytes_needed(adjoint=False))
        rd = runtime.real_dtype()
        sh = (19, *self.shape)
        nd = _device.ndarray
        K = _kernels()
        b = dict(f=nd(rd, sh), fn=nd(rd, sh), lam=None, lamn=None, msnap=nd(rd, (3, *self.shape)),
                 uin=nd(rd, self.shape[1:]), prm=nd(rd, (K.N_PRM,)), out=nd(rd, (3,)), box=nd(np.int32, (6,)),
                 bc=nd(rd, (self.ny, self.nz, K.N_BC)))
        b["uin"].from_numpy(self._inflow().astype(rd))
        self._bufs, self._gen, self._owner, self._lam_key, self._resident = b, gen, None, None, None
        return b

    def _set_prm(self, b, g=(0.0, 0.0, 0.0), orient=1.0):
        b["prm"].from_numpy(np.array([self.tau, *g, self.smoothing, self.retraction, orient], runtime.real_dtype()))

    # ------------------------------------------------------------------ geometry

    def _prepare_body(self, vertices, faces):
        v, t = check_closed_mesh(vertices, faces)
        vl = v / self.dx
        lo, hi = vl[t.ravel()].min(axis=0), vl[t.ravel()].max(axis=0)
        outer = self.smoothing - self.retraction  # the ramp's outer edge, cells outside the surface
        margin = 2.0 + outer
        if lo[0] < margin or hi[0] > self.nx - margin:
            raise ValueError(
                f"vertices: the body must keep clear of the inflow and outflow planes, at least "
                f"{margin * self.dx:.4g} ({margin:g} cells) from them; its x-extent is "
                f"[{lo[0] * self.dx:.4g}, {hi[0] * self.dx:.4g}] in [0, {self.nx * self.dx:.4g}]")
        clo = np.maximum(lo, 0.0)
        chi = np.minimum(hi, self.shape)
        ext = chi - clo
        if (ext <= 0).any():
            raise ValueError(f"vertices: no part of the body is inside the channel (body box "
                             f"{(lo * self.dx).round(4).tolist()} - {(hi * self.dx).round(4).tolist()})")
        if ext.min() < 3.0:
            raise ValueError(f"resolution: {self.resolution:g} cells per unit length is too coarse for the body: "
                             f"its smallest extent inside the channel is {ext.min():.2f} cells (need at least 3)")
        pad = outer + 1.0
        box = np.array([max(int(np.floor(lo[0] - pad)), 1), min(int(np.ceil(hi[0] + pad)) + 1, self.nx - 1),
                        max(int(np.floor(lo[1] - pad)), 0), min(int(np.ceil(hi[1] + pad)) + 1, self.ny),
                        max(int(np.floor(lo[2] - pad)), 0), min(int(np.ceil(hi[2] + pad)) + 1, self.nz)],
                       np.int32)
        return v, t, vl, box

    def _upload_body(self, b, vl, t, box):
        """Signed distance, nearest faces and solid fraction of the box's cells."""
        K = _kernels()
        rd = runtime.real_dtype()
        vol = mesh_volume(vl, t)
        orient = 1.0 if vol >= 0 else -1.0
        a, bb, c = vl[t[:, 0]], vl[t[:, 1]], vl[t[:, 2]]
        keep = np.linalg.norm(np.cross(bb - a, c - a), axis=1) > 1e-12 * max(1.0, np.abs(vl).max()) ** 2
        tk = np.ascontiguousarray(t[keep].astype(np.int32))  # zero-area faces: no distance, no solid angle
        bs = (int(box[1] - box[0]), int(box[3] - box[2]), int(box[5] - box[4]))
        b["box"].from_numpy(box)
        self._set_prm(b, orient=orient)
        b["v"] = reuse(b.get("v"), vl.astype(rd))
        b["tri"] = reuse(b.get("tri"), tk)
        for name, dt, sh in (("sd", rd, bs), ("near", np.int32, bs), ("bary", rd, (*bs, 3)), ("gam", rd, bs)):
            if b.get(name) is None or tuple(b[name].shape) != sh:
                b[name] = _device.ndarray(dt, sh)
        b["orient"] = orient
        K.signed_distance(b["v"], b["tri"], b["box"], b["sd"], b["near"], b["bary"])
        K.solid_fraction(b["sd"], b["gam"], b["prm"])

    def solid_fraction(self, vertices, faces) -> tuple[np.ndarray, np.ndarray]:
        """(solid fraction over the body's box, the box (i0, i1, j0, j1, l0, l1) in cells)."""
        runtime.ensure_init()
        _, t, vl, box = self._prepare_body(vertices, faces)
        b = self._buffers()
        self._evict()
        self._owner = None
        self._upload_body(b, vl, t, box)
        return b["gam"].to_numpy().astype(np.float64), box

    # ------------------------------------------------------------------ forward

    def solve(self, vertices, faces, *, warm_start: bool = False, max_steps: int | None = None,
              tol: float | None = None, callback=None) -> FlowResult3D:
        """Steady flow around the body bounded by ``faces`` (closed, consistently oriented
        triangle meshes, either orientation).

        ``warm_start`` starts from this object's previous solution (much faster when the body
        changed a little, as in shape optimisation); otherwise from the inflow profile.
        ``callback(step, residual, force)`` is called at every convergence check.
        """
        runtime.ensure_init()
        K = _kernels()
        v, t, vl, box = self._prepare_body(vertices, faces)
        tol, max_steps = self._limits(tol, max_steps)
        b = self._buffers()
        self._evict()
        fresh = not warm_start or self._owner is None
        self._upload_body(b, vl, t, box)
        if fresh:
            K.init_state(b["f"], b["uin"], b["gam"], b["box"])
        t0 = time.perf_counter()
        hist, converged, n = self._iterate(b, max_steps, tol, callback)
        result = FlowResult3D(force=np.asarray(hist[-1][2:5], float), converged=converged, steps=n,
                              residuals=np.asarray(hist, float), seconds=time.perf_counter() - t0, flow=self,
                              vertices=v, faces=t, solid_fraction=b["gam"].to_numpy().astype(float), box=box)
        return self._register(result)

    # ------------------------------------------------------------------ adjoint

    def _adjoint(self, res: FlowResult3D, g: np.ndarray, tol=None, max_steps=None) -> np.ndarray:
        K = _kernels()
        b = self._buffers()
        rd = runtime.real_dtype()
        tol, max_steps = self._limits(tol, max_steps)
        if self._take_buffers_for(res):
            self._upload_body(b, res.vertices / self.dx, res.faces, res.box)
        gl = np.asarray(g, float) * self.force_scale
        self._set_prm(b, gl, b["orient"])
        if b["lam"] is None:
            self._check_memory(self.bytes_needed(adjoint=True))
            for name in ("lam", "lamn"):
                b[name] = _device.ndarray(rd, (19, *self.shape))
        if b.get("ggam") is None or tuple(b["ggam"].shape) != tuple(b["gam"].shape):
            b["ggam"] = _device.ndarray(rd, tuple(b["gam"].shape))
        self._adjoint_warm_key(gl, b, ("lam",))
        K.velocity(b["f"], b["msnap"])  # the adjoint steps read the velocity only; solve() refreshes msnap
        report = self._adjoint_iterate(b, max_steps, tol)
        gv = _device.ndarray(rd, res.vertices.shape)
        gv.fill(0)
        K.solid_fraction_vjp(b["v"], b["tri"], b["box"], b["sd"], b["near"], b["bary"], b["ggam"], b["prm"], gv)
        return self._vertex_gradient(res, gv, report)

    # ------------------------------------------------------------------ kernel launches

    def _advance(self, b, steps, pull=None):
        """``steps`` push steps of the pre-collision state b["f"], two per kernel launch. On a GPU
        (or with ``pull``) in their pull form: collide f into b["fn"], steps - 1 pull steps,
        stream back into b["f"]."""
        K = _kernels()
        args = (b["gam"], b["box"], b["prm"], self._slip, b["uin"])
        if not (runtime.on_gpu() if pull is None else pull) or steps <= 0:
            self._repeat(K.push_step_pair, steps // 2, b["f"], b["fn"], *args)  # ending in b["f"]
            if steps % 2:
                K.push_step(b["f"], b["fn"], *args)
                b["f"], b["fn"] = b["fn"], b["f"]
            K.apply_bc(b["f"], b["uin"])  # the push steps leave the inflow and outflow planes stale
            return
        K.collide_state(b["f"], b["fn"], *args)
        self._repeat(K.step_pair, (steps - 1) // 2, b["fn"], b["f"], *args)  # ending in b["fn"]
        if (steps - 1) % 2:
            K.step(b["fn"], b["f"], *args)
            b["f"], b["fn"] = b["fn"], b["f"]
        K.stream_state(b["fn"], b["f"], *args)

    def _adj_advance(self, b, steps):
        K = _kernels()
        args = (b["f"], b["msnap"], b["gam"], b["box"], b["prm"], b["bc"], self._slip, b["uin"])
        self._repeat(K.adj_step_pair, steps // 2, b["lam"], b["lamn"], *args)  # ending in b["lam"]
        if steps % 2:
            K.adj_step(b["lam"], b["lamn"], *args)
            b["lam"], b["lamn"] = b["lamn"], b["lam"]

    def _adj_measure(self, b):
        K = _kernels()
        K.adj_gamma(b["lam"], b["f"], b["gam"], b["box"], b["prm"], b["bc"], self._slip, b["uin"], b["ggam"])
        return b["ggam"].to_numpy().astype(np.float64)
