"""PyTorch autograd functions over tigeom's kernels (extra ``tigeom[torch]``).

Every function takes tensors (or, where noted, arrays), returns tensors on the input's device
and in its floating dtype, and differentiates through the same exact vector-Jacobian products as
the numpy API (``Surface.vjp``, ``FaceProbabilities.vjp``, ``FlowResult.vjp``, ...). Gradients
are checked with ``torch.autograd.gradcheck`` in float64 (with ``tigeom.init(precision="f64")``;
in f32 the kernels compute in f32 whatever the tensor's dtype).

Data path: ``marching_cubes`` and ``marching_squares`` read a grid tensor in place when it lives
where the kernels run (a CUDA tensor on a CUDA runtime, a CPU tensor on a CPU runtime), write
the vertices and elements into tensors there and their vjp too; only the output size crosses
to the host. The other functions go through host arrays (see docs/torch.md).

    import tigeom.torch as tt
    verts, faces = tt.marching_cubes(values, level=0.0, spacing=(1, 1, 1), origin=(0, 0, 0))
    verts, segs = tt.marching_squares(values)
    verts, faces = tt.meshsdf(sdf, bounds=((x0, y0, z0), (x1, y1, z1)), resolution=64)
    probs = tt.face_probabilities(points, weights, reals, faces, method="minball")
    loss = tt.expected_chamfer(points, faces, probs, targets)
    force = tt.flow_force(flow, vertices, elements)
"""

from __future__ import annotations

import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - the extra is installed for the tests
    raise ImportError("tigeom.torch needs PyTorch: pip install 'tigeom[torch]'") from exc

from . import dmesh as _dmesh
from . import runtime
from .isosurface import extract as _iso
from .isosurface import marching_cubes as _marching_cubes
from .isosurface import marching_squares as _marching_squares

__all__ = ["marching_cubes", "marching_squares", "meshsdf", "face_probabilities", "expected_chamfer", "flow_force"]


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
    """Whether the kernels can read ``t`` in place: a CUDA tensor on a CUDA runtime, a CPU tensor
    on a CPU runtime."""
    return (t.device.type == "cuda") == runtime.on_gpu() and t.device.type in ("cpu", "cuda")


def _runtime_dtype() -> torch.dtype:
    return torch.float64 if runtime.real_dtype() == np.float64 else torch.float32


_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
                 np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64}


def _extract_in_place(vals: torch.Tensor, level: float, spacing, origin, dim: int):
    """(vertices in the runtime's dtype, vedge int64, elements int64) as tensors on ``vals``'s
    device: the kernels read ``vals`` and write their outputs in tensors of the exact size, so
    only the output size crosses to the host (and, where grid values equal the level exactly,
    the snapped vertices are welded through the host, as the numpy API does)."""
    shape = tuple(vals.shape)
    sweep, S = _iso.default_layout(shape)

    def alloc(name, shp, dtype):
        return torch.empty(shp, dtype=_TORCH_DTYPES[np.dtype(dtype)], device=vals.device)

    res = _iso._marcher(dim).run(vals, shape, level, origin, spacing, sweep, S, alloc=alloc)
    if res["V"] == 0:
        return (torch.zeros((0, dim), dtype=vals.dtype, device=vals.device),
                torch.zeros(0, dtype=torch.int64, device=vals.device),
                torch.zeros((0, dim), dtype=torch.int64, device=vals.device))
    verts, vedge, elems = res["verts"], res["vedge"], res["elems"].long()
    if res["at_level"] and int(_iso._device.fetch(res["flags"])[1]) > 0:  # vertices on grid nodes: weld
        v, ve, el = _iso._weld(_host(verts), _host(vedge), _host(res["vsnap"]), _host(elems))
        verts, vedge, elems = (torch.as_tensor(np.ascontiguousarray(a), device=vals.device) for a in (v, ve, el))
    return verts, vedge, elems


_SMALL: dict = {}


def _small_tensor(arr: np.ndarray, device) -> torch.Tensor:
    """A tiny constant array (strides, spacing) as a tensor on ``device``, uploaded once: an
    upload from pageable host memory waits for the device, so repeating it every call would
    serialise the host and the GPU."""
    key = (str(device), arr.dtype.str, arr.shape, arr.tobytes())
    t = _SMALL.get(key)
    if t is None:
        if len(_SMALL) > 64:
            _SMALL.clear()
        t = _SMALL[key] = torch.as_tensor(np.ascontiguousarray(arr), device=device)
    return t


