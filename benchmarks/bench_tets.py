"""Tet mesh improvement: tigeom.improve_tets against MMG3D (-optim -nosurf, mmgpy) in the same run.

    python benchmarks/bench_tets.py --arch cpu                       # the sliver-rich test family
    python benchmarks/bench_tets.py --arch cuda --large 1000000      # + a ~1e6-tet mesh on the GPU

Family: ``tigeom.tetmesh.cube_mesh`` (unit cube, regular 6x6 surface grid, 400 random interior
points) and ``sphere_mesh`` (icosphere subdivision 2, 300 interior points), seeds 0-2, the
Delaunay tets of which have minimum dihedral angles of 0.2-0.7 degrees. Each row: worst and best
angles after each tool (tigeom run to its end, and with ``target=30``, which stops once every
angle is in [30, 150]), tets with an angle outside [30, 150], seconds (improve_tets timed after
a warm-up call, so kernel compilation is excluded; MMG3D's library call timed the same way).
``--large N``: random points in the unit cube, scipy Delaunay, about N tets; reports
tet_quality throughput and improve_tets time per sweep (MMG3D run on it too unless --no-ref).
``--fem`` adds ``sim.TetElasticity(...).report()`` of the large run's mesh and of MMG3D's output;
where mmgpy is missing (a GPU machine), save MMG3D's output elsewhere with ``--save-ref FILE`` and
pass it with ``--no-ref --ref-mesh FILE``.
"""

import argparse
import json
import platform
import time

import numpy as np


def mmg(v, t):
    import mmgpy

    m = mmgpy.MmgMesh3D(v, t.astype(np.int32))
    t0 = time.perf_counter()
    m.remesh(optim=1, nosurf=1, verbose=-1)
    return time.perf_counter() - t0, np.asarray(m.get_vertices()), np.asarray(m.get_tetrahedra())


def row(tag, q, seconds):
    s = q.summary()
    out30 = int(((q["min_dihedral"] < 30) | (q["max_dihedral"] > 150)).sum())
    return {"tool": tag, "min_dihedral": round(s["min_dihedral"], 2), "max_dihedral": round(s["max_dihedral"], 2),
            "tets_outside_30_150": out30, "tets": s["tets"], "seconds": round(seconds, 3)}


