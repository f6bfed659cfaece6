"""Scenes ``pointcloud2d`` and ``pointcloud3d``: DMesh reconstruction from point clouds.

``pointcloud2d`` reconstructs glyph outlines (matplotlib TextPath) from points sampled on them:
"B" (two holes), "i" (two components) and "&". Outputs per glyph: ``NAME.npz`` (vertices and
segments), ``NAME.png`` (sample points, the probabilistic mesh with edges shaded by probability,
and the final edges), and the Chamfer distance / F1 against the true outline in summary.json.

``pointcloud3d`` reconstructs a closed torus and an open wavy patch from 2e4 points each.
Outputs per shape: ``NAME.ply`` (the mesh), ``NAME.png`` (a render) and Chamfer / F1 against
dense samples of the analytic surface, face counts, manifold-edge counts and timings.

Each iteration reconstructs one shape, so a run checkpoints and resumes between shapes.
"""

from __future__ import annotations

import numpy as np

from tigeom import dmesh, io
from tigeom.dmesh import sampling
from tigeom.scene import Scene, first_pending

from . import plotting


class _PointCloudScene(Scene):
    dim = 2

    def __init__(self, config, out):
        super().__init__(config, out)
        self.names = list(config["targets"])
        if not self.names:
            raise ValueError("targets: need at least one target")
        self.results: dict[str, dict] = {}

    def make(self, name: str, rng) -> tuple[np.ndarray, np.ndarray, object]:
        """(samples, dense reference points, outline polylines or None) of target ``name``."""
        raise NotImplementedError

    def step(self, it):
        name = first_pending(self.names, self.results)
        if name is None:
            return {"converged": True}
        c = self.config
        samples, ref, polys = self.make(name, np.random.default_rng(int(c["seed"])))
        res = dmesh.reconstruct(samples, seed=int(c["seed"]), iterations=int(c["dmesh_iterations"]),
                                resolution=float(c["resolution"]) or None, stages=int(c["stages"]))
        score = sampling.chamfer_f1(res.vertices, res.faces, ref, n=int(c["eval_points"]), tau=float(c["f1_tau"]))
        fp = res.mesh.probabilities()
        self.results[name] = {"vertices": res.vertices, "faces": res.faces, "samples": samples,
                              "prob_faces": res.mesh.faces, "probs": fp.probs,
                              "mesh_points": res.mesh.points * res.scale + res.origin,
                              "score": score, "seconds": res.stats["seconds"],
                              "stages": res.stats["stages"]}
        self.write(name, self.results[name], polys)
        return {f"{name}_chamfer": score["chamfer"], f"{name}_f1": score["f1"],
                "converged": len(self.results) == len(self.names)}

    def write(self, name, r, polys):
        raise NotImplementedError

    def state(self):
        st = {"done": np.array(list(self.results), dtype=str)}
        for name, r in self.results.items():
            for k in ("vertices", "faces", "samples", "prob_faces", "probs", "mesh_points"):
                st[f"{name}__{k}"] = r[k]
            st[f"{name}__score"] = np.array([r["score"][k] for k in _SCORE_KEYS])
            st[f"{name}__seconds"] = np.array(r["seconds"])
        return st

    def load_state(self, state):
        for name in [str(x) for x in state["done"]]:
            r = {k: state[f"{name}__{k}"] for k in ("vertices", "faces", "samples", "prob_faces", "probs",
                                                        "mesh_points")}
            r["score"] = dict(zip(_SCORE_KEYS, map(float, state[f"{name}__score"])))
            r["seconds"] = float(state[f"{name}__seconds"])
            r["stages"] = []
            self.results[name] = r

    def finish(self, history):
        out = {}
        for name, r in self.results.items():
            f = np.asarray(r["faces"])
            fig = {**{k: round(v, 7) for k, v in r["score"].items()}, "vertices": int(len(r["vertices"])),
                   "faces": int(len(f)), "samples": int(len(r["samples"])), "seconds": round(r["seconds"], 2)}
            if self.dim == 2 and len(f):  # gaps in the curve: vertices with one edge
                fig["open_ends"] = int((np.bincount(f.reshape(-1)) == 1).sum())
            if self.dim == 3 and len(f):
                e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
                _, cnt = np.unique(e, axis=0, return_counts=True)
                fig.update(boundary_edges=int((cnt == 1).sum()), nonmanifold_edges=int((cnt > 2).sum()))
            if r["stages"]:
                fig["stages"] = r["stages"]
            out[name] = fig
        if out:
            out["chamfer_max"] = max(v["chamfer"] for v in out.values())
            out["chamfer_unit"] = "fraction of the reference bounding-box diagonal"
        return out


_SCORE_KEYS = ("chamfer", "mesh_to_ref", "ref_to_mesh", "f1", "precision", "recall")


class PointCloud2D(_PointCloudScene):
    name = "pointcloud2d"
    summary = "DMesh reconstruction of glyph outlines (holes, several components) from sampled points"
    defaults = {"iters": 10, "seed": 0, "checkpoint_every": 1, "save_every": 1000,
                "targets": ["B", "i", "&"], "samples": 4000, "dmesh_iterations": 100, "stages": 2,
                "resolution": 0.0, "eval_points": 100_000, "f1_tau": 0.005}
    dim = 2

    def make(self, name, rng):
        polys = sampling.glyph_outlines(name)
        samples = sampling.sample_polylines(polys, int(self.config["samples"]), rng)
        ref = sampling.sample_polylines(polys, 200_000, rng)
        return samples, ref, polys

    def write(self, name, r, polys):
        stem = _stem(name)
        io.write_curve(self.out / f"{stem}.npz", r["vertices"], r["faces"])
        plotting.dmesh_2d(r["samples"], r["mesh_points"], r["prob_faces"], r["probs"], r["vertices"], r["faces"],
                          self.out / f"{stem}.png",
                          title=f"'{name}': Chamfer {100 * r['score']['chamfer']:.3f}% of diagonal, "
                                f"F1 {r['score']['f1']:.3f}")


class PointCloud3D(_PointCloudScene):
    name = "pointcloud3d"
    summary = "DMesh reconstruction of a closed torus and an open patch from 2e4 points each"
    defaults = {"iters": 10, "seed": 0, "checkpoint_every": 1, "save_every": 1000,
                "targets": ["torus", "patch"], "samples": 20000, "dmesh_iterations": 100, "stages": 2,
                "resolution": 0.0, "eval_points": 200_000, "f1_tau": 0.005}
    dim = 3

    def make(self, name, rng):
        n = int(self.config["samples"])
        if name == "torus":
            return sampling.torus_samples(n, rng=rng), sampling.torus_samples(400_000, rng=rng), None
        if name == "patch":
            return sampling.patch_samples(n, rng=rng), sampling.patch_samples(400_000, rng=rng), None
        raise ValueError(f"targets: unknown 3D target {name!r}; expected 'torus' or 'patch'")

    def write(self, name, r, polys):
        io.write_surface(self.out / f"{name}.ply", r["vertices"], r["faces"])
        plotting.render_mesh(r["vertices"], r["faces"], self.out / f"{name}.png", two_sided=True,
                             title=f"{name}: Chamfer {100 * r['score']['chamfer']:.3f}% of diagonal, "
                                   f"F1 {r['score']['f1']:.3f}")


def _stem(name: str) -> str:
    """A file-name-safe stem for a glyph."""
    return "glyph_" + "_".join(f"{ord(ch):x}" if not ch.isalnum() else ch for ch in name)
