"""Weighted Delaunay triangulation: equality with the lifted lower hull (scipy/Qhull as the
reference only), validity on degenerate inputs, property-based checks and bad input."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial import ConvexHull, Delaunay

import tigeom
from tigeom.delaunay.exact import Exact, exact_cell
from tigeom.delaunay.simplices import signed_volumes


def canon(s):
    return set(map(tuple, np.sort(np.asarray(s), axis=1).tolist()))


def lifted_lower_hull(p, w):
    """Reference: lower facets of the hull of (p, |p|^2 - w) and the points they leave out."""
    lift = np.column_stack([p, (p * p).sum(1) - w])
    hull = ConvexHull(lift)
    d = p.shape[1]
    lower = hull.simplices[hull.equations[:, d] < -1e-12]
    hidden = np.ones(len(p), bool)
    hidden[np.unique(lower)] = False
    return lower, hidden


def check_valid(tri, tol=1e-9):
    """Invariants every regular triangulation satisfies, checked by brute force."""
    p, w, s = tri.points, tri.weights, tri.simplices
    d = p.shape[1]
    assert s.dtype == np.int64 and s.shape[1] == d + 1
    vol = signed_volumes(p, s)
    assert np.all(vol > 0), "every simplex positively oriented and not flat"
    used = np.unique(s)
    live = np.flatnonzero(~tri.hidden)
    assert np.array_equal(used, live), "exactly the non-hidden points are vertices"
    # union of the simplices = the convex hull
    hv = ConvexHull(p).volume
    assert abs(vol.sum() - hv) <= 1e-9 * hv
    # empty power spheres: no point has smaller power at a simplex's power centre
    c = tri.power_centers
    pw = ((c - p[s[:, 0]]) ** 2).sum(1) - w[s[:, 0]]
    allpow = ((c[:, None, :] - p[None, :, :]) ** 2).sum(-1) - w[None, :]
    scale = np.abs(allpow).max() + 1.0
    assert np.all(allpow >= pw[:, None] - tol * scale), "a point lies inside a power sphere"
    # faces: unique, sorted rows, each in one or two simplices, matching the simplices' faces
    f = tri.faces
    assert np.all(np.diff(f, axis=1) > 0)
    assert len(canon(f)) == len(f)
    sf = np.concatenate([np.delete(s, k, axis=1) for k in range(d + 1)])
    assert canon(sf) == canon(f)
    # adjacency symmetric
    nb = tri.neighbors
    for a in range(len(s)):
        for k in range(d + 1):
            b = nb[a, k]
            if b >= 0:
                assert a in nb[b]
    # Euler: V - E + F (- T) = 1 for a triangulated disk / ball
    edges = canon(np.concatenate([s[:, [i, j]] for i in range(d + 1) for j in range(i + 1, d + 1)]))
    V = len(live)
    if d == 2:
        assert V - len(edges) + len(s) == 1
    else:
        assert V - len(edges) + len(f) - len(s) == 1
    # hidden points (not duplicates) are redundant: their lifted point is not below the hull
    for i in np.flatnonzero(tri.hidden):
        if np.any(np.all(p[live] == p[i], axis=1)):
            continue
        lifted_i = p[i] @ p[i] - w[i]
        best = np.inf
        for simplex in s:
            A = np.column_stack([p[simplex], np.ones(d + 1)])
            bc = np.linalg.solve(A.T, np.append(p[i], 1.0))
            if np.all(bc >= -1e-9):
                h = bc @ ((p[simplex] ** 2).sum(1) - w[simplex])
                best = min(best, h)
        assert lifted_i >= best - 1e-9 * (abs(best) + 1)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_equals_lifted_lower_hull(d, weighted):
    rng = np.random.default_rng(10 * d + weighted)
    n = 400 if d == 2 else 300
    p = rng.random((n, d))
    spacing = n ** (-1.0 / d)
    w = rng.random(n) * (0.5 * spacing) ** 2 if weighted else np.zeros(n)
    tri = tigeom.weighted_delaunay(p, w if weighted else None)
    lower, hidden = lifted_lower_hull(p, w)
    assert canon(tri.simplices) == canon(lower)
    assert np.array_equal(tri.hidden, hidden)
    if weighted:
        assert hidden.any(), "the weights should hide some points (otherwise the test is weak)"
    check_valid(tri)


def test_heavy_weights_hide_most_points():
    rng = np.random.default_rng(3)
    p = rng.random((200, 2))
    w = np.zeros(200)
    w[:4] = [4.0, 4.0, 4.0, 4.0]  # far larger than the spacing
    p[:4] = [[0.2, 0.2], [0.8, 0.2], [0.5, 0.8], [0.5, 0.45]]
    tri = tigeom.weighted_delaunay(p, w)
    lower, hidden = lifted_lower_hull(p, w)
    assert canon(tri.simplices) == canon(lower)
    assert np.array_equal(tri.hidden, hidden)
    assert tri.hidden.sum() >= 150
    check_valid(tri)


@pytest.mark.parametrize("d,k", [(2, 9), (3, 4), (3, 5)])
def test_grid_is_valid_and_deterministic(d, k):
    x = np.linspace(0, 1, k)
    p = np.stack(np.meshgrid(*([x] * d), indexing="ij"), -1).reshape(-1, d)
    a = tigeom.weighted_delaunay(p)
    b = tigeom.weighted_delaunay(p)
    assert np.array_equal(a.simplices, b.simplices) and np.array_equal(a.faces, b.faces)
    assert not a.hidden.any()
    check_valid(a)
    # every cell is certified by the kernels themselves: grid neighbours at exactly the security
    # distance are clipped (the symbolic perturbation lets them cut), so nothing falls back to the
    # host's exact recomputation (it once took 15 of 64 cells here, and 101 of a 5^3 grid)
    assert a.stats["cells_recomputed_exactly"] == 0
    # each grid square / cube is split into 2 triangles / some tets: the count is fixed in 2D
    if d == 2:
        assert len(a.simplices) == 2 * (k - 1) ** 2


def test_cocircular_and_cospherical():
    t = np.linspace(0, 2 * np.pi, 17)[:-1]
    p = np.column_stack([np.cos(t), np.sin(t)])
    tri = tigeom.weighted_delaunay(np.vstack([p, [[0.0, 0.0]]]))
    check_valid(tri)
    tri = tigeom.weighted_delaunay(p)  # all points on one circle: any fan is Delaunay
    check_valid(tri)
    assert len(tri.simplices) == 14
    rng = np.random.default_rng(0)
    q = rng.normal(size=(40, 3))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    check_valid(tigeom.weighted_delaunay(q))


def test_duplicates_hide_the_lighter_twin():
    rng = np.random.default_rng(1)
    p = rng.random((50, 3))
    p = np.vstack([p, p[:5], p[5:8]])
    w = np.zeros(len(p))
    w[50:55] = 1e-6  # heavier twins: the originals 0..4 are hidden
    tri = tigeom.weighted_delaunay(p, w)
    assert tri.hidden[:5].all() and not tri.hidden[50:55].any()
    # equal weights: the smaller index stays
    assert not tri.hidden[5:8].any() and tri.hidden[55:58].all()
    check_valid(tri)


@pytest.mark.parametrize("d", [2, 3])
def test_duplicate_search_by_hashed_keys_equals_the_lexicographic_reference(d, monkeypatch):
    """The duplicate search sorts one hashed key per point and compares only points whose key is
    shared: the same mask as sorting every point lexicographically, for random points, a grid
    with repeated rows and tied weights, signed zeros (-0.0 equals 0.0) and forced key
    collisions (distinct points in one bucket stay distinct)."""
    from tigeom.delaunay import triangulation as tr

    rng = np.random.default_rng(4)
    g = np.stack(np.meshgrid(*[np.arange(-3.0, 4.0)] * d, indexing="ij"), -1).reshape(-1, d)
    signed = rng.random((30, d))
    signed[:10, 0] = 0.0
    signed = np.concatenate([signed, signed[:10] * np.r_[-1.0, np.ones(d - 1)]])  # twins by -0.0 == 0.0 only
    cases = [rng.random((2000, d)), np.concatenate([g, g[::3], g[::5]]), signed]
    for p in cases:
        for w in (np.zeros(len(p)), np.round(rng.random(len(p)) * 2)):
            np.testing.assert_array_equal(tr._duplicates(p, w), tr._duplicates_exact(p, w))
    assert tr._duplicates(cases[1], np.zeros(len(cases[1]))).sum() > len(g[::3])  # many twins
    assert tr._duplicates(signed, np.zeros(len(signed)))[30:].all()
    p = cases[1]
    # every key equal: the exact pass alone decides
    monkeypatch.setattr(tr, "_coord_keys", lambda q: np.zeros(len(q), np.uint64))
    w = np.round(rng.random(len(p)) * 2)
    np.testing.assert_array_equal(tr._duplicates(p, w), tr._duplicates_exact(p, w))


@pytest.mark.parametrize("d", [2, 3])
def test_device_duplicate_search_equals_the_lexicographic_reference(d, monkeypatch):
    """The grid's duplicate search (each cell's points compared on the device, crowded cells
    handed to the host) gives the reference mask: random points, a grid with repeated rows and
    tied or random weights, signed zeros, every point in one cell, and with a cap of 2 points a
    cell, so that many cells go to the host."""
    from tigeom.delaunay import _kernels as K
    from tigeom.delaunay import cells
    from tigeom.delaunay import triangulation as tr
    from tigeom.spatial.grid import bounding_box

    rng = np.random.default_rng(5)
    g = np.stack(np.meshgrid(*[np.arange(-3.0, 4.0)] * d, indexing="ij"), -1).reshape(-1, d)
    signed = rng.random((30, d))
    signed[:10, 0] = 0.0
    signed = np.concatenate([signed, signed[:10] * np.r_[-1.0, np.ones(d - 1)]])
    one = np.repeat(rng.random((3, d)), [40, 30, 30], axis=0)[rng.permutation(100)]
    cases = [rng.random((3000, d)), np.concatenate([g, g[::3], g[::5]]), signed, one]

    def device_mask(p, w):
        s = cells.prepare(K, p, w, tr._duplicates, bounding_box(p))
        dup = np.ones(len(p), bool)
        dup[s.perm[s.live]] = False  # live labels to the input's indices
        return dup

    for cap in (K.TWIN_CAP, 2):
        monkeypatch.setattr(K, "TWIN_CAP", cap)
        for p in cases:
            for w in (np.zeros(len(p)), np.round(rng.random(len(p)) * 2)):
                np.testing.assert_array_equal(device_mask(p, w), tr._duplicates_exact(p, w))
    assert device_mask(one, np.zeros(100)).sum() == 97


def test_flatness_test_on_a_sample_agrees_with_the_full_one(monkeypatch):
    """Above FLAT_SAMPLE points a strided sample may prove the points spread; when it cannot,
    the full test decides: a line with one point off it outside the sample passes, a line with
    noise far below 1e-12 of its length does not, spread points pass."""
    from tigeom.delaunay import triangulation as tr

    monkeypatch.setattr(tr, "FLAT_SAMPLE", 16)
    rng = np.random.default_rng(6)
    tr._check_spread(rng.random((400, 2)))
    t = rng.random(400)
    line = np.column_stack([t, 0.5 * t])
    off = line.copy()
    off[201] += [0.0, 0.3]  # 201 is not a multiple of the stride, 400 // 16 = 25: outside the sample
    tr._check_spread(off)
    with pytest.raises(ValueError, match="one line"):
        tr._check_spread(line + 1e-15 * rng.random((400, 2)))
    with pytest.raises(ValueError, match="at least 4 distinct"):
        tr._check_spread(rng.random((3, 3)))


def test_nearly_coplanar_and_nearly_collinear():
    rng = np.random.default_rng(2)
    p = rng.random((60, 3))
    p[:, 2] *= 1e-7
    p[:4, 2] = [0.0, 1.0, 0.5, 0.3]  # a few points give the set a volume
    check_valid(tigeom.weighted_delaunay(p))
    q = rng.random((60, 2))
    q[:, 1] = 0.5 + 1e-9 * q[:, 1]
    q[:2, 1] = [0.0, 1.0]
    check_valid(tigeom.weighted_delaunay(q))


def test_exact_fallback_agrees_with_kernels():
    rng = np.random.default_rng(4)
    p = rng.random((25, 2))
    w = rng.random(25) * 0.01
    tri = tigeom.weighted_delaunay(p, w)
    ex = Exact(p, w)
    box_lo, box_hi = p.min(0) - 10.0, p.max(0) + 10.0
    for i in range(25):
        cand = np.argsort(((p - p[i]) ** 2).sum(1), kind="stable")
        cand = cand[cand != i]
        simp = exact_cell(i, ex, cand, box_lo, box_hi, 0.0, w.max())
        if simp is None:
            assert tri.hidden[i]
            continue
        mine = canon([tuple(sorted(set(s) - {i})) for s in tri.simplices if i in s])
        assert set(simp) == mine


def test_power_cells_and_adjacency():
    rng = np.random.default_rng(5)
    p = rng.random((80, 2))
    tri = tigeom.weighted_delaunay(p, rng.random(80) * 1e-3)
    cells = tri.power_cells()
    for i in range(80):
        nb, verts = cells.cell(i)
        if tri.hidden[i]:
            assert len(nb) == 0 and len(verts) == 0
            continue
        assert len(verts) == np.sum(np.any(tri.simplices == i, axis=1))
        # every cell vertex is equidistant (in power) from i and is no closer to any other point
        pw = ((verts - p[i]) ** 2).sum(1) - tri.weights[i]
        for j in nb:
            assert i in cells.cell(j)[0]
        allp = ((verts[:, None] - p[None]) ** 2).sum(-1) - tri.weights[None]
        assert np.all(allp.min(1) >= pw - 1e-12)
    hull = canon(tri.hull_faces())
    assert cells.unbounded.sum() == len({v for f in hull for v in f})


# derandomize: the same examples on every run, so CI does not pass or fail by the draw. The one
# failing draw seen so far is kept below as a regression test.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(d=st.sampled_from([2, 3]), n=st.integers(5, 60), scale=st.sampled_from([1e-3, 1.0, 1e3]),
       wfac=st.sampled_from([0.0, 0.1, 1.0, 10.0]), seed=st.integers(0, 2**31 - 1),
       snap=st.booleans())
def test_property_valid(d, n, scale, wfac, seed, snap):
    rng = np.random.default_rng(seed)
    p = rng.random((n, d))
    if snap:  # points on a coarse lattice: co-circular sets, collinear runs and duplicates
        p = np.round(p * 4) / 4
    p = p * scale + scale
    spacing = scale * n ** (-1.0 / d)
    w = rng.random(n) * wfac * spacing ** 2
    uniq = np.unique(p, axis=0)
    if len(uniq) < d + 1 or np.linalg.matrix_rank(uniq - uniq.mean(0), tol=1e-9 * scale) < d:
        with pytest.raises(ValueError, match="points"):
            tigeom.weighted_delaunay(p, w)
        return
    tri = tigeom.weighted_delaunay(p, w)
    check_valid(tri, tol=1e-8)
    if not snap:
        lower, hidden = lifted_lower_hull(p, w)
        assert canon(tri.simplices) == canon(lower)


def test_lattice_3d_cospherical_wrapping_regression():
    # Five co-spherical lattice points next to the hull: the hull wrapping once decided their tie
    # with a wrong sign (a predicate sorted its caller's indices in place), giving both
    # triangulations of the five points at once (volume 0.3047 against the hull's 0.2786).
    rng = np.random.default_rng(0)
    p = np.round(rng.random((11, 3)) * 4) / 4 + 1.0
    tri = tigeom.weighted_delaunay(p, np.zeros(11))
    check_valid(tri, tol=1e-8)
    # dyadic coordinates: every kernel predicate is exact, so no cell needs the host's fallback
    assert tri.stats["cells_recomputed_exactly"] == 0


@pytest.mark.parametrize("d", [2, 3])
def test_conflict_predicate_matches_exact_on_ties(d):
    """The kernels' in-power-sphere predicate, called with unsorted indices on co-spherical
    lattice points (exact zeros, decided by the symbolic perturbation), agrees with the host's
    exact rational predicate."""
    import taichi as ti

    from tigeom._core import device as _device
    from tigeom.delaunay import _kernels as K

    tigeom.runtime.ensure_init()
    rng = np.random.default_rng(3)
    p = np.round(rng.random((12, d)) * 2) / 2
    w = np.zeros(12)
    ex = Exact(p, w)
    tuples = []
    for _ in range(400):
        t = rng.choice(12, d + 2, replace=False)
        if ex.orient(sorted(t[:-1])) != 0:
            tuples.append(t)
    tuples = np.array(tuples, np.int32)

    @ti.kernel
    def run(P: K.nd_f64_2, W: K.nd_f64, T: K.nd_i32_2, out: K.nd_i32):
        for r in range(T.shape[0]):
            S = ti.Vector.zero(ti.i32, d)
            for a in ti.static(range(d)):
                S[a] = T[r, a + 1]
            out[r] = 1 if K.conflict_exact(P, W, T[r, 0], S, T[r, d + 1], d) else 0

    out = _device.zeros((len(tuples),), np.int32)
    run(_device.upload(p), _device.upload(w), _device.upload(tuples), out)
    got = _device.fetch(out)
    want = np.array([ex.conflict(int(t[0]), [int(x) for x in t[1:-1]], int(t[-1])) for t in tuples])
    ties = np.array([np.linalg.det(np.column_stack([p[t], (p[t] ** 2).sum(1), np.ones(d + 2)])) == 0
                     for t in tuples])
    assert ties.sum() >= 20, "the sample should contain exact ties"
    assert np.array_equal(got.astype(bool), want)


@pytest.mark.parametrize("points,weights,match", [
    (np.zeros((5, 4)), None, "points: expected shape"),
    (np.zeros(5), None, "points: expected a 2-dimensional"),
    (np.array([[0, 0], [1, 0], [np.nan, 1]]), None, "points: contains 1 NaN"),
    (np.random.default_rng(0).random((6, 2)), np.ones(5), "weights: expected shape"),
    (np.random.default_rng(0).random((6, 2)), np.array([0, 0, 0, np.inf, 0, 0]), "weights: contains"),
    (np.array([[0, 0], [1, 1], [0, 0], [1, 1]]), None, "at least 3 distinct"),
    (np.array([[0, 0], [1, 1], [2, 2], [3, 3]]), None, "one line"),
    (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [2, 3, 0]]), None, "one plane"),
])
def test_bad_input(points, weights, match):
    with pytest.raises(ValueError, match=match):
        tigeom.weighted_delaunay(points, weights)


def test_wrong_type():
    with pytest.raises(TypeError):
        tigeom.weighted_delaunay(np.array([["a", "b"]] * 4))


def test_device_array_path_on_cpu(monkeypatch):
    """The GPU code path (Taichi ndarrays instead of numpy, GPU worker counts) run on the CPU, so
    CI covers it: same output as the numpy path, including inputs whose cells all lie outside the
    clipping box (empty cell lists, once an invalid zero-size ndarray on CUDA)."""
    rng = np.random.default_rng(1)
    cases = [rng.random((40, 2)), rng.random((30, 3)), np.round(rng.random((11, 3)) * 4) / 4]
    heavy = rng.random((5, 3))
    cases.append((heavy, rng.random(5) * 10.0))
    want = [tigeom.weighted_delaunay(*(c if isinstance(c, tuple) else (c,))) for c in cases]
    monkeypatch.setattr(tigeom.runtime, "on_gpu", lambda: True)
    for c, ref in zip(cases, want):
        got = tigeom.weighted_delaunay(*(c if isinstance(c, tuple) else (c,)))
        check_valid(got, tol=1e-8)
        assert np.array_equal(got.simplices, ref.simplices) and np.array_equal(got.hidden, ref.hidden)


def test_cells_recomputed_on_the_host_replace_their_rows(monkeypatch):
    """The host's exact path: cells reported inconsistent are recomputed with rational
    arithmetic and spliced into the kernels' CSR lists; the triangulation is the same."""
    from tigeom.delaunay.assembly import CellLists

    rng = np.random.default_rng(3)
    for p in (rng.random((60, 2)), rng.random((50, 3))):
        ref = tigeom.weighted_delaunay(p)
        orig = CellLists.check
        calls = []

        def flag_some(self, K):
            calls.append(1)
            return np.array([0, 7, 19]) if len(calls) == 1 else orig(self, K)

        monkeypatch.setattr(CellLists, "check", flag_some)
        got = tigeom.weighted_delaunay(p)
        monkeypatch.setattr(CellLists, "check", orig)
        assert got.stats["cells_recomputed_exactly"] == 3
        # the same simplices and faces (a recomputed cell lists its rows in sorted order)
        assert canon(got.simplices) == canon(ref.simplices) and canon(got.faces) == canon(ref.faces)
        assert len(got.simplices) == len(ref.simplices) and len(got.faces) == len(ref.faces)


