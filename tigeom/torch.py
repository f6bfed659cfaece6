"""PyTorch autograd functions over tigeom's kernels (extra ``tigeom[torch]``).

Every function takes tensors (or, where noted, arrays), returns tensors on the input's device
and in its floating dtype, and differentiates through the same exact vector-Jacobian products as
the numpy API (``Surface.vjp``, ``FaceProbabilities.vjp``, ``FlowResult.vjp``, ...). Gradients
are checked with ``torch.autograd.gradcheck`` in float64 (with ``tigeom.init(precision="f64")``;
in f32 the kernels compute in f32 whatever the tensor's dtype).

Data path: tensors that live where the kernels run (a CUDA tensor on a CUDA runtime, a CPU tensor
on a CPU runtime) are read in place, and outputs and gradients are written into tensors there.
``marching_cubes`` / ``marching_squares``: only the output size crosses to the host.
``face_probabilities`` / ``expected_chamfer``: only the call's scalar checks and the count of
likely faces (and, for "wdt", the positions and weights for the triangulation). ``flow_force``:
the vertices (the body is checked and placed on the lattice on the host; the flow state stays on
the device). ``tet_quality``: one flag of the mesh's checks. ``rasterize`` and ``compliance``
go through host arrays. Tensors elsewhere go through host arrays (see docs/torch.md).

    import tigeom.torch as tt
    verts, faces = tt.marching_cubes(values, level=0.0, spacing=(1, 1, 1), origin=(0, 0, 0))
    verts, segs = tt.marching_squares(values)
    verts, faces = tt.meshsdf(sdf, bounds=((x0, y0, z0), (x1, y1, z1)), resolution=64)
    probs = tt.face_probabilities(points, weights, reals, faces, method="minball")
    loss = tt.expected_chamfer(points, faces, probs, targets)
    force = tt.flow_force(flow, vertices, elements)
    alpha, depth, normal = tt.rasterize(vertices, faces, cams, opacity=probs)
    c = tt.compliance(fem, vertices)            # fem: tigeom.sim.TetElasticity
    q = tt.tet_quality(vertices, tets)          # dict of per-tet tensors, e.g. q["mean_ratio"]
"""

from __future__ import annotations

import functools

import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - the extra is installed for the tests
    raise ImportError("tigeom.torch needs PyTorch: pip install 'tigeom[torch]'") from exc

from . import dmesh as _dmesh
from . import render as _render
from . import runtime
from .isosurface import extract as _iso
from .isosurface import marching_cubes as _marching_cubes
from .isosurface import marching_squares as _marching_squares
from ._core.launch import fast
from ._core.validate import as_scalar
from .spatial import PointGrid
from .tetmesh import validate_mesh as _validate_mesh
from .tetmesh.quality import fold_weights as _fold_weights
from .tetmesh.quality import measures_into as _measures_into
from .tetmesh.quality import measures_vjp_into as _measures_vjp_into

__all__ = ["marching_cubes", "marching_squares", "meshsdf", "face_probabilities", "expected_chamfer", "flow_force",
           "compliance", "rasterize", "tet_quality"]


# --------------------------------------------------------------------------- conversions


def _tensor(x, name: str, *, floating: bool = True) -> torch.Tensor:
    """``x`` as a tensor; floating-point unless ``floating`` is False. Errors name the argument."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.is_complex():
        raise TypeError(f"{name}: complex tensors are not supported")
    return x


def _host(x: torch.Tensor) -> np.ndarray:
    """A C-contiguous host copy (non-contiguous and CUDA tensors alike)."""
    return np.ascontiguousarray(x.detach().to("cpu").numpy())


def _index_array(x, name: str) -> np.ndarray:
    """Element indices given as a tensor or an array-like, as int64 host data."""
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() or x.is_complex():
            raise TypeError(f"{name}: expected an integer tensor, got dtype {x.dtype}")
        return _host(x).astype(np.int64)
    return np.asarray(x)


def _meta(t):
    """(dtype, device) of a tensor, kept for backward instead of the tensor; None for None."""
    return None if t is None else (t.dtype, t.device)


def _like(arr: np.ndarray, meta) -> torch.Tensor:
    """``arr`` as a tensor with a (dtype, device) from :func:`_meta` (or a tensor's)."""
    if isinstance(meta, torch.Tensor):
        meta = _meta(meta)
    return torch.as_tensor(np.ascontiguousarray(arr), dtype=meta[0], device=meta[1])


def _same_device(name_ref, tensors):
    """Raise when tensors of one call live on different devices."""
    devs = {t.device for t in tensors if isinstance(t, torch.Tensor)}
    if len(devs) > 1:
        raise ValueError(f"{name_ref}: tensors on different devices ({', '.join(sorted(map(str, devs)))})")


# --------------------------------------------------------------------------- iso-surfaces


def _on_runtime_device(t: torch.Tensor) -> bool:
    """Whether the kernels can read ``t`` in place: a tensor on the first CUDA device on a CUDA
    runtime (Taichi runs on device 0), a CPU tensor on a CPU runtime."""
    if t.device.type == "cuda":
        return runtime.on_gpu() and t.device.index == 0
    return t.device.type == "cpu" and not runtime.on_gpu()


def _side_stream(args):
    """The caller's current stream on the kernels' CUDA device when some tensor among ``args``
    lives there and that stream is not the legacy default stream, on which Taichi launches; None
    otherwise."""
    if not runtime.on_gpu() or not any(isinstance(a, torch.Tensor) and _on_runtime_device(a) for a in args):
        return None
    cur = torch.cuda.current_stream(0)
    return None if cur.cuda_stream == 0 else cur


def _ordered(fn):
    """A forward or backward that runs on the caller's current stream as far as the caller can
    tell: when that stream is a side stream, the body runs on the default stream (Taichi's and
    the body's torch operations alike) after the work already queued on the side stream, the
    side stream waits for the body's work before anything queued later, and the tensors
    returned are marked as used on the side stream, so that the allocator does not hand their
    memory out again while the side stream may still read them."""

    @functools.wraps(fn)
    def wrapper(ctx, *args):
        cur = _side_stream(args)
        if cur is None:
            return fn(ctx, *args)
        base = torch.cuda.default_stream(0)
        base.wait_stream(cur)
        with torch.cuda.stream(base):
            out = fn(ctx, *args)
        cur.wait_stream(base)
        for t in out if isinstance(out, tuple) else (out,):
            if isinstance(t, torch.Tensor) and t.is_cuda:
                t.record_stream(cur)
        return out

    return wrapper


def _runtime_dtype() -> torch.dtype:
    return torch.float64 if runtime.real_dtype() == np.float64 else torch.float32


_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
                 np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64}