class _Extract(torch.autograd.Function):
    """Extraction straight from the tensor's memory when it lives where the kernels run (values
    converted to the runtime's dtype on the device when they differ), outputs and vjp in tensors
    there. Elsewhere through host arrays."""

    @staticmethod
    def forward(ctx, values, level, spacing, origin, dim):
        ctx.values_meta = _meta(values)
        if _on_runtime_device(values):
            name = "marching_cubes" if dim == 3 else "marching_squares"
            level, spacing, origin = _iso.check_grid_args(tuple(values.shape), level, spacing, origin, dim, name)
            vals = values.detach().to(_runtime_dtype()).contiguous()
            verts, vedge, elems = _extract_in_place(vals, level, spacing, origin, dim)
            ctx.direct = (vals, vedge, spacing, level)
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
    def backward(ctx, grad_verts, _grad_elems):
        if ctx.direct is None:
            g = _host(grad_verts).astype(np.float64)
            return _like(ctx.res.vjp(g), ctx.values_meta), None, None, None, None
        vals, vedge, spacing, level = ctx.direct
        out = torch.zeros(vals.numel(), dtype=vals.dtype, device=vals.device)
        if len(vedge):
            g = grad_verts.detach().to(device=vals.device, dtype=vals.dtype).contiguous()
            vmax = vals.abs().amax().reshape(1)  # stays on the device
            _iso.grid_vjp(vals.reshape(-1), tuple(vals.shape), vmax, vedge, g, spacing, level, out,
                          small=lambda a: _small_tensor(a, vals.device))
        dtype, device = ctx.values_meta
        return out.reshape(vals.shape).to(dtype=dtype, device=device), None, None, None, None


def _spec(x, n, name):
    """A scalar or n numbers (spacing/origin) as a tuple of floats."""
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


class _FaceProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, points, weights, reals, faces, method, sharpness):
        w = None if weights is None else _host(weights)
        res = _dmesh.face_probabilities(_host(points), w, _host(reals), faces, method=method, sharpness=sharpness)
        ctx.res = res
        ctx.meta = (_meta(points), _meta(weights), _meta(reals))
        return _like(res.probs, points)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_probs):
        gp, gw, gr = ctx.res.vjp(_host(grad_probs).astype(np.float64))
        mp, mw, mr = ctx.meta
        return _like(gp, mp), None if mw is None else _like(gw, mw), _like(gr, mr), None, None, None


def face_probabilities(points: torch.Tensor, weights, reals: torch.Tensor, faces, method: str = "minball",
                       sharpness=None) -> torch.Tensor:
    """(K,) existence probability of each candidate face, as
    :func:`tigeom.dmesh.face_probabilities`, differentiable with respect to ``points``,
    ``weights`` (may be None: zeros; ignored by "minball") and ``reals``. ``faces`` is a tensor
    or an array (K, d). A default ``sharpness`` is computed once per call and not differentiated."""
    points = _tensor(points, "points")
    reals = _tensor(reals, "reals")
    if weights is not None:
        weights = _tensor(weights, "weights")
    _same_device("face_probabilities", (points, weights, reals))
    return _FaceProbs.apply(points, weights, reals, _index_array(faces, "faces"), method, sharpness)


class _Chamfer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, points, probs, faces, targets, kwargs):
        loss = _dmesh.expected_chamfer(_host(points), faces, _host(probs), targets, **kwargs)
        ctx.loss = loss
        ctx.meta = (_meta(points), _meta(probs))
        return torch.as_tensor(loss.value, dtype=points.dtype, device=points.device)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        gp, gprob, _ = ctx.loss.vjp(float(grad))
        mp, mprob = ctx.meta
        return _like(gp, mp), _like(gprob, mprob), None, None, None


def expected_chamfer(points: torch.Tensor, faces, probs: torch.Tensor, targets, **kwargs) -> torch.Tensor:
    """DMesh's expected Chamfer distance (a 0-d tensor) between the probabilistic mesh
    (``points``, ``faces``, ``probs``) and the ``targets`` point cloud, as
    :func:`tigeom.dmesh.expected_chamfer` (same keywords); differentiable with respect to
    ``points`` and ``probs``."""
    points = _tensor(points, "points")
    probs = _tensor(probs, "probs")
    _same_device("expected_chamfer", (points, probs))
    if isinstance(targets, torch.Tensor):
        targets = _host(targets)
    return _Chamfer.apply(points, probs, _index_array(faces, "faces"), targets, kwargs)


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