def test_cell_with_many_vertices_is_rerun_with_more_room():
    """The centre of 300 points on a sphere has a cell with ~600 vertices, beyond the first run's
    scratch capacity: it is rerun alone with more room, and its rows join the others'."""
    rng = np.random.default_rng(4)
    q = rng.normal(size=(300, 3))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    p = np.vstack([[[0.0, 0.0, 0.0]], q])
    tri = tigeom.weighted_delaunay(p)
    assert tri.stats["retries"] >= 1
    lower, hidden = lifted_lower_hull(p, np.zeros(len(p)))
    assert canon(tri.simplices) == canon(lower) and not tri.hidden.any()
    check_valid(tri)


def _simplex_set(tri):
    return set(map(tuple, np.sort(tri.simplices, axis=1).tolist()))


@pytest.mark.parametrize("d", [2, 3])
def test_any_finite_input_scale_gives_the_same_triangulation(d):
    """Points scaled by anything from 1e-300 to 1e300 (and weights by its square, where that is
    a float64) give the triangulation of the unscaled input: the input is brought to unit size
    internally by an exact power-of-two scaling."""
    rng = np.random.default_rng(11)
    p = rng.random((300, d))
    w = rng.random(300) * (0.5 * 300 ** (-1.0 / d)) ** 2
    ref, refw = _simplex_set(tigeom.weighted_delaunay(p)), _simplex_set(tigeom.weighted_delaunay(p, w))
    assert len(ref) > 300 and refw != ref
    for s in (1e-300, 2.0 ** -1000, 1e-150, 1e-100, 1e-40, 1e12, 1e40, 1e60, 1e150, 2.0 ** 1000, 1e300):
        tri = tigeom.weighted_delaunay(p * s)
        assert _simplex_set(tri) == ref, s
        assert tri.points[0, 0] == p[0, 0] * s  # the caller's points, not the scaled copy
        if 1e-150 <= s <= 1e150:
            assert _simplex_set(tigeom.weighted_delaunay(p * s, w * s * s)) == refw, s
    off = tigeom.weighted_delaunay(p * 1e-100 + 1e-95)  # an offset of 1e5 extents
    assert _simplex_set(off) == ref