def _extract_in_place(vals: torch.Tensor, plan: "_GridPlan"):
    """(vertices in the runtime's dtype, vedge int64, elements int64) as tensors on ``vals``'s
    device: the kernels read ``vals`` and write their outputs in tensors of the exact size, so
    only the output size crosses to the host (and, where grid values equal the level exactly,
    the snapped vertices are welded through the host, as the numpy API does)."""
    shape, dim = tuple(vals.shape), plan.dim

    def alloc(name, shp, dtype):
        if name in ("totals", "vsnap"):  # read on the host before this call returns: reused scratch
            return _scratch(name, shp, dtype, vals.device)
        if name == "elems":  # the emission kernel writes int64 indices straight away
            dtype = np.int64
        return torch.empty(shp, dtype=_TORCH_DTYPES[np.dtype(dtype)], device=vals.device)

    res = _iso._marcher(dim).run(vals, shape, plan.level, plan.origin, plan.spacing, plan.sweep, plan.S, alloc=alloc)
    if res["V"] == 0:
        return (torch.zeros((0, dim), dtype=vals.dtype, device=vals.device),
                torch.zeros(0, dtype=torch.int64, device=vals.device),
                torch.zeros((0, dim), dtype=torch.int64, device=vals.device))
    verts, vedge, elems = res["verts"], res["vedge"], res["elems"]
    if res["at_level"] and int(_iso._device.fetch(res["flags"])[1]) > 0:  # vertices on grid nodes: weld
        v, ve, el = _iso._weld(_host(verts), _host(vedge), _host(res["vsnap"]), _host(elems))
        verts, vedge, elems = (torch.as_tensor(np.ascontiguousarray(a), device=vals.device) for a in (v, ve, el))
    return verts, vedge, elems


def _strided(g: torch.Tensor):
    """(the storage span of a (V, d) tensor as a contiguous 1-D view, its two element strides):
    the vjp reads the gradient in place, so a broadcast one (the gradient of a sum has strides 0)
    is never materialised."""
    s0, s1 = g.stride()
    span = 1 + (g.shape[0] - 1) * s0 + (g.shape[1] - 1) * s1
    return g.as_strided((span,), (1,)), s0, s1


_SCRATCH: dict = {}


def _scratch(name: str, shape: tuple, dtype, device) -> torch.Tensor:
    """A grow-only scratch tensor per (name, dtype, device), its first ``shape[0]`` rows; for
    arrays that the host reads before the call that filled them returns (the extraction's
    totals, the snapped-vertex flags), so one call never sees another's."""
    key = (name, np.dtype(dtype).str, device)
    buf = _SCRATCH.get(key)
    if buf is None or buf.shape[0] < shape[0] or buf.shape[1:] != tuple(shape[1:]):
        cap = shape[0] if shape[0] <= 16 else int(shape[0] * 1.25)
        buf = _SCRATCH[key] = torch.empty((cap,) + tuple(shape[1:]), dtype=_TORCH_DTYPES[np.dtype(dtype)],
                                          device=device)
    return buf if buf.shape[0] == shape[0] else buf[:shape[0]]


class _GridPlan:
    """What one grid signature (shape, level, spacing, origin, device) needs on every call,
    validated and built once: the checked arguments, the kernels' layout and the vjp's constant
    arrays on the device."""

    def __init__(self, shape: tuple, level, spacing, origin, dim: int, device):
        name = "marching_cubes" if dim == 3 else "marching_squares"
        self.level, self.spacing, self.origin = _iso.check_grid_args(shape, level, spacing, origin, dim, name)
        self.sweep, self.S = _iso.default_layout(shape)
        rdt = runtime.real_dtype()
        strides = np.array([int(np.prod(shape[d + 1:])) for d in range(dim)], np.int32)
        self.strides = torch.as_tensor(strides, device=device)
        self.spc = torch.as_tensor(self.spacing.astype(rdt), device=device)
        self.eps_rel = 1e-12 if rdt == np.float64 else 1e-6
        self.dim = dim


_PLANS: dict = {}


def _grid_plan(values: torch.Tensor, level: float, spacing: tuple, origin: tuple, dim: int) -> _GridPlan:
    key = (tuple(values.shape), level, spacing, origin, values.device, runtime.generation())
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) > 64:
            _PLANS.clear()
        plan = _PLANS[key] = _GridPlan(key[0], level, spacing, origin, dim, values.device)
    return plan


