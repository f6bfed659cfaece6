"""Full-size validation of tigeom.sim.Flow2D (the figures of docs/validation.md).

1. Schaefer-Turek 2D-1 (Re 20): Cd, Cl and the pressure difference at 10, 20 and 40 cells per
   diameter, against Cd 5.57953, Cl 0.010619, dp 0.117520.
2. Sub-cell shifts of the cylinder at 20 cells per diameter: drag change.
3. Free-stream cylinder at Re 10, 20, 40: uniform inflow, slip walls, a 40 D x 20 D channel
   (blockage D/H = 5%; ``--domain L H`` for another), against Dennis & Chang 2.85 / 2.05 / 1.52.
4. Ellipses of the circle's area (aspect 1..7) in the drag2d setup, and the drag2d result
   (``--shape RUN/shape_final.npz``): does the optimised body beat every ellipse?

    python benchmarks/validate_flow.py --arch cuda --parts 1,2,3,4 --shape runs/drag2d/shape_final.npz
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

import tigeom
from tigeom.sim import ConvergenceWarning, Flow2D, polygons

ST = dict(size=(2.2, 0.41), viscosity=1e-3, inflow_velocity=0.3, inflow_profile="parabolic")


def schafer_turek(resolutions=(100, 200, 400), shifts=()):
    rows = []
    for res in resolutions:
        for sh in shifts or (0.0,):
            fl = Flow2D(resolution=res, tol=1e-6, max_steps=400_000, **ST)
            v, s = polygons.circle((0.2 + sh * fl.dx, 0.2 + 0.7 * sh * fl.dx), 0.05, 512)
            t = time.perf_counter()
            r = fl.solve(v, s)
            cd, cl = 2 * r.force / (0.2 ** 2 * 0.1)
            p = r.pressure_at([[0.15, 0.2], [0.25, 0.2]])  # on the nominal surface
            rows.append(dict(cells_per_D=res / 10, shift_cells=sh, cd=cd, cd_err=cd / 5.57953 - 1, cl=cl,
                             dp=p[0] - p[1], dp_err=(p[0] - p[1]) / 0.11752 - 1, steps=r.steps,
                             converged=r.converged, seconds=time.perf_counter() - t))
            print(rows[-1], flush=True)
    return rows


DENNIS_CHANG = {10: 2.85, 20: 2.05, 40: 1.52}


def free_stream(cells_per_D=20, Ds=(40, 20), reynolds=(10, 20, 40), max_steps=600_000):
    """Ds: the channel's length and height in diameters (the cylinder sits 10 D from the inflow)."""
    rows = []
    for re in reynolds:
        ref = DENNIS_CHANG[re]
        D = 1.0
        fl = Flow2D(size=(Ds[0] * D, Ds[1] * D), resolution=cells_per_D / D, viscosity=1.0 * D / re,
                    inflow_velocity=1.0, inflow_profile="uniform", walls="slip", tol=1e-6, max_steps=max_steps,
                    lattice_velocity=0.05)
        v, s = polygons.circle((10 * D, Ds[1] * D / 2), D / 2, 512)
        t = time.perf_counter()
        r = fl.solve(v, s)
        cd = 2 * r.drag / (1.0 * D)
        rows.append(dict(re=re, cd=cd, reference=ref, err=cd / ref - 1, blockage=D / (Ds[1] * D), domain_D=list(Ds), cells_per_D=cells_per_D,
                         steps=r.steps, converged=r.converged, seconds=time.perf_counter() - t))
        print(rows[-1], flush=True)
    return rows


FINE_ASPECTS = tuple(np.round(np.arange(3.5, 5.51, 0.1), 2))