def fem_reports(mesh, ref_mesh) -> dict:
    """``sim.TetElasticity(...).report()`` (gravity, the low-x end clamped) of the improved mesh
    and of the reference's output, when there is one."""
    from tigeom.sim import TetElasticity

    out = {}
    for name, m in (("tigeom", mesh), ("mmg3d", ref_mesh)):
        if m is None:
            continue
        t0 = time.perf_counter()
        r = TetElasticity(*m).report()
        out[name] = dict(r, tets=int(len(m[1])), seconds=round(time.perf_counter() - t0, 1))
        print(f"fem {name}: {out[name]}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="none: only the large run")
    ap.add_argument("--large", type=int, default=0, help="also a random mesh of about this many tets")
    ap.add_argument("--large-sweeps", type=int, default=3)
    ap.add_argument("--large-time-limit", type=float, default=None, help="improve_tets time_limit (s) of the large run")
    ap.add_argument("--large-mesh", default=None, help="the large mesh from an .npz (vertices, tets) instead")
    ap.add_argument("--save-large-cube", nargs=3, metavar=("GRID", "N_INTERIOR", "FILE"), default=None,
                    help="write cube_points(GRID, N_INTERIOR) triangulated by weighted_delaunay to FILE and exit")
    ap.add_argument("--no-ref", action="store_true")
    ap.add_argument("--fem", action="store_true", help="TetElasticity report of the large run's mesh and MMG3D's")
    ap.add_argument("--save-ref", default=None, help="save MMG3D's output on the large mesh (.npz)")
    ap.add_argument("--ref-mesh", default=None, help="MMG3D's output on the large mesh from --save-ref (with --no-ref)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import tigeom
    from tigeom.tetmesh import cube_mesh, improve_tets, sphere_mesh, tet_quality

    rt = tigeom.init(args.arch)
    if args.save_large_cube:
        from tigeom.tetmesh.generate import cube_points

        grid, n_int, path = int(args.save_large_cube[0]), int(args.save_large_cube[1]), args.save_large_cube[2]
        p = cube_points(grid, n_int, seed=0)
        tri = tigeom.weighted_delaunay(p)
        np.savez(path, vertices=p, tets=tri.simplices.astype(np.int32))
        print(f"{path}: {len(p)} points, {len(tri.simplices)} tets, min dihedral "
              f"{tet_quality(p, tri.simplices).summary()['min_dihedral']:.3f} deg")
        return
    results = {"machine": platform.processor() or platform.machine(), "backend": rt.backend, "rows": []}
    if args.seeds:
        v, t = cube_mesh(2, 10, seed=0)
        improve_tets(v, t)  # compile (the family is triangulated by weighted_delaunay: its kernels too)
    print(f"{'mesh':10s} {'tool':12s} {'min deg':>8s} {'max deg':>8s} {'out[30,150]':>12s} {'tets':>6s} {'s':>7s}")
    for fam, make in (("cube", lambda s: cube_mesh(6, 400, seed=s)), ("sphere", lambda s: sphere_mesh(2, 300, seed=s))):
        for seed in args.seeds:
            v, t = make(seed)
            rows = [row("input", tet_quality(v, t), 0.0)]
            t0 = time.perf_counter()
            out = improve_tets(v, t)
            rows.append(row("tigeom", tet_quality(out.vertices, out.tets), time.perf_counter() - t0))
            if not args.no_ref:
                sec, mv, mt = mmg(v, t)
                rows.append(row("mmg3d", tet_quality(mv, mt), sec))
            t0 = time.perf_counter()  # stopping once every angle is in [30, 150]
            out = improve_tets(v, t, target=30.0)
            rows.append(row("tigeom t=30", tet_quality(out.vertices, out.tets), time.perf_counter() - t0))
            for r in rows:
                r["mesh"] = f"{fam}-{seed}"
                print(f"{r['mesh']:10s} {r['tool']:12s} {r['min_dihedral']:8.2f} {r['max_dihedral']:8.2f} "
                      f"{r['tets_outside_30_150']:12d} {r['tets']:6d} {r['seconds']:7.3f}")
            if not args.no_ref:
                mmg_s = max(rows[2]["seconds"], 1e-9)
                print(f"{'':10s} ratio tigeom/mmg3d: angle {rows[1]['min_dihedral'] / rows[2]['min_dihedral']:.2f}x, "
                      f"time {rows[1]['seconds'] / mmg_s:.1f}x (target=30: {rows[3]['seconds'] / mmg_s:.1f}x)")
            results["rows"] += rows
    if args.large or args.large_mesh:
        if args.large_mesh:  # e.g. from --save-large-cube, made where scipy/compiling is cheap
            z = np.load(args.large_mesh)
            p, t = z["vertices"], z["tets"]
        else:
            from scipy.spatial import Delaunay

            n = int(args.large / 6.4)
            p = np.random.default_rng(0).random((n, 3))
            t = Delaunay(p).simplices
        tet_quality(p, t[:10])
        if not args.seeds:
            improve_tets(p, t, max_sweeps=1)  # compile on the large mesh itself (no triangulation kernels)
        t0 = time.perf_counter()
        q = tet_quality(p, t)
        tq = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = improve_tets(p, t, max_sweeps=args.large_sweeps, time_limit=args.large_time_limit)
        ti = time.perf_counter() - t0
        after = row("tigeom", tet_quality(out.vertices, out.tets), ti)
        big = {"mesh": args.large_mesh or "random", "tets": len(t), "tet_quality_s": round(tq, 3), "tets_per_s": round(len(t) / tq),
               "improve_s": round(ti, 2), "sweeps": out.stats["sweeps"], "time_limited": out.stats["time_limited"],
               "min_dihedral_before": round(q.summary()["min_dihedral"], 2),
               "min_dihedral_after": after["min_dihedral"], "max_dihedral_after": after["max_dihedral"],
               "tets_outside_30_150_before": row("input", q, 0.0)["tets_outside_30_150"],
               "tets_outside_30_150_after": after["tets_outside_30_150"], "tets_after": after["tets"],
               # per sweep: seconds since the start and the worst tet's quality (smallest dihedral sine)
               "history": [(h["seconds"], round(h["min_sine"], 4)) for h in out.history]}
        ref_mesh = None
        if not args.no_ref:
            sec, mv, mt = mmg(p, t)
            ref = row("mmg3d", tet_quality(mv, mt), sec)
            big.update(mmg3d_s=round(sec, 2), mmg3d_min_dihedral=ref["min_dihedral"],
                       mmg3d_max_dihedral=ref["max_dihedral"], mmg3d_outside_30_150=ref["tets_outside_30_150"])
            ref_mesh = (mv, mt)
            if args.save_ref:
                np.savez_compressed(args.save_ref, vertices=np.asarray(mv, np.float64), tets=np.asarray(mt, np.int32))
        elif args.ref_mesh:  # MMG3D's output made where mmgpy is installed (--save-ref)
            z = np.load(args.ref_mesh)
            ref_mesh = (z["vertices"].astype(np.float64), z["tets"])
        if args.fem:
            big["fem"] = fem_reports((out.vertices, out.tets), ref_mesh)
        print("large:", big)
        results["large"] = big
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
