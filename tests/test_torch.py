"""tigeom.torch: autograd functions against torch.autograd.gradcheck (f64, CPU), the MeshSDF
gradient of meshsdf, dtypes, devices, non-contiguous inputs and bad input."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import tigeom
import tigeom.torch as tt
from helpers import render_scene
from tigeom import dmesh
from tigeom.dmesh import losses
from tigeom.sim import Flow2D, Flow3D, meshes, polygons

# near ties of DMesh's arg-min choices need a small step (as in test_dmesh)
DMESH_CHECK = dict(eps=1e-7, atol=1e-6, rtol=1e-4)


def _ellipsoid_grid(n=9, d=3):
    x = torch.linspace(-1, 1, n, dtype=torch.float64)
    X = torch.meshgrid(*([x] * d), indexing="ij")
    r2 = sum(c * c * s for c, s in zip(X, (1.0, 1.3, 0.8)))
    return (r2.sqrt() - 0.6), float(x[1] - x[0])


@pytest.mark.parametrize("d", [2, 3])
def test_marching_gradcheck_dtype_and_device(d):
    vals, h = _ellipsoid_grid(9 if d == 3 else 15, d)
    fn = tt.marching_cubes if d == 3 else tt.marching_squares
    v, e = fn(vals.requires_grad_(True), 0.0, h, -1.0)
    assert v.dtype == torch.float64 and v.device == vals.device and v.requires_grad
    assert e.dtype == torch.int64 and not e.requires_grad and e.shape[1] == d
    ref = (tigeom.marching_cubes if d == 3 else tigeom.marching_squares)(vals.detach().numpy(), 0.0, h, -1.0)
    np.testing.assert_array_equal(v.detach().numpy(), ref.vertices)
    assert torch.autograd.gradcheck(lambda t: fn(t, 0.0, h, -1.0)[0], (vals.detach().requires_grad_(True),))
    # f32 in, f32 out; no requires_grad in, none out
    v32, _ = fn(vals.detach().float(), 0.0, h, -1.0)
    assert v32.dtype == torch.float32 and not v32.requires_grad


def test_marching_cubes_accepts_non_contiguous_values():
    vals, h = _ellipsoid_grid(9)
    t = vals.permute(2, 1, 0).requires_grad_(True)  # a non-contiguous view
    assert not t.is_contiguous()
    v, _ = tt.marching_cubes(t, 0.0, h, -1.0)
    v.sum().backward()
    g = tigeom.marching_cubes(t.detach().contiguous().numpy(), 0.0, h, -1.0)
    np.testing.assert_allclose(t.grad.numpy(), g.vjp(np.ones_like(g.vertices)))


def test_marching_reads_the_tensor_in_place_and_the_host_path_agrees(monkeypatch):
    """A CPU tensor on the CPU runtime goes to the kernels as it is (same memory) and the kernels
    write the outputs into tensors; the host-array path (taken for a tensor on another device
    than the kernels) gives the same result."""
    vals, h = _ellipsoid_grid(9)
    vals = vals.requires_grad_(True)
    seen = []
    real = tt._iso._Marcher.run

    def spy(self, v, *a, **k):
        out = real(self, v, *a, **k)
        seen.append((v, out["verts"]))
        return out

    monkeypatch.setattr(tt._iso._Marcher, "run", spy)
    v, f = tt.marching_cubes(vals, 0.0, h, -1.0)
    (v ** 2).sum().backward()
    assert isinstance(seen[0][0], torch.Tensor) and seen[0][0].data_ptr() == vals.data_ptr()
    assert isinstance(seen[0][1], torch.Tensor)
    g_direct = vals.grad.clone()
    vals.grad = None
    monkeypatch.setattr(tt, "_on_runtime_device", lambda t: False)
    v2, f2 = tt.marching_cubes(vals, 0.0, h, -1.0)
    (v2 ** 2).sum().backward()
    assert not isinstance(seen[1][0], torch.Tensor)  # the host path hands the kernels a host copy
    assert torch.equal(v, v2) and torch.equal(f, f2)
    torch.testing.assert_close(vals.grad, g_direct, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dim", [2, 3])
def test_in_place_extraction_welds_vertices_on_grid_nodes_as_the_numpy_api(dim):
    """Grid values exactly at the level put vertices on nodes; the tensor path welds them as the
    numpy API does (same vertices, elements and vjp)."""
    n = 7
    ax = torch.arange(n, dtype=torch.float64) - 3.0
    grids = torch.meshgrid(*([ax] * dim), indexing="ij")
    vals = (sum(g ** 2 for g in grids) - 4.0).requires_grad_(True)  # radius 2 in node units: nodes on it
    assert (vals.detach() == 0).any()
    fn = tt.marching_cubes if dim == 3 else tt.marching_squares
    ref = (tigeom.marching_cubes if dim == 3 else tigeom.marching_squares)(vals.detach().numpy(), 0.0, 1 / 3, -1.0)
    v, e = fn(vals, 0.0, 1 / 3, -1.0)
    np.testing.assert_array_equal(v.detach().numpy(), ref.vertices)
    np.testing.assert_array_equal(e.numpy(), ref.faces if dim == 3 else ref.segments)
    g = torch.randn(v.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (v * g).sum().backward()
    np.testing.assert_allclose(vals.grad.numpy(), ref.vjp(g.numpy()), rtol=1e-13, atol=1e-13)


def test_repeated_in_place_extractions_follow_their_own_grid_and_arguments():
    """Per-signature state (checked arguments, layout, constant arrays) and the reused scratch
    arrays never leak from one call into another: grids of other sizes, spacings, origins and
    levels, interleaved, each match the numpy API; the gradient is a tensor of its own."""
    rng = np.random.default_rng(3)
    cases = [(9, 0.25, -1.0, 0.0), (6, 0.5, 0.3, 0.1), (9, 0.2, -1.0, 0.0), (11, 0.25, -1.0, -0.05), (6, 0.5, 0.3, 0.1)]
    for n, spc, org, level in cases:
        vals, _ = _ellipsoid_grid(n)
        vals = (vals + 0.01 * torch.as_tensor(rng.standard_normal(vals.shape))).requires_grad_(True)
        ref = tigeom.marching_cubes(vals.detach().numpy(), level, spc, org)
        v, f = tt.marching_cubes(vals, level, spc, org)
        np.testing.assert_array_equal(v.detach().numpy(), ref.vertices)
        np.testing.assert_array_equal(f.numpy(), ref.faces)
        g = torch.as_tensor(rng.standard_normal(tuple(v.shape)))
        (v * g).sum().backward()
        assert vals.grad._base is None and vals.grad.shape == vals.shape
        np.testing.assert_allclose(vals.grad.numpy(), ref.vjp(g.numpy()), rtol=1e-13, atol=1e-13)


def test_backward_prepared_in_the_forward_runs_once_per_graph():
    """The vjp's launch and zeroed gradient are prepared in the forward (once the kernel has
    run with that signature) and used by the first backward: repeated extractions, a second
    backward through the same graph (retain_graph: fresh zeros, not added twice), a gradient
    of another dtype and an extraction whose output gets no gradient all match the numpy vjp."""
    rng = np.random.default_rng(5)
    vals, _ = _ellipsoid_grid(9)
    vals = (vals + 0.01 * torch.as_tensor(rng.standard_normal(vals.shape))).requires_grad_(True)
    ref = tigeom.marching_cubes(vals.detach().numpy(), 0.0, 0.25, -1.0)
    for _ in range(3):  # the first call prepares the launch plan, the later ones bind it
        v, _f = tt.marching_cubes(vals, 0.0, 0.25, -1.0)
        g = torch.as_tensor(rng.standard_normal(tuple(v.shape)))
        loss = (v * g).sum()
        for _k in range(2):
            vals.grad = None
            loss.backward(retain_graph=True)
            np.testing.assert_allclose(vals.grad.numpy(), ref.vjp(g.numpy()), rtol=1e-13, atol=1e-13)
    v, _f = tt.marching_cubes(vals, 0.0, 0.25, -1.0)
    g32 = torch.ones(tuple(v.shape), dtype=torch.float32)  # converted to the vertices' dtype
    vals.grad = None
    torch.autograd.backward(v, g32)
    np.testing.assert_allclose(vals.grad.numpy(), ref.vjp(np.ones(tuple(v.shape))), rtol=1e-13, atol=1e-13)
    v, _f = tt.marching_cubes(vals, 0.0, 0.25, -1.0)
    vals.grad = None
    (v[:, 0] * 0 + 1).sum().backward()  # only the first column gets a (zero-slope) gradient
    np.testing.assert_allclose(vals.grad.numpy(), 0.0, atol=1e-13)


def test_broadcast_and_transposed_vertex_gradients_are_read_in_place():
    """The vjp reads the incoming gradient through its strides: the broadcast gradient of a sum
    (strides 0) and a transposed one give the numpy vjp of the same values."""
    rng = np.random.default_rng(7)
    vals, _ = _ellipsoid_grid(9)
    vals = (vals + 0.01 * torch.as_tensor(rng.standard_normal(vals.shape))).requires_grad_(True)
    ref = tigeom.marching_cubes(vals.detach().numpy(), 0.0, 0.25, -1.0)
    for _ in range(2):  # the first call goes through Taichi, the second through the prepared launch
        v, _f = tt.marching_cubes(vals, 0.0, 0.25, -1.0)
        vals.grad = None
        v.sum().backward()
        np.testing.assert_allclose(vals.grad.numpy(), ref.vjp(np.ones(tuple(v.shape))), rtol=1e-13, atol=1e-13)
        v, _f = tt.marching_cubes(vals, 0.0, 0.25, -1.0)
        W = torch.as_tensor(rng.standard_normal((3, len(v))))
        vals.grad = None
        (v.T * W).sum().backward()  # the gradient reaching v is W.T, strides (1, V)
        np.testing.assert_allclose(vals.grad.numpy(), ref.vjp(W.T.numpy()), rtol=1e-13, atol=1e-13)


def test_side_stream_work_is_ordered_around_the_kernels(monkeypatch):
    """Under a side CUDA stream the forward and the backward each run on the default stream (where
    Taichi launches) after the side stream's queued work, and the side stream then waits for
    theirs; stand-in streams record the order on the CPU (the device run of
    benchmarks/bench_torch.py checks the real one)."""
    import contextlib

    events = []

    class Stream:
        def __init__(self, name):
            self.name = name

        def wait_stream(self, other):
            events.append(f"{self.name} waits for {other.name}")

    side, default = Stream("side"), Stream("default")

    @contextlib.contextmanager
    def on(stream):
        events.append(f"on {stream.name}")
        yield
        events.append(f"off {stream.name}")

    monkeypatch.setattr(tt, "_side_stream", lambda args: side)
    monkeypatch.setattr(torch.cuda, "default_stream", lambda device=None: default)
    monkeypatch.setattr(torch.cuda, "stream", on)
    vals, _ = _ellipsoid_grid(9)
    vals.requires_grad_(True)
    ref = tigeom.marching_cubes(vals.detach().numpy(), 0.0, 0.25, -1.0)
    order = ["default waits for side", "on default", "off default", "side waits for default"]
    v, f = tt.marching_cubes(vals, 0.0, 0.25, -1.0)
    assert events == order
    events.clear()
    v.sum().backward()
    assert events == order
    np.testing.assert_array_equal(v.detach().numpy(), ref.vertices)
    np.testing.assert_allclose(vals.grad.numpy(), ref.vjp(np.ones(tuple(v.shape))), rtol=1e-13, atol=1e-13)
    events.clear()
    P = torch.tensor(np.random.default_rng(2).random((12, 2)), requires_grad=True)
    tt.face_probabilities(P, None, torch.full((12,), 0.5), dmesh.candidate_faces(P.detach().numpy()),
                          method="minball", sharpness=20.0).sum().backward()
    assert events == order * 2


def test_only_tensors_on_the_kernels_device_are_read_in_place(monkeypatch):
    """On a CUDA runtime Taichi runs on the first CUDA device: tensors there are read in place,
    tensors on another GPU or on the CPU go through the host."""
    from types import SimpleNamespace

    def on(dev):
        return tt._on_runtime_device(SimpleNamespace(device=torch.device(dev)))

    assert on("cpu") and not on("cuda:0")  # this CPU runtime
    monkeypatch.setattr(tigeom.runtime, "on_gpu", lambda: True)
    assert on("cuda:0") and not on("cuda:1") and not on("cpu")


class Ball(torch.nn.Module):
    """s(x) = |x - c| - r: a distance field with parameters."""

    def __init__(self, c, r):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c, dtype=torch.float64))
        self.r = torch.nn.Parameter(torch.tensor(r, dtype=torch.float64))

    def forward(self, x):
        return (x - self.c).norm(dim=1) - self.r


@pytest.mark.parametrize("d", [2, 3])
def test_meshsdf_carries_the_normal_motion_into_the_parameters(d):
    """MeshSDF: dv/dtheta = -grad s ds/dtheta / |grad s|^2. For a ball that is dv/dr = n and
    dv/dc = n n^T, exactly, at every vertex; the enclosed area (volume) then grows with r at the
    rate of the perimeter (surface area), up to the discretisation."""
    ball = Ball([0.1, -0.05, 0.02][:d], 0.55)
    bounds = ((-1.0,) * d, (1.0,) * d)
    v, e = tt.meshsdf(ball, bounds, resolution=33 if d == 3 else 65)
    ref = (tigeom.marching_cubes if d == 3 else tigeom.marching_squares)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 33 if d == 3 else 65)] * d, indexing="ij"), -1)
    direct = ref(np.linalg.norm(grid - ball.c.detach().numpy(), axis=-1) - 0.55, 0.0,
                 2 / (32 if d == 3 else 64), -1.0)
    np.testing.assert_allclose(v.detach().numpy(), direct.vertices, atol=1e-12)
    n = (v.detach() - ball.c.detach()) / (v.detach() - ball.c.detach()).norm(dim=1, keepdim=True)
    w = torch.randn(v.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (v * w).sum().backward()
    np.testing.assert_allclose(ball.r.grad.item(), (w * n).sum().item(), rtol=1e-10)
    np.testing.assert_allclose(ball.c.grad.numpy(), torch.einsum("vi,vi,vj->j", w, n, n).numpy(), rtol=1e-10)
    # enclosed measure against the boundary measure
    ball.zero_grad()
    v, e = tt.meshsdf(ball, bounds, resolution=33 if d == 3 else 65)
    if d == 2:
        a, b = v[e[:, 0]], v[e[:, 1]]
        enclosed = 0.5 * (a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1]).sum().abs()
        boundary = (b - a).norm(dim=1).sum()
    else:
        a, b, c = v[e[:, 0]], v[e[:, 1]], v[e[:, 2]]
        enclosed = (torch.linalg.cross(a, b) * c).sum().abs() / 6
        boundary = 0.5 * torch.linalg.cross(b - a, c - a).norm(dim=1).sum()
    enclosed.backward()
    # measured 0.03% (2D, 65 nodes) and 0.32% (3D, 33 nodes): vertex normals against face normals
    assert abs(ball.r.grad.item() / boundary.item() - 1) < (1e-3 if d == 2 else 5e-3), (ball.r.grad, boundary)


@pytest.mark.parametrize("method", ["wdt", "minball"])
def test_face_probabilities_gradcheck(method):
    rng = np.random.default_rng(7)
    p = rng.random((24, 2))
    w = rng.random(24) * 2e-3
    r = rng.uniform(0.2, 1.0, 24)
    faces = dmesh.candidate_faces(p, triangulation=tigeom.weighted_delaunay(p, w) if method == "wdt" else None)
    P, W, R = (torch.tensor(a, requires_grad=True) for a in (p, w, r))
    probs = tt.face_probabilities(P, W if method == "wdt" else None, R, faces, method=method, sharpness=20.0)
    np.testing.assert_allclose(probs.detach().numpy(), dmesh.face_probabilities(
        p, w if method == "wdt" else None, r, faces, method=method, sharpness=20.0).probs)
    if method == "wdt":
        assert torch.autograd.gradcheck(
            lambda a, b, c: tt.face_probabilities(a, b, c, faces, method=method, sharpness=20.0), (P, W, R),
            **DMESH_CHECK)
    else:
        assert torch.autograd.gradcheck(
            lambda a, c: tt.face_probabilities(a, None, c, faces, method=method, sharpness=20.0), (P, R),
            **DMESH_CHECK)


def test_expected_chamfer_gradcheck():
    rng = np.random.default_rng(41)
    p = rng.random((20, 2))
    faces = dmesh.candidate_faces(p, k=4)
    pr = rng.uniform(0.05, 0.95, len(faces))
    tg = losses.Targets(rng.random((50, 2)))
    P, PR = torch.tensor(p, requires_grad=True), torch.tensor(pr, requires_grad=True)
    val = tt.expected_chamfer(P, faces, PR, tg)
    assert val.dim() == 0 and val.item() == pytest.approx(losses.expected_chamfer(p, faces, pr, tg).value)
    assert torch.autograd.gradcheck(lambda a, b: tt.expected_chamfer(a, faces, b, tg), (P, PR), **DMESH_CHECK)


def _dmesh_case(seed=5, n=30):
    rng = np.random.default_rng(seed)
    p = rng.random((n, 2))
    w = rng.random(n) * 2e-3
    r = rng.uniform(0.2, 1.0, n)
    faces = dmesh.candidate_faces(p, k=5)
    return p, w, r, faces, rng.random((60, 2))


@pytest.mark.parametrize("method", ["wdt", "minball"])
def test_dmesh_functions_read_tensors_in_place_and_match_the_host_path(monkeypatch, method):
    """Tensors where the kernels run go to them as they are: the kernels get tensors (not host
    arrays), the probabilities and the loss come back as tensors written there, faces may be an
    index tensor checked there, and the default sharpness is computed there. Values and
    gradients equal the host-array path's."""
    p, w, r, faces, tgt = _dmesh_case()
    seen = []
    real_eval = dmesh.probabilities.evaluate

    def spy(P, *a, **k):
        seen.append(P)
        return real_eval(P, *a, **k)

    monkeypatch.setattr(dmesh.probabilities, "evaluate", spy)

    def run(face_arg):
        P, W, R = (torch.tensor(a, requires_grad=True) for a in (p, w, r))
        probs = tt.face_probabilities(P, W if method == "wdt" else None, R, face_arg, method=method)
        loss = tt.expected_chamfer(P, face_arg, probs, torch.tensor(tgt)) + (probs ** 2).sum()
        loss.backward()
        return probs.detach(), loss.detach(), P.grad, R.grad, None if method == "minball" else W.grad

    inplace = run(torch.as_tensor(faces))
    assert isinstance(seen[-1], torch.Tensor)
    monkeypatch.setattr(tt, "_on_runtime_device", lambda t: False)
    host = run(faces)
    assert not isinstance(seen[-1], torch.Tensor)
    ref = dmesh.face_probabilities(p, w if method == "wdt" else None, r, faces, method=method)
    np.testing.assert_allclose(inplace[0].numpy(), ref.probs, rtol=1e-12, atol=1e-15)
    for a, b in zip(inplace, host):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_expected_chamfer_in_place_gradcheck_with_index_tensor_faces():
    p, _, _, faces, tgt = _dmesh_case(11, 20)
    pr = np.random.default_rng(3).uniform(0.05, 0.95, len(faces))
    P, PR = torch.tensor(p, requires_grad=True), torch.tensor(pr, requires_grad=True)
    F, T = torch.as_tensor(faces), torch.tensor(tgt)
    val = tt.expected_chamfer(P, F, PR, T, min_prob=0.1)
    assert val.item() == pytest.approx(losses.expected_chamfer(p, faces, pr, tgt, min_prob=0.1).value, rel=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: tt.expected_chamfer(a, F, b, T, min_prob=0.1), (P, PR),
                                    **DMESH_CHECK)


