import numpy as np
import pytest

import tigeom
from helpers import ARCH, grid
from mesh_checks import (assert_closed_curves, assert_closed_oriented_manifold, assert_edge_manifold, euler,
                         face_areas)


def sphere(n, r=0.6):
    h, (X, Y, Z) = grid(n)
    return h, np.sqrt(X**2 + Y**2 + Z**2) - r


def torus(n, R=0.55, r=0.22):
    h, (X, Y, Z) = grid(n)
    return h, np.sqrt((np.sqrt(X**2 + Y**2) - R) ** 2 + Z**2) - r


GPU_LAYOUT3 = (0, 16)  # what a CUDA device runs by default; exercised here on the CPU


@pytest.mark.parametrize("layout", [None, GPU_LAYOUT3, (1, 5)])
def test_sphere_watertight_outward(layout):
    h, f = sphere(33)
    s = tigeom.marching_cubes(f, spacing=h, origin=-1, layout=layout)
    assert s.vertices.dtype == np.float64 and s.faces.dtype == np.int64
    assert_closed_oriented_manifold(s.faces)
    assert euler(s.vertices, s.faces) == 2
    assert s.volume > 0  # normals point outward (toward values > level)
    assert face_areas(s.vertices, s.faces).min() > 0
    # vertices lie on the level set up to the interpolation error
    assert np.abs(np.linalg.norm(s.vertices, axis=1) - 0.6).max() < 0.1 * h


def test_layouts_give_the_same_geometry():
    h, f = torus(30)
    ref = tigeom.marching_cubes(f, spacing=h)
    for layout in [GPU_LAYOUT3, (0, 7), (1, 30), (2, 3)]:
        s = tigeom.marching_cubes(f, spacing=h, layout=layout)
        a = np.sort(np.round(ref.vertices[ref.faces], 12).reshape(len(ref.faces), -1), axis=0)
        b = np.sort(np.round(s.vertices[s.faces], 12).reshape(len(s.faces), -1), axis=0)
        # same set of triangles up to a cyclic rotation of their corners: compare sorted corner sets
        ka = np.sort(np.round(ref.vertices[ref.faces], 12).reshape(-1, 3, 3), axis=1).reshape(len(ref.faces), -1)
        kb = np.sort(np.round(s.vertices[s.faces], 12).reshape(-1, 3, 3), axis=1).reshape(len(s.faces), -1)
        assert len(a) == len(b)
        np.testing.assert_array_equal(np.unique(ka, axis=0), np.unique(kb, axis=0))


@pytest.mark.parametrize("d", [2, 3])
def test_blocked_scan_kernel_gives_the_serial_scans_output(monkeypatch, d):
    """On a CPU the counts are scanned in one thread; a GPU runs the blocked passes in the same
    kernel. Forcing those here gives the same vertices, elements and vjp."""
    from tigeom._core import scan

    h, f = torus(30)
    if d == 2:
        f = f[:, :, 15]
    fn = tigeom.marching_cubes if d == 3 else tigeom.marching_squares
    ref = fn(f, spacing=h)
    monkeypatch.setattr(scan, "SERIAL_ON_CPU", 0)
    s = fn(f, spacing=h)
    np.testing.assert_array_equal(ref.vertices, s.vertices)
    np.testing.assert_array_equal(ref.faces if d == 3 else ref.segments, s.faces if d == 3 else s.segments)
    g = np.cos(np.arange(ref.vertices.size)).reshape(ref.vertices.shape)
    np.testing.assert_array_equal(ref.vjp(g), s.vjp(g))


def test_sphere_area_volume_converge_quadratically():
    errs = []
    for n in (21, 41, 81):
        h, f = sphere(n)
        s = tigeom.marching_cubes(f, spacing=h, origin=-1)
        errs.append((abs(s.area - 4 * np.pi * 0.36), abs(s.volume - 4 / 3 * np.pi * 0.216)))
    errs = np.array(errs)
    rates = np.log2(errs[:-1] / errs[1:])
    assert (rates > 1.6).all(), rates  # O(h^2): halving h divides the error by about 4
    assert errs[-1, 0] / (4 * np.pi * 0.36) < 2e-3


