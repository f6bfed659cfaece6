"""Marching squares / cubes with exact grid vjp and the MeshSDF normal adjoint (public API).

Implements Lorensen & Cline's marching cubes with a watertight, derived case table (see
:mod:`tigeom.isosurface.tables`) and the adjoint of Remelli et al., "MeshSDF: Differentiable
Iso-Surface Extraction" (NeurIPS 2020). The hot loops are Taichi kernels
(:mod:`tigeom.isosurface._kernels`): count per run of nodes, exclusive scan, emit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .. import runtime
from .._core import device as _device
from .._core.launch import fast
from .._core.validate import as_array, as_scalar, as_vector
from . import tables

logger = logging.getLogger(__name__)

_MAX_NODES = 2**31 - 1


def _kernels():
    from . import _kernels as K  # imported lazily: defining kernels imports taichi

    return K


class _Marcher:
    """Count → scan → emit for one dimension, with tables and scratch buffers kept per runtime."""

    def __init__(self, dim: int):
        self.dim = dim
        tab = tables.packed(dim)
        self.count = _device.upload(tab["count"])
        self.elems = _device.upload(tab["elems"])
        self.stride = int(tab["stride"])
        self.edge_corner = _device.upload(tab["edge_corner"])
        self.edge_axis = _device.upload(tab["edge_axis"])
        self._scratch: dict = {}
        self._consts: dict = {}
        self._outs: dict = {}

    def _buffers(self, shape: tuple, sweep: int, S: int):
        key = (shape, sweep, S)
        if key not in self._scratch:
            from .._core.scan import ExclusiveScan

            self._scratch.clear()  # keep one grid's scratch at a time
            nch = -(-shape[sweep] // S)
            R = nch * int(np.prod(shape)) // shape[sweep]
            self._scratch[key] = dict(
                R=R,
                cnt=_device.empty((2 * R,), np.int32), base=_device.empty((2 * R + 1,), np.int32),
                node_vid=_device.empty((int(np.prod(shape)),), np.int32),
                flags=_device.empty((3,), np.int32), totals=_device.empty((4,), np.int32),
                scan=ExclusiveScan(2 * R))
        return self._scratch[key]

    def run(self, vals, shape: tuple, level: float, origin: np.ndarray, spacing: np.ndarray,
            sweep: int, S: int, alloc=None):
        """Extract from a kernel array ``vals``; returns kernel arrays and counts: V vertices, T
        elements and ``at_level``, the number of nodes whose value is exactly the level (only
        then can vertices land on nodes and need welding). ``alloc(name, shape, dtype)`` makes
        the output arrays (default: this marcher's buffers; the torch interface passes tensors
        of the exact size, so the outputs never leave the device).

        Raises ValueError when ``vals`` holds NaN or infinite values (checked by the count pass).
        """
        K = _kernels()
        rdt = runtime.real_dtype()
        b = self._buffers(shape, sweep, S)
        count, emit, R = (K.count3, K.emit3, b["R"]) if self.dim == 3 else (K.count2, K.emit2, b["R"])
        count, emit = fast(count), fast(emit)
        count(vals, level, sweep, S, self.count, b["cnt"], b["flags"])  # zeroes flags first
        # one scan over [vertex counts | element counts]: base[R] = V, base[2R] = V + T
        totals = b["totals"] if alloc is None else alloc("totals", (4,), np.int32)
        alloc = alloc or self._out
        if b["scan"].one_launch:
            fast(K.scan_totals)(b["cnt"], b["base"], *b["scan"].scratch(), R, b["flags"], totals, b["scan"].serial(2 * R))
        else:
            b["scan"].run(b["cnt"], b["base"], 2 * R)
            K.gather_totals(b["base"], R, b["flags"], totals)
        V, VT, nbad, at_level = (int(x) for x in _device.fetch(totals))  # the only host sync
        if nbad:
            raise ValueError(f"values: contains {nbad} NaN or infinite value(s)"
                             + (" (or values beyond the float32 range: use precision='f64')"
                                if rdt == np.float32 else ""))
        T = VT - V
        out = dict(V=V, T=T, at_level=at_level)
        if V == 0:
            return out
        org = self._small(origin.astype(rdt), "org")
        spc = self._small(spacing.astype(rdt), "spc")
        verts = alloc("verts", (V, self.dim), rdt)
        vedge = alloc("vedge", (V,), np.int64)
        vsnap = alloc("vsnap", (V,), np.int32)
        elems = alloc("elems", (T, self.dim), np.int32)
        emit(vals, level, sweep, S, b["base"], org, spc, verts, vedge, vsnap, b["node_vid"], b["flags"],
             self.count, self.elems, self.stride, self.edge_corner, self.edge_axis, elems)
        out.update(verts=verts, vedge=vedge, vsnap=vsnap, elems=elems, flags=b["flags"])
        return out

    def _small(self, arr: np.ndarray, name: str):
        """Upload a tiny constant array, reusing the last upload when it is unchanged."""
        key = (name, arr.dtype.str, arr.tobytes())
        if self._consts.get(name, (None,))[0] != key:
            self._consts[name] = (key, _device.upload(arr))
        return self._consts[name][1]

    def _out(self, name: str, shape: tuple, dtype):
        """Output buffer: exact-size numpy on the CPU; on a GPU a grow-only device buffer (the
        caller reads the first ``shape[0]`` rows)."""
        if not runtime.on_gpu():
            return np.empty(shape, dtype)
        buf = self._outs.get(name)
        if buf is None or buf.shape[0] < shape[0] or buf.dtype != _device.ti_dtype(dtype):
            cap = (max(int(shape[0] * 1.25), 1024),) + tuple(shape[1:])
            buf = _device.empty(cap, dtype)
            self._outs[name] = buf
        return buf


def _marcher(dim: int) -> _Marcher:
    return runtime.cached(("marcher", dim), lambda: _Marcher(dim))


def default_layout(shape: tuple) -> tuple[int, int]:
    """(sweep axis, nodes per thread): whole rows along the contiguous axis on a CPU; short runs
    along the first axis on a GPU, so that adjacent threads read adjacent memory."""
    if runtime.on_gpu():
        return 0, int(min(shape[0], 16))
    return len(shape) - 1, int(shape[-1])


def _weld(verts, vedge, vsnap, elems):
    """Merge vertices that sit on the same grid node (level equal to a grid value).

    Elements that become degenerate are dropped, coincident opposite pairs (zero-thickness
    sheets) cancel, repeated equal elements are kept once, and unreferenced vertices are removed.
    The merged vertex keeps the first edge's parametrisation for the adjoints.
    """
    snapped = vsnap >= 0
    key = np.where(snapped, -1 - vsnap.astype(np.int64), np.arange(len(vsnap), dtype=np.int64))
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    elems = first[inverse][elems]  # representative old index per element corner
    d = elems.shape[1]
    ok = np.ones(len(elems), bool)
    for a in range(d):
        for b_ in range(a + 1, d):
            ok &= elems[:, a] != elems[:, b_]
    elems = elems[ok]
    if len(elems):
        srt = np.sort(elems, axis=1)
        _, grp, cnt = np.unique(srt, axis=0, return_inverse=True, return_counts=True)
        grp = grp.ravel()
        if (cnt > 1).any():
            # orientation parity: canonical rotation of each element, compared to the sorted one
            rot = np.argmin(elems, axis=1)
            canon = np.stack([elems[np.arange(len(elems)), (rot + s) % d] for s in range(d)], axis=1)
            sign = np.where((canon == srt).all(axis=1), 1, -1)
            net = np.zeros(cnt.shape, np.int64)
            np.add.at(net, grp, sign)
            keep = np.zeros(len(elems), bool)
            seen = np.zeros(cnt.shape, bool)
            for idx in range(len(elems)):
                g = grp[idx]
                if cnt[g] == 1:
                    keep[idx] = True
                elif not seen[g] and net[g] != 0 and np.sign(net[g]) == sign[idx]:
                    keep[idx] = True
                    seen[g] = True
            elems = elems[keep]
    used = np.unique(elems)
    remap = np.full(len(verts), -1, np.int64)
    remap[used] = np.arange(len(used))
    return verts[used], vedge[used], remap[elems]


def check_grid_args(shape: tuple, level, spacing, origin, dim: int, name: str):
    """Validate a grid's shape and the level, spacing and origin of an extraction; returns
    (level rounded to the runtime's real dtype, spacing, origin) and initialises the runtime."""
    if len(shape) != dim:
        raise ValueError(f"values: {name} needs a {dim}-dimensional grid, got shape {tuple(shape)}")
    if min(shape) < 2:
        raise ValueError(f"values: every axis needs at least 2 samples, got shape {tuple(shape)}")
    size = int(np.prod(shape))
    if size > _MAX_NODES:
        raise ValueError(f"values: {size} nodes exceed the supported {_MAX_NODES}")
    level = as_scalar(level, "level")
    spacing = as_vector(spacing, "spacing", dim, positive=True)
    origin = as_vector(origin, "origin", dim)
    runtime.ensure_init()
    return float(runtime.real_dtype().type(level)), spacing, origin


def _prepare(values, level, spacing, origin, dim: int, name: str):
    """Validate cheaply: finiteness is checked by the count kernel, which reads every value."""
    vals = as_array(values, "values", dtype=None, finite=False)
    level, spacing, origin = check_grid_args(vals.shape, level, spacing, origin, dim, name)
    with np.errstate(over="ignore"):
        vals = np.ascontiguousarray(vals, dtype=runtime.real_dtype())
    return vals, level, spacing, origin


def _check_layout(layout, shape) -> tuple[int, int]:
    if layout is None:
        return default_layout(shape)
    try:
        sweep, S = (int(x) for x in layout)
    except (TypeError, ValueError):
        raise ValueError(f"layout: expected (sweep_axis, run_length), got {layout!r}") from None
    if not 0 <= sweep < len(shape) or S < 1:
        raise ValueError(f"layout: sweep axis must be in [0, {len(shape)}) and run length >= 1, got {layout!r}")
    return sweep, S


def extract_kernel_array(vals, shape: tuple, level: float, spacing: np.ndarray, origin: np.ndarray, dim: int,
                         layout=None):
    """(vertices (V, d) float64, vedge (V,) int64, elements (E, d) int64) of the level set of a
    grid held in a kernel-ready array ``vals`` of ``shape`` in the runtime's real dtype: a numpy
    array, a Taichi ndarray, or a torch tensor on the runtime's device (read in place, no copy).
    The arguments are taken as validated; NaN or infinite values raise ValueError."""
    sweep, S = _check_layout(layout, shape)
    res = _marcher(dim).run(vals, shape, level, origin, spacing, sweep, S)
    if res["V"] == 0:
        return np.zeros((0, dim)), np.zeros(0, np.int64), np.zeros((0, dim), np.int64)
    verts = _device.fetch(res["verts"], res["V"]).astype(np.float64)
    vedge = _device.fetch(res["vedge"], res["V"]).astype(np.int64)
    elems = _device.fetch(res["elems"], res["T"]).astype(np.int64)
    if res["at_level"] and int(_device.fetch(res["flags"])[1]) > 0:  # vertices landed on grid nodes: weld
        vsnap = _device.fetch(res["vsnap"], res["V"])
        verts, vedge, elems = _weld(verts, vedge, vsnap, elems)
    return verts, vedge, elems


def grid_vjp(vflat, shape: tuple, vmax, vedge, grad_vertices, spacing: np.ndarray, level: float, out,
             small=None, n: int | None = None) -> None:
    """Add ``d(sum(grad_vertices * vertices)) / d values`` into ``out``: the flat grid values
    ``vflat`` and ``out`` in the runtime's real dtype and ``vedge`` (V,) int64 are kernel-ready
    arrays (numpy, Taichi ndarrays or torch tensors on the runtime's device), ``grad_vertices``
    (V, d) a numpy array or a contiguous tensor there; ``vmax`` is max |values| (it scales the
    clamp of tiny edge differences), a float or a one-element kernel array. ``small`` turns the
    small constant arrays into kernel arrays (default: Taichi ndarrays). ``n``: the first n
    vertices (default: all of ``vedge``)."""
    n = int(vedge.shape[0]) if n is None else int(n)
    if n == 0:
        return
    small = small or _device.upload
    dim = len(shape)
    rdt = runtime.real_dtype()
    eps_rel = 1e-12 if rdt == np.float64 else 1e-6
    strides = np.array([int(np.prod(shape[d + 1:])) for d in range(dim)], np.int32)
    if isinstance(vmax, (float, int, np.floating)):
        vmax = small(np.array([vmax], rdt))
    if isinstance(vedge, np.ndarray):
        vedge = _device.upload(np.ascontiguousarray(vedge, np.int64))
    if isinstance(grad_vertices, np.ndarray):
        grad_vertices = _device.upload(np.ascontiguousarray(grad_vertices, rdt).ravel())
    else:  # a contiguous tensor (V, d)
        grad_vertices = grad_vertices.reshape(-1)
    fast(_kernels().vertex_vjp)(vflat, vedge, n, grad_vertices, dim, 1, small(strides),
                                small(np.asarray(spacing).astype(rdt)), dim, level, eps_rel, vmax, out)


def _extract(values, level, spacing, origin, dim: int, name: str, layout):
    vals, level, spacing, origin = _prepare(values, level, spacing, origin, dim, name)
    verts, vedge, elems = extract_kernel_array(_device.upload(vals), vals.shape, level, spacing, origin, dim, layout)
    return vals, level, spacing, origin, verts, vedge, elems


@dataclass(frozen=True, eq=False)
class _IsoResult:
    """Shared adjoint machinery of :class:`Surface` and :class:`Curve`."""

    vertices: np.ndarray
    level: float
    spacing: np.ndarray
    origin: np.ndarray
    _values: np.ndarray = field(repr=False)
    _vedge: np.ndarray = field(repr=False)

    @property
    def dim(self) -> int:
        return self.vertices.shape[1]

    def _check_grad(self, grad_vertices) -> np.ndarray:
        g = as_array(grad_vertices, "grad_vertices")
        if g.shape != self.vertices.shape:
            raise ValueError(f"grad_vertices: expected shape {self.vertices.shape}, got {g.shape}")
        return g

    def _strides(self) -> np.ndarray:
        shape = self._values.shape
        return np.array([int(np.prod(shape[d + 1:])) for d in range(len(shape))], np.int32)

    def vjp(self, grad_vertices) -> np.ndarray:
        """Exact ``d(sum(grad_vertices * vertices)) / d values`` with the topology held fixed.

        grad_vertices : (V, d). Returns an array shaped like ``values`` (float64). Each vertex
        depends on the two values of its grid edge; where they differ by less than a tiny
        epsilon (1e-12 in f64, 1e-6 in f32, relative to their magnitude) the denominator is
        clamped so the result stays finite.
        """
        g = self._check_grad(grad_vertices)
        runtime.ensure_init()
        out = _device.upload(np.zeros(self._values.size, dtype=self._values.dtype))
        vmax = float(np.abs(self._values).max()) if len(self.vertices) else 0.0
        grid_vjp(_device.upload(self._values.ravel()), self._values.shape, vmax, self._vedge, g, self.spacing,
                 self.level, out)
        return _device.fetch(out).reshape(self._values.shape).astype(np.float64)

    @cached_property
    def normals(self) -> np.ndarray:
        """(V, d) unit field gradient at each vertex (central differences on the grid, linearly
        interpolated along the vertex's edge). Points toward ``values > level``."""
        if len(self.vertices) == 0:
            return np.zeros((0, self.dim))
        K = _kernels()
        runtime.ensure_init()
        out = _device.empty((len(self.vertices), self.dim), self._values.dtype)
        K.vertex_normals(_device.upload(self._values.ravel()), _device.upload(self._vedge),
                         _device.upload(np.array(self._values.shape, np.int32)), _device.upload(self._strides()),
                         _device.upload(self.spacing.astype(self._values.dtype)), self.dim, self.level, out)
        return _device.fetch(out).astype(np.float64)

    def normal_adjoint(self, grad_vertices) -> np.ndarray:
        """MeshSDF adjoint: ``dL/ds_v = -n_v . dL/dv_v`` for each vertex, shape (V,).

        Chain it to any field s(x; theta): dL/dtheta = sum_v dL/ds_v * ds(v; theta)/dtheta.
        """
        g = self._check_grad(grad_vertices)
        return -np.einsum("ij,ij->i", self.normals, g)


@dataclass(frozen=True, eq=False)
class Surface(_IsoResult):
    """Triangle mesh of a 3D level set: ``vertices`` (V, 3) float64, ``faces`` (F, 3) int64."""

    faces: np.ndarray = field(default=None)

    @cached_property
    def area(self) -> float:
        v = self.vertices[self.faces]
        return float(0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1).sum())

    @cached_property
    def volume(self) -> float:
        """Signed volume enclosed (divergence theorem); positive for a closed surface around
        ``values < level``. Meaningful only for closed surfaces."""
        v = self.vertices[self.faces]
        return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0)

    def to_trimesh(self):
        import trimesh

        return trimesh.Trimesh(self.vertices, self.faces, process=False)


