"""sim.Flow2D: accuracy against the Schaefer-Turek benchmark, smoothness, exact adjoint, bad input."""

import warnings

import numpy as np
import pytest

from tigeom.sim import ConvergenceWarning, Flow2D, polygons

ST = dict(size=(2.2, 0.41), viscosity=1e-3, inflow_velocity=0.3, inflow_profile="parabolic")


def st_cd(res):
    return 2.0 * res.force / (0.2 ** 2 * 0.1)


@pytest.fixture(scope="module")
def small():
    """A small, viscous setup that converges tightly in f64 within a second or two."""
    return Flow2D(size=(0.6, 0.3), resolution=50, viscosity=0.02, inflow_velocity=1.0, tol=1e-12,
                  max_steps=60000, check_every=100)


def small_body(scale=1.0, shift=(0.0, 0.0), n=20):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 0.06 * scale * (1 + 0.15 * np.cos(3 * t))
    v = np.column_stack([0.22 + shift[0] + 1.2 * r * np.cos(t), 0.155 + shift[1] + r * np.sin(t)])
    return v, polygons.ring(n)


def test_schafer_turek_at_20_cells_per_diameter_and_subcell_shift():
    """Cd within 3% of 5.5795, dp near 0.1175, and a half-cell shift changes the drag by < 1%."""
    fl = Flow2D(resolution=200, tol=1e-5, **ST)
    out = []
    for sh in (0.0, 0.5):
        v, s = polygons.circle((0.2 + sh * fl.dx, 0.2 + 0.7 * sh * fl.dx), 0.05, 256)
        res = fl.solve(v, s)
        assert res.converged
        out.append(res)
    cd, cl = st_cd(out[0])
    assert abs(cd / 5.57953 - 1) < 0.03, cd
    # pressure probes on the nominal surface (where the retracted ramp puts the effective wall):
    # measured 0.1062 (-9.6%), the diffuse interface flattens the stagnation peak (Δp is reported,
    # not a target; it read -6.1% before the interior reset, see docs/validation.md)
    dp = out[0].pressure_at([[0.15, 0.2], [0.25, 0.2]])
    assert abs((dp[0] - dp[1]) / 0.11752 - 1) < 0.11, dp
    assert 0 < cl < 0.03  # reference 0.0106 (the channel is slightly asymmetric); measured 0.0052
    cd_shift = st_cd(out[1])[0]
    assert abs(cd_shift / cd - 1) < 0.01, (cd, cd_shift)


def test_force_is_orientation_independent_and_symmetric(small):
    v, s = small_body()
    v[:, 1] = v[:, 1] - v[:, 1].mean() + small.grid_size[1] / 2  # centred: no lift by symmetry
    a = small.solve(v, s)
    b = small.solve(v, s[::-1, ::-1])
    assert a.force[0] > 0
    np.testing.assert_allclose(a.force, b.force, rtol=1e-12, atol=1e-14)
    assert abs(a.force[1]) < 1e-8 * a.force[0]
    assert a.residuals.shape[1] == 4 and a.residuals[-1, 0] == a.steps


def test_solid_fraction_integrates_to_the_retracted_area():
    """The ramp is centred ``retraction`` cells inside the boundary: on a circle of radius R the
    solid fraction integrates to pi (R - c)^2 plus the ramp's curvature term pi w^2 / 6 (Steiner's
    formula for a ramp symmetric about the offset curve), all in cells."""
    v, s = polygons.circle((0.4, 0.3), 0.07, 400)
    for c, w in ((0.0, 1.5), (0.4, 1.5), (-0.5, 1.0), (0.0, 0.75), (-4.0, 4.0)):
        fl = Flow2D(size=(0.8, 0.6), resolution=50, viscosity=0.02, inflow_velocity=1.0, smoothing=w, retraction=c)
        gam = fl.solid_fraction(v, s)
        assert gam.min() >= 0 and gam.max() <= 1
        R = 0.07 / fl.dx
        expect = np.pi * (R - c) ** 2 + np.pi * w ** 2 / 6
        assert abs(gam.sum() / expect - 1) < 0.005, (c, w, gam.sum(), expect)


@pytest.mark.parametrize("kind", ["vertex", "scale", "translate_x", "translate_y"])
def test_vjp_matches_central_differences(small, kind):
    v, s = small_body()
    base = small.solve(v, s)
    assert base.converged
    g = np.array([1.0, 0.4])
    grad = base.vjp(g, tol=1e-12)
    assert base.adjoint["converged"]
    rng = np.random.default_rng(3)
    if kind == "vertex":
        d = rng.normal(size=v.shape)
    elif kind == "scale":
        d = v - v.mean(axis=0)
    else:
        d = np.zeros_like(v)
        d[:, 0 if kind == "translate_x" else 1] = 1.0
    eps = 1e-5  # the solid-fraction ramp and interior reset bend within a few 0.1 cells
    fp = small.solve(v + eps * d, s, warm_start=True).force @ g
    fm = small.solve(v - eps * d, s, warm_start=True).force @ g
    fd = (fp - fm) / (2 * eps)
    an = float((grad * d).sum())
    # the ramp and the reset are C1, not C2: central differences carry an O(eps) error at their kinks
    # (second term: cancellation when the directional derivative is small against |grad| |d|)
    assert abs(an - fd) <= 1e-4 * abs(fd) + 1e-5 * np.linalg.norm(grad) * np.linalg.norm(d), (an, fd)