def test_in_place_dmesh_bad_input_names_the_argument():
    p, w, r, faces, tgt = _dmesh_case()
    P, R = torch.tensor(p), torch.tensor(r)
    F = torch.as_tensor(faces)
    bad = F.clone()
    bad[3, 1] = len(p)
    with pytest.raises(ValueError, match=r"faces: indices must lie in \[0, 30\)"):
        tt.face_probabilities(P, None, R, bad)
    bad[3, 1] = bad[3, 0]
    with pytest.raises(ValueError, match="faces: a row repeats a vertex"):
        tt.face_probabilities(P, None, R, bad)
    with pytest.raises(ValueError, match=r"reals: must lie in \[0, 1\]"):
        tt.face_probabilities(P, None, R + 1, F)
    with pytest.raises(ValueError, match="points: contains NaN"):
        tt.face_probabilities(P * float("nan"), None, R, F)
    with pytest.raises(ValueError, match="sharpness: must be > 0"):
        tt.face_probabilities(P, None, R, F, sharpness=-1.0)
    with pytest.raises(ValueError, match=r"probs: must lie in \[0, 1\]"):
        tt.expected_chamfer(P, F, torch.full((len(faces),), 2.0, dtype=torch.float64), tgt)
    with pytest.raises(ValueError, match="probs: expected"):
        tt.expected_chamfer(P, F, torch.zeros(3, dtype=torch.float64), tgt)
    with pytest.raises(TypeError, match="unexpected keyword 'reech'"):
        tt.expected_chamfer(P, F, torch.zeros(len(faces), dtype=torch.float64), tgt, reech=1.0)