def test_ellipsoid_area_within_one_percent():
    a, b, c = 0.8, 0.5, 0.3
    h, (X, Y, Z) = grid(81)
    # a level set of the implicit ellipsoid function (not a distance, as in practice)
    f = (X / a) ** 2 + (Y / b) ** 2 + (Z / c) ** 2 - 1
    s = tigeom.marching_cubes(f, spacing=h, origin=-1)
    p = 1.6075  # Knud Thomsen's formula: relative error below 1.1e-2 %
    area = 4 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)
    assert abs(s.area - area) / area < 0.01
    assert abs(s.volume - 4 / 3 * np.pi * a * b * c) / (4 / 3 * np.pi * a * b * c) < 0.01
    assert_closed_oriented_manifold(s.faces)


def test_euler_characteristics():
    h, f = torus(48)
    s = tigeom.marching_cubes(f, spacing=h, origin=-1)
    assert_closed_oriented_manifold(s.faces)
    assert euler(s.vertices, s.faces) == 0
    h, (X, Y, Z) = grid(40)
    blobs = np.minimum(np.sqrt((X - 0.45) ** 2 + Y**2 + Z**2), np.sqrt((X + 0.45) ** 2 + Y**2 + Z**2)) - 0.3
    s = tigeom.marching_cubes(blobs, spacing=h, origin=-1)
    assert_closed_oriented_manifold(s.faces)
    assert euler(s.vertices, s.faces) == 4


def test_matches_scikit_image_area_and_volume():
    measure = pytest.importorskip("skimage.measure")
    h, f = torus(40)
    s = tigeom.marching_cubes(f, spacing=h, origin=-1)
    v, faces, _, _ = measure.marching_cubes(f, 0.0, spacing=(h, h, h))
    area_ref = measure.mesh_surface_area(v, faces)
    assert abs(s.area - area_ref) / area_ref < 1e-3
    vol_ref = abs(np.einsum("ij,ij->i", v[faces[:, 0]], np.cross(v[faces[:, 1]], v[faces[:, 2]])).sum() / 6)
    assert abs(s.volume - vol_ref) / vol_ref < 1e-3


