import numpy as np
import pytest

import tigeom
from helpers import ARCH
from tigeom import io, runtime


def test_init_is_idempotent_and_validates():
    cfg = tigeom.init(arch=ARCH, precision="f64")
    gen = runtime.generation()
    assert tigeom.init(arch=ARCH, precision="f64") is cfg
    assert runtime.generation() == gen
    assert cfg.backend == ARCH
    with pytest.raises(ValueError, match="arch"):
        tigeom.init(arch="tpu")
    with pytest.raises(ValueError, match="precision"):
        tigeom.init(precision="f16")
    with pytest.raises(TypeError, match="seed"):
        tigeom.init(seed="x")
    assert tigeom.init(arch=ARCH, precision="f64") is cfg  # failed calls changed nothing


def test_reinit_switches_precision_and_kernels_still_work():
    f = np.random.default_rng(0).standard_normal((6, 6, 6))
    tigeom.init(arch=ARCH, precision="f32")
    try:
        assert runtime.real_dtype() == np.float32
        s = tigeom.marching_cubes(f)
        assert s._values.dtype == np.float32
    finally:
        tigeom.init(arch=ARCH, precision="f64")
    assert runtime.real_dtype() == np.float64
    assert len(tigeom.marching_cubes(f).faces) == len(s.faces)


def test_surface_roundtrip(tmp_path):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    for ext in (".ply", ".obj", ".stl", ".off"):
        io.write_surface(tmp_path / f"t{ext}", v, f)
        v2, f2 = io.read_surface(tmp_path / f"t{ext}")
        assert f2.shape == (4, 3)
        np.testing.assert_allclose(np.sort(v2[f2].reshape(-1, 3), axis=0), np.sort(v[f].reshape(-1, 3), axis=0))


def test_volume_and_curve_roundtrip(tmp_path):
    p = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    t = np.array([[0, 1, 2, 3]])
    for ext in (".vtu", ".msh", ".mesh"):
        io.write_volume(tmp_path / f"v{ext}", p, t)
        p2, t2 = io.read_volume(tmp_path / f"v{ext}")
        np.testing.assert_allclose(p2, p)
        np.testing.assert_array_equal(t2, t)
    io.write_curve(tmp_path / "c.npz", [[0, 0], [1, 0], [0, 1]], [[0, 1], [1, 2], [2, 0]])
    v, s = io.read_curve(tmp_path / "c.npz")
    assert v.shape == (3, 2) and s.shape == (3, 2)


def test_io_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown surface mesh format"):
        io.write_surface(tmp_path / "a.xyz", np.zeros((3, 3)), [[0, 1, 2]])
    with pytest.raises(ValueError, match="faces: index out of range"):
        io.write_surface(tmp_path / "a.ply", np.zeros((3, 3)), [[0, 1, 5]])
    with pytest.raises(ValueError, match="vertices: contains"):
        io.write_surface(tmp_path / "a.ply", np.full((3, 3), np.nan), [[0, 1, 2]])
    with pytest.raises(FileNotFoundError):
        io.read_surface(tmp_path / "missing.ply")
    (tmp_path / "junk.ply").write_bytes(b"not a ply at all")
    with pytest.raises(ValueError, match="junk.ply"):
        io.read_surface(tmp_path / "junk.ply")
    (tmp_path / "junk.vtu").write_bytes(b"<xml nonsense")
    with pytest.raises(ValueError, match="junk.vtu"):
        io.read_volume(tmp_path / "junk.vtu")
    io.write_volume(tmp_path / "tri.vtu", np.eye(3), [[0, 1, 2]], cell_type="triangle")
    with pytest.raises(ValueError, match="no 'tetra' cells"):
        io.read_volume(tmp_path / "tri.vtu")
    np.savez(tmp_path / "c.npz", points=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="lacks the arrays"):
        io.read_curve(tmp_path / "c.npz")
    # a failed write leaves no partial file behind
    with pytest.raises(ValueError):
        io.write_curve(tmp_path / "d.npz", np.zeros((2, 2)), [[0, 7]])
    assert not (tmp_path / "d.npz").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_taichi_framework_checks_are_cached_once_initialised():
    """Taichi asks has_pytorch() several times per kernel argument; after tigeom.init the
    answer is cached (same value) in the modules that ask."""
    import tigeom
    from taichi.lang import kernel_impl, util

    tigeom.runtime.ensure_init()
    for mod in (util, kernel_impl):
        assert hasattr(mod.has_pytorch, "cache_info")
    assert kernel_impl.has_pytorch() is util.has_pytorch.__wrapped__()