def test_weights_too_large_for_the_extent_are_refused():
    p = np.random.default_rng(0).random((20, 2)) * 1e-200
    with pytest.raises(ValueError, match="weights: too large"):
        tigeom.weighted_delaunay(p, np.full(20, 1e300))


def test_cpu_cell_pass_gives_every_thread_several_taichi_tasks(monkeypatch):
    """Taichi's CPU backend splits a parallel loop into tasks of ``CPU_TASK`` iterations, so the
    cell kernels' worker loop must be several tasks long per thread or a core sits idle."""
    import os

    from tigeom import runtime
    from tigeom._core.launch import CPU_TASK
    from tigeom.delaunay import cells

    if runtime.on_gpu():
        pytest.skip("the CPU schedule only")
    seen = []
    real = cells._launch

    def spy(K, s, ids, nw, *rest):
        seen.append((s.n_live if ids is None else len(ids), nw))  # None: every live cell
        return real(K, s, ids, nw, *rest)

    monkeypatch.setattr(cells, "_launch", spy)
    n = 4 * CPU_TASK * (os.cpu_count() or 1) + 100
    p = np.random.default_rng(5).random((n, 2))
    tri = tigeom.weighted_delaunay(p)
    assert len(tri.simplices) > 0
    ids, nw = seen[0]
    assert ids == n
    assert nw >= 2 * CPU_TASK * (os.cpu_count() or 1)


