"""Command line: ``tigeom run SCENE``, ``tigeom scenes``, ``tigeom improve-tets IN OUT``."""

from __future__ import annotations

import argparse
import logging
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tigeom", description="Differentiable geometry in Taichi.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a scene", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("scene", help="scene name (see `tigeom scenes`)")
    r.add_argument("--out", help="output folder (default runs/SCENE-<timestamp>); resumes from its checkpoint")
    r.add_argument("--arch", choices=["auto", "cpu", "cuda", "vulkan", "metal"], default=None,
                   help="Taichi arch (default: the scene's, usually auto)")
    r.add_argument("--iters", type=int, default=None, help="iterations (default: the scene's)")
    r.add_argument("--seed", type=int, default=None, help="random seed (default: the scene's)")
    r.add_argument("--config", default=None, help="TOML file overriding the scene's defaults")
    r.add_argument("--no-resume", action="store_true", help="ignore a checkpoint in --out")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--input", default=None, help="input mesh for scenes that take one (tet_quality)")
    sub.add_parser("scenes", help="list the scenes")
    b = sub.add_parser("batch", help="run a scene over a parameter grid and seeds on Dask (extra tigeom[batch])",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("scene", help="scene name (see `tigeom scenes`)")
    b.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a configuration key (or iters) and its values, parsed as TOML scalars; repeatable")
    b.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per combination")
    b.add_argument("--scheduler", default=None, help="Dask scheduler address (default: a local cluster)")
    b.add_argument("--workers", type=int, default=None, help="local cluster workers (default 2; with --arch cuda "
                                                               "one per GPU to pin)")
    b.add_argument("--arch", choices=["auto", "cpu", "cuda"], default=None, help="Taichi arch of every run")
    b.add_argument("--out", required=True, help="batch folder: one folder per run and results.csv")
    b.add_argument("--figure", default=None, help="summary figure to plot in DIR/batch.png (default: the first "
                                                   "with 'final' in its name)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    m = sub.add_parser("improve-tets", help="improve a tet mesh keeping its boundary (any meshio tet format)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m.add_argument("input", help="mesh file holding 'tetra' cells (.vtu, .vtk, .msh, .mesh)")
    m.add_argument("output", help="output mesh file (format from the suffix)")
    m.add_argument("--arch", choices=["auto", "cpu", "cuda"], default="auto", help="Taichi arch")
    m.add_argument("--max-sweeps", type=int, default=30, help="upper bound on improvement sweeps")
    m.add_argument("--target", type=float, default=None,
                   help="stop once every dihedral angle is in [TARGET, 180 - TARGET] degrees (e.g. 30)")
    m.add_argument("--no-insert", action="store_true", help="no vertex insertion or cavity moves")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _improve_tets(args) -> int:
    from . import init, io
    from .tetmesh import improve_tets

    v, t = io.read_volume(args.input)  # a bad path fails before Taichi starts
    init(args.arch)
    out = improve_tets(v, t, max_sweeps=args.max_sweeps, insert=not args.no_insert, target=args.target,
                       progress=not args.quiet)
    io.write_volume(args.output, out.vertices, out.tets)
    rows = [("tets", "tets"), ("min dihedral [deg]", "min_dihedral"), ("max dihedral [deg]", "max_dihedral"),
            ("min radius ratio", "min_radius_ratio"), ("min mean ratio", "min_mean_ratio"),
            ("tets with an angle < 10 deg", "tets_below_10deg"), ("tets with an angle < 30 deg", "tets_below_30deg"),
            ("tets with an angle > 150 deg", "tets_above_150deg"),
            ("tets outside [30, 150] deg", "tets_outside_30_150deg"), ("total volume", "total_volume")]
    print(f"{'':30s} {'before':>14s} {'after':>14s}")
    for label, key in rows:
        b, a = out.before[key], out.after[key]
        fmt = (lambda x: f"{x:14d}") if isinstance(b, int) else (lambda x: f"{x:14.6g}")
        print(f"{label:30s} {fmt(b)} {fmt(a)}")
    print("dihedral angles per 10-degree bin (6 per tet)")
    hb, ha = out.before["dihedral_histogram_10deg"], out.after["dihedral_histogram_10deg"]
    for k, (b, a) in enumerate(zip(hb, ha)):
        print(f"{f'  [{10 * k:3d}, {10 * k + 10:3d}' + (']' if k == 17 else ')'):30s} {b:14d} {a:14d}")
    print(f"{out.stats['sweeps']} sweeps in {out.stats['seconds']:.2f} s: {out.stats['flip23']} 2-3 flips, "
          f"{out.stats['edge_removal']} edge removals, {out.stats['splits'] + out.stats['face_splits']} splits, "
          f"{out.stats['cavity_moves']} cavity moves, {out.stats['smooth_moves']} vertex moves; written to {args.output}")
    print(f"the boundary's sharpest edge angle, a bound on any minimum: {out.stats['boundary_crease_min_deg']:.2f} deg")
    print(f"vertices: {len(v)} in, {len(out.vertices)} out ({out.stats['inserted_vertices']} inserted, "
          f"{out.stats['removed_vertices']} interior ones removed; the remaining input vertices keep their order)")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from . import scene

    if args.command == "scenes":
        for name, ep in sorted(scene.available().items()):
            cls = ep.load()
            print(f"{name:16s} {cls.summary}")
        return 0
    if args.command == "improve-tets":
        try:
            return _improve_tets(args)
        except (ValueError, OSError) as exc:
            print(f"tigeom: error: {exc}", file=sys.stderr)
            return 2
    if args.command == "batch":
        from . import batch

        try:
            rows = batch.run(args.scene, args.grid, seeds=args.seeds, scheduler=args.scheduler, out=args.out,
                             workers=args.workers, arch=args.arch, progress=not args.quiet, figure=args.figure)
        except (ValueError, ImportError) as exc:
            print(f"tigeom: error: {exc}", file=sys.stderr)
            return 2
        failed = [r for r in rows if r["status"] != "ok"]
        print(f"{len(rows)} runs, {len(failed)} failed; table in {args.out}/results.csv")
        return 1 if failed else 0
    if args.command == "run":
        try:
            summary = scene.run(args.scene, out=args.out, arch=args.arch, iters=args.iters, seed=args.seed,
                                config_file=args.config, resume=not args.no_resume, progress=not args.quiet,
                                extra={"input": args.input} if args.input else None)
        except ValueError as exc:
            print(f"tigeom: error: {exc}", file=sys.stderr)
            return 2
        figs = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in summary["figures"].items() if not isinstance(v, (dict, list)))
        print(f"{args.scene}: {summary['iterations']} iterations in {summary['timings']['loop_s']:.1f} s; {figs}")
        print(f"outputs in {summary['out']}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
