"""Scenes double as tests: each runs briefly on the CPU into tmp_path and its summary is checked."""

import contextlib
import json

import numpy as np
import pytest

from tigeom import cli, scene


@contextlib.contextmanager
def interrupted_at(name, iteration):
    """Make scene ``name`` raise KeyboardInterrupt when it reaches ``iteration``."""
    cls = scene.load(name)
    orig = cls.step

    def failing(self, it):
        if it == iteration:
            raise KeyboardInterrupt
        return orig(self, it)

    cls.step = failing
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        cls.step = orig


def test_scene_registry_lists_sdf_fit(capsys):
    assert "sdf_fit" in scene.available()
    assert cli.main(["scenes"]) == 0
    assert "sdf_fit" in capsys.readouterr().out


def test_sdf_fit_runs_and_improves(tmp_path):
    out = tmp_path / "fit"
    assert cli.main(["run", "sdf_fit", "--out", str(out), "--iters", "30", "--arch", "cpu", "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["iterations"] == 30 and s["config"]["iters"] == 30
    hist = s["history"]
    assert hist[-1]["chamfer_vertices"] < 0.5 * hist[0]["chamfer_vertices"]
    assert s["figures"]["watertight"] is True
    assert s["figures"]["chamfer"] > 0
    for name in ("final.ply", "target.ply", "loss.png", "render.png", "iter_0030.ply"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint.npz").exists()


def test_checkpoint_resume_matches_uninterrupted_run(tmp_path):
    """Stop after 10 of 20 iterations (checkpoint every 5), resume, compare with a straight run."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("resolution = 20\nn_target = 800\ncheckpoint_every = 5\neval_samples = 2000\n")
    straight = scene.run("sdf_fit", out=str(tmp_path / "a"), arch="cpu", iters=20, config_file=str(cfg),
                         progress=False)
    # an interrupted run: same config, the scene raises at iteration 12 (after the checkpoint at 10)
    with interrupted_at("sdf_fit", 12):
        scene.run("sdf_fit", out=str(tmp_path / "b"), arch="cpu", iters=20, config_file=str(cfg), progress=False)
    assert (tmp_path / "b" / "checkpoint.npz").is_file()
    resumed = scene.run("sdf_fit", out=str(tmp_path / "b"), arch="cpu", iters=20, config_file=str(cfg),
                        progress=False)
    assert resumed["resumed_from"] == 10
    np.testing.assert_allclose(resumed["figures"]["chamfer"], straight["figures"]["chamfer"], rtol=1e-9)
    a = [h["loss"] for h in straight["history"]]
    b = [h["loss"] for h in resumed["history"]]
    np.testing.assert_allclose(a, b, rtol=1e-9)


def test_resume_refuses_a_different_configuration(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("resolution = 16\nn_target = 300\ncheckpoint_every = 2\neval_samples = 500\n")
    with interrupted_at("sdf_fit", 3):
        scene.run("sdf_fit", out=str(tmp_path / "b"), arch="cpu", iters=6, config_file=str(cfg), progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        scene.run("sdf_fit", out=str(tmp_path / "b"), arch="cpu", iters=6, seed=3, config_file=str(cfg),
                  progress=False)


def test_cli_errors(tmp_path, capsys):
    assert cli.main(["run", "no_such_scene", "--out", str(tmp_path)]) == 2
    assert "unknown scene" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("nonsense_key = 1\n")
    assert cli.main(["run", "sdf_fit", "--out", str(tmp_path / "x"), "--config", str(bad)]) == 2
    assert "unknown keys" in capsys.readouterr().err
    bad.write_text("this is = not toml [")
    assert cli.main(["run", "sdf_fit", "--out", str(tmp_path / "y"), "--config", str(bad)]) == 2
    assert cli.main(["run", "sdf_fit", "--out", str(tmp_path / "z"), "--iters", "-1"]) == 2