@pytest.mark.parametrize("seed", range(4))
def test_random_fields_ambiguous_cases_stay_watertight(seed):
    """Noise hits every ambiguous face and interior configuration; a border of outside values
    closes the level set, which must then be a closed, consistently oriented manifold."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((14, 15, 16))
    f[[0, -1], :, :] = f[:, [0, -1], :] = f[:, :, [0, -1]] = 1.0
    for layout in (None, GPU_LAYOUT3):
        s = tigeom.marching_cubes(f, layout=layout)
        assert_closed_oriented_manifold(s.faces)
        assert (face_areas(s.vertices, s.faces) > 0).all()
        assert s.volume > 0


def test_level_equal_to_grid_values_has_no_holes_or_degenerate_faces():
    """Quantised fields put many nodes exactly on the level (where skimage used to leave holes)."""
    h, (X, Y, Z) = grid(25)
    f = np.round((np.sqrt(X**2 + Y**2 + Z**2) - 0.55) * 8) / 8  # many nodes exactly 0
    assert (f == 0).sum() > 100
    s = tigeom.marching_cubes(f, spacing=h, origin=-1)
    assert_closed_oriented_manifold(s.faces)
    assert face_areas(s.vertices, s.faces).min() > 1e-12
    assert len(np.unique(np.sort(s.faces, axis=1), axis=0)) == len(s.faces)
    assert len(np.unique(s.vertices, axis=0)) == len(s.vertices)  # no duplicated positions
    assert euler(s.vertices, s.faces) == 2
    # planes through grid nodes: the level set is a plane, exactly on the nodes of one layer
    f = np.add.outer(np.add.outer(np.arange(8.0), np.arange(9.0)), np.arange(10.0)) - 9.0
    s = tigeom.marching_cubes(f)
    assert_edge_manifold(s.faces)
    np.testing.assert_allclose(s.vertices.sum(axis=1), 9.0, atol=1e-12)
    assert face_areas(s.vertices, s.faces).min() > 1e-12


def test_isolated_node_on_level_gives_no_faces():
    f = np.ones((5, 5, 5))
    f[2, 2, 2] = 0.0  # touches the level at a single point: no surface
    s = tigeom.marching_cubes(f, level=0.0)
    assert len(s.faces) == 0 and len(s.vertices) == 0


def test_surface_touching_grid_boundary_is_edge_manifold():
    h, f = sphere(24, r=1.1)  # the sphere leaves the grid: an open surface with 8 pieces
    s = tigeom.marching_cubes(f, spacing=h, origin=-1)
    assert len(s.faces) > 0
    assert_edge_manifold(s.faces)
    # boundary edges of the open surface lie on the grid's faces
    de = np.sort(np.concatenate([s.faces[:, [0, 1]], s.faces[:, [1, 2]], s.faces[:, [2, 0]]]), axis=1)
    u, cnt = np.unique(de, axis=0, return_counts=True)
    border = s.vertices[u[cnt == 1].ravel()]
    assert np.isclose(np.abs(border), 1.0).any(axis=1).all()


def test_no_crossing_gives_empty_arrays():
    s = tigeom.marching_cubes(np.ones((4, 5, 6)))
    assert s.vertices.shape == (0, 3) and s.faces.shape == (0, 3)
    assert s.vjp(np.zeros((0, 3))).shape == (4, 5, 6)
    assert s.normal_adjoint(np.zeros((0, 3))).shape == (0,)
    c = tigeom.marching_squares(-np.ones((4, 5)))
    assert c.vertices.shape == (0, 2) and c.segments.shape == (0, 2)


def test_f32_and_f64_give_the_same_topology():
    h, f = torus(30)
    s64 = tigeom.marching_cubes(f, spacing=h)
    tigeom.init(arch=ARCH, precision="f32")
    try:
        s32 = tigeom.marching_cubes(f, spacing=h)
        assert s32.faces.shape == s64.faces.shape
        np.testing.assert_allclose(s32.vertices, s64.vertices, atol=1e-5)
    finally:
        tigeom.init(arch=ARCH, precision="f64")


# ------------------------------------------------------------------------------------------ 2D

@pytest.mark.parametrize("layout", [None, (0, 16), (0, 3)])
def test_circle_closed_ccw(layout):
    h, (X, Y) = grid(65, dim=2)
    f = np.sqrt(X**2 + Y**2) - 0.6
    c = tigeom.marching_squares(f, spacing=h, origin=-1, layout=layout)
    assert_closed_curves(c.segments)
    assert c.area > 0  # counter-clockwise around values < level
    assert abs(c.area - np.pi * 0.36) / (np.pi * 0.36) < 2e-3
    assert abs(c.length - 2 * np.pi * 0.6) / (2 * np.pi * 0.6) < 2e-3


def test_curve_convergence_and_holes():
    errs = []
    for n in (33, 65, 129):
        h, (X, Y) = grid(n, dim=2)
        ring = np.abs(np.sqrt(X**2 + Y**2) - 0.5) - 0.2  # annulus: outer CCW, inner CW
        c = tigeom.marching_squares(ring, spacing=h, origin=-1)
        assert_closed_curves(c.segments)
        assert abs(c.area - np.pi * (0.7**2 - 0.3**2)) < 0.1 * h**2
        errs.append(abs(c.length - 2 * np.pi * (0.7 + 0.3)))
    assert np.log2(errs[0] / errs[1]) > 1.8 and np.log2(errs[1] / errs[2]) > 1.8


@pytest.mark.parametrize("seed", range(3))
def test_random_2d_fields_closed(seed):
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((30, 31))
    f[[0, -1], :] = f[:, [0, -1]] = 1.0
    for layout in (None, (0, 16)):
        c = tigeom.marching_squares(f, layout=layout)
        assert_closed_curves(c.segments)
        assert c.area > 0


def test_2d_level_on_nodes():
    h, (X, Y) = grid(21, dim=2)
    f = np.round((np.sqrt(X**2 + Y**2) - 0.5) * 6) / 6
    assert (f == 0).sum() > 10
    c = tigeom.marching_squares(f, spacing=h, origin=-1)
    assert_closed_curves(c.segments)
    seg_len = np.linalg.norm(np.diff(c.vertices[c.segments], axis=1)[:, 0], axis=1)
    assert seg_len.min() > 1e-12


# ----------------------------------------------------------------------------------- gradients

def _fd_check(extract, f, seed, n_near=10, n_far=6, eps=1e-6):
    """The vjp against central differences at random grid nodes: nodes at an end of a vertex's
    grid edge (near the surface) and nodes with no vertex on any of their edges (away from it),
    chosen without looking at the gradient, so a gradient that is wrongly zero near the surface
    or wrongly nonzero away from it fails. Every node away from the surface must get exactly 0."""
    rng = np.random.default_rng(seed)
    s = extract(f)
    g = rng.standard_normal(s.vertices.shape)
    grad = s.vjp(g)
    # vertex v lies on the grid edge from flat node vedge // dim along axis vedge % dim
    dim = f.ndim
    strides = np.array([int(np.prod(f.shape[k + 1:])) for k in range(dim)])
    node, axis = s._vedge // dim, s._vedge % dim
    near = np.unique(np.concatenate([node, node + strides[axis]]))
    far = np.setdiff1d(np.arange(f.size), near)
    assert len(near) >= n_near and len(far) >= n_far
    assert np.all(grad.ravel()[far] == 0.0)
    probes = np.concatenate([rng.choice(near, n_near, replace=False), rng.choice(far, n_far, replace=False)])
    elems = lambda r: r.faces if hasattr(r, "faces") else r.segments  # noqa: E731
    for idx in probes:
        fp = f.copy().ravel()
        fm = f.copy().ravel()
        fp[idx] += eps
        fm[idx] -= eps
        sp, sm = extract(fp.reshape(f.shape)), extract(fm.reshape(f.shape))
        assert elems(sp).shape == elems(s).shape == elems(sm).shape  # same topology
        fd = ((sp.vertices - sm.vertices) * g).sum() / (2 * eps)
        assert abs(fd - grad.ravel()[idx]) <= 1e-6 * max(1.0, abs(fd)), (idx, fd, grad.ravel()[idx])


def test_fd_check_catches_a_gradient_that_is_wrongly_zero(monkeypatch):
    """The check above can fail: a vjp that drops one node's contribution is caught."""
    h, f = sphere(10)
    orig = tigeom.isosurface.Surface.vjp

    def broken(self, grad_vertices):
        out = orig(self, grad_vertices).ravel()
        node = self._vedge // 3
        out[node] = 0.0  # lose the first endpoint of every vertex edge
        return out.reshape(self._values.shape)

    monkeypatch.setattr(tigeom.isosurface.Surface, "vjp", broken)
    with pytest.raises(AssertionError):
        _fd_check(lambda v: tigeom.marching_cubes(v, spacing=h, origin=-1), f, 0)


