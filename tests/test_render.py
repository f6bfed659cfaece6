"""tigeom.render: cameras, agreement with an independent ray caster (trimesh), the vjp against
central differences in f64 (opacities, interior motion, silhouette motion), bad input."""

import warnings

import numpy as np
import pytest
import trimesh
from scipy import ndimage

import tigeom
from helpers import ARCH, render_scene
from tigeom import render


@pytest.fixture(autouse=True)
def _f64():
    tigeom.init(arch=ARCH, precision="f64")


def test_orbit_cameras_geometry():
    cams = render.orbit_cameras(8, 8, radius=3.0, fov_degrees=40.0, resolution=(30, 40), target=(0.1, -0.2, 0.3))
    assert len(cams) == 64 and cams.resolution == (30, 40)
    tgt = np.array([0.1, -0.2, 0.3])
    np.testing.assert_allclose(np.linalg.norm(cams.centers - tgt, axis=1), 3.0)
    p = cams.project(tgt[None])[:, 0]
    np.testing.assert_allclose(p, np.tile([20.0, 15.0, 3.0], (64, 1)), atol=1e-12)  # principal point, depth
    el = np.degrees(np.arcsin((cams.centers[:, 2] - tgt[2]) / 3.0))
    np.testing.assert_allclose(np.unique(el.round(9)), np.linspace(-60, 60, 8), atol=1e-9)
    np.testing.assert_allclose(cams.centers[0], tgt + 3.0 * np.array([np.cos(np.radians(-60)), 0.0,
                                                                        np.sin(np.radians(-60))]), atol=1e-12)
    # world up is image up (y down), and azimuth runs counter-clockwise about +z
    one = render.orbit_cameras(4, 1, radius=2.0, resolution=(30, 40))
    up = one.project(np.array([[0.0, 0.0, 0.5]]))[:, 0]
    assert (up[:, 1] < 15.0).all()
    np.testing.assert_allclose(one.centers[1], [0.0, 2.0, 0.0], atol=1e-12)
    fy = one.K[0, 1, 1]
    np.testing.assert_allclose(fy, 15.0 / np.tan(np.radians(20.0)))
    with pytest.raises(ValueError, match="fov_degrees"):
        render.orbit_cameras(fov_degrees=0)
    with pytest.raises(ValueError, match="n_azimuth"):
        render.orbit_cameras(n_azimuth=0)


def _ray_cast(mesh, cams, c):
    """Per pixel centre of view c: hit mask, camera depth and face index from trimesh's ray
    intersector (an independent implementation)."""
    H, W = cams.resolution
    R, C = cams.view[c, :3, :3], cams.centers[c]
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3) @ np.linalg.inv(cams.K[c]).T @ R
    locs, ray, tri = mesh.ray.intersects_location(np.repeat(C[None], len(d), 0), d, multiple_hits=False)
    hit = np.zeros(H * W, bool)
    hit[ray] = True
    z = np.full(H * W, np.inf)
    z[ray] = ((locs - C) @ R.T)[:, 2]
    face = np.full(H * W, -1)
    face[ray] = tri
    return hit.reshape(H, W), z.reshape(H, W), face.reshape(H, W)


@pytest.mark.parametrize("shape", ["sphere", "torus"])
def test_rasterize_agrees_with_a_ray_caster(shape):
    mesh = (trimesh.creation.icosphere(2, radius=0.8) if shape == "sphere"
            else trimesh.creation.torus(0.7, 0.25, major_sections=24, minor_sections=12))
    cams = render.orbit_cameras(3, 2, radius=3.0, resolution=(40, 52))
    img = render.rasterize(mesh.vertices, mesh.faces, cams)
    assert img.stats["pixels_over_layers"] == 0
    for c in range(len(cams)):
        hit, z, face = _ray_cast(mesh, cams, c)
        covered = img.alpha[c] > 0
        edge = hit ^ ndimage.binary_erosion(hit)  # the silhouette's own pixels
        ring = ndimage.binary_dilation(hit) & ~hit  # and the background pixels beside them
        assert not (covered & ~hit & ~ring).any()  # exact 0 away from the surface
        assert (covered | ~hit).all()
        inner = hit & ~edge
        np.testing.assert_array_equal(img.alpha[c][inner], 1.0)
        np.testing.assert_allclose(img.depth[c][inner], z[inner], rtol=1e-10)
        assert np.isinf(img.depth[c][~covered]).all()
        n = mesh.face_normals[face[inner]]
        n *= np.sign(np.einsum("ij,ij->i", n, cams.centers[c] - mesh.triangles[face[inner], 0]))[:, None]
        np.testing.assert_allclose(img.normal[c][inner], n, atol=1e-9)


def _scene():
    return render_scene()


