"""Full-size validation of tigeom.sim.Flow3D (the figures of docs/validation.md).

1. ``st``: Schaefer-Turek 3D-1Z (Re 20): a cylinder D = 0.1 spanning the 0.41 x 0.41 channel
   along z at (0.5, 0.2), parabolic inflow peak 0.45: Cd, Cl and the pressure difference
   across the cylinder at the given cells per diameter, against Cd 6.18533, Cl 0.009401,
   dp 0.171007.
2. ``sphere``: a sphere in a slip-wall box (16 D x 7 D x 7 D, blockage 1.6%) with uniform
   inflow at Re 20 and 100, against Schiller-Naumann 2.610 and 1.092.
3. ``shift``: the Re 20 sphere moved by sub-cell offsets: drag change.

    python benchmarks/validate_flow3d.py --arch cuda --parts st,sphere,shift --cells 10,20,40
    python benchmarks/validate_flow3d.py --arch cpu --parts st --cells 10

Writes one JSON line per case to stdout (and ``--out FILE``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np

import tigeom
from tigeom.sim import ConvergenceWarning, Flow3D, meshes

ST = dict(size=(2.5, 0.41, 0.41), viscosity=1e-3, inflow_velocity=0.45, inflow_profile="parabolic")
ST_REF = dict(cd=6.18533, cl=0.009401, dp=0.171007)


def schafer_turek_3d(cells_per_D: float, sections: int = 256, tol: float = 1e-6):
    fl = Flow3D(resolution=cells_per_D / 0.1, tol=tol, max_steps=1_000_000, **ST)
    # a closed cylinder longer than the channel is high: the part outside is ignored
    v, f = meshes.cylinder((0.5, 0.2, 0.205), 0.05, 0.61, axis=2, sections=sections)
    t = time.perf_counter()
    r = fl.solve(v, f)
    sec = time.perf_counter() - t
    cd, cl, _ = 2 * r.force / (0.2 ** 2 * 0.1 * 0.41)
    p = r.pressure_at([[0.45, 0.2, 0.205], [0.55, 0.2, 0.205]])
    dp = float(p[0] - p[1])
    return dict(case="st3d-1z", cells_per_D=cells_per_D, grid=list(fl.shape), cd=cd, cd_err=cd / ST_REF["cd"] - 1,
                cl=cl, dp=dp, dp_err=dp / ST_REF["dp"] - 1, steps=r.steps, converged=r.converged, seconds=sec)


SCHILLER_NAUMANN = {re: 24.0 / re * (1 + 0.15 * re ** 0.687) for re in (20, 100)}


def sphere_flow(re: float, cells_per_D: float, box=(16.0, 7.0, 7.0), upstream=4.0, offset=(0.0, 0.0, 0.0),
                tol: float = 1e-6, subdivisions: int = 5):
    D = 1.0
    fl = Flow3D(size=box, resolution=cells_per_D / D, viscosity=D / re, inflow_velocity=1.0,
                inflow_profile="uniform", walls="slip", lattice_velocity=0.05, tol=tol, max_steps=1_000_000)
    c = np.array([upstream, box[1] / 2, box[2] / 2]) + np.asarray(offset) * fl.dx
    v, f = meshes.sphere(c, D / 2, subdivisions)
    t = time.perf_counter()
    r = fl.solve(v, f)
    cd = 2 * r.force[0] / (np.pi * D * D / 4)
    ref = 24.0 / re * (1 + 0.15 * re ** 0.687)
    return dict(case="sphere", re=re, cells_per_D=cells_per_D, grid=list(fl.shape), offset_cells=list(offset), cd=cd,
                schiller_naumann=ref, cd_err=cd / ref - 1, blockage=np.pi / 4 / (box[1] * box[2]), steps=r.steps,
                converged=r.converged, seconds=time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--parts", default="st,sphere,shift")
    ap.add_argument("--cells", default="10,20", help="cells per diameter for the Schaefer-Turek case")
    ap.add_argument("--sphere-cells", type=float, default=16.0)
    ap.add_argument("--reynolds", default="20,100")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    cfg = tigeom.init(arch=a.arch, precision=a.precision)
    warnings.simplefilter("always", ConvergenceWarning)
    print(f"# backend {cfg.backend}, {platform.processor() or platform.machine()}, precision {a.precision}")
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.out:
            with open(a.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    parts = a.parts.split(",")
    if "st" in parts:
        for c in (float(x) for x in a.cells.split(",")):
            emit(schafer_turek_3d(c))
    if "sphere" in parts:
        for re in (float(x) for x in a.reynolds.split(",")):
            emit(sphere_flow(re, a.sphere_cells))
    if "shift" in parts:
        base = None
        for off in ((0, 0, 0), (0.5, 0, 0), (0, 0.5, 0), (0.25, 0.25, 0.25), (0.5, 0.5, 0.5)):
            r = sphere_flow(20.0, a.sphere_cells, box=(12.0, 6.0, 6.0), offset=off)
            base = base or r["cd"]
            r["change_vs_unshifted"] = r["cd"] / base - 1
            emit(r)
    return rows


if __name__ == "__main__":
    main()