def test_vjp_matches_central_differences_3d():
    h, f = torus(16)
    _fd_check(lambda v: tigeom.marching_cubes(v, spacing=h, origin=-1), f, 0)


def test_vjp_matches_central_differences_3d_gpu_layout():
    h, f = sphere(14)
    _fd_check(lambda v: tigeom.marching_cubes(v, spacing=(h, 2 * h, h), layout=GPU_LAYOUT3), f, 1)


def test_vjp_matches_central_differences_2d():
    h, (X, Y) = grid(24, dim=2)
    f = np.sqrt((X - 0.1) ** 2 + 2 * Y**2) - 0.5
    _fd_check(lambda v: tigeom.marching_squares(v, spacing=(h, 0.5 * h), origin=(1, 2)), f, 2)


def test_vjp_is_finite_when_edge_values_nearly_equal():
    f = np.ones((3, 3, 3))
    f[1, 1, 1] = -1e-300
    f[1, 1, 2] = 1e-300
    s = tigeom.marching_cubes(f)
    g = s.vjp(np.ones_like(s.vertices))
    assert np.isfinite(g).all()


def _area_grad(vertices, faces):
    """d(total area)/d(vertices), analytic."""
    v = vertices[faces]
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    un = n / np.linalg.norm(n, axis=1, keepdims=True)
    g = np.zeros_like(vertices)
    for k in range(3):
        a, b = v[:, (k + 1) % 3], v[:, (k + 2) % 3]
        np.add.at(g, faces[:, k], 0.5 * np.cross(un, b - a))
    return g