class _Extract(torch.autograd.Function):
    """Extraction straight from the tensor's memory when it lives where the kernels run (values
    converted to the runtime's dtype on the device when they differ), outputs and vjp in tensors
    there. Elsewhere through host arrays."""

    @staticmethod
    @_ordered
    def forward(ctx, values, level, spacing, origin, dim):
        ctx.values_meta = _meta(values)
        ctx.set_materialize_grads(False)  # no zero gradient is built for the faces
        if _on_runtime_device(values):
            plan = _grid_plan(values, level, spacing, origin, dim)
            vals = values.detach().to(_runtime_dtype()).contiguous()
            verts, vedge, elems = _extract_in_place(vals, plan)
            launch = out = vmax = None
            if ctx.needs_input_grad[0]:
                # the backward's work that does not need the incoming gradient, done here on the
                # caller's thread (autograd runs the backward of CUDA tensors on a thread of its
                # own, where the same host work takes longer): max |value| for the vjp's clamp, the
                # zeroed gradient, and the vjp's launch with every argument but the gradient and
                # its strides set
                vmax = torch.linalg.vector_norm(vals, float("inf")).reshape(1)
                out = torch.zeros(vals.shape, dtype=vals.dtype, device=vals.device)
                if len(vedge):
                    launch = fast(_iso._kernels().vertex_vjp).bind(
                        (vals.view(-1), vedge, int(vedge.shape[0]), verts.view(-1), plan.dim, 1, plan.strides,
                         plan.spc, plan.dim, plan.level, plan.eps_rel, vmax, out.view(-1)), late=(3, 4, 5))
            ctx.direct = (vals, vedge, plan, vmax)
            ctx.prepared = (out, launch)  # used by the first backward only
            ctx.mark_non_differentiable(elems)
            return verts.to(values.dtype), elems
        fn = _marching_cubes if dim == 3 else _marching_squares
        ctx.res = fn(_host(values), level=level, spacing=spacing, origin=origin)
        ctx.direct = None
        verts, elems = ctx.res.vertices, (ctx.res.faces if dim == 3 else ctx.res.segments)
        out_e = torch.as_tensor(np.ascontiguousarray(elems), dtype=torch.int64, device=values.device)
        ctx.mark_non_differentiable(out_e)
        return _like(verts, values), out_e

    @staticmethod
    @torch.autograd.function.once_differentiable
    @_ordered
    def backward(ctx, grad_verts, _grad_elems):
        if grad_verts is None:
            return None, None, None, None, None
        if ctx.direct is None:
            g = _host(grad_verts).astype(np.float64)
            return _like(ctx.res.vjp(g), ctx.values_meta), None, None, None, None
        vals, vedge, plan, vmax = ctx.direct
        out, launch = ctx.prepared
        ctx.prepared = (None, None)  # a second backward (retain_graph) starts from fresh zeros
        if out is None:
            # a tensor of its own, not a view: autograd then keeps it as the gradient without a copy
            out = torch.zeros(vals.shape, dtype=vals.dtype, device=vals.device)
        n = int(vedge.shape[0])
        if n:
            g = _strided(grad_verts.to(dtype=vals.dtype))
            if launch is None or not launch(*g):
                fast(_iso._kernels().vertex_vjp)(vals.view(-1), vedge, n, *g, plan.strides, plan.spc, plan.dim,
                                                 plan.level, plan.eps_rel, vmax, out.view(-1))
        dtype, device = ctx.values_meta
        return (out if dtype == out.dtype else out.to(dtype)), None, None, None, None


def _spec(x, n, name):
    """A scalar or n numbers (spacing/origin) as a tuple of floats."""
    if type(x) in (float, int):  # the common case, without numpy
        return (float(x),) * n
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu").numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected a scalar or {n} values, got shape {arr.shape}")
    return tuple(float(t) for t in arr)


def marching_cubes(values: torch.Tensor, level: float = 0.0, spacing=(1, 1, 1), origin=(0, 0, 0)):
    """(vertices (V, 3), faces (F, 3) int64) of the level set of a 3D grid tensor, as
    :func:`tigeom.marching_cubes`. The vertices are differentiable with respect to ``values``
    (the exact grid vjp, topology held fixed); the faces carry no gradient."""
    values = _tensor(values, "values")
    if values.dim() != 3:
        raise ValueError(f"values: expected a 3D tensor, got shape {tuple(values.shape)}")
    return _Extract.apply(values, float(level), _spec(spacing, 3, "spacing"), _spec(origin, 3, "origin"), 3)


def marching_squares(values: torch.Tensor, level: float = 0.0, spacing=(1, 1), origin=(0, 0)):
    """(vertices (V, 2), segments (E, 2) int64) of the level set of a 2D grid tensor, as
    :func:`tigeom.marching_squares` (segments run counter-clockwise around ``values < level``)."""
    values = _tensor(values, "values")
    if values.dim() != 2:
        raise ValueError(f"values: expected a 2D tensor, got shape {tuple(values.shape)}")
    return _Extract.apply(values, float(level), _spec(spacing, 2, "spacing"), _spec(origin, 2, "origin"), 2)


def _sdf_dtype_device(sdf):
    """The dtype and device to sample ``sdf`` with: its first parameter's, else the defaults."""
    if isinstance(sdf, torch.nn.Module):
        for p in sdf.parameters():
            return p.dtype, p.device
    return torch.get_default_dtype(), torch.device("cpu")


