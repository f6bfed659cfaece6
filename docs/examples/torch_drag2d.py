"""A neural SDF meets a flow solver: fit a small MLP to a circle's signed distance, then lower the
drag of the body it describes with torch.optim, through tigeom.torch.meshsdf (the MeshSDF
gradient) and tigeom.torch.flow_force (the flow's discrete adjoint), keeping its area.

    python docs/examples/torch_drag2d.py            # 300 fit steps, 40 drag steps, about 1-2 minutes
"""

from __future__ import annotations

import argparse

import torch

import tigeom
import tigeom.torch as tt
from tigeom.sim import Flow2D

CENTER, RADIUS = (0.3, 0.2), 0.05
BOUNDS = ((0.1, 0.03), (0.6, 0.38))  # the design box: the body must stay inside it


class MLP(torch.nn.Module):
    def __init__(self, width=64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Softplus(beta=50),
                                       torch.nn.Linear(width, width), torch.nn.Softplus(beta=50),
                                       torch.nn.Linear(width, 1))

    def forward(self, x):
        # inputs scaled to the design box, output in length units
        lo = torch.tensor(BOUNDS[0], dtype=x.dtype, device=x.device)
        hi = torch.tensor(BOUNDS[1], dtype=x.dtype, device=x.device)
        return 0.1 * self.net(2 * (x - lo) / (hi - lo) - 1).squeeze(-1)


def circle_sdf(x):
    return (x - torch.tensor(CENTER, dtype=x.dtype)).norm(dim=1) - RADIUS


def enclosed_area(v, segs):
    a, b = v[segs[:, 0]], v[segs[:, 1]]
    return 0.5 * (a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1]).sum()  # positive: counter-clockwise


def fit(model, steps, seed=0):
    """Fit the MLP to the circle's signed distance: half the samples uniform over the design box,
    half near the circle (it covers 1% of the box)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=1e-4)
    lo, hi = torch.tensor(BOUNDS[0]), torch.tensor(BOUNDS[1])
    for _ in range(steps):
        box = lo + (hi - lo) * torch.rand(1024, 2, generator=gen)
        near = torch.tensor(CENTER) + 2 * RADIUS * torch.randn(1024, 2, generator=gen)
        x = torch.cat([box, near]).to(torch.float64)
        loss = ((model(x) - circle_sdf(x)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return loss.item()


def minimise_drag(model, flow, steps, lr=5e-4, area_weight=100.0, resolution=101, log=print):
    """Adam on the MLP's parameters against drag / drag0 + w (area / area0 - 1)^2."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    ref = None
    for it in range(steps):
        v, segs = tt.meshsdf(model, BOUNDS, resolution=resolution)
        area = enclosed_area(v, segs)
        drag = tt.flow_force(flow, v, segs)[0]
        if ref is None:
            ref = (drag.detach(), area.detach())
        loss = drag / ref[0] + area_weight * (area / ref[1] - 1) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        d, A = drag.item(), area.item()
        cd = 2 * d / (0.2 ** 2 * 2 * (A / torch.pi) ** 0.5)  # Cd on the equal-area diameter
        history.append(dict(step=it, drag=d, cd=cd, area=A))
        log(f"step {it:3d}  Cd {cd:.4f}  area {A:.6f}")
    return history


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--fit-steps", type=int, default=800)
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args(argv)
    tigeom.init(arch="cpu", precision="f64")
    torch.manual_seed(0)
    model = MLP().to(torch.float64)
    print(f"fit: mean squared SDF error {fit(model, a.fit_steps):.2e}")
    # the drag2d channel (Schaefer-Turek 2D-1, Re 20 on the circle), 10 cells per diameter
    flow = Flow2D(size=(2.2, 0.41), resolution=100, viscosity=1e-3, inflow_velocity=0.3, tol=2e-6)
    minimise_drag(model, flow, a.steps)


if __name__ == "__main__":
    main()