def test_flow_force_gradcheck_2d_and_3d():
    fl2 = Flow2D(size=(0.6, 0.3), resolution=40, viscosity=0.02, inflow_velocity=1.0, tol=1e-12, check_every=100)
    # bodies off the channel's mirror plane: on it, cells equidistant from two faces make the
    # force's derivative one-sided (docs/flow.md)
    v, s = polygons.circle((0.2, 0.153), 0.06, 12)
    V = torch.tensor(v * np.array([1.2, 1.0]), requires_grad=True)
    F = tt.flow_force(fl2, V, torch.as_tensor(s))
    np.testing.assert_allclose(F.detach().numpy(), fl2.solve(V.detach().numpy(), s).force, rtol=1e-9)
    # the solid-fraction ramp is C1: steps of 1e-5 keep the central differences within 1e-4
    assert torch.autograd.gradcheck(lambda t: tt.flow_force(fl2, t, s), (V,), eps=1e-5, atol=1e-7, rtol=1e-4,
                                    fast_mode=True)
    fl3 = Flow3D(size=(0.6, 0.3, 0.3), resolution=30, viscosity=0.02, inflow_velocity=1.0, tol=1e-12,
                 check_every=100)
    v3, f3 = meshes.sphere((0.22, 0.1623, 0.14), 0.07, 1)
    V3 = torch.tensor(v3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: tt.flow_force(fl3, t, f3), (V3,), eps=1e-5, atol=1e-7, rtol=1e-4,
                                    fast_mode=True)