def test_normal_adjoint_sphere_area_gradient_is_8_pi_r():
    r = 0.6
    h, f = sphere(61, r)
    s = tigeom.marching_cubes(f, spacing=h, origin=-1)
    dA_dv = _area_grad(s.vertices, s.faces)
    dA_ds = s.normal_adjoint(dA_dv)
    # s(x; r) = |x| - r  =>  ds/dr = -1
    dA_dr = float(np.sum(dA_ds * -1.0))
    assert abs(dA_dr - 8 * np.pi * r) / (8 * np.pi * r) < 0.01
    # normals are unit, outward
    np.testing.assert_allclose(np.linalg.norm(s.normals, axis=1), 1.0, atol=1e-12)
    assert (np.einsum("ij,ij->i", s.normals, s.vertices) > 0).all()


def test_normal_adjoint_circle_length_gradient_is_2_pi():
    h, (X, Y) = grid(129, dim=2)
    c = tigeom.marching_squares(np.sqrt(X**2 + Y**2) - 0.5, spacing=h, origin=-1)
    v = c.vertices[c.segments]
    t = v[:, 1] - v[:, 0]
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    dL_dv = np.zeros_like(c.vertices)
    np.add.at(dL_dv, c.segments[:, 1], t)
    np.add.at(dL_dv, c.segments[:, 0], -t)
    dL_dr = -np.sum(c.normal_adjoint(dL_dv))
    assert abs(dL_dr - 2 * np.pi) / (2 * np.pi) < 0.01


# ---------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("values, kwargs, match", [
    (np.zeros((4, 4)), {}, "values: marching_cubes needs a 3-dimensional"),
    (np.zeros((4, 4, 1)), {}, "at least 2 samples"),
    (np.full((4, 4, 4), np.nan), {}, "NaN or infinite"),
    (np.where(np.eye(4)[None].repeat(4, 0) > 0, np.inf, 1.0), {}, "NaN or infinite"),
    (np.zeros((4, 4, 4)), {"spacing": (1, 0, 1)}, "spacing"),
    (np.zeros((4, 4, 4)), {"spacing": (1, 1)}, "spacing"),
    (np.zeros((4, 4, 4)), {"origin": (0, np.nan, 0)}, "origin"),
    (np.zeros((4, 4, 4)), {"level": np.nan}, "level"),
    (np.zeros((4, 4, 4)), {"layout": (3, 2)}, "layout"),
    ([[[1, 2], [3]]], {}, "values"),
])
def test_marching_cubes_bad_input(values, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tigeom.marching_cubes(values, **kwargs)


def test_marching_squares_bad_input():
    with pytest.raises(ValueError, match="2-dimensional"):
        tigeom.marching_squares(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        tigeom.marching_squares(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(TypeError, match="level"):
        tigeom.marching_squares(np.zeros((3, 3)), level="a")
    with pytest.raises(TypeError, match="values"):
        tigeom.marching_squares(np.array([["a", "b"], ["c", "d"]]))


def test_gradient_shape_errors():
    h, f = sphere(12)
    s = tigeom.marching_cubes(f)
    with pytest.raises(ValueError, match="grad_vertices: expected shape"):
        s.vjp(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="grad_vertices"):
        s.normal_adjoint(np.full(s.vertices.shape, np.nan))
