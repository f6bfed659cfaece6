"""tigeom.torch on the device: marching cubes forward + backward on a grid tensor, against the
numpy API in the same process; meshsdf with an MLP field, its time split into the network's
grid evaluation, the extraction and the backward; gradcheck of the tensor path on the arch's
tensors.

    python benchmarks/bench_torch.py --arch cuda --n 256
    python benchmarks/bench_torch.py --arch cpu --n 128
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

import tigeom
import tigeom.torch as tt

from _timing import best_synced


def sphere_grid(n, device, dtype):
    x = torch.linspace(-1, 1, n, device=device, dtype=dtype)
    X, Y, Z = torch.meshgrid(x, x, x, indexing="ij")
    return (X * X + 1.3 * Y * Y + 0.8 * Z * Z).sqrt() - 0.6, float(x[1] - x[0])


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


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--meshsdf-n", type=int, default=128)
    a = ap.parse_args(argv)
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
    t_torch = best_synced(torch_fb, a.reps)
    t_np_f = best_synced(numpy_f, a.reps)
    t_np_b = best_synced(lambda: surf.vjp(ones), a.reps)
    print(f"| {a.n}^3 | {len(surf.vertices):,} | {1e3 * t_torch:.2f} | {1e3 * t_np_f:.2f} | {1e3 * t_np_b:.2f} | "
          f"{(t_np_f + t_np_b) / t_torch:.1f}x |")
    meshsdf_split(device, a.meshsdf_n, a.reps)
    # gradcheck of the tensor path on this arch's tensors (f64 kernels)
    tigeom.init(arch=a.arch, precision="f64")
    g, h = sphere_grid(9, device, torch.float64)
    ok = torch.autograd.gradcheck(lambda t: tt.marching_cubes(t, 0.0, h, -1.0)[0], (g.requires_grad_(True),))
    g2 = g.detach()[:, :, 4]
    ok2 = torch.autograd.gradcheck(lambda t: tt.marching_squares(t, 0.0, h, -1.0)[0], (g2.clone().requires_grad_(True),))
    print(f"# gradcheck on {device} tensors: marching_cubes {ok}, marching_squares {ok2}")


if __name__ == "__main__":
    main()