def test_bad_input_names_the_argument():
    vals, h = _ellipsoid_grid(5)
    with pytest.raises(TypeError, match="values: expected a floating-point tensor"):
        tt.marching_cubes(vals.to(torch.int32))
    with pytest.raises(TypeError, match="values: expected a torch.Tensor"):
        tt.marching_cubes(vals.numpy())
    with pytest.raises(ValueError, match="values: expected a 3D tensor"):
        tt.marching_cubes(vals[0])
    with pytest.raises(ValueError, match="spacing: expected a scalar or 3 values"):
        tt.marching_cubes(vals, spacing=(1.0, 2.0))
    with pytest.raises(ValueError, match="values.*NaN"):
        tt.marching_cubes(vals * float("nan"))
    fl = Flow2D(size=(0.6, 0.3), resolution=40, viscosity=0.02, inflow_velocity=1.0)
    v, s = polygons.circle((0.2, 0.15), 0.06, 12)
    with pytest.raises(ValueError, match=r"vertices: expected shape \(V, 2\)"):
        tt.flow_force(fl, torch.zeros(5, 3, dtype=torch.float64), s)
    with pytest.raises(TypeError, match="elements: expected an integer tensor"):
        tt.flow_force(fl, torch.tensor(v), torch.tensor(s, dtype=torch.float64))
    with pytest.raises(TypeError, match="flow: expected a tigeom.sim.Flow2D or Flow3D"):
        tt.flow_force(object(), torch.tensor(v), s)
    with pytest.raises(ValueError, match="bounds"):
        tt.meshsdf(Ball([0.0, 0.0], 0.5), ((1.0, 1.0), (-1.0, -1.0)))
    with pytest.raises(ValueError, match="resolution"):
        tt.meshsdf(Ball([0.0, 0.0], 0.5), ((-1.0, -1.0), (1.0, 1.0)), resolution=1)