def test_neighbour_check_flags_both_cells_of_a_disagreement(monkeypatch):
    """The certification's check: a simplex that one of its cells lacks, an entry that the
    simplex's smallest vertex does not list, and an owner row missing while the other cells
    list it each mark the two cells involved; consistent lists mark none."""
    from tigeom.delaunay import _kernels as K
    from tigeom.delaunay.assembly import CellLists
    from tigeom._core import device as _device

    seen = {}
    orig = CellLists.assemble

    def grab(self, *args):
        seen["cells"] = self
        return orig(self, *args)

    monkeypatch.setattr(CellLists, "assemble", grab)
    tigeom.weighted_delaunay(np.random.default_rng(4).random((60, 3)))
    c = seen["cells"]
    assert len(c.check(K)) == 0
    lst = np.array(_device.fetch(c.lst, c.rows))
    off = np.array(_device.fetch(c.off)).astype(np.int64)
    rows = {i: [tuple(int(v) for v in r) for r in lst[off[i]:off[i + 1]]] for i in range(c.n)}
    # a cell i whose list holds a simplex owned by a smaller vertex o = S[0] (i past the first
    # few labels, so that smaller vertices outside S remain for the extra entry below)
    i, S = next((i, r) for i in rows for r in rows[i] if r[0] < i and i >= 10)
    o = S[0]

    def check_with(changes):
        for k, v in changes.items():
            c.replace(k, v)
        bad = set(c.check(K).tolist())
        for k in changes:
            c.replace(k, rows[k])
        assert len(c.check(K)) == 0
        return bad

    assert {i, o} <= check_with({i: [r for r in rows[i] if r != S]})
    owner_row = tuple(sorted(set(S[1:]) | {i}))
    assert {o, i} <= check_with({o: [r for r in rows[o] if r != owner_row]})
    extra = next(e for e in (tuple(sorted({v, *S[1:]})) for v in range(i) if v not in S) if e not in rows[i])
    assert {i, extra[0]} <= check_with({i: rows[i] + [extra]})


