"""tigeom.sim.TetElasticity against dense linear algebra, and its figures on a sliver."""

import numpy as np
import pytest

from tigeom.sim import TetElasticity
from tigeom.tetmesh import cube_mesh


@pytest.fixture(scope="module")
def mesh():
    return cube_mesh(2, 12, seed=0)


def _dense(fe):
    idx = np.flatnonzero(fe.free.ravel())
    K = np.zeros((len(idx), len(idx)))
    for j, i in enumerate(idx):
        e = np.zeros(fe.vertices.size)
        e[i] = 1.0
        K[:, j] = fe.matvec(e.reshape(-1, 3)).ravel()[idx]
    return K, idx


def test_stiffness_matches_dense_and_physics(mesh):
    v, t = mesh
    fe = TetElasticity(v, t, young=2.0, poisson=0.25)
    K, idx = _dense(fe)
    np.testing.assert_allclose(K, K.T, atol=1e-12 * np.abs(K).max())
    np.testing.assert_allclose(np.diag(K), fe.diagonal().ravel()[idx], rtol=1e-12)
    # a rigid rotation about the one clamped vertex produces no force
    free_all = TetElasticity(v, t, clamped=[0])
    rot = np.cross(np.array([0.3, -0.2, 1.0]), v - v[0])
    f = free_all.matvec(rot)
    assert np.abs(f[1:]).max() < 1e-12 * np.abs(free_all.matvec(v)).max()
    # a uniform strain: K u = boundary traction only, interior nodes in equilibrium
    u = 0.01 * v * np.array([1.0, 0.0, 0.0])
    y = free_all.matvec(u)
    interior = np.all((v > 1e-12) & (v < 1 - 1e-12), axis=1)
    assert np.abs(y[interior]).max() < 1e-12
    # static solve, stable time step and condition number against dense eigenvalues
    res = fe.solve(tol=1e-12)
    f = fe.gravity().ravel()[idx]
    np.testing.assert_allclose(res.displacement.ravel()[idx], np.linalg.solve(K, f), rtol=1e-8, atol=1e-12)
    ev = np.linalg.eigvalsh(K)
    assert fe.solve(tol=1e-12, precondition="none").cond_estimate == pytest.approx(ev[-1] / ev[0], rel=1e-3)
    m = np.repeat(fe.mass, 3)[idx]
    lmax = np.linalg.eigvalsh(K / np.sqrt(np.outer(m, m)))[-1]
    assert fe.stable_time_step() == pytest.approx(2 / np.sqrt(lmax), rel=1e-8)


def test_a_sliver_shrinks_the_time_step():
    base = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    tets = np.array([[0, 1, 2, 3]])
    good = TetElasticity(base, tets, clamped=[0, 1, 2]).stable_time_step()
    flat = base.copy()
    flat[3] = [0.5, 0.5, 0.01]
    bad = TetElasticity(flat, tets, clamped=[0, 1, 2]).stable_time_step()
    assert bad < 0.1 * good


def test_bad_arguments(mesh):
    v, t = mesh
    with pytest.raises(ValueError, match="poisson"):
        TetElasticity(v, t, poisson=0.5)
    with pytest.raises(ValueError, match="young"):
        TetElasticity(v, t, young=-1)
    with pytest.raises(ValueError, match="clamped"):
        TetElasticity(v, t, clamped=np.zeros(len(v), bool))
    with pytest.raises(ValueError, match="load"):
        TetElasticity(v, t).solve(load=np.zeros(3))
    with pytest.raises(ValueError, match="precondition"):
        TetElasticity(v, t).solve(precondition="ilu")
    with pytest.raises(ValueError, match="zero volume"):
        TetElasticity(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float), [[0, 1, 2, 3]])


@pytest.mark.parametrize("gravity", [True, False])
def test_compliance_gradient_matches_central_differences(mesh, gravity):
    """d(f . u)/d vertices against central differences in f64 on a small cube mesh clamped at
    one face: under gravity, whose lumped load moves with the volumes, and under a fixed load."""
    v, t = mesh
    rng = np.random.default_rng(1)
    load = None if gravity else rng.normal(size=v.shape)
    fe = TetElasticity(v, t, young=3.0, poisson=0.3, density=2.0)
    c = fe.compliance(load, tol=1e-13)
    assert c.solve.converged and c.value > 0
    np.testing.assert_allclose(c.value, float((fe.matvec(c.solve.displacement) * c.solve.displacement).sum()),
                               rtol=1e-9)
    h, fd = 1e-6, np.zeros_like(v)
    for i in range(len(v)):
        for k in range(3):
            e = np.zeros_like(v)
            e[i, k] = h
            fd[i, k] = (fe.moved(v + e).compliance(load, tol=1e-13).value
                        - fe.moved(v - e).compliance(load, tol=1e-13).value) / (2 * h)
    np.testing.assert_allclose(c.gradient, fd, atol=1e-6 * np.abs(fd).max())
    assert np.abs(c.gradient[fe.clamped]).max() > 0  # moving a clamped vertex changes K too


def test_moved_keeps_material_and_clamps(mesh):
    v, t = mesh
    fe = TetElasticity(v, t, young=3.0, poisson=0.25, density=2.0, clamped=[0, 1, 2, 3])
    mv = fe.moved(v * 1.1)
    assert (mv.clamped == fe.clamped).all() and mv.lam == pytest.approx(fe.lam) and mv.mu == pytest.approx(fe.mu)
    np.testing.assert_allclose(mv.mass.sum(), fe.mass.sum() * 1.1 ** 3, rtol=1e-12)
    with pytest.raises(ValueError, match="vertices: expected shape"):
        fe.moved(v[:-1])