def meshsdf(sdf, bounds, resolution: int = 64, level: float = 0.0, *, chunk: int = 1 << 18, device=None,
            dtype=None):
    """Extract the level set of a differentiable field ``sdf`` (a callable, e.g. an
    ``nn.Module``, mapping (N, d) points to (N,) values) and return vertices that carry the
    MeshSDF gradient into its parameters.

    The grid of ``resolution`` nodes per axis over ``bounds = (lower corner, upper corner)`` is
    sampled without gradient (in chunks of ``chunk`` points). The returned vertices equal the
    extracted ones; their derivative with respect to any parameter theta of ``sdf`` is
    ``dv/dtheta = -grad s (ds/dtheta) / |grad s|^2`` at each vertex (``-n ds/dtheta`` for a
    distance field), with ``grad s`` the field's own gradient there (autograd), so a loss of the
    vertices back-propagates into the field. d = 3 gives (vertices, faces), d = 2 (vertices,
    segments). The grid is sampled in ``dtype`` on ``device``: by default those of the first
    parameter of an ``nn.Module``, else the default dtype on the CPU (give them for a plain
    function whose tensors live elsewhere).
    """
    lo, hi = (np.asarray(b, dtype=np.float64) for b in bounds) if len(bounds) == 2 else (None, None)
    if lo is None or lo.shape != hi.shape or lo.ndim != 1 or lo.shape[0] not in (2, 3):
        raise ValueError(f"bounds: expected (lower corner, upper corner) of 2 or 3 values each, got {bounds!r}")
    if not np.all(hi > lo):
        raise ValueError(f"bounds: the upper corner must exceed the lower one, got {lo.tolist()} and {hi.tolist()}")
    n = int(resolution)
    if n < 2:
        raise ValueError(f"resolution: need at least 2 nodes per axis, got {resolution}")
    d = lo.shape[0]
    mdtype, mdevice = _sdf_dtype_device(sdf)
    dtype = mdtype if dtype is None else dtype
    device = mdevice if device is None else torch.device(device)
    axes = [torch.linspace(float(lo[a]), float(hi[a]), n, dtype=dtype, device=device) for a in range(d)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, d)
    with torch.no_grad():
        vals = torch.cat([sdf(grid[i:i + chunk]).reshape(-1) for i in range(0, len(grid), chunk)])
    if vals.shape[0] != len(grid):
        raise ValueError(f"sdf: expected one value per point ({len(grid)}), got {vals.shape[0]}")
    spacing = (hi - lo) / (n - 1)
    grid_vals = vals.reshape((n,) * d)
    with torch.no_grad():  # the grid in place where the kernels run
        v0, elems = (marching_cubes if d == 3 else marching_squares)(grid_vals, level, spacing, lo)
    if len(v0) == 0:
        return v0, elems
    x = v0.clone().requires_grad_(True)
    with torch.enable_grad():
        s = sdf(x).reshape(-1)
        (g,) = torch.autograd.grad(s.sum(), x, retain_graph=True, allow_unused=True)
    if g is None:  # the field does not depend on its points through autograd: the grid's normals
        fn = _marching_cubes if d == 3 else _marching_squares
        g = torch.as_tensor(fn(_host(grid_vals), level=level, spacing=spacing, origin=lo).normals, dtype=dtype,
                            device=device)
    g = g.detach()
    scale = g / (g * g).sum(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    return v0 - scale * (s - s.detach()).unsqueeze(1), elems


# --------------------------------------------------------------------------- DMesh


def _work(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A contiguous copy of ``x`` in the kernels' dtype on its own device, as a leaf whose ``.grad``
    the reverse-mode kernels write (the caller's tensor and its ``.grad`` are never touched)."""
    w = x.detach().to(dtype=dtype, copy=True).contiguous().requires_grad_(True)
    w.grad = torch.zeros_like(w)
    return w


def _grad_buffer(n: int, dtype, device) -> torch.Tensor:
    """A zeroed (max(n, 1),) leaf with a zeroed ``.grad``: a kernel output that reverse mode reads."""
    return _work(torch.zeros(max(n, 1), dtype=dtype, device=device), dtype)


def _padded3(P: torch.Tensor) -> torch.Tensor:
    return P.detach() if P.shape[1] == 3 else torch.nn.functional.pad(P.detach(), (0, 3 - P.shape[1]))


def _device_checks(name_checks) -> tuple:
    """One synchronisation for the scalar checks of a call: ``name_checks`` [(name, tensor)] of
    0-d tensors, fetched together."""
    if not name_checks:
        return ()
    return tuple(torch.stack([c.to(torch.float64) for _, c in name_checks]).tolist())


class _DeviceFaces:
    """Candidate faces given as an integer tensor on the kernels' device, checked there and handed
    to the kernels in place: the duck type of :class:`tigeom.dmesh.PreparedFaces` that the
    minball kernels and the losses read (``dev``, ``K``, ``scratch``)."""

    def __init__(self, faces: torch.Tensor, n: int, d: int):
        if faces.dim() != 2 or faces.shape[1] != d:
            raise ValueError(f"faces: expected shape (K, {d}), got {tuple(faces.shape)}")
        self.n, self.d, self.K = n, d, int(faces.shape[0])
        self.dev = faces.to(torch.int32).contiguous() if self.K else torch.zeros((1, d), dtype=torch.int32,
                                                                                  device=faces.device)
        self._rows = None
        self._scratch = {}

    def checks(self) -> list:
        if not self.K:
            return []
        srt = self.dev.sort(dim=1).values
        return [("faces_lo", srt[:, 0].min()), ("faces_hi", srt[:, -1].max()),
                ("faces_repeat", (srt[:, 1:] == srt[:, :-1]).any())]

    def raise_bad(self, lo, hi, repeat) -> None:
        if lo < 0 or hi >= self.n:
            raise ValueError(f"faces: indices must lie in [0, {self.n}), got range [{int(lo)}, {int(hi)}]")
        if repeat:
            raise ValueError("faces: a row repeats a vertex")

    @property
    def rows(self) -> np.ndarray:
        if self._rows is None:
            self._rows = _host(self.dev[:self.K]).astype(np.int64)
        return self._rows

    def scratch(self, tag, shape, dtype):
        key = (tag, tuple(shape), np.dtype(dtype))
        if key not in self._scratch:
            self._scratch[key] = torch.empty(shape, dtype=_TORCH_DTYPES[np.dtype(dtype)], device=self.dev.device)
        return self._scratch[key]

    def __len__(self):
        return self.K


def _faces_for(faces, n: int, d: int, device):
    """``faces`` for the in-place kernels: an integer tensor on ``device`` stays there (checked with
    the call's other scalars); anything else is checked on the host and uploaded once per call."""
    if isinstance(faces, torch.Tensor):
        if faces.is_floating_point() or faces.is_complex():
            raise TypeError(f"faces: expected an integer tensor, got dtype {faces.dtype}")
        if faces.device == device:
            return _DeviceFaces(faces, n, d)
        faces = _host(faces)
    return _dmesh.probabilities.prepare_faces(faces, n, d)


def _box_checks(P3: torch.Tensor) -> list:
    lo, hi = P3.amin(dim=0), P3.amax(dim=0)
    return [(f"lo{k}", lo[k]) for k in range(3)] + [(f"hi{k}", hi[k]) for k in range(3)]


def _in_place_inputs(points, reals, faces, extra=()):
    """The shared part of the in-place DMesh calls: working copies with gradients, the padded
    positions, the faces, and one synchronisation for every scalar check and the box."""
    rdt = _runtime_dtype()
    if points.dim() != 2 or points.shape[1] not in (2, 3):
        raise ValueError(f"points: expected shape (N, 2) or (N, 3), got {tuple(points.shape)}")
    n, d = points.shape
    P = _work(points, rdt)
    P3 = _padded3(P)
    f = _faces_for(faces, n, d, points.device)
    checks = [("points", P.isfinite().all())] + _box_checks(P3) + list(extra)
    if reals is not None:
        checks += [("reals_lo", reals.detach().amin()), ("reals_hi", reals.detach().amax())] if len(reals) else []
    if isinstance(f, _DeviceFaces):
        checks += f.checks()
    vals = dict(zip([c[0] for c in checks], _device_checks(checks)))
    if not vals["points"]:
        raise ValueError("points: contains NaN or infinite values")
    if isinstance(f, _DeviceFaces) and f.K:
        f.raise_bad(vals["faces_lo"], vals["faces_hi"], vals["faces_repeat"])
    if "reals_lo" in vals and (vals["reals_lo"] < 0 or vals["reals_hi"] > 1):
        raise ValueError(f"reals: must lie in [0, 1], got range [{vals['reals_lo']:.6g}, {vals['reals_hi']:.6g}]")
    box = (np.array([vals[f"lo{k}"] for k in range(3)]), np.array([vals[f"hi{k}"] for k in range(3)]))
    return P, P3, f, box, vals


def _default_sharpness(grid) -> float:
    """:func:`tigeom.dmesh.default_sharpness` from the grid already on the device (the mean
    distance to the nearest other point, computed there; one scalar comes back)."""
    n = grid.n
    dev = grid.pts.device
    kd2 = torch.zeros((n, 1), dtype=grid.pts.dtype, device=dev)
    kid = torch.empty((n, 1), dtype=torch.int32, device=dev)
    cnt = torch.zeros(n, dtype=torch.int32, device=dev)
    grid.nearest_other_into(kd2, kid, cnt)
    dist = kd2[:, 0].to(torch.float64).clamp_min(0).sqrt()
    pos = dist[(cnt > 0) & (dist > 0)]
    h = float(pos.mean()) if len(pos) else 1.0
    return _dmesh.probabilities.SHARPNESS_SCALE / h


def _face_probs_in_place(points, weights, reals, faces, method, sharpness):
    """Face probabilities with every tensor read in place on the kernels' device and the
    probabilities written into a tensor there. "wdt" copies the positions and weights to the host
    for the weighted Delaunay triangulation (its input is numpy)."""
    if method not in _dmesh.probabilities.METHODS:
        raise ValueError(f"method: expected one of {_dmesh.probabilities.METHODS}, got {method!r}")
    n = points.shape[0] if points.dim() == 2 else 0
    for name, t in (("reals", reals), ("weights", weights)):
        if t is not None and (t.dim() != 1 or len(t) != n):
            raise ValueError(f"{name}: expected {n} values (one per point), got shape {tuple(t.shape)}")
    P, P3, f, box, _ = _in_place_inputs(points, reals, faces)
    d = P.shape[1]
    if n < d + 1:
        raise ValueError(f"points: need at least {d + 1} points in {d}D, got {n}")
    if sharpness is not None:
        sharpness = as_scalar(sharpness, "sharpness")
        if not sharpness > 0:
            raise ValueError(f"sharpness: must be > 0, got {sharpness}")
    rdt = _runtime_dtype()
    R = _work(reals, rdt)
    W = _work(weights if weights is not None else torch.zeros(n, device=points.device), rdt) \
        if method == "wdt" else None
    grid = None
    if method == "minball" or sharpness is None:
        grid = PointGrid.on_device(P3, n, *box)
    alpha = _default_sharpness(grid) if sharpness is None else sharpness
    host = (_host(P).astype(np.float64), _host(W).astype(np.float64)) if method == "wdt" else None
    out = (_grad_buffer(len(f), rdt, points.device), _grad_buffer(len(f), rdt, points.device))
    return _dmesh.probabilities.evaluate(P, W, R, f, method, alpha, grid=lambda: grid, host=host, out=out)


def _wants_in_place(*tensors) -> bool:
    """Whether every given tensor lives where the kernels run (then they are read in place)."""
    return all(_on_runtime_device(t) for t in tensors if t is not None)


class _FaceProbs(torch.autograd.Function):
    @staticmethod
    @_ordered
    def forward(ctx, points, weights, reals, faces, method, sharpness):
        ctx.meta = (_meta(points), _meta(weights), _meta(reals))
        if _wants_in_place(points, weights, reals):
            res = ctx.res = _face_probs_in_place(points, weights, reals, faces, method, sharpness)
            return res.probs.detach().to(points.dtype, copy=True)
        w = None if weights is None else _host(weights)
        res = _dmesh.face_probabilities(_host(points), w, _host(reals), _index_array(faces, "faces"), method=method,
                                        sharpness=sharpness)
        ctx.res = res
        return _like(res.probs, points)

    @staticmethod
    @torch.autograd.function.once_differentiable
    @_ordered
    def backward(ctx, grad_probs):
        mp, mw, mr = ctx.meta
        res = ctx.res
        if isinstance(res.probs, torch.Tensor):  # in place: reverse mode into the working copies' .grad
            kernel, args, grads, n, d = res._replay
            nf = len(res.probs)
            for t in (*grads, args[-2], args[-1]):
                t.grad.zero_()
            if nf:
                args[-2].grad[:nf].copy_(grad_probs)
                kernel.grad(*args)
            # copies: gradcheck runs backward twice on one graph, and the next call zeroes these
            gp, gr = (t.grad.to(m[0], copy=True) for t, m in ((grads[0], mp), (grads[-1], mr)))
            if mw is None:
                return gp, None, gr, None, None, None
            gw = grads[1].grad.to(mw[0], copy=True) if len(grads) == 3 else torch.zeros(n, dtype=mw[0], device=mw[1])
            return gp, gw, gr, None, None, None
        gp, gw, gr = res.vjp(_host(grad_probs).astype(np.float64))
        return _like(gp, mp), None if mw is None else _like(gw, mw), _like(gr, mr), None, None, None


def face_probabilities(points: torch.Tensor, weights, reals: torch.Tensor, faces, method: str = "minball",
                       sharpness=None) -> torch.Tensor:
    """(K,) existence probability of each candidate face, as
    :func:`tigeom.dmesh.face_probabilities`, differentiable with respect to ``points``,
    ``weights`` (may be None: zeros; ignored by "minball") and ``reals``. ``faces`` is an integer
    tensor or an array (K, d). A default ``sharpness`` is computed once per call and not
    differentiated. Tensors on the kernels' device are read there and the probabilities written
    there (for "wdt", positions and weights also go to the host for the triangulation)."""
    points = _tensor(points, "points")
    reals = _tensor(reals, "reals")
    if weights is not None:
        weights = _tensor(weights, "weights")
    _same_device("face_probabilities", (points, weights, reals))
    if isinstance(faces, torch.Tensor) and (faces.is_floating_point() or faces.is_complex()):
        raise TypeError(f"faces: expected an integer tensor, got dtype {faces.dtype}")
    return _FaceProbs.apply(points, weights, reals, faces, method, sharpness)


_TARGETS: dict = {}


def _targets_for(targets):
    """``targets`` as :class:`tigeom.dmesh.Targets`; a tensor is prepared once and reused while it
    is unchanged (same storage, shape and version), as an optimisation loop passes it again."""
    if not isinstance(targets, torch.Tensor):
        return targets
    key = (targets._version, runtime.generation())
    last = _TARGETS.get("last")  # holds the tensor itself, so its storage cannot be reused meanwhile
    if last is None or last[0] is not targets or last[1] != key:
        last = _TARGETS["last"] = (targets, key, _dmesh.Targets(_host(targets)))
    return last[2]


def _chamfer_in_place(points, probs, faces, targets, kwargs):
    """The expected Chamfer kernels on tensors read in place; returns the Loss parts and the
    working copies. Only the likely faces' count and the call's scalar checks come to the host."""
    unknown = set(kwargs) - {"min_prob", "miss", "reach", "tolerance"}
    if unknown:
        raise TypeError(f"expected_chamfer: unexpected keyword {sorted(unknown)[0]!r}")
    min_prob = _dmesh.losses.check_min_prob(kwargs.get("min_prob", 1e-3))
    extra = [("probs_lo", probs.detach().amin()), ("probs_hi", probs.detach().amax())] if len(probs) else []
    P, P3, f, box, vals = _in_place_inputs(points, None, faces, extra)
    d = P.shape[1]
    tg = _dmesh.losses.as_targets(_targets_for(targets), d)
    if len(f) == 0:
        raise ValueError("faces: the mesh has no faces, the Chamfer distance to it is undefined")
    if probs.dim() != 1 or len(probs) != len(f):
        raise ValueError(f"probs: expected {len(f)} values (one per face), got shape {tuple(probs.shape)}")
    if vals["probs_lo"] < 0 or vals["probs_hi"] > 1:
        raise ValueError(f"probs: must lie in [0, 1], got range [{vals['probs_lo']:.6g}, {vals['probs_hi']:.6g}]")
    rdt = _runtime_dtype()
    PR = _work(torch.cat([probs.detach(), probs.new_zeros(1)]), rdt)
    keep = (PR[:len(f)].detach() >= min_prob).nonzero().flatten().to(torch.int32)

    def slots(*cols):
        return _work(torch.zeros((_dmesh.losses.ACC_SLOTS, *cols), dtype=rdt, device=points.device), rdt)

    acc1, acc2, kernels = _dmesh.losses.chamfer_kernels(
        P, P3, box, f.dev, PR, keep, len(keep), tg, reach=kwargs.get("reach"), tolerance=kwargs.get("tolerance"),
        miss=kwargs.get("miss"), slots=slots)
    value = acc1[:, 0].to(torch.float64).sum() / tg.measure + acc2.to(torch.float64).sum() / len(tg.points)
    return value, kernels, P, PR


class _Chamfer(torch.autograd.Function):
    @staticmethod
    @_ordered
    def forward(ctx, points, probs, faces, targets, kwargs):
        ctx.meta = (_meta(points), _meta(probs))
        if _wants_in_place(points, probs):
            value, ctx.kernels, ctx.P, ctx.PR = _chamfer_in_place(points, probs, faces, targets, kwargs)
            ctx.loss = None
            return value.to(points.dtype)
        loss = _dmesh.expected_chamfer(_host(points), _index_array(faces, "faces"), _host(probs),
                                       _host(targets) if isinstance(targets, torch.Tensor) else targets, **kwargs)
        ctx.loss = loss
        return torch.as_tensor(loss.value, dtype=points.dtype, device=points.device)

    @staticmethod
    @torch.autograd.function.once_differentiable
    @_ordered
    def backward(ctx, grad):
        mp, mprob = ctx.meta
        if ctx.loss is None:  # in place: reverse mode on the device, the incoming scalar never leaves it
            P, PR = ctx.P, ctx.PR
            P.grad.zero_()
            PR.grad.zero_()
            g = grad.detach().to(P.dtype)
            for kernel, args, acc, acc_grad in ctx.kernels:
                row = torch.as_tensor(acc_grad, dtype=P.dtype, device=P.device)
                acc.grad.copy_((g * row).expand_as(acc))
                kernel.grad(*args)
            return P.grad.to(mp[0], copy=True), PR.grad[:-1].to(mprob[0], copy=True), None, None, None
        gp, gprob, _ = ctx.loss.vjp(float(grad))
        return _like(gp, mp), _like(gprob, mprob), None, None, None


def expected_chamfer(points: torch.Tensor, faces, probs: torch.Tensor, targets, **kwargs) -> torch.Tensor:
    """DMesh's expected Chamfer distance (a 0-d tensor) between the probabilistic mesh
    (``points``, ``faces``, ``probs``) and the ``targets`` point cloud, as
    :func:`tigeom.dmesh.expected_chamfer` (same keywords); differentiable with respect to
    ``points`` and ``probs``. ``targets``: a tensor or an array (T, d), or a
    :class:`tigeom.dmesh.Targets` prepared once (a tensor is prepared on its first call and reused
    while unchanged). Tensors on the kernels' device are read in place."""
    points = _tensor(points, "points")
    probs = _tensor(probs, "probs")
    _same_device("expected_chamfer", (points, probs))
    if isinstance(faces, torch.Tensor) and (faces.is_floating_point() or faces.is_complex()):
        raise TypeError(f"faces: expected an integer tensor, got dtype {faces.dtype}")
    return _Chamfer.apply(points, probs, faces, targets, kwargs)


# --------------------------------------------------------------------------- rendering


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vertices, opacity, faces, cams):
        op = None if opacity is None else _host(opacity).astype(np.float64)
        ctx.img = _render.rasterize(_host(vertices).astype(np.float64), faces, cams, op)
        ctx.meta = (_meta(vertices), _meta(opacity))
        return tuple(_like(a, vertices) for a in (ctx.img.alpha, ctx.img.depth, ctx.img.normal))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_alpha, g_depth, g_normal):
        gv, gop = ctx.img.vjp(*(None if g is None else _host(g).astype(np.float64) for g in (g_alpha, g_depth, g_normal)))
        mv, mo = ctx.meta
        return _like(gv, mv), (None if mo is None else _like(gop, mo)), None, None


def rasterize(vertices: torch.Tensor, faces, cams, opacity: torch.Tensor | None = None):
    """(alpha (C, H, W), depth (C, H, W), normal (C, H, W, 3)) of :func:`tigeom.render.rasterize`
    as tensors on the vertices' device and dtype, differentiable with respect to ``vertices``
    (V, 3) and ``opacity`` (F,) (DMesh's face probabilities, e.g. from
    :func:`face_probabilities`; None: opaque) through :meth:`tigeom.render.Image.vjp`, silhouette
    edges included. ``depth`` is inf where ``alpha`` is 0 and passes no gradient there: mask it
    (``torch.where(torch.isfinite(d), d, 0)``) before it enters a loss. ``faces`` (F, 3): a
    tensor or an array; ``cams``: :class:`tigeom.render.Cameras`. Through host arrays."""
    vertices = _tensor(vertices, "vertices")
    if vertices.dim() != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices: expected shape (V, 3), got {tuple(vertices.shape)}")
    if opacity is not None:
        opacity = _tensor(opacity, "opacity")
        _same_device("rasterize", (vertices, opacity))
    return _Rasterize.apply(vertices, opacity, _index_array(faces, "faces"), cams)


# --------------------------------------------------------------------------- tet quality

_TET_KEYS = ("volume", "min_dihedral", "max_dihedral", "radius_ratio", "mean_ratio", "amips", "min_sine", "dihedrals")


def _work_device() -> torch.device:
    """Where the kernels read tensors in place: cuda:0 on a CUDA runtime, else the CPU."""
    return torch.device("cuda", 0) if runtime.on_gpu() else torch.device("cpu")


def _checked_mesh(vertices: torch.Tensor, tets) -> tuple:
    """(vertices (N, 3) float64, tets (M, 4) int32) contiguous on the kernels' device, checked
    there with one synchronisation; on a failure the numpy API's checks raise its error."""
    dev = _work_device()
    v = vertices.detach().to(device=dev, dtype=torch.float64).contiguous()
    t = (tets.detach() if isinstance(tets, torch.Tensor) else torch.as_tensor(np.asarray(tets)))
    if t.is_floating_point() or t.is_complex() or t.dim() != 2 or t.shape[1] != 4:
        _validate_mesh(_host(v), _host(t), reorient=False)  # raises the numpy API's error
    t = t.to(device=dev)
    if len(t):
        s = t.sort(dim=1).values
        bad = torch.stack([~torch.isfinite(v).all(), (t.min() < 0) | (t.max() >= len(v)),
                           (s[:, 1:] == s[:, :-1]).any()])
    else:
        bad = ~torch.isfinite(v).all().reshape(1)
    if bool(bad.any()):
        _validate_mesh(_host(v), _host(t), reorient=False)
        raise ValueError("vertices, tets: rejected by the checks")  # not reached: the line above raises
    return v, t.to(torch.int32).contiguous()


class _TetQuality(torch.autograd.Function):
    @staticmethod
    @_ordered
    def forward(ctx, vertices, tets):
        ctx.set_materialize_grads(False)  # outputs without a gradient pass None, not zeros, and cost nothing
        v, t = _checked_mesh(vertices, tets)
        m = len(t)
        out = torch.empty((m, 5), dtype=torch.float64, device=v.device)
        dih = torch.empty((m, 6), dtype=torch.float64, device=v.device)
        if m:
            _measures_into(v, t, out, dih)
        q = {"volume": out[:, 0], "min_dihedral": dih.min(1).values if m else out[:, 0],
             "max_dihedral": dih.max(1).values if m else out[:, 0], "radius_ratio": out[:, 1],
             "mean_ratio": out[:, 2], "amips": out[:, 3], "min_sine": out[:, 4], "dihedrals": dih}
        ctx.saved = (v, t, q)
        ctx.meta = _meta(vertices)
        return tuple(q[k].to(dtype=vertices.dtype, device=vertices.device) for k in _TET_KEYS)

    @staticmethod
    @torch.autograd.function.once_differentiable
    @_ordered
    def backward(ctx, *grads):
        v, t, q = ctx.saved
        if all(g is None for g in grads):
            return None, None
        w = {k: g.to(device=v.device, dtype=torch.float64) for k, g in zip(_TET_KEYS, grads) if g is not None}
        if "amips" in w:  # amips is +inf (constant) where the mean ratio is not positive: no weight there
            w["amips"] = torch.where(torch.isfinite(q["amips"]), w["amips"], 0.0)
        g3, gd = _fold_weights(q, w, len(t), torch,
                               lambda shape: torch.zeros(shape, dtype=torch.float64, device=v.device))
        out = torch.zeros((len(v), 3), dtype=torch.float64, device=v.device)
        if len(t):
            _measures_vjp_into(v, t, g3.contiguous(), gd.contiguous(), out)
        return out.to(dtype=ctx.meta[0], device=ctx.meta[1]), None


def tet_quality(vertices: torch.Tensor, tets) -> dict:
    """The per-tet quality measures of :func:`tigeom.tet_quality` as a dict of tensors on the
    vertices' device and dtype (keys ``volume``, ``min_dihedral``, ``max_dihedral``,
    ``radius_ratio``, ``mean_ratio``, ``amips``, ``min_sine``: (M,); ``dihedrals``: (M, 6),
    degrees), each differentiable with respect to ``vertices`` (N, 3) by the kernel of
    :meth:`tigeom.tetmesh.TetQuality.vjp`. ``tets``: (M, 4) indices, a tensor or an array.
    Computed in f64 in tensors on the kernels' device (tensors elsewhere are copied there and
    the results back); the mesh is checked there, with one synchronisation."""
    vertices = _tensor(vertices, "vertices")
    if vertices.dim() != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices: expected shape (N, 3), got {tuple(vertices.shape)}")
    if isinstance(tets, torch.Tensor) and (tets.is_floating_point() or tets.is_complex()):
        raise TypeError(f"tets: expected an integer tensor, got dtype {tets.dtype}")
    runtime.ensure_init()
    outs = _TetQuality.apply(vertices, tets)
    return dict(zip(_TET_KEYS, outs))


# --------------------------------------------------------------------------- flow


class _FlowForce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vertices, flow, elements, warm_start):
        res = flow.solve(_host(vertices).astype(np.float64), elements, warm_start=warm_start)
        ctx.res = res
        ctx.meta = _meta(vertices)
        return _like(res.force, vertices)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_force):
        g = ctx.res.vjp(_host(grad_force).astype(np.float64))
        return _like(g, ctx.meta), None, None, None