@pytest.mark.parametrize("d", [2, 3])
def test_outputs_are_in_the_input_indices_whatever_the_input_order(d):
    """The kernels work on the points relabelled in grid order; the simplices, faces and hidden
    mask come back in the caller's indices: a shuffled input gives the shuffled triangulation,
    heavy points hide the same neighbours, and a duplicate keeps its tie rule (smaller index)."""
    rng = np.random.default_rng(21)
    n = 400
    p = rng.random((n, d))
    w = rng.random(n) * (0.5 * n ** (-1.0 / d)) ** 2
    w[:5] = 0.05  # heavy: some neighbours are hidden
    p[7] = p[3]  # a twin of the heavier point 3: hidden
    p[9], w[9] = p[8], w[8]  # equal twins: the smaller index (8) stays
    q = rng.permutation(n)
    t8, t9 = np.flatnonzero(q == 8)[0], np.flatnonzero(q == 9)[0]
    q[[t8, t9]] = q[[min(t8, t9), max(t8, t9)]]  # 8 before 9 in b too: the same twin stays
    a = tigeom.weighted_delaunay(p, w)
    b = tigeom.weighted_delaunay(p[q], w[q])  # b's index k is a's index q[k]
    assert a.hidden.sum() > 5 and a.hidden[7] and a.hidden[9] and not a.hidden[8]
    np.testing.assert_array_equal(b.hidden, a.hidden[q])
    assert {tuple(sorted(q[s])) for s in b.simplices} == _simplex_set(a)
    assert {tuple(sorted(q[f])) for f in b.faces} == {tuple(f) for f in a.faces}
    assert (np.diff(a.faces, axis=1) > 0).all()  # each face row ascending
    check_valid(a)
    check_valid(b)