def test_tigeom_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import tigeom, tigeom.sim; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "ok", out.stderr
    code = "import sys; sys.modules['torch'] = None; import tigeom.torch"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "pip install 'tigeom[torch]'" in out.stderr


def test_docs_example_mlp_sdf_drag_runs_a_few_steps():
    """docs/examples/torch_drag2d.py: an MLP SDF fitted to a circle, then Adam on its weights
    against the drag through meshsdf and flow_force, holding the area (a few steps)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "examples" / "torch_drag2d.py"
    spec = importlib.util.spec_from_file_location("torch_drag2d", path)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    torch.manual_seed(0)
    model = ex.MLP().to(torch.float64)
    assert ex.fit(model, 800) < 2e-5
    flow = Flow2D(size=(2.2, 0.41), resolution=60, viscosity=1e-3, inflow_velocity=0.3, tol=1e-5)
    before = [p.detach().clone() for p in model.parameters()]
    hist = ex.minimise_drag(model, flow, 3, resolution=61, log=lambda *_: None)
    assert len(hist) == 3 and all(np.isfinite(h["cd"]) and h["cd"] > 0 for h in hist)
    assert all(abs(h["area"] / hist[0]["area"] - 1) < 0.1 for h in hist)
    assert abs(hist[0]["area"] / (np.pi * 0.05 ** 2) - 1) < 0.2  # the fitted circle
    assert any((p.detach() - b).abs().max() > 0 for p, b in zip(model.parameters(), before))


def test_meshsdf_without_an_input_gradient_uses_the_grid_normals():
    """A field that autograd cannot differentiate in its points (here it detaches them) still
    gets the MeshSDF gradient, with the grid's unit normals for grad s: dv/dr = n."""
    r = torch.tensor(0.55, dtype=torch.float64, requires_grad=True)
    c = torch.tensor([0.1, -0.05], dtype=torch.float64)

    def field(x):
        return (x.detach() - c).norm(dim=1) - r

    v, _ = tt.meshsdf(field, ((-1.0, -1.0), (1.0, 1.0)), resolution=65)
    n = (v.detach() - c) / (v.detach() - c).norm(dim=1, keepdim=True)
    w = torch.randn(v.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (v * w).sum().backward()
    assert abs(r.grad.item() / (w * n).sum().item() - 1) < 1e-2


def test_functions_run_under_torch_compile():
    """torch.compile (Dynamo and AOT autograd; the 'aot_eager' backend needs no C++ compiler)
    runs the autograd functions, breaking the graph around them, with the eager results and
    gradients."""
    vals, h = _ellipsoid_grid(9)
    rng = np.random.default_rng(3)
    p = rng.random((20, 2))
    r = rng.uniform(0.2, 1.0, 20)
    faces = dmesh.candidate_faces(p, k=4)
    tg = losses.Targets(rng.random((30, 2)))

    def f(vals, P, R):
        v, _ = tt.marching_cubes(vals * 1.0, 0.0, h, -1.0)
        probs = tt.face_probabilities(P, None, R, faces, method="minball", sharpness=20.0)
        return (v ** 2).sum() + tt.expected_chamfer(P, faces, probs, tg)

    outs = []
    for fn in (f, torch.compile(f, backend="aot_eager")):
        args = [vals.detach().clone().requires_grad_(True), torch.tensor(p, requires_grad=True),
                torch.tensor(r, requires_grad=True)]
        loss = fn(*args)
        loss.backward()
        outs.append((loss.detach(), [a.grad for a in args]))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-12, atol=0)
    for a, b in zip(outs[1][1], outs[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_tet_quality_gradcheck_dtype_and_errors():
    rng = np.random.default_rng(3)
    v = torch.tensor(rng.normal(size=(8, 3)), requires_grad=True)
    t = torch.tensor(np.array([rng.choice(8, 4, replace=False) for _ in range(6)]))
    ref = tigeom.tet_quality(v.detach().numpy(), t.numpy())
    q = tt.tet_quality(v, t)
    assert set(q) == set(ref)
    for k in q:
        np.testing.assert_array_equal(q[k].detach().numpy(), ref[k])

    def f(x):
        q = tt.tet_quality(x, t)
        amips = torch.where(torch.isfinite(q["amips"]), q["amips"], torch.zeros_like(q["amips"]))
        return (q["volume"], q["radius_ratio"], q["mean_ratio"], amips, q["min_sine"], q["min_dihedral"],
                q["max_dihedral"], q["dihedrals"])

    assert torch.autograd.gradcheck(f, (v,))
    q32 = tt.tet_quality(v.detach().float(), t.numpy())
    assert all(x.dtype == torch.float32 and not x.requires_grad for x in q32.values())
    with pytest.raises(ValueError, match=r"vertices: expected shape \(N, 3\)"):
        tt.tet_quality(v[:, :2], t)
    with pytest.raises(TypeError, match="tets: expected an integer tensor"):
        tt.tet_quality(v, t.double())
    with pytest.raises(ValueError, match=r"tets: expected shape \(M, 4\)"):
        tt.tet_quality(v, t[:, :3])
    with pytest.raises(ValueError, match="tets: index out of range"):
        tt.tet_quality(v, t + 3)
    with pytest.raises(ValueError, match="repeat a vertex"):
        tt.tet_quality(v, torch.tensor([[0, 1, 1, 2]]))
    with pytest.raises(ValueError, match="vertices"):
        tt.tet_quality(v.detach().index_fill(0, torch.tensor([2]), float("nan")), t)
    empty = tt.tet_quality(v, np.zeros((0, 4), np.int64))
    assert empty["dihedrals"].shape == (0, 6) and empty["min_dihedral"].shape == (0,)


def test_rasterize_gradcheck_matches_the_numpy_api_and_checks_input():
    """The scene of test_render (a semi-transparent pyramid and a floating triangle, two views):
    values equal to tigeom.render.rasterize, gradcheck with respect to vertices and opacities
    (depth masked where no face is seen, as a loss must), and an opaque mesh."""
    from tigeom import render

    V, F, cams = render_scene((12, 14))
    op = np.array([0.7, 0.9, 0.6, 0.8, 0.5])
    v, o = torch.tensor(V, requires_grad=True), torch.tensor(op, requires_grad=True)
    ref = render.rasterize(V, F, cams, op)
    alpha, depth, normal = tt.rasterize(v, torch.tensor(F), cams, opacity=o)
    for a, b in ((alpha, ref.alpha), (depth, ref.depth), (normal, ref.normal)):
        np.testing.assert_array_equal(a.detach().numpy(), b)
    seen = torch.tensor(np.isfinite(ref.depth))
    assert 0 < seen.sum() < seen.numel()

    def f(x, p):
        a, d, n = tt.rasterize(x, F, cams, opacity=p)
        return a, torch.where(seen, d, torch.zeros_like(d)), n

    assert torch.autograd.gradcheck(f, (v, o), eps=1e-6, atol=1e-5, rtol=1e-4)
    assert torch.autograd.gradcheck(lambda x: tt.rasterize(x, F, cams)[0], (v,), eps=1e-6, atol=1e-5, rtol=1e-4)
    a32, _, _ = tt.rasterize(v.detach().float(), F, cams)
    assert a32.dtype == torch.float32 and not a32.requires_grad
    with pytest.raises(ValueError, match=r"vertices: expected shape \(V, 3\)"):
        tt.rasterize(v[:, :2], F, cams)
    with pytest.raises(ValueError, match="opacity: expected values in"):
        tt.rasterize(v, F, cams, opacity=o + 1.0)
    with pytest.raises(TypeError, match="cams: expected tigeom.render.Cameras"):
        tt.rasterize(v, F, None)


def test_dmesh_multiview_loss_chains_face_probabilities_into_rasterize():
    """DMesh's multi-view loss in PyTorch: face probabilities of candidate faces as the
    opacities of the rasteriser, silhouettes of an octahedron from four views as the target.
    The gradient reaches the points and the reals through both functions, and a few Adam
    steps lower the loss."""
    from tigeom import render

    tv = np.array([[0.6, 0, 0], [-0.6, 0, 0], [0, 0.6, 0], [0, -0.6, 0], [0, 0, 0.6], [0, 0, -0.6]])
    tf = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    cams = render.orbit_cameras(4, 1, radius=3.0, resolution=(16, 16))
    target = torch.tensor(render.rasterize(tv, tf, cams).alpha)
    p = np.random.default_rng(0).uniform(-0.7, 0.7, (40, 3))
    faces = dmesh.candidate_faces(p, k=6)
    P = torch.tensor(p, requires_grad=True)
    R = torch.full((len(p),), 0.5, requires_grad=True)
    opt = torch.optim.Adam([P, R], lr=0.01)
    losses_seen = []
    for _ in range(6):
        probs = tt.face_probabilities(P, None, R.clamp(0, 1), faces, method="minball")
        alpha, _, _ = tt.rasterize(P, faces, cams, opacity=probs)
        loss = ((alpha - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        assert P.grad.abs().max() > 0 and R.grad.abs().max() > 0
        assert torch.isfinite(P.grad).all() and torch.isfinite(R.grad).all()
        opt.step()
        losses_seen.append(loss.item())
    assert losses_seen[-1] < 0.8 * losses_seen[0]


def test_compliance_gradcheck_and_errors():
    from tigeom.sim import TetElasticity
    from tigeom.tetmesh import cube_mesh

    v, t = cube_mesh(2, 12, seed=0)
    fem = TetElasticity(v, t, young=3.0, poisson=0.3)
    V = torch.tensor(v, requires_grad=True)
    c = tt.compliance(fem, V, tol=1e-13)
    assert c.shape == () and c.item() == pytest.approx(fem.compliance(tol=1e-13).value, rel=1e-12)
    assert torch.autograd.gradcheck(lambda x: tt.compliance(fem, x, tol=1e-13), (V,), eps=1e-6, atol=1e-6,
                                    rtol=1e-5, fast_mode=True)
    load = torch.tensor(np.random.default_rng(0).normal(size=v.shape))
    assert torch.autograd.gradcheck(lambda x: tt.compliance(fem, x, load, tol=1e-13), (V,), eps=1e-6, atol=1e-6,
                                    rtol=1e-5, fast_mode=True)
    with pytest.raises(TypeError, match="fem: expected a tigeom.sim.TetElasticity"):
        tt.compliance(None, V)
    with pytest.raises(ValueError, match="did not reach tol"), pytest.warns(RuntimeWarning, match="stopped at"):
        tt.compliance(fem, V, max_iter=2)