def ellipses(shape_file=None, resolution=100, aspects=(1, 2, 3) + FINE_ASPECTS + (6, 7)):
    """Ellipses of the drag2d body's area and centroid (the circle of diameter 0.1 at (0.3, 0.2)),
    each flow started from the previous one's and converged to 1e-6; then the drag2d shape."""
    fl = Flow2D(resolution=resolution, tol=1e-6, **ST)
    circle_v, circle_s = polygons.circle((0.3, 0.2), 0.05, 256)
    area, cen = polygons.area_centroid(circle_v, circle_s)
    dref = 2 * np.sqrt(area / np.pi)
    state = {"warm": False}

    def cd(v, s):
        r = fl.solve(v, s, warm_start=state["warm"])
        state["warm"] = True
        return 2 * r.drag / (0.2 ** 2 * dref)

    rows = []
    for a in aspects:
        rows.append(dict(body=f"ellipse {a:g}", aspect=float(a), cd=cd(*polygons.equal_area_ellipse(cen, area, a, 256))))
        print(rows[-1], flush=True)
    if shape_file:
        z = np.load(shape_file)
        a2, c2 = polygons.area_centroid(z["vertices"], z["segments"])
        rows.append(dict(body="drag2d optimum", aspect=float(np.ptp(z["vertices"][:, 0]) / np.ptp(z["vertices"][:, 1])),
                         cd=cd(z["vertices"], z["segments"]), area_rel=a2 / area, centroid=c2.tolist()))
        best = min(r["cd"] for r in rows if r["body"].startswith("ellipse"))
        rows[-1]["below_best_ellipse"] = bool(rows[-1]["cd"] < best)
        rows[-1]["vs_best_ellipse"] = rows[-1]["cd"] / best - 1
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--parts", default="1,2,3,4")
    ap.add_argument("--shape", default=None)
    ap.add_argument("--resolution", type=int, default=100, help="cells per unit length in part 4")
    ap.add_argument("--aspects", type=float, nargs="+", default=None,
                    help="part 4's aspect ratios (default: 1, 2, 3, 3.5 to 5.5 by 0.1, 6, 7)")
    ap.add_argument("--domain", type=float, nargs=2, default=(40, 20), metavar=("L", "H"),
                    help="part 3's channel length and height in diameters (blockage 1/H)")
    ap.add_argument("--re", type=int, nargs="+", default=(10, 20, 40), choices=sorted(DENNIS_CHANG),
                    help="part 3's Reynolds numbers")
    ap.add_argument("--max-steps", type=int, default=600_000, help="part 3's step limit per case")
    ap.add_argument("--cells-per-d", type=int, default=20, help="part 3's cells per diameter")
    ap.add_argument("--out", default="validation_flow.json")
    a = ap.parse_args(argv)
    if a.aspects is not None and (not a.aspects or min(a.aspects) < 1):
        raise ValueError(f"--aspects: need aspect ratios >= 1, got {a.aspects}")
    cfg = tigeom.init(arch=a.arch, precision=a.precision)
    warnings.simplefilter("always", ConvergenceWarning)
    parts = {int(p) for p in a.parts.split(",")}
    out = {"backend": cfg.backend, "precision": cfg.precision}
    if 1 in parts:
        out["schafer_turek"] = schafer_turek()
    if 2 in parts:
        out["shift"] = schafer_turek(resolutions=(200,), shifts=(0.0, 0.25, 0.5, 0.75))
    if 3 in parts:
        if min(a.domain) < 12 or a.domain[0] < 15:
            raise ValueError(f"--domain: the cylinder sits 10 D from the inflow; need L >= 15 and H >= 12, got {a.domain}")
        out["free_stream"] = free_stream(cells_per_D=a.cells_per_d, Ds=tuple(a.domain), reynolds=tuple(a.re),
                                        max_steps=a.max_steps)
    if 4 in parts:
        kw = {} if a.aspects is None else {"aspects": tuple(a.aspects)}
        out["ellipses"] = ellipses(a.shape, resolution=a.resolution, **kw)
    with open(a.out, "w") as fh:
        json.dump(out, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