@dataclass(frozen=True, eq=False)
class Curve(_IsoResult):
    """Polyline(s) of a 2D level set: ``vertices`` (V, 2) float64, ``segments`` (E, 2) int64."""

    segments: np.ndarray = field(default=None)

    @cached_property
    def length(self) -> float:
        v = self.vertices[self.segments]
        return float(np.linalg.norm(v[:, 1] - v[:, 0], axis=1).sum())

    @cached_property
    def area(self) -> float:
        """Signed area enclosed (shoelace); positive around ``values < level``."""
        v = self.vertices[self.segments]
        return float(0.5 * (v[:, 0, 0] * v[:, 1, 1] - v[:, 1, 0] * v[:, 0, 1]).sum())


def marching_cubes(values, level: float = 0.0, spacing=(1, 1, 1), origin=(0, 0, 0), *,
                   layout: tuple[int, int] | None = None) -> Surface:
    """Triangle mesh of the level set ``values == level`` of a 3D grid.

    Parameters
    ----------
    values : (nx, ny, nz) array-like, finite. Node (i, j, k) sits at ``origin + (i, j, k) * spacing``.
    level : iso-value.
    spacing, origin : scalars or 3 values.
    layout : (sweep axis, nodes per thread), a tuning knob. Default: the last axis in whole rows on
        a CPU, the first axis in runs of 16 on a GPU. The geometry does not depend on it; the
        order of vertices and faces does.

    Returns
    -------
    Surface with ``vertices`` (V, 3) float64, ``faces`` (F, 3) int64. Each vertex lies on one grid
    edge and is shared by every face that uses it, so a closed level set is a watertight
    2-manifold. Face normals point toward ``values > level`` (outward for an SDF negative inside).
    Nodes exactly at ``level`` count as outside; vertices that land on them are welded.

    Raises
    ------
    ValueError : values not 3D, an axis shorter than 2, NaN/inf, non-positive spacing.
    """
    vals, level, spacing, origin, verts, vedge, elems = _extract(values, level, spacing, origin, 3,
                                                                 "marching_cubes", layout)
    return Surface(vertices=verts, level=level, spacing=spacing, origin=origin, _values=vals, _vedge=vedge,
                   faces=elems)


def marching_squares(values, level: float = 0.0, spacing=(1, 1), origin=(0, 0), *,
                     layout: tuple[int, int] | None = None) -> Curve:
    """Polylines of the level set ``values == level`` of a 2D grid.

    Same conventions as :func:`marching_cubes`; ``segments`` (E, 2) int64 run counter-clockwise
    around the regions where ``values < level``.
    """
    vals, level, spacing, origin, verts, vedge, elems = _extract(values, level, spacing, origin, 2,
                                                                 "marching_squares", layout)
    return Curve(vertices=verts, level=level, spacing=spacing, origin=origin, _values=vals, _vedge=vedge,
                 segments=elems)
