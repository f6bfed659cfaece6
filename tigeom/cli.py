"""Command line: ``tigeom run SCENE``, ``tigeom scenes``."""

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
    sub.add_parser("scenes", help="list the scenes")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from . import scene

    if args.command == "scenes":
        for name, ep in sorted(scene.available().items()):
            cls = ep.load()
            print(f"{name:16s} {cls.summary}")
        return 0
    if args.command == "run":
        try:
            summary = scene.run(args.scene, out=args.out, arch=args.arch, iters=args.iters, seed=args.seed,
                                config_file=args.config, resume=not args.no_resume, progress=not args.quiet)
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