class _Compliance(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vertices, fem, load, tol, max_iter):
        c = fem.moved(_host(vertices).astype(np.float64)).compliance(load, tol=tol, max_iter=max_iter)
        if not c.solve.converged:
            raise ValueError(f"compliance: the static solve did not reach tol={tol} in {c.solve.iterations} "
                             "iterations")
        ctx.grad = c.gradient
        ctx.meta = _meta(vertices)
        return torch.tensor(c.value, dtype=vertices.dtype, device=vertices.device)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return _like(ctx.grad, ctx.meta) * grad, None, None, None, None


def compliance(fem, vertices: torch.Tensor, load=None, *, tol: float = 1e-10, max_iter: int = 20000) -> torch.Tensor:
    """The compliance f . u (a 0-d tensor) of ``fem``, a :class:`tigeom.sim.TetElasticity`, with
    its tets on the positions ``vertices`` (N, 3), differentiable with respect to them
    (``TetElasticity.compliance``: the clamped vertices and a given ``load`` held fixed, the
    default gravity load moving with the volumes). Through host arrays; ValueError when the
    static solve does not reach ``tol`` in ``max_iter`` iterations."""
    vertices = _tensor(vertices, "vertices")
    if not (hasattr(fem, "moved") and hasattr(fem, "compliance")):
        raise TypeError(f"fem: expected a tigeom.sim.TetElasticity, got {type(fem).__name__}")
    if load is not None:
        load = _host(load) if isinstance(load, torch.Tensor) else np.asarray(load, np.float64)
    return _Compliance.apply(vertices, fem, load, float(tol), int(max_iter))


def flow_force(flow, vertices: torch.Tensor, elements, *, warm_start: bool = True) -> torch.Tensor:
    """The force on the body (a tensor of 2 or 3 components) from ``flow.solve(vertices,
    elements)``, with ``flow`` a :class:`tigeom.sim.Flow2D` (elements: segments) or
    :class:`tigeom.sim.Flow3D` (faces); differentiable with respect to ``vertices`` through the
    discrete adjoint (``res.vjp``). The flow object's own tolerances apply. ``warm_start``
    (default) starts from the flow's previous solution, as shape optimisation wants."""
    vertices = _tensor(vertices, "vertices")
    if not hasattr(flow, "solve") or getattr(flow, "DIM", None) not in (2, 3):
        raise TypeError(f"flow: expected a tigeom.sim.Flow2D or Flow3D, got {type(flow).__name__}")
    if vertices.dim() != 2 or vertices.shape[1] != flow.DIM:
        raise ValueError(f"vertices: expected shape (V, {flow.DIM}) for a {type(flow).__name__}, "
                         f"got {tuple(vertices.shape)}")
    return _FlowForce.apply(vertices, flow, _index_array(elements, "elements"), bool(warm_start))
