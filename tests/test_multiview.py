"""tigeom.dmesh.reconstruct_multiview and the multiview3d scene, small, on the CPU: back-projected
points lie on the surface, a torus comes back closed, of genus 1 and within the accuracy targets
from 16 small renders, bad input is rejected, and the scene writes what it promises."""

import json

import numpy as np
import pytest
import trimesh

import tigeom
from helpers import ARCH
from tigeom import dmesh, render, scene
from tigeom.dmesh import sampling


@pytest.fixture(scope="module")
def torus_views():
    tigeom.init(arch=ARCH, precision="f64")
    gt = trimesh.creation.torus(0.6, 0.25, major_sections=48, minor_sections=24)
    cams = render.orbit_cameras(4, 4, radius=3.0, resolution=(56, 56))
    img = render.rasterize(gt.vertices, gt.faces, cams)
    return gt, cams, {"alpha": img.alpha, "depth": img.depth}


def test_back_projected_points_lie_on_the_surface(torus_views):
    gt, cams, images = torus_views
    p = dmesh.back_project(images, cams)
    assert len(p) > 5000
    _, dist, _ = trimesh.proximity.closest_point(gt, p)
    assert dist.max() < 1e-9  # exact depths of covered, smooth pixels; contour pixels left out
    assert len(dmesh.back_project(images, cams, max_samples=100)) == 100


def test_torus_from_sixteen_views(torus_views):
    """Accuracy from 16 renders of 56^2, and the refinement against the images runs and keeps it."""
    gt, cams, images = torus_views
    ref = sampling.sample_mesh(gt.vertices, gt.faces, 50_000, 1)
    scores = []
    for refine in (0, 4):
        rec = dmesh.reconstruct_multiview(images, cams, resolution=1 / 32, iterations=40, refine_iterations=refine,
                                          views_per_step=4)
        scores.append(sampling.chamfer_f1(rec.vertices, rec.faces, ref, tau=0.01))
        assert scores[-1]["chamfer"] < 0.005 and scores[-1]["f1"] > 0.95, scores  # measured 0.2% and 0.9995
    assert len(rec.render_history) == 4 and {"coverage", "depth"} <= set(rec.render_history[0])
    assert rec.render_history[-1]["coverage"] < 0.01  # mean squared coverage error of the views drawn
    assert abs(scores[1]["chamfer"] - scores[0]["chamfer"]) < 0.2 * scores[0]["chamfer"]


def test_open_sheet_from_views():
    """An open surface (a wavy sheet, seen from both sides) comes back as an open sheet: accurate,
    with a boundary, and no face far from the truth."""
    from tigeom.scenes.multiview import builtin_shape

    v, f = builtin_shape("open")
    cams = render.orbit_cameras(4, 4, radius=3.0, resolution=(80, 80))
    img = render.rasterize(v, f, cams)
    rec = dmesh.reconstruct_multiview({"alpha": img.alpha, "depth": img.depth}, cams, resolution=1 / 40,
                                      iterations=40)
    ref = sampling.sample_mesh(v, f, 50_000, 1)
    score = sampling.chamfer_f1(rec.vertices, rec.faces, ref, tau=0.01)
    assert score["chamfer"] < 0.005 and score["f1"] > 0.95, score
    m = trimesh.Trimesh(rec.vertices, rec.faces, process=False)
    assert not m.is_watertight  # the sheet's rim stays open


def test_bad_input(torus_views):
    _, cams, images = torus_views
    with pytest.raises(ValueError, match="alpha"):
        dmesh.reconstruct_multiview({"depth": images["depth"]}, cams)
    with pytest.raises(ValueError, match="depth"):
        dmesh.reconstruct_multiview({"alpha": images["alpha"], "depth": images["depth"][:2]}, cams)
    nan = images["depth"].copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dmesh.reconstruct_multiview({"alpha": images["alpha"], "depth": nan}, cams)
    with pytest.raises(ValueError, match="covered pixels"):
        dmesh.reconstruct_multiview({"alpha": 0 * images["alpha"], "depth": images["depth"]}, cams)
    with pytest.raises(TypeError, match="cams"):
        dmesh.reconstruct_multiview(images, None)


def test_multiview3d_scene_small(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('targets = ["genus2"]\nn_azimuth = 4\nn_elevation = 3\nimage_size = 64\nresolution = 0.04\n'
                   "dmesh_iterations = 30\nrefine_iterations = 2\nviews_per_step = 3\neval_points = 20000\n")
    out = tmp_path / "mv"
    s = scene.run("multiview3d", out=str(out), arch="cpu", config_file=str(cfg), progress=False)
    f = s["figures"]["genus2"]
    assert s["converged"] and f["chamfer_percent_of_diagonal"] < 1.0 and f["f1_at_1_percent"] > 0.9, f
    for name in ("genus2.ply", "genus2_views.png", "genus2_loss.png", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["figures"]["genus2"]["normal_consistency"] > 0.9