def test_cells_with_many_faces_stay_on_the_device():
    """Sparse points next to a dense surface (DMesh's real and imaginary points) have cells with
    many faces, where one clip can remove a region around more planes than the kernel's bit masks
    hold: such a clip takes the kernel's quadratic path, not the exact host one."""
    from tigeom.dmesh import sampling

    rng = np.random.default_rng(0)
    real = sampling.torus_samples(3000, rng=rng)
    p = np.concatenate([real, rng.uniform(real.min(0), real.max(0), (150, 3))])
    tri = tigeom.weighted_delaunay(p)
    assert tri.stats["cells_recomputed_exactly"] == 0
    lower, hidden = lifted_lower_hull(p, np.zeros(len(p)))
    assert canon(tri.simplices) == canon(lower) and not tri.hidden.any()


@pytest.mark.parametrize("d", [2, 3])
def test_elongated_input_whose_wrap_hierarchy_is_deep(d):
    """A long thin point set: its grid is 1025 cells long, so the gift wrap's box hierarchy has 11
    levels and its Morton positions need more than 32 bits in 3D; many simplices are wrapped."""
    from tigeom.spatial.grid import box_grid_params

    rng = np.random.default_rng(5)
    n = 4000 if d == 3 else 3000
    p = rng.random((n, d)) * np.array([1024.0] + [1.0] * (d - 1))
    lo, hi = p.min(0), p.max(0)
    pad = np.zeros(3)
    _, _, res = box_grid_params(np.r_[lo, pad][:3], np.r_[hi, pad][:3], n, 2.0 if d == 2 else 3.0)
    assert res.max() == 1025
    tri = tigeom.weighted_delaunay(p)
    # scipy's Delaunay (the lifted hull's facet test loses precision with paraboloid heights 1e6)
    assert canon(tri.simplices) == canon(Delaunay(p).simplices)
    assert tri.stats["wrapped"] > 100