def test_slip_walls_and_uniform_inflow_gradient(small):
    fl = Flow2D(size=(0.6, 0.3), resolution=50, viscosity=0.02, inflow_velocity=1.0, inflow_profile="uniform",
                walls="slip", tol=1e-11, max_steps=60000, check_every=100)
    v, s = small_body()
    base = fl.solve(v, s)
    grad = base.vjp([1.0, 0.0], tol=1e-12)
    d = np.random.default_rng(5).normal(size=v.shape)
    eps = 1e-5  # the solid-fraction ramp and interior reset bend within a few 0.1 cells
    fd = (fl.solve(v + eps * d, s, warm_start=True).drag - fl.solve(v - eps * d, s, warm_start=True).drag) / (2 * eps)
    assert abs((grad * d).sum() - fd) <= 1e-4 * abs(fd)


@pytest.mark.parametrize("walls", ["no-slip", "slip"])
def test_two_steps_per_launch_equal_single_steps(walls):
    """The solver runs two steps per kernel launch (eight on a GPU) and one more for an odd check
    interval: the state and the adjoint after 42 steps do not depend on how the steps were grouped."""
    out = []
    for every, eight in ((7, False), (6, False), (21, True)):  # pairs and a single step; pairs; eights too
        fl = Flow2D(size=(0.6, 0.3), resolution=50, viscosity=0.02, inflow_velocity=1.0, walls=walls,
                    tol=1e-30, check_every=every)
        fl._eight_per_launch = eight  # the GPU's grouping, on this machine too
        v, s = small_body()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = fl.solve(v, s, max_steps=42)
            g = res.vjp([1.0, 0.5], tol=1e-30, max_steps=42)
        assert res.steps == 42 and res.adjoint["steps"] == 42
        out.append((res.state, g))
    for o in out[1:]:
        np.testing.assert_allclose(o[0], out[0][0], rtol=0, atol=1e-14)
        np.testing.assert_allclose(o[1], out[0][1], rtol=1e-12, atol=1e-14 * np.abs(out[0][1]).max())


def test_warns_when_not_converged(small):
    v, s = small_body()
    with pytest.warns(ConvergenceWarning):
        res = small.solve(v, s, max_steps=300)
    assert not res.converged and res.steps == 300


def test_bad_input():
    fl = Flow2D(size=(0.6, 0.3), resolution=50, viscosity=0.02, inflow_velocity=1.0)
    v, s = small_body()
    bad = v.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="vertices.*NaN"):
        fl.solve(bad, s)
    with pytest.raises(ValueError, match="segments.*not closed"):
        fl.solve(v, s[:-1])
    with pytest.raises(ValueError, match="segments.*index out of range"):
        fl.solve(v, s + 1)
    with pytest.raises(ValueError, match="vertices.*strictly inside"):
        fl.solve(v + [0.0, 0.14], s)
    with pytest.raises(ValueError, match="vertices.*strictly inside"):
        fl.solve(v - [0.2, 0.0], s)
    with pytest.raises(ValueError, match="resolution.*too coarse for the body"):
        fl.solve(0.2 * (v - v.mean(0)) + v.mean(0), s)
    with pytest.raises(ValueError, match="resolution.*too coarse for viscosity"):
        Flow2D(size=(2.2, 0.41), resolution=20, viscosity=1e-5, inflow_velocity=1.0)
    with pytest.raises(ValueError, match="resolution.*GiB"):
        Flow2D(size=(100.0, 100.0), resolution=20000, viscosity=1e-3).solve(v, s)
    with pytest.raises(ValueError, match="inflow_profile"):
        Flow2D(inflow_profile="plug")
    with pytest.raises(ValueError, match="walls"):
        Flow2D(walls="sticky")
    with pytest.raises(ValueError, match="retraction"):
        Flow2D(smoothing=1.0, retraction=1.5)
    with pytest.raises(ValueError, match="size"):
        Flow2D(size=(1.0, -1.0))
    with pytest.raises(ValueError, match="grad_force"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fl.solve(v, s, max_steps=10).vjp([1.0, 0.0, 0.0])


def test_a_result_keeps_its_state_and_body_when_the_buffers_are_reused():
    """The state stays on the device until another solve takes the buffers, then it is copied to
    the host first. A vjp after a solid_fraction call of another body, and after another solve,
    reloads that result's body and state and equals the vjp of a flow that did nothing else."""
    kw = dict(size=(0.6, 0.3), resolution=50, viscosity=0.02, inflow_velocity=1.0, tol=1e-30, check_every=10)
    v1, s = small_body()
    v2, _ = small_body(scale=0.9, shift=(0.02, 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = Flow2D(**kw)
        r = ref.solve(v1, s, max_steps=40)
        g_ref = [r.vjp(g, tol=1e-30, max_steps=40) for g in ([0.3, 1.0], [1.0, 0.0])]
        fl = Flow2D(**kw)
        a = fl.solve(v1, s, max_steps=40)
        assert a._state is None  # still on the device
        state_a = a.state.copy()
        fl.solid_fraction(v2, s)
        g_a = [a.vjp([0.3, 1.0], tol=1e-30, max_steps=40)]
        b = fl.solve(v2, s, max_steps=40)
        assert a._state is not None and b._state is None
        g_a.append(a.vjp([1.0, 0.0], tol=1e-30, max_steps=40))
    np.testing.assert_array_equal(a.state, state_a)
    np.testing.assert_array_equal(state_a, r.state)
    for ga, gr in zip(g_a, g_ref):
        np.testing.assert_allclose(ga, gr, rtol=1e-12, atol=1e-14 * np.abs(gr).max())
    assert not np.array_equal(b.state, state_a)