def test_fast_launch_matches_taichi_and_falls_back_where_it_must():
    """``_core.launch.fast`` sets prepared arguments straight into the launch context after a
    first call through Taichi: same results for numpy, torch and Taichi arrays, scalars and
    template values; Taichi's own path (and its errors) for what it does not prepare."""
    import taichi as ti
    import torch

    from tigeom._core import device
    from tigeom._core.launch import _FALLBACK, fast

    tigeom.init(arch=ARCH, precision="f64")

    @ti.kernel
    def axpy(x: ti.types.ndarray(ndim=1), a: float, k: ti.template(), n: ti.i32, y: ti.types.ndarray(ndim=1)):
        for i in range(n):
            y[i] = a * x[i] + k

    launch = fast(axpy)
    assert fast(axpy) is launch  # one launcher per kernel
    x = np.arange(5.0)
    for k in (1, 2):
        for a in (2.0, 3):
            y = np.zeros(5)
            launch(x, a, k, 4, y)  # first call of a signature: through Taichi
            launch(x, a, k, 4, y)  # then prepared
            np.testing.assert_array_equal(y, [a * t + k if i < 4 else 0 for i, t in enumerate(x)])
    plans = list(launch._plans.values())
    assert len(plans) == 4 and not any(p is _FALLBACK for p in plans)  # (k, int or float a) each
    xt = torch.arange(5.0, dtype=torch.float64)
    yt = torch.zeros(5, dtype=torch.float64)
    xd = device.upload(x)
    for _ in range(2):
        launch(xt, 0.5, 1, 5, yt)
        launch(xd, 1.0, 1, 5, y)
    np.testing.assert_array_equal(yt.numpy(), 0.5 * x + 1)
    np.testing.assert_array_equal(y, x + 1)
    with pytest.raises(ValueError, match="contiguous"):  # not prepared: Taichi's own message
        launch(torch.zeros(10, dtype=torch.float64)[::2], 1.0, 1, 5, yt)
    xg = xt.clone().requires_grad_(True)
    for _ in range(2):
        launch(xg.detach(), 2.0, 1, 5, yt)
    np.testing.assert_array_equal(yt.numpy(), 2.0 * x + 1)


def test_light_compile_switches_off_ir_optimisation_only_around_its_kernel():
    """``_core.launch.light_compile`` compiles (and launches) its kernel with Taichi's advanced IR
    optimisation off and restores the setting afterwards, also when the call raises, on every
    backend or only on the ones named; the triangulation's cell and gift-wrap kernels use it, and
    the tet improver's three largest kernels on CUDA."""
    import taichi as ti
    from taichi.lang import impl

    from tigeom._core.launch import light_compile
    from tigeom.delaunay import _kernels as K

    tigeom.init(arch=ARCH, precision="f64")
    cfg = impl.current_cfg
    seen = []

    @light_compile
    def probe(fail=False):
        seen.append(cfg().advanced_optimization)
        if fail:
            raise RuntimeError("boom")

    assert cfg().advanced_optimization
    probe()
    with pytest.raises(RuntimeError, match="boom"):
        probe(fail=True)
    assert seen == [False, False] and cfg().advanced_optimization

    backend = runtime.config().backend
    other = "cuda" if backend == "cpu" else "cpu"
    for backends, light in (((backend,), True), ((other,), False)):
        seen.clear()
        light_compile(backends=backends)(probe.__wrapped__)()
        assert seen == [not light] and cfg().advanced_optimization

    @light_compile
    @ti.kernel
    def double(x: ti.types.ndarray(ndim=1)):
        for i in x:
            x[i] *= 2.0

    x = np.arange(4.0)
    double(x)
    double(x)
    np.testing.assert_array_equal(x, 4 * np.arange(4.0))
    assert cfg().advanced_optimization and double._is_wrapped_kernel
    for name in ("cells2d", "cells3d", "gift_wrap"):
        assert getattr(K, name).__wrapped__._is_wrapped_kernel, name
    from tigeom.tetmesh import _kernels as TK

    for name in ("cavity_candidates", "smooth_round", "face_split_candidates"):  # light on CUDA only
        assert getattr(TK, name).kernel.__wrapped__._is_wrapped_kernel, name
    tri = tigeom.weighted_delaunay(np.random.default_rng(0).random((50, 3)))
    assert len(tri.simplices) > 0 and cfg().advanced_optimization


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.uint8])
def test_device_upload_and_fetch_round_trip(dtype):
    """``_core.device.upload``/``fetch`` keep values, shape and dtype (on CUDA through the
    driver's copy, elsewhere through Taichi or in place), ``fetch(buf, n)`` gives the first n
    rows, and a kernel sees what was uploaded."""
    import taichi as ti

    from tigeom._core import device

    rng = np.random.default_rng(1)
    for shape in [(7,), (1000, 3), (513, 2)]:
        x = (rng.random(shape) * 100).astype(dtype)
        d = device.upload(x)
        np.testing.assert_array_equal(device.fetch(d), x)
        got = device.fetch(d, 5)
        assert got.dtype == x.dtype and got.shape == (5, *shape[1:])
        np.testing.assert_array_equal(got, x[:5])
    if dtype is np.int64:
        @ti.kernel
        def twice(a: ti.types.ndarray(dtype=ti.i64, ndim=1)):
            for i in range(a.shape[0]):
                a[i] = 2 * a[i]

        d = device.upload(np.arange(10, dtype=np.int64))
        twice(d)
        np.testing.assert_array_equal(device.fetch(d), 2 * np.arange(10))


@pytest.mark.parametrize("shape", [(3,), (100_003, 3), (50_000, 7)])
def test_host_empty_touches_large_arrays_and_keeps_them_writable(monkeypatch, shape):
    """``host_empty`` (the host side of large device fetches) gives a C-contiguous array of the
    asked shape and dtype whose every page was written once by its threads (a uint8 view of it
    then reads zero at each page start), including a last, partial chunk."""
    from tigeom._core import device

    monkeypatch.setattr(device, "TOUCH_BYTES", 1024)
    a = device.host_empty(shape, np.int64)
    assert a.shape == shape and a.dtype == np.int64 and a.flags.c_contiguous and a.flags.writeable
    flat = a.reshape(-1).view(np.uint8)
    if a.nbytes >= 1024:
        assert not flat[::device._PAGE].any()
    a[...] = 7
    assert (a == 7).all()
