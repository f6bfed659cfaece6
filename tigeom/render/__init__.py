"""Differentiable rasterisation of triangle meshes with per-face opacity (DMesh's face
probabilities), on a CPU or a CUDA GPU.

Cameras follow the OpenCV convention: x right, y down, z forward; pixel (u, v) covers
[u, u + 1) x [v, v + 1), u along the width. ``rasterize`` gives per view the coverage ``alpha``,
the expected camera-space depth and the expected world-space normal, composited front to back
with the faces' opacities, and ``vjp`` gives their gradient with respect to the vertices and the
opacities, silhouette and occlusion edges included (analytic antialiasing, see
``docs/render.md``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import runtime
from .._core import device as _device
from .._core.validate import as_array

__all__ = ["Cameras", "orbit_cameras", "look_at", "rasterize", "Image"]

ZNEAR = 1e-6  # faces with a vertex at camera depth <= ZNEAR are not drawn (counted in stats)


def _k():
    from . import _kernels as K

    return K


@dataclass(frozen=True)
class Cameras:
    """C pinhole cameras: intrinsics ``K`` (C, 3, 3) with last row (0, 0, 1) and no y skew,
    world-to-camera ``view`` (C, 4, 4) rigid transforms, ``resolution`` (H, W)."""

    K: np.ndarray
    view: np.ndarray
    resolution: tuple

    def __post_init__(self):
        K = as_array(self.K, "K")
        view = as_array(self.view, "view")
        if K.ndim == 2:
            K = K[None]
        if view.ndim == 2:
            view = view[None]
        if K.ndim != 3 or K.shape[1:] != (3, 3):
            raise ValueError(f"K: expected shape (C, 3, 3), got {K.shape}")
        if view.shape != (len(K), 4, 4):
            raise ValueError(f"view: expected shape ({len(K)}, 4, 4) to match K, got {view.shape}")
        if not (np.allclose(K[:, 2], [0.0, 0.0, 1.0]) and np.allclose(K[:, 1, 0], 0.0)):
            raise ValueError("K: expected rows (fx, s, cx), (0, fy, cy), (0, 0, 1)")
        if not (np.allclose(view[:, 3], [0.0, 0.0, 0.0, 1.0])
                and np.allclose(view[:, :3, :3] @ view[:, :3, :3].transpose(0, 2, 1), np.eye(3), atol=1e-6)):
            raise ValueError("view: expected rigid world-to-camera transforms (rotation, translation; last row 0 0 0 1)")
        res = tuple(int(r) for r in np.asarray(self.resolution).ravel())
        if len(res) != 2 or min(res) < 1:
            raise ValueError(f"resolution: expected (H, W) with positive sizes, got {self.resolution}")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "view", view)
        object.__setattr__(self, "resolution", res)

    def __len__(self):
        return len(self.K)

    @property
    def centers(self) -> np.ndarray:
        """(C, 3) camera positions in the world."""
        R, t = self.view[:, :3, :3], self.view[:, :3, 3]
        return -np.einsum("cji,cj->ci", R, t)

    def project(self, points) -> np.ndarray:
        """(C, P, 3): pixel coordinates (u, v) and camera depth of world points."""
        p = as_array(points, "points", ndim=2)
        Xc = np.einsum("cij,pj->cpi", self.view[:, :3, :3], p) + self.view[:, None, :3, 3]
        uv = np.einsum("cij,cpj->cpi", self.K, Xc)
        return np.concatenate([uv[..., :2] / uv[..., 2:], Xc[..., 2:]], axis=-1)

    def __getitem__(self, idx):
        idx = np.atleast_1d(np.arange(len(self))[idx])
        return Cameras(self.K[idx], self.view[idx], self.resolution)


def _vec3(x, name):
    a = as_array(x, name, ndim=1)
    if a.shape != (3,):
        raise ValueError(f"{name}: expected 3 values, got shape {a.shape}")
    return a.copy()


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """The world-to-camera transform (4, 4) of a camera at ``eye`` looking at ``target`` with
    ``up`` pointing up in the image (OpenCV axes: x right, y down, z forward)."""
    eye, target, up = (_vec3(a, n) for a, n in ((eye, "eye"), (target, "target"), (up, "up")))
    f = target - eye
    if np.linalg.norm(f) == 0:
        raise ValueError("eye: equals target")
    f /= np.linalg.norm(f)
    r = np.cross(f, up)
    if np.linalg.norm(r) < 1e-12:
        raise ValueError("up: parallel to the viewing direction")
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    M = np.eye(4)
    M[:3, :3] = np.stack([r, d, f])
    M[:3, 3] = -M[:3, :3] @ eye
    return M


def orbit_cameras(n_azimuth: int = 8, n_elevation: int = 8, radius: float = 3.0, fov_degrees: float = 40.0,
                  resolution=(256, 256), target=(0.0, 0.0, 0.0)) -> Cameras:
    """n_azimuth x n_elevation cameras on a sphere around ``target``: azimuths k 360/n_azimuth
    counter-clockwise about +z from +x, elevations evenly over [-60, 60] degrees (0 for one),
    world up +z, vertical field of view ``fov_degrees``, principal point at the image centre."""
    if int(n_azimuth) < 1 or int(n_elevation) < 1:
        raise ValueError(f"n_azimuth, n_elevation: expected at least 1, got {n_azimuth}, {n_elevation}")
    if not 0 < fov_degrees < 180:
        raise ValueError(f"fov_degrees: expected in (0, 180), got {fov_degrees}")
    if not radius > 0:
        raise ValueError(f"radius: expected > 0, got {radius}")
    H, W = (int(r) for r in resolution)
    target = _vec3(target, "target")
    az = np.arange(int(n_azimuth)) * 2 * np.pi / int(n_azimuth)
    el = np.radians(np.linspace(-60, 60, int(n_elevation))) if int(n_elevation) > 1 else np.zeros(1)
    fy = 0.5 * H / np.tan(np.radians(fov_degrees) / 2)
    Km = np.array([[fy, 0.0, W / 2], [0.0, fy, H / 2], [0.0, 0.0, 1.0]])
    views = [look_at(target + radius * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)]), target)
             for e in el for a in az]
    return Cameras(np.repeat(Km[None], len(views), 0), np.stack(views), (H, W))


@dataclass
class Image:
    """Per-view renders: ``alpha`` (C, H, W), ``depth`` (C, H, W), ``normal`` (C, H, W, 3);
    ``stats``: pixels where more than ``LAYERS`` faces covered the centre (the farthest dropped)
    and (view, face) pairs not drawn because a vertex lay at or behind the near plane."""

    alpha: np.ndarray
    depth: np.ndarray
    normal: np.ndarray
    stats: dict
    _ctx: dict = field(repr=False)

    def vjp(self, grad_alpha=None, grad_depth=None, grad_normal=None):
        """(grad_vertices (V, 3), grad_opacity (F,)) of sum(grad_alpha * alpha) + sum(grad_depth *
        depth) + sum(grad_normal * normal). ``grad_depth`` is ignored where ``depth`` is inf."""
        return _vjp(self, grad_alpha, grad_depth, grad_normal)


def _inputs(vertices, faces, cams, opacity):
    if not isinstance(cams, Cameras):
        raise TypeError(f"cams: expected tigeom.render.Cameras, got {type(cams).__name__}")
    v = as_array(vertices, "vertices", ndim=2)
    if v.shape[1] != 3:
        raise ValueError(f"vertices: expected shape (V, 3), got {v.shape}")
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces: expected an integer array of shape (F, 3), got {f.dtype} {f.shape}")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces: indices out of range [0, {len(v)})")
    if opacity is None:
        op = np.ones(len(f))
    else:
        op = as_array(opacity, "opacity", ndim=1)
        if op.shape != (len(f),):
            raise ValueError(f"opacity: expected shape ({len(f)},), got {op.shape}")
        if op.min(initial=0.0) < 0 or op.max(initial=0.0) > 1:
            raise ValueError("opacity: expected values in [0, 1]")
    return v, f.astype(np.int32), op


def rasterize(vertices, faces, cams: Cameras, opacity=None) -> Image:
    """Render the mesh (``faces`` two-sided) from every camera of ``cams``; see :class:`Image`."""
    v, f, op = _inputs(vertices, faces, cams, opacity)
    K = _k()
    rd = runtime.real_dtype()
    C, (H, W) = len(cams), cams.resolution
    up = _device.upload
    ctx = dict(v=up(v.astype(rd)), f=up(f), op=up(op.astype(rd)), Km=up(cams.K.astype(rd)),
               view=up(cams.view.astype(rd)), camc=up(cams.centers.astype(rd)), shape=(C, H, W), nv=len(v),
               nf=len(f))
    ctx["twin"] = up(_twins_cached(f, len(v)))
    ctx["scr"] = _device.empty((C, len(v), 3), rd)
    if len(v):
        K.project(ctx["v"], ctx["Km"], ctx["view"], ctx["scr"])
    stats = _device.zeros((2,), np.int32)
    ctx["tstart"], ctx["lst"] = _bin(ctx, C, H, W, stats)
    pre = _device.zeros((C, H, W, K.NCH), rd)
    front = _device.empty((C, H, W), np.int32)
    fz = _device.empty((C, H, W), rd)
    if len(f):
        K.composite(ctx["v"], ctx["f"], ctx["op"], ctx["scr"], ctx["camc"], ctx["tstart"], ctx["lst"], ZNEAR, pre,
                    front, fz, stats)
    else:
        front.fill(-1)
    post = _device.empty((C, H, W, K.NCH), rd)
    _copy(pre, post)
    K.antialias(ctx["scr"], ctx["f"], ctx["twin"], front, fz, pre, post)
    alpha, depth = _device.empty((C, H, W), rd), _device.empty((C, H, W), rd)
    normal = _device.empty((C, H, W, 3), rd)
    K.finish(post, alpha, depth, normal)
    ctx.update(pre=pre, post=post, front=front, fz=fz)
    s = _device.fetch(stats)
    st = {"pixels_over_layers": int(s[0]), "faces_behind_near_plane": int(s[1]), "layers": K.LAYERS}
    if st["pixels_over_layers"]:
        warnings.warn(f"rasterize: {st['pixels_over_layers']} pixel(s) had more than {K.LAYERS} faces over their "
                      "centre; the farthest were not composited", RuntimeWarning, stacklevel=2)
    return Image(_device.fetch(alpha).astype(float), _device.fetch(depth).astype(float),
                 _device.fetch(normal).astype(float), st, ctx)


_TWINS: dict = {}


def _twins_cached(f: np.ndarray, nv: int) -> np.ndarray:
    """``_twins``, reused while the same faces come back (an optimisation renders one candidate
    set many times between refreshes)."""
    import hashlib

    key = (nv, f.shape, hashlib.blake2b(f.tobytes(), digest_size=16).digest())
    if key not in _TWINS:
        _TWINS.clear()
        _TWINS[key] = _twins(f, nv)
    return _TWINS[key]


def _twins(f: np.ndarray, nv: int) -> np.ndarray:
    """(F, 3): the face across edge j (vertices j + 1, j + 2) of each face; -1 on a boundary
    edge, -2 on an edge of more than two faces."""
    out = np.full((len(f), 3), -1, np.int32)
    if not len(f):
        return out
    a = np.concatenate([f[:, 1], f[:, 2], f[:, 0]]).astype(np.int64)
    b = np.concatenate([f[:, 2], f[:, 0], f[:, 1]]).astype(np.int64)
    key = np.minimum(a, b) * nv + np.maximum(a, b)
    slot = np.arange(3 * len(f))  # slot s: face s % F, edge s // F
    order = np.argsort(key, kind="stable")
    ks = key[order]
    start = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    size = np.diff(np.r_[start, len(ks)])
    for n in np.unique(size):
        if n == 1:
            continue
        grp = start[size == n]
        s0 = slot[order[grp]]
        if n == 2:
            s1 = slot[order[grp + 1]]
            out[s0 % len(f), s0 // len(f)] = s1 % len(f)
            out[s1 % len(f), s1 // len(f)] = s0 % len(f)
        else:
            for k in range(n):
                sk = slot[order[grp + k]]
                out[sk % len(f), sk // len(f)] = -2
    return out


def _copy(src, dst):
    if isinstance(dst, np.ndarray):
        np.copyto(dst, src)
    else:
        dst.copy_from(src)


def _bin(ctx, C, H, W, stats):
    """Per (view, 16 x 16 tile): the start of its faces in one list (count, scan, fill)."""
    K = _k()
    ntile = C * -(-H // K.TILE) * -(-W // K.TILE)
    cnt = _device.zeros((ntile,), np.int32)
    dummy = _device.zeros((1,), np.int32)
    if ctx["nf"]:
        K.bin_faces(ctx["scr"], ctx["f"], H, W, ZNEAR, cnt, dummy, dummy, 0, stats)
    counts = _device.fetch(cnt)
    start = np.zeros(ntile + 1, np.int32)
    np.cumsum(counts, out=start[1:])
    lst = _device.empty((max(int(start[-1]), 1),), np.int32)
    if start[-1]:
        cur = _device.upload(start[:-1].copy())
        K.bin_faces(ctx["scr"], ctx["f"], H, W, ZNEAR, cnt, cur, lst, 1, stats)
    return _device.upload(start), lst


def _vjp(img: Image, grad_alpha, grad_depth, grad_normal):
    ctx = img._ctx
    K = _k()
    rd = runtime.real_dtype()
    C, H, W = ctx["shape"]

    def grad(g, shape, name):
        if g is None:
            return np.zeros(shape, rd)
        g = as_array(g, name)
        if g.shape != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {g.shape}")
        return g.astype(rd)

    ga = grad(grad_alpha, (C, H, W), "grad_alpha")
    gd = grad(grad_depth, (C, H, W), "grad_depth")
    gd = np.where(np.isfinite(img.depth), gd, 0.0).astype(rd)
    gn = grad(grad_normal, (C, H, W, 3), "grad_normal")
    G = _device.empty((C, H, W, K.NCH), rd)
    K.finish_vjp(ctx["post"], _device.upload(ga), _device.upload(gd), _device.upload(gn), G)
    Gpre = _device.empty((C, H, W, K.NCH), rd)
    _copy(G, Gpre)
    gscr = _device.zeros((C, ctx["nv"], 3), rd)
    gv = _device.zeros((ctx["nv"], 3), rd)
    gop = _device.zeros((ctx["nf"],), rd)
    if ctx["nf"] and ctx["nv"]:
        K.antialias_vjp(ctx["scr"], ctx["f"], ctx["twin"], ctx["front"], ctx["fz"], ctx["pre"], G, Gpre, gscr)
        K.composite_vjp(ctx["v"], ctx["f"], ctx["op"], ctx["scr"], ctx["camc"], ctx["tstart"], ctx["lst"], ZNEAR,
                        Gpre, gop, gscr, gv)
        K.project_vjp(ctx["v"], ctx["Km"], ctx["view"], gscr, gv)
    return _device.fetch(gv).astype(float), _device.fetch(gop).astype(float)