def _loss_and_grad(V, F, cams, op, seed=0, channels=("alpha", "depth", "normal")):
    img = render.rasterize(V, F, cams, op)
    rng = np.random.default_rng(seed)
    mask = np.isfinite(img.depth)
    W = {"alpha": rng.normal(size=img.alpha.shape), "depth": np.where(mask, rng.normal(size=mask.shape), 0.0),
         "normal": rng.normal(size=img.normal.shape)}
    W = {k: (W[k] if k in channels else np.zeros_like(W[k])) for k in W}

    def loss(V2, op2):
        im = render.rasterize(V2, F, cams, op2)
        assert (np.isfinite(im.depth) == mask).all()  # no pixel centre crossed an edge
        return ((W["alpha"] * im.alpha).sum() + (W["depth"] * np.where(mask, im.depth, 0.0)).sum()
                + (W["normal"] * im.normal).sum())

    return loss, img.vjp(W["alpha"], W["depth"], W["normal"])


def _central(fn, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        g[i] = (fn(x + d) - fn(x - d)) / (2 * eps)
    return g


def test_vjp_opacity_and_interior_motion_match_central_differences():
    V, F, cams = _scene()
    op = np.array([0.7, 0.9, 0.6, 0.8, 0.5])
    loss, (gv, gop) = _loss_and_grad(V, F, cams, op)
    fo = _central(lambda o: loss(V, o), op)
    np.testing.assert_allclose(gop, fo, atol=1e-6 * np.abs(fo).max())
    fv = _central(lambda x: loss(x, op), V)
    np.testing.assert_allclose(gv, fv, atol=1e-6 * np.abs(fv).max())
    assert np.abs(fv).max() > 1.0


def test_vjp_of_silhouette_motion():
    """An opaque triangle over the background: alpha is 1 inside and 0 outside except where
    the antialiasing blends across its edges, so every vertex gradient of a loss of alpha alone
    comes from the silhouette; it matches central differences and is not zero."""
    V, F, cams = _scene()
    F1 = F[4:]
    loss, (gv, gop) = _loss_and_grad(V, F1, cams, None, seed=3, channels=("alpha",))
    fv = _central(lambda x: loss(x, None), V)
    np.testing.assert_allclose(gv, fv, atol=1e-6 * np.abs(fv).max())
    assert np.abs(gv[5:]).min() > 1e-3 and np.abs(gv[:5]).max() == 0.0
    assert gop.shape == (1,)


def test_empty_mesh_and_layer_overflow():
    cams = render.orbit_cameras(2, 1, resolution=(8, 8))
    img = render.rasterize(np.zeros((0, 3)), np.zeros((0, 3), int), cams)
    assert (img.alpha == 0).all() and np.isinf(img.depth).all() and (img.normal == 0).all()
    z = np.linspace(-0.3, 0.3, 40)
    V = np.concatenate([[[-1.0, -1.0, t], [1.0, -1.0, t], [0.0, 1.0, t]] for t in z])
    F = np.arange(len(V)).reshape(-1, 3)
    top = render.Cameras(cams.K[:1], render.look_at([0, 0, 3.0], [0, 0, 0], [0, 1, 0])[None], (8, 8))
    with pytest.warns(RuntimeWarning, match="more than 32 faces"):
        img = render.rasterize(V, F, top, np.full(len(F), 0.1))
    assert img.stats["pixels_over_layers"] > 0
    np.testing.assert_allclose(img.alpha[0, 4, 4], 1 - 0.9 ** 32)


def test_bad_input():
    V, F, cams = _scene()
    with pytest.raises(ValueError, match="vertices"):
        render.rasterize(V[:, :2], F, cams)
    with pytest.raises(ValueError, match="faces"):
        render.rasterize(V, F + 10, cams)
    with pytest.raises(ValueError, match="opacity"):
        render.rasterize(V, F, cams, np.full(len(F), 1.5))
    with pytest.raises(TypeError, match="cams"):
        render.rasterize(V, F, None)
    with pytest.raises(ValueError, match="K"):
        render.Cameras(np.eye(4)[None], cams.view[:1], (8, 8))
    with pytest.raises(ValueError, match="view"):
        render.Cameras(cams.K[:1], 2 * cams.view[:1], (8, 8))
    img = render.rasterize(V, F, cams)
    with pytest.raises(ValueError, match="grad_alpha"):
        img.vjp(np.ones((1, 2, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gv, gop = img.vjp(grad_depth=np.where(np.isfinite(img.depth), 1.0, 5.0))  # inf depths: ignored
    assert np.isfinite(gv).all() and gop.shape == (len(F),)


def test_faces_behind_the_camera_are_counted_not_drawn():
    V, F, cams = _scene()
    V2 = V.copy()
    V2[5:, :] = cams.centers[0] + 0.01 * (V[5:] - V[5:].mean(0)) + np.array([0.0, 0.0, 0.5])  # behind camera 0
    img = render.rasterize(V2, F, cams)
    assert img.stats["faces_behind_near_plane"] >= 1
    assert np.isfinite(img.alpha).all() and np.isfinite(img.normal).all()
