"""Steady 2D channel flow around a polygonal body, its force, and the force's exact gradient.

Method (see docs/flow.md): D2Q9 lattice Boltzmann, BGK collision blended with the
Noble-Torczynski partially saturated solid operator. The solid fraction of a cell is a C1 ramp
of the signed distance from its centre to the polygon, so the force is a smooth function of
the vertices (no 0/1 mask). The force is the momentum the solid operator removes. Its
gradient comes from the discrete adjoint of the converged one-step map, solved by reverse
fixed-point iteration (O(1) memory), then chained through the solid fraction to the vertices.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from tigeom import runtime
from tigeom._core import device as _device
from tigeom._core.validate import as_array, as_index_array

from ._steady import ConvergenceWarning, SteadyLBM, SteadyResult, reuse

logger = logging.getLogger(__name__)
__all__ = ["Flow2D", "FlowResult", "ConvergenceWarning", "polygon_area"]


def _kernels():
    from . import _lbm_kernels

    return _lbm_kernels


def _check_polygon(vertices, segments):
    v = as_array(vertices, "vertices", ndim=2)
    if v.shape[1] != 2 or v.shape[0] < 3:
        raise ValueError(f"vertices: expected shape (V, 2) with V >= 3, got {v.shape}")
    s = as_index_array(segments, "segments", v.shape[0], width=2)
    if s.shape[0] < 3:
        raise ValueError(f"segments: a closed polygon needs at least 3 segments, got {s.shape[0]}")
    if np.any(s[:, 0] == s[:, 1]):
        e = int(np.flatnonzero(s[:, 0] == s[:, 1])[0])
        raise ValueError(f"segments: segment {e} joins vertex {s[e, 0]} to itself")
    deg = np.bincount(s.ravel(), minlength=v.shape[0])
    bad = np.flatnonzero((deg != 0) & (deg != 2))
    if bad.size:
        raise ValueError(f"segments: the polygon is not closed: vertex {bad[0]} is used by {deg[bad[0]]} "
                         "segment(s); every vertex of closed polygons is used by exactly 2")
    return v, s


def polygon_area(vertices, segments) -> float:
    """Area enclosed by closed polygon(s) (holes subtract when oriented opposite), absolute."""
    v = np.asarray(vertices, float)
    s = np.asarray(segments)
    a, b = v[s[:, 0]], v[s[:, 1]]
    return abs(0.5 * float(np.sum(a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1])))


@dataclass
class FlowResult(SteadyResult):
    """Outcome of :meth:`Flow2D.solve`. ``force`` is (drag, lift) per unit depth, density 1."""

    force: np.ndarray
    converged: bool
    steps: int
    residuals: np.ndarray  # (n, 4): step, mean relative velocity change per step since the last check, Fx, Fy
    seconds: float
    flow: "Flow2D" = field(repr=False)
    vertices: np.ndarray = field(repr=False)
    segments: np.ndarray = field(repr=False)
    solid_fraction: np.ndarray = field(repr=False)  # (nx, ny)
    box: np.ndarray = field(repr=False)
    adjoint: dict = field(default_factory=dict)  # steps, converged, seconds of the last vjp
    _state: np.ndarray | None = field(default=None, repr=False)  # host copy once evicted from the device
    _vjp_cache: dict = field(default_factory=dict, repr=False)
    _token: int = field(default=0, repr=False)


class Flow2D(SteadyLBM):
    """Steady incompressible flow in the channel [0, Lx] x [0, Ly] around polygonal bodies.

    Parameters
    ----------
    size : (Lx, Ly), rounded to whole cells (``grid_size`` gives the size used).
    resolution : cells per unit length.
    viscosity : kinematic viscosity nu.
    inflow_velocity : U, the peak of a "parabolic" profile or the value of a "uniform" one.
    inflow_profile : "parabolic" or "uniform".
    walls : "no-slip" (halfway bounce-back) or "slip" (specular reflection) at y = 0 and y = Ly.
    lattice_velocity : U in lattice units (Mach number * sqrt(3)); lowered automatically when the
        flow is so viscous that the relaxation time would exceed 1.
    smoothing : half-width, in cells, of the solid-fraction ramp across the body's boundary.
    retraction : how far, in cells, the ramp's centre lies inside the boundary (the diffuse
        body's effective wall sits outside its half-solid level; 0.3 with the default smoothing,
        chosen on the Schaefer-Turek 2D-1 and 3D-1Z drags, puts it on the polygon: see
        docs/flow.md). Between -smoothing and smoothing.
    tol : relative tolerance on the extrapolated change of the force (and on the per-step
        velocity change) that declares the flow steady.
    max_steps : step limit; a solve that reaches it warns with :class:`ConvergenceWarning`.
    check_every : steps between convergence checks.
    """

    DIM = 2
    Q = 9
    NAME = "Flow2D"
    _eight_per_launch = None  # eight steps per kernel launch: None for on a GPU only
    KERNELS = "tigeom.sim._lbm_kernels"

    def __init__(self, size=(2.2, 0.41), resolution=100, viscosity=1e-3, inflow_velocity=0.3,
                 inflow_profile="parabolic", walls="no-slip", *, lattice_velocity=0.06, smoothing=1.5,
                 retraction=0.3, tol=1e-6, max_steps=200_000, check_every=200):
        self._setup(size, resolution, viscosity, inflow_velocity, inflow_profile, walls, lattice_velocity,
                    smoothing, retraction, tol, max_steps, check_every)
        self.nx, self.ny = self.shape

    # ------------------------------------------------------------------ buffers

    def bytes_needed(self) -> int:
        """Device memory of a solve and its adjoint: four 9-population arrays and the solid fraction."""
        return int(self.nx * self.ny * (4 * 9 + 4) * runtime.real_dtype().itemsize)

    def _buffers(self):
        gen = runtime.generation()
        if self._bufs is not None and self._gen == gen:
            return self._bufs
        self._check_memory(self.bytes_needed())
        rd = runtime.real_dtype()
        sh = (9, self.nx, self.ny)
        nd = _device.ndarray
        b = dict(f=nd(rd, sh), fn=nd(rd, sh), lam=None, lamn=None, msnap=nd(rd, (2, self.nx, self.ny)),
                 gam=nd(rd, (self.nx, self.ny)), uin=nd(rd, (self.ny,)), prm=nd(rd, (_kernels().N_PRM,)),
                 out=nd(rd, (2,)), box=nd(np.int32, (4,)), bc=nd(rd, (self.ny, 6)))
        b["uin"].from_numpy(self._inflow().astype(runtime.real_dtype()))
        self._bufs, self._gen, self._owner, self._lam_key, self._resident = b, gen, None, None, None
        return b

    def _set_prm(self, b, gx=0.0, gy=0.0):
        b["prm"].from_numpy(np.array([self.tau, gx, gy, self.smoothing, self.retraction], runtime.real_dtype()))

    # ------------------------------------------------------------------ geometry

    def _prepare_body(self, vertices, segments):
        v, s = _check_polygon(vertices, segments)
        vl = v / self.dx
        used = np.unique(s)
        lo, hi = vl[used].min(axis=0), vl[used].max(axis=0)
        outer = self.smoothing - self.retraction  # the ramp's outer edge, cells outside the polygon
        margin = 2.0 + outer
        for ax, n, name in ((0, self.nx, "x"), (1, self.ny, "y")):
            if lo[ax] < margin or hi[ax] > n - margin:
                raise ValueError(
                    f"vertices: the body must lie strictly inside the channel, at least {margin * self.dx:.4g} "
                    f"({margin:g} cells) from its boundary; its {name}-extent is "
                    f"[{lo[ax] * self.dx:.4g}, {hi[ax] * self.dx:.4g}] in [0, {n * self.dx:.4g}]")
        ext = hi - lo
        area = polygon_area(vl, s)
        if ext.min() < 3.0 or area < 6.0:
            raise ValueError(f"resolution: {self.resolution:g} cells per unit length is too coarse for the body: "
                             f"its smallest extent is {ext.min():.2f} cells and its area {area:.2f} cells^2 "
                             "(need at least 3 cells and 6 cells^2)")
        pad = outer + 1.0
        box = np.array([max(int(np.floor(lo[0] - pad)), 1), min(int(np.ceil(hi[0] + pad)) + 1, self.nx - 1),
                        max(int(np.floor(lo[1] - pad)), 0), min(int(np.ceil(hi[1] + pad)) + 1, self.ny)],
                       np.int32)
        return v, s, vl, box

    def solid_fraction(self, vertices, segments) -> np.ndarray:
        """Solid fraction (nx, ny) of the cells for a body."""
        runtime.ensure_init()
        _, s, vl, box = self._prepare_body(vertices, segments)
        b = self._buffers()
        self._evict()
        self._owner = None  # the body arrays change: a later vjp must upload its own
        self._upload_body(b, vl, s, box)
        return b["gam"].to_numpy().astype(np.float64)

    def _upload_body(self, b, vl, s, box):
        K = _kernels()
        rd = runtime.real_dtype()
        b["box"].from_numpy(box)
        b["gam"].fill(0)
        self._set_prm(b)
        b["v"] = reuse(b.get("v"), vl.astype(rd))
        b["seg"] = reuse(b.get("seg"), s.astype(np.int32))
        K.solid_fraction(b["v"], b["seg"], b["gam"], b["box"], b["prm"])

    # ------------------------------------------------------------------ forward

    def solve(self, vertices, segments, *, warm_start: bool = False, max_steps: int | None = None,
              tol: float | None = None, callback=None) -> FlowResult:
        """Steady flow around the body bounded by ``segments`` (closed polygons, any orientation).

        ``warm_start`` starts from this object's previous solution (much faster when the body
        changed a little, as in shape optimisation); otherwise from the inflow profile.
        ``callback(step, residual, force)`` is called at every convergence check.
        """
        runtime.ensure_init()
        K = _kernels()
        v, s, vl, box = self._prepare_body(vertices, segments)
        tol, max_steps = self._limits(tol, max_steps)
        b = self._buffers()
        self._evict()
        fresh = not warm_start or self._owner is None
        self._upload_body(b, vl, s, box)
        if fresh:
            K.init_state(b["f"], b["uin"], b["gam"], b["box"])
        t0 = time.perf_counter()
        hist, converged, n = self._iterate(b, max_steps, tol, callback)
        seconds = time.perf_counter() - t0
        result = FlowResult(force=np.asarray(hist[-1][2:4], float), converged=converged, steps=n,
                            residuals=np.asarray(hist, float), seconds=seconds, flow=self, vertices=v,
                            segments=s, solid_fraction=b["gam"].to_numpy().astype(float), box=box)
        return self._register(result)

    # ------------------------------------------------------------------ adjoint

    def _adjoint(self, res: FlowResult, g: np.ndarray, tol=None, max_steps=None) -> np.ndarray:
        K = _kernels()
        b = self._buffers()
        rd = runtime.real_dtype()
        tol, max_steps = self._limits(tol, max_steps)
        if self._take_buffers_for(res):
            self._upload_body(b, res.vertices / self.dx, res.segments, res.box)
        gl = np.asarray(g, float) * self.force_scale
        self._set_prm(b, gl[0], gl[1])
        if b["lam"] is None:
            for name in ("lam", "lamn"):
                b[name] = _device.ndarray(rd, (9, self.nx, self.ny))
            b["ggam"] = _device.ndarray(rd, (self.nx, self.ny))
        self._adjoint_warm_key(gl, b, ("lam",))
        b["ggam"].fill(0)
        K.velocity(b["f"], b["msnap"])  # the adjoint steps read the velocity only; solve() refreshes msnap
        box = res.box
        b["gbox"] = _device.ndarray(rd, (int(box[1] - box[0]), int(box[3] - box[2])))
        report = self._adjoint_iterate(b, max_steps, tol)
        gv = _device.ndarray(rd, res.vertices.shape)
        gv.fill(0)
        K.solid_fraction_vjp(b["v"], b["seg"], b["ggam"], b["box"], b["prm"], gv)
        return self._vertex_gradient(res, gv, report)

    # ------------------------------------------------------------------ kernel launches

    def _advance(self, b, steps):
        K = _kernels()
        args = (b["f"], b["fn"], b["gam"], b["box"], b["prm"], self._slip, b["uin"])
        # several steps per kernel, ending in b["f"]; the kernels go out as one compute graph
        eight = self._eight_per_launch
        if runtime.on_gpu() if eight is None else eight:
            self._repeat(K.step_oct, steps // 8, *args)
            steps %= 8
        self._repeat(K.step_pair, steps // 2, *args)
        if steps % 2:
            K.step(b["f"], b["fn"], b["gam"], b["box"], b["prm"], self._slip, b["uin"])
            b["f"], b["fn"] = b["fn"], b["f"]
        K.apply_bc(b["f"], b["uin"])  # the steps leave the boundary columns stale

    def _adj_advance(self, b, steps):
        K = _kernels()
        self._repeat(K.adj_step_pair, steps // 2, b["lam"], b["lamn"], b["f"], b["msnap"], b["gam"], b["box"],
                     b["prm"], b["bc"], self._slip, b["uin"])  # two steps per kernel, ending in b["lam"]
        if steps % 2:
            K.adj_bc_terms(b["lam"], b["f"], b["uin"], b["bc"])
            K.adj_step(b["lam"], b["lamn"], b["msnap"], b["gam"], b["box"], b["prm"], b["bc"], self._slip)
            b["lam"], b["lamn"] = b["lamn"], b["lam"]

    def _adj_measure(self, b):
        K = _kernels()
        K.adj_bc_terms(b["lam"], b["f"], b["uin"], b["bc"])
        K.adj_gamma(b["lam"], b["f"], b["gam"], b["box"], b["prm"], b["bc"], self._slip, b["ggam"])
        K.box_values(b["ggam"], b["box"], b["gbox"])  # only the body's box comes to the host
        return b["gbox"].to_numpy().astype(np.float64)
