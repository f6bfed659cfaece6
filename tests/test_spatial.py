import numpy as np
import pytest

from tigeom.spatial import NearestIndex, nearest


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("n", [1, 7, 2000])
def test_nearest_matches_brute_force(dim, n):
    rng = np.random.default_rng(n + dim)
    pts = rng.standard_normal((n, dim)) * [1.0, 0.3, 2.0][:dim]
    qs = rng.standard_normal((300, dim)) * 1.5
    qs[:5] *= 20  # far outside the grid box
    idx, dist = nearest(pts, qs)
    d = np.linalg.norm(qs[:, None] - pts[None], axis=2)
    np.testing.assert_allclose(dist, d.min(1), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(idx, d.argmin(1))  # argmin: first index on ties, as ours


def test_nearest_degenerate_inputs():
    pts = np.zeros((5, 3))  # all identical: ties -> smallest index
    idx, dist = nearest(pts, [[1.0, 0, 0]])
    assert idx[0] == 0 and dist[0] == pytest.approx(1.0)
    line = np.column_stack([np.linspace(0, 1, 50), np.zeros(50)])  # collinear in 2D
    idx, _ = NearestIndex(line).query([[0.51, 3.0]])
    assert idx[0] == 25


def test_nearest_bad_input():
    with pytest.raises(ValueError, match="points"):
        NearestIndex(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="queries"):
        NearestIndex(np.zeros((4, 3))).query(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="points: contains"):
        NearestIndex([[0.0, np.nan]])
