"""tigeom.torch on the device: marching cubes forward + backward on a grid tensor, against the
numpy API in the same process; meshsdf with an MLP field, its time split into the network's
grid evaluation, the extraction and the backward; gradcheck of the tensor path on the arch's
tensors.

    python benchmarks/bench_torch.py --arch cuda --n 256
    python benchmarks/bench_torch.py --arch cuda --n 256 --reps 30 --floor   # where tt's time goes
    python benchmarks/bench_torch.py --arch cpu --n 128
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

import tigeom
import tigeom.torch as tt

from _timing import best_interleaved, best_synced


def sphere_grid(n, device, dtype):
    x = torch.linspace(-1, 1, n, device=device, dtype=dtype)
    X, Y, Z = torch.meshgrid(x, x, x, indexing="ij")
    return (X * X + 1.3 * Y * Y + 0.8 * Z * Z).sqrt() - 0.6, float(x[1] - x[0])


def device_internal(host: np.ndarray, h: float):
    """Marching cubes forward + vjp on Taichi ndarrays, outputs left in the marcher's buffers and
    the vjp's small arrays uploaded once: the kernels' own time, the floor of any interface (as
    bench_isosurface.py's device rows). Returns the function to time."""
    from tigeom._core import device as dev
    from tigeom.isosurface import _kernels as K
    from tigeom.isosurface import extract as iso

    shape = host.shape
    vals, flat = dev.upload(host), dev.upload(host.ravel())
    sweep, S = iso.default_layout(shape)
    m = iso._marcher(3)
    spc, org = np.full(3, h), np.full(3, -1.0)
    V = m.run(vals, shape, 0.0, org, spc, sweep, S)["V"]
    ones = dev.upload(np.ones(V * 3, host.dtype))  # (V, 3), flat
    vmax = dev.upload(np.array([np.abs(host).max()], host.dtype))
    strides = dev.upload(np.array([shape[1] * shape[2], shape[2], 1], np.int32))
    spc_d = dev.upload(spc.astype(host.dtype))
    out = dev.empty((host.size,), host.dtype)

    def fb():
        r = m.run(vals, shape, 0.0, org, spc, sweep, S)
        out.fill(0)
        K.vertex_vjp(flat, r["vedge"], r["V"], ones, 3, 1, strides, spc_d, 3, 0.0, 1e-6, vmax, out)

    return fb


def interface_floor(vals, h, own, reps, rounds=3):
    """Where tt.marching_cubes' time over the kernels' own goes, in ``rounds`` rounds of best of
    ``reps`` (all paths in turn): the forward alone, forward + backward, the same with a
    backward that does no work (it returns the zero gradient prepared in the forward, skipping
    the vjp: the floor of any autograd.Function over these kernels), autograd's worker threads
    turned off, and a trivial autograd.Function on a small tensor (the engine's own cost)."""
    real = tt._Extract.backward

    def no_work(ctx, grad_verts, _grad_elems):
        out, ctx.prepared = ctx.prepared[0], (None, None)
        return out, None, None, None, None

    def fb(backward=None, threads=True):
        def run():
            v, _ = tt.marching_cubes(vals, 0.0, h, -1.0)
            if backward is not None:
                tt._Extract.backward = staticmethod(backward)
            try:
                with torch.autograd.set_multithreading_enabled(threads):
                    v.sum().backward()
            finally:
                tt._Extract.backward = real
            vals.grad = None

        return run

    class Trivial(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a * 1

        @staticmethod
        def backward(ctx, g):
            return g

    x = torch.ones(8, device=vals.device, requires_grad=True)

    def trivial():
        Trivial.apply(x).sum().backward()
        x.grad = None

    def forward_only():
        tt.marching_cubes(vals, 0.0, h, -1.0)

    names = ["kernels' own", "tt forward", "tt forward + backward", "backward without work", "worker threads off",
             "trivial Function"]
    print("| round | " + " | ".join(f"{nm} (ms)" for nm in names) + " | ratios to the kernels' own |")
    print("|---" * (len(names) + 2) + "|")
    for r in range(rounds):
        b = best_interleaved([own, forward_only, fb(), fb(no_work), fb(threads=False), trivial], reps)
        ratios = ", ".join(f"{x / b[0]:.2f}" for x in b[1:5])
        print(f"| {r + 1} | " + " | ".join(f"{1e3 * x:.3f}" for x in b) + f" | {ratios} |", flush=True)


def meshsdf_split(device, n, reps):
    """One meshsdf step with an MLP field (3-128-128-1, softplus), f32: grid evaluation without
    gradient, extraction, and the backward of a loss of the vertices into the weights."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 128), torch.nn.Softplus(beta=20), torch.nn.Linear(128, 128),
                              torch.nn.Softplus(beta=20), torch.nn.Linear(128, 1)).to(device)
    with torch.no_grad():
        mlp[-1].bias.fill_(-0.3)

    def sdf(x):
        return (x.norm(dim=1) - 0.5) + 0.05 * mlp(x).squeeze(-1)

    bounds = ((-1.0,) * 3, (1.0,) * 3)
    x = torch.linspace(-1, 1, n, device=device)
    grid = torch.stack(torch.meshgrid(x, x, x, indexing="ij"), -1).reshape(-1, 3)
    h = float(x[1] - x[0])

    def net():
        with torch.no_grad():
            return torch.cat([sdf(grid[i:i + (1 << 18)]) for i in range(0, len(grid), 1 << 18)]).reshape(n, n, n)

    vals = net()

    def extract():
        with torch.no_grad():
            return tt.marching_cubes(vals, 0.0, h, -1.0)

    def step():
        v, _ = tt.meshsdf(sdf, bounds, resolution=n, device=device)
        (v * v).sum().backward()
        mlp.zero_grad()

    t_net, t_ext, t_step = best_synced(net, reps), best_synced(extract, reps), best_synced(step, reps)
    t_bwd = max(t_step - t_net - t_ext, 0.0)
    print(f"# meshsdf at {n}^3, MLP 3-128-128-1: step {1e3 * t_step:.1f} ms = network {1e3 * t_net:.1f} ms "
          f"+ extraction {1e3 * t_ext:.1f} ms + vertices and backward {1e3 * t_bwd:.1f} ms "
          f"(extraction {100 * t_ext / t_step:.0f}%)")


def step_comparisons(device, reps):
    """A DMesh step (minball face probabilities and the expected Chamfer loss, forward and
    backward) and a Flow2D gradient (a solve from rest and its vjp) through tigeom.torch on
    this arch's tensors, against the same calls of the numpy API in the same process."""
    from tigeom import dmesh
    from tigeom.dmesh import losses
    from tigeom.sim import Flow2D, polygons

    rng = np.random.default_rng(0)
    p = rng.random((4000, 2))
    r = rng.uniform(0.2, 1.0, len(p))
    faces = dmesh.candidate_faces(p)
    t = rng.random(20000) * 2 * np.pi
    tg = losses.Targets(np.column_stack([0.5 + 0.3 * np.cos(t), 0.5 + 0.3 * np.sin(t)]))

    def np_dmesh():
        fp = dmesh.face_probabilities(p, None, r, faces, method="minball", sharpness=20.0)
        loss = losses.expected_chamfer(p, faces, fp.probs, tg)
        gp, gprob, _ = loss.vjp(1.0)
        fp.vjp(gprob)

    P = torch.tensor(p, device=device, dtype=torch.float32, requires_grad=True)
    R = torch.tensor(r, device=device, dtype=torch.float32, requires_grad=True)
    F = torch.as_tensor(faces, device=device)  # an index tensor on the device: checked there, read in place

    def tt_dmesh():
        probs = tt.face_probabilities(P, None, R, F, method="minball", sharpness=20.0)
        tt.expected_chamfer(P, F, probs, tg).backward()
        P.grad = R.grad = None

    fl = Flow2D(size=(2.2, 0.41), resolution=50, viscosity=1e-3, inflow_velocity=0.3, inflow_profile="parabolic")
    v, sg = polygons.circle((0.2, 0.2), 0.05, 64)
    fl.solve(v, sg)
    V = torch.tensor(v, device=device, dtype=torch.float64, requires_grad=True)  # the same vertices as numpy

    # Both from rest, flow and adjoint: warm-started, the solve of an unchanged body and the
    # adjoint stop after a number of check intervals that varies from call to call (800-2000
    # steps, 3-35 adjoint intervals on the CPU), which would swamp the interface's own cost.
    def np_flow():
        fl._lam_key = None  # the adjoint starts from zero
        fl.solve(v, sg, warm_start=False).vjp([1.0, 0.0])

    def tt_flow():
        fl._lam_key = None
        tt.flow_force(fl, V, sg, warm_start=False)[0].backward()
        V.grad = None

    print(f"| step | numpy API (ms) | tigeom.torch on {device} tensors (ms) | torch / numpy |")
    print("|---|---|---|---|")
    for name, a, b in (("DMesh: 4,000 points, %d candidate edges, 20,000 targets" % len(faces), np_dmesh, tt_dmesh),
                       ("Flow2D gradient: Schaefer-Turek 2D-1 at 10 cells/D, solve + vjp", np_flow, tt_flow)):
        tn, tt_ = best_interleaved([a, b], reps if a is np_dmesh else min(reps, 5))
        print(f"| {name} | {1e3 * tn:.2f} | {1e3 * tt_:.2f} | {tt_ / tn:.3f} |", flush=True)


def kuhn_tets(n: int):
    """A jittered n^3 grid of cubes, six tets each (6 n^3 tets)."""
    g = np.arange(n + 1)
    P = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3).astype(float)
    P += np.random.default_rng(0).uniform(-0.2, 0.2, P.shape)
    idx = np.arange((n + 1) ** 3).reshape(n + 1, n + 1, n + 1)
    c = [idx[i:i + n, j:j + n, k:k + n].ravel() for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    # corners c[4i + 2j + k]; six tets on the diagonal 0-7
    paths = ((1, 3), (1, 5), (2, 3), (2, 6), (4, 5), (4, 6))
    T = np.concatenate([np.stack([c[0], c[a], c[b], c[7]], 1) for a, b in paths])
    return P, T


def tet_quality_row(device, n_cubes, reps):
    """tt.tet_quality forward + backward (a mean-ratio and angle loss) on tensors on ``device``
    against the numpy API (tet_quality and TetQuality.vjp), the same mesh, in turn."""
    P, T = kuhn_tets(n_cubes)
    q = tigeom.tet_quality(P, T)
    T[q["volume"] < 0, 2:] = T[q["volume"] < 0, 3:1:-1]  # positive orientation
    V = torch.tensor(P, device=device, requires_grad=True)
    TT = torch.tensor(T, device=device)

    def with_torch():
        q = tt.tet_quality(V, TT)
        (q["mean_ratio"].sum() + q["min_dihedral"].sum()).backward()
        V.grad = None

    def with_numpy():
        q = tigeom.tet_quality(P, T)
        q.vjp({"mean_ratio": np.ones(len(T)), "min_dihedral": np.ones(len(T))})

    t_t, t_n = best_interleaved([with_torch, with_numpy], reps)
    print(f"# tet_quality forward + backward, {len(T):,} tets on {device}: tt {1e3 * t_t:.1f} ms, numpy API "
          f"{1e3 * t_n:.1f} ms ({t_n / t_t:.1f}x)")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--meshsdf-n", type=int, default=128)
    ap.add_argument("--gradcheck-only", action="store_true")
    ap.add_argument("--steps-only", action="store_true", help="only the DMesh step and the Flow2D gradient")
    ap.add_argument("--floor", action="store_true", help="only the split of tt.marching_cubes' time over the kernels'")
    ap.add_argument("--tets", type=int, default=0, metavar="N",
                    help="only tet_quality forward + backward on a jittered N^3-cube mesh (6 N^3 tets)")
    a = ap.parse_args(argv)
    if a.tets:
        cfg = tigeom.init(arch=a.arch, precision="f32")
        return tet_quality_row("cuda" if cfg.backend == "cuda" else "cpu", a.tets, a.reps)
    if a.gradcheck_only:
        if a.arch == "cuda":
            stream_checks()
        return gradchecks(a.arch, "cuda" if a.arch == "cuda" else "cpu")
    if a.steps_only:
        cfg = tigeom.init(arch=a.arch, precision="f32")
        return step_comparisons("cuda" if cfg.backend == "cuda" else "cpu", a.reps)
    cfg = tigeom.init(arch=a.arch, precision="f32")
    device = "cuda" if cfg.backend == "cuda" else "cpu"
    print(f"# backend {cfg.backend}, {platform.processor() or platform.machine()}, torch {torch.__version__}")
    vals, h = sphere_grid(a.n, device, torch.float32)
    vals.requires_grad_(True)

    def torch_fb():
        v, _ = tt.marching_cubes(vals, 0.0, h, -1.0)
        v.sum().backward()
        vals.grad = None

    host = vals.detach().cpu().numpy()

    def numpy_f():
        return tigeom.marching_cubes(host, 0.0, h, -1.0)

    surf = numpy_f()
    ones = np.ones_like(surf.vertices)
    if a.floor:
        return interface_floor(vals, h, device_internal(host, h), a.reps)
    t_dev, t_torch = best_interleaved([device_internal(host, h), torch_fb], a.reps)
    t_np_f = best_synced(numpy_f, a.reps)
    t_np_b = best_synced(lambda: surf.vjp(ones), a.reps)
    print("| grid | vertices | device-internal forward + vjp (ms) | tt.marching_cubes forward + backward (ms) | "
          "ratio | numpy API forward (ms) | numpy API vjp (ms) | numpy / torch |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {a.n}^3 | {len(surf.vertices):,} | {1e3 * t_dev:.2f} | {1e3 * t_torch:.2f} | {t_torch / t_dev:.2f} | "
          f"{1e3 * t_np_f:.2f} | {1e3 * t_np_b:.2f} | {(t_np_f + t_np_b) / t_torch:.1f}x |")
    meshsdf_split(device, a.meshsdf_n, a.reps)
    step_comparisons(device, a.reps)
    if device == "cuda":
        stream_checks()
    gradchecks(a.arch, device)


def stream_checks():
    """tigeom.torch under a side stream (CUDA): the grid is written on the side stream behind a
    50 ms sleep, then extracted and differentiated there; results equal those on the default
    stream only if the kernels wait for the side stream's work and the side stream for theirs.
    The same with the ordering switched off shows whether the check can see a race."""
    tigeom.init(arch="cuda", precision="f32")
    ref_vals, h = sphere_grid(96, "cuda", torch.float32)
    v_ref, _ = tt.marching_cubes(ref_vals.clone().requires_grad_(True), 0.0, h, -1.0)
    x = ref_vals.clone().requires_grad_(True)
    v, _ = tt.marching_cubes(x, 0.0, h, -1.0)
    (v * v).sum().backward()
    g_ref = x.grad.clone()

    def on_side_stream():
        side = torch.cuda.Stream()
        buf = torch.ones_like(ref_vals)  # no surface until the copy below has run
        torch.cuda.synchronize()
        with torch.cuda.stream(side):
            torch.cuda._sleep(100_000_000)  # about 50 ms on an H200
            buf.copy_(ref_vals)
            y = buf.requires_grad_(True)
            v, _ = tt.marching_cubes(y, 0.0, h, -1.0)
            (v * v).sum().backward()
            g = y.grad * 1.0  # read on the side stream
        torch.cuda.synchronize()
        same_v = len(v) == len(v_ref) and bool(torch.equal(v, v_ref.detach()))
        return same_v and bool(torch.allclose(g, g_ref, rtol=1e-5, atol=1e-7))  # atomic sums: last bits

    ordered = on_side_stream()
    real = tt._side_stream
    tt._side_stream = lambda args: None
    try:
        unordered = on_side_stream()
    finally:
        tt._side_stream = real
    print(f"# side stream: results equal the default stream's with ordering: {ordered}; "
          f"with the ordering switched off: {unordered} (False shows the check sees the race)")
    return ordered


def gradchecks(arch, device):
    """torch.autograd.gradcheck (f64 kernels) of every function on this arch's tensors."""
    from tigeom import dmesh
    from tigeom.dmesh import losses
    from tigeom.sim import Flow2D, Flow3D, meshes, polygons

    tigeom.init(arch=arch, precision="f64")
    gc = torch.autograd.gradcheck
    # as the CPU tests (near ties of DMesh's arg-min choices); on a GPU, sums by atomic adds in f64
    # differ in the last bits from call to call, so backward is reentrant to 1e-12, not exactly
    dm = dict(eps=1e-7, atol=1e-6, rtol=1e-4, nondet_tol=1e-12 if device == "cuda" else 0.0)
    ok = {}
    g, h = sphere_grid(9, device, torch.float64)
    ok["marching_cubes"] = gc(lambda t: tt.marching_cubes(t, 0.0, h, -1.0)[0], (g.requires_grad_(True),))
    g2 = g.detach()[:, :, 4].clone()
    ok["marching_squares"] = gc(lambda t: tt.marching_squares(t, 0.0, h, -1.0)[0], (g2.requires_grad_(True),))
    rng = np.random.default_rng(7)
    p, w, r = rng.random((24, 2)), rng.random(24) * 2e-3, rng.uniform(0.2, 1.0, 24)
    P, W, R = (torch.tensor(x, device=device, requires_grad=True) for x in (p, w, r))
    fw = dmesh.candidate_faces(p, triangulation=tigeom.weighted_delaunay(p, w))
    ok["face_probabilities wdt"] = gc(lambda a, b, c: tt.face_probabilities(a, b, c, fw, method="wdt", sharpness=20.0),
                                      (P, W, R), **dm)
    fm = dmesh.candidate_faces(p)
    fm = torch.as_tensor(fm, device=device)  # an index tensor on the device, checked and read there
    ok["face_probabilities minball"] = gc(
        lambda a, c: tt.face_probabilities(a, None, c, fm, method="minball", sharpness=20.0), (P, R), **dm)
    rng = np.random.default_rng(41)
    p = rng.random((20, 2))
    faces = dmesh.candidate_faces(p, k=4)
    PR = torch.tensor(rng.uniform(0.05, 0.95, len(faces)), device=device, requires_grad=True)
    tg = losses.Targets(rng.random((50, 2)))
    P = torch.tensor(p, device=device, requires_grad=True)
    ok["expected_chamfer"] = gc(lambda a, b: tt.expected_chamfer(a, faces, b, tg), (P, PR), **dm)
    fl2 = Flow2D(size=(0.6, 0.3), resolution=40, viscosity=0.02, inflow_velocity=1.0, tol=1e-12, check_every=100)
    v, sg = polygons.circle((0.2, 0.153), 0.06, 12)
    V = torch.tensor(v * np.array([1.2, 1.0]), device=device, requires_grad=True)
    ok["flow_force 2D"] = gc(lambda t: tt.flow_force(fl2, t, sg), (V,), eps=1e-5, atol=1e-7, rtol=1e-4, fast_mode=True,
                            nondet_tol=dm["nondet_tol"])
    fl3 = Flow3D(size=(0.6, 0.3, 0.3), resolution=30, viscosity=0.02, inflow_velocity=1.0, tol=1e-12,
                 check_every=100)
    v3, f3 = meshes.sphere((0.22, 0.1623, 0.14), 0.07, 1)
    V3 = torch.tensor(v3, device=device, requires_grad=True)
    ok["flow_force 3D"] = gc(lambda t: tt.flow_force(fl3, t, f3), (V3,), eps=1e-5, atol=1e-7, rtol=1e-4,
                             fast_mode=True, nondet_tol=dm["nondet_tol"])
    rng = np.random.default_rng(3)
    VT = torch.tensor(rng.normal(size=(8, 3)), device=device, requires_grad=True)
    TT = torch.tensor(np.array([rng.choice(8, 4, replace=False) for _ in range(6)]), device=device)

    def tq(x):
        q = tt.tet_quality(x, TT)
        a = torch.where(torch.isfinite(q["amips"]), q["amips"], torch.zeros_like(q["amips"]))
        return q["volume"], q["radius_ratio"], q["mean_ratio"], a, q["min_sine"], q["dihedrals"]

    ok["tet_quality"] = gc(tq, (VT,), nondet_tol=dm["nondet_tol"])
    from tigeom import render

    RV = torch.tensor([[-0.5, -0.4, 0.0], [0.5, -0.45, 0.05], [0.45, 0.5, -0.02], [-0.48, 0.42, 0.03],
                       [0.0, 0.0, 0.35], [-0.2, -0.3, 0.6], [0.3, 0.1, 0.55], [-0.1, 0.35, 0.7]],
                      dtype=torch.float64, device=device, requires_grad=True)
    RF = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4], [5, 6, 7]])
    RO = torch.tensor([0.7, 0.9, 0.6, 0.8, 0.5], dtype=torch.float64, device=device, requires_grad=True)
    K = render.orbit_cameras(1, 1, resolution=(12, 14)).K[0]
    cams = render.Cameras(np.stack([K, K]), np.stack([render.look_at([0.3, -0.2, 2.5], [0, 0, 0.2], [0, 1, 0]),
                                                      render.look_at([2.2, 0.4, 1.0], [0, 0, 0.2])]), (12, 14))
    seen = torch.isfinite(tt.rasterize(RV.detach(), RF, cams)[1])

    def rast(x, o):
        a, d, n = tt.rasterize(x, RF, cams, opacity=o)
        return a, torch.where(seen, d, torch.zeros_like(d)), n

    ok["rasterize"] = gc(rast, (RV, RO), eps=1e-6, atol=1e-5, rtol=1e-4, nondet_tol=dm["nondet_tol"])
    from tigeom.sim import TetElasticity
    from tigeom.tetmesh import cube_mesh

    cv, ct = cube_mesh(2, 12, seed=0)
    fem = TetElasticity(cv, ct, young=3.0, poisson=0.3)
    CV = torch.tensor(cv, device=device, requires_grad=True)
    ok["compliance"] = gc(lambda x: tt.compliance(fem, x, tol=1e-13), (CV,), eps=1e-6, atol=1e-6, rtol=1e-5,
                          fast_mode=True, nondet_tol=dm["nondet_tol"])
    print(f"# gradcheck on {device} tensors (f64): " + ", ".join(f"{k} {v}" for k, v in ok.items()))


if __name__ == "__main__":
    main()