@pytest.mark.parametrize("bits", [4, 6, 12])
def test_device_key_sets_hold_each_key_once(bits):
    """The hull rounds' key sets (atomic-min linear probing): after inserting keys with many
    repeats, every distinct key lies in exactly one slot and is found, other keys are not, and a
    rehash into a larger set keeps them. Small sets make long probe runs and many displacements."""
    from tigeom._core import device as D
    from tigeom.delaunay import _hull_kernels as H

    rng = np.random.default_rng(bits)
    distinct = rng.choice(2 ** 62, (1 << bits) // 2, replace=False).astype(np.int64)
    keys = np.concatenate([distinct[rng.integers(0, len(distinct), 5 * len(distinct))], distinct])
    keys = np.append(keys, H.NO_KEY)  # skipped
    T = D.empty((1 << bits,), np.int64)
    H.fill64(T, H.EMPTY)
    H.set_insert(D.upload(keys), len(keys), T, bits)
    table = D.fetch(T)
    held = np.sort(table[table != H.EMPTY])
    np.testing.assert_array_equal(held, np.sort(distinct))
    absent = rng.choice(2 ** 62, 50).astype(np.int64)
    probe = np.concatenate([distinct, absent[~np.isin(absent, distinct)]])
    slot = D.empty((len(probe),), np.int32)
    H.set_lookup(D.upload(probe), len(probe), T, bits, slot)
    slot = D.fetch(slot)
    np.testing.assert_array_equal(table[slot[:len(distinct)]], distinct)
    assert np.all(slot[len(distinct):] == -1)
    T2 = D.empty((1 << (bits + 2),), np.int64)
    H.fill64(T2, H.EMPTY)
    H.set_rehash(T, T2, bits + 2)
    t2 = D.fetch(T2)
    np.testing.assert_array_equal(np.sort(t2[t2 != H.EMPTY]), np.sort(distinct))


@pytest.mark.parametrize("d", [2, 3])
def test_device_face_keys_are_equal_exactly_for_equal_faces(d):
    """Face keys from compact vertex ids (21 bits each in 3D): equal rows get equal keys and
    different rows different ones, with vertex indices far beyond 2^21, the ids given in two
    batches."""
    from tigeom._core import device as D
    from tigeom.delaunay import _hull_kernels as H

    rng = np.random.default_rng(2)
    n = 5_000_000
    verts = rng.choice(n, 300, replace=False)
    rows = np.sort(verts[rng.integers(0, 300, size=(5000, d))], axis=1)
    rows = rows[np.all(np.diff(rows, axis=1) > 0, axis=1)]  # faces: distinct vertices
    ids = D.empty((n,), np.int32)
    H.fill32(ids, -1)
    claim, counter = D.zeros((n,), np.int32), D.zeros((1,), np.int32)
    keys = []
    for part in (rows[:2000], rows[2000:]):
        dev = D.upload(np.column_stack([part, np.zeros(len(part), np.int64)]).astype(np.int32))
        H.assign_ids(dev, len(part), d, ids, claim, counter)
        f, o, k = D.empty((len(part), d), np.int32), D.empty((len(part),), np.int32), D.empty((len(part),), np.int64)
        H.split_open(dev, len(part), ids, f, o, k, d)
        np.testing.assert_array_equal(D.fetch(f), part)
        keys.append(D.fetch(k))
    keys = np.concatenate(keys)
    assert int(D.fetch(counter)[0]) == len(np.unique(rows))  # one id per vertex met
    _, inv = np.unique(rows, axis=0, return_inverse=True)
    _, kinv = np.unique(keys, return_inverse=True)
    groups = inv.max() + 1
    assert kinv.max() + 1 == groups  # as many distinct keys as distinct rows ...
    assert len(np.unique(np.column_stack([inv.ravel(), kinv.ravel()]), axis=0)) == groups  # ... matched one to one


@pytest.mark.parametrize("d", [2, 3])
def test_hull_rounds_grow_their_output_arrays(d, monkeypatch):
    """The hull rounds write into arrays and a key set grown as needed: starting them at one row
    and a set that fills after the open faces gives the same triangulation."""
    from tigeom.delaunay import hull

    p = np.random.default_rng(31).random((3000, d))
    ref = tigeom.weighted_delaunay(p)
    grown = []
    rows = hull._Rows

    class OneRow(rows):
        MIN_ROWS = 1

        def __init__(self, cap, cols):
            super().__init__(1, cols)

        def reserve(self, m):
            before = self.a.shape[0]
            at = super().reserve(m)
            grown.append(self.a.shape[0] > before)
            return at

    class Tight(hull._Known):
        SLACK = 1.1  # full after the open faces: the first round's new faces make it grow

        def reserve(self, m):
            full = self.count
            super().reserve(m)
            grown.append(self.rehashes if full else 0)

    monkeypatch.setattr(hull, "_Rows", OneRow)
    monkeypatch.setattr(hull, "_Known", Tight)
    got = tigeom.weighted_delaunay(p)
    assert sum(g is True for g in grown) >= 2  # the output arrays grew ...
    assert max(g for g in grown if not isinstance(g, bool)) >= 1  # ... and the set of known faces
    np.testing.assert_array_equal(got.simplices, ref.simplices)
    np.testing.assert_array_equal(got.faces, ref.faces)


@pytest.mark.parametrize("mode", ["blocked", "recursive"])
def test_hull_round_scans_on_every_path(mode, monkeypatch):
    """The hull rounds' scans run serially on a CPU, blocked in one kernel on a GPU, and by the
    scan's own recursion beyond its one-launch size: forced here on the CPU, each gives the same
    triangulation."""
    from tigeom._core.scan import ExclusiveScan

    p = np.random.default_rng(8).random((2000, 3))
    ref = tigeom.weighted_delaunay(p)
    monkeypatch.setattr(ExclusiveScan, "serial", lambda self, n: False)
    if mode == "recursive":
        monkeypatch.setattr(ExclusiveScan, "one_launch", property(lambda self: False))
    got = tigeom.weighted_delaunay(p)
    np.testing.assert_array_equal(got.simplices, ref.simplices)
    np.testing.assert_array_equal(got.faces, ref.faces)
