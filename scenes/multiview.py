"""Scene ``multiview3d``: DMesh reconstruction of a mesh from rendered views.

Ground truth: built-in shapes of genus 0 (a bumpy blob), 1 (a torus) and 2 (a double torus),
made by marching cubes of implicit fields, or ``--input`` any mesh trimesh reads. Each is
rendered by ``tigeom.render.rasterize`` from an orbit of cameras (coverage and depth), then
reconstructed by ``tigeom.dmesh.reconstruct_multiview``. Outputs per shape:

- ``NAME.ply``, the reconstruction;
- ``NAME_views.png``, normal renders of the ground truth above the reconstruction for four views;
- ``NAME_loss.png``, the loss history.

``summary.json`` holds, per shape, the Chamfer distance (% of the ground truth's bounding-box
diagonal), normal consistency and F1 at 1% of the diagonal against dense samples of the ground
truth, and the timings. One shape per iteration, so a run checkpoints and resumes between shapes.
"""

from __future__ import annotations

import numpy as np

import tigeom
from tigeom import dmesh, io, render
from tigeom.dmesh import sampling
from tigeom.scene import Scene, first_pending

from . import plotting

_SCORE_KEYS = ("chamfer", "mesh_to_ref", "ref_to_mesh", "f1", "precision", "recall", "normal_consistency")


def builtin_shape(name: str, n: int = 72) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, faces) of a built-in ground truth, inside the unit ball: "genus0" (a sphere
    with smooth bumps), "genus1" (a torus), "genus2" (a double torus) or "open" (a wavy square
    sheet, an open surface)."""
    if name == "open":
        return _wavy_sheet(n // 2)
    x = np.linspace(-1.0, 1.0, n)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    if name == "genus0":
        f = np.sqrt(X ** 2 + Y ** 2 + Z ** 2) - 0.7 - 0.08 * np.sin(4 * X) * np.sin(4 * Y) * np.sin(4 * Z)
    elif name == "genus1":
        f = (np.sqrt(X ** 2 + Y ** 2) - 0.6) ** 2 + Z ** 2 - 0.25 ** 2
    elif name == "genus2":
        u, v = X / 0.8, Y / 0.8
        f = (u * u + v * v) ** 2 - u * u + v * v
        f = f * f + (Z / 0.8) ** 2 - 0.03
    else:
        raise ValueError(f"targets: unknown shape {name!r}; expected 'genus0', 'genus1', 'genus2' or 'open'")
    s = tigeom.marching_cubes(f, 0.0, spacing=x[1] - x[0], origin=(-1.0, -1.0, -1.0))
    return s.vertices, s.faces


def _wavy_sheet(m: int) -> tuple[np.ndarray, np.ndarray]:
    """A square sheet of side 1.2 with a smooth height field, m x m vertices."""
    t = np.linspace(-0.6, 0.6, m)
    X, Y = np.meshgrid(t, t, indexing="ij")
    v = np.column_stack([X.ravel(), Y.ravel(), (0.15 * np.sin(3 * X) * np.cos(3 * Y)).ravel()])
    i, j = np.meshgrid(np.arange(m - 1), np.arange(m - 1), indexing="ij")
    a = (i * m + j).ravel()
    f = np.concatenate([np.column_stack([a, a + m, a + m + 1]), np.column_stack([a, a + m + 1, a + 1])])
    return v, f


def normal_consistency(vertices, faces, ref_points, ref_normals, n: int = 100_000, rng=0) -> float:
    """Mean |cos| between the normals of points sampled on the mesh and the normal of the
    nearest reference point (1 for a perfect match)."""
    from tigeom.spatial import nearest

    rng = np.random.default_rng(rng)
    v, f = np.asarray(vertices, float), np.asarray(faces, np.int64)
    if not len(f):
        return 0.0
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    nrm = np.cross(b - a, c - a)
    area = np.linalg.norm(nrm, axis=1)
    i = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    pts = (1 - s)[:, None] * a[i] + (s * (1 - r2))[:, None] * b[i] + (s * r2)[:, None] * c[i]
    idx, _ = nearest(ref_points, pts)
    return float(np.abs(np.einsum("ij,ij->i", nrm[i] / area[i, None], ref_normals[idx])).mean())


def _samples_with_normals(vertices, faces, n, rng):
    import trimesh

    m = trimesh.Trimesh(vertices, faces, process=False)
    pts, fi = trimesh.sample.sample_surface(m, n, seed=rng)
    return np.asarray(pts), m.face_normals[fi]


def _topology(vertices, faces) -> dict:
    """Boundary and non-manifold edge counts, and the genus when the mesh is a closed manifold
    (from its Euler characteristic, per connected component summed)."""
    f = np.asarray(faces, np.int64)
    if not len(f):
        return {"boundary_edges": 0, "nonmanifold_edges": 0, "genus": None}
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    ue, cnt = np.unique(e, axis=0, return_counts=True)
    out = {"boundary_edges": int((cnt == 1).sum()), "nonmanifold_edges": int((cnt > 2).sum()), "genus": None}
    if out["boundary_edges"] == 0 and out["nonmanifold_edges"] == 0:
        import trimesh

        parts = trimesh.Trimesh(vertices, faces, process=False).split(only_watertight=False)
        out["components"] = len(parts)
        out["genus"] = int(sum((2 - p.euler_number) // 2 for p in parts))
    return out


class MultiView3D(Scene):
    name = "multiview3d"
    summary = "DMesh reconstruction of genus 0, 1 and 2 shapes (or --input) from 64 rendered views"
    defaults = {"iters": 10, "seed": 0, "checkpoint_every": 1, "save_every": 1000,
                "targets": ["genus0", "genus1", "genus2"], "input": "", "n_azimuth": 8, "n_elevation": 8,
                "image_size": 128, "radius": 3.0, "fov_degrees": 40.0, "resolution": 0.0, "dmesh_iterations": 60,
                "stages": 2, "refine_iterations": 0, "views_per_step": 8, "depth_weight": 1.0, "eval_points": 200_000, "f1_tau": 0.01}

    def __init__(self, config, out):
        super().__init__(config, out)
        self.names = ["input"] if config["input"] else list(config["targets"])
        if not self.names:
            raise ValueError("targets: need at least one target")
        self.results: dict[str, dict] = {}

    def _ground_truth(self, name):
        if name == "input":
            v, f = io.read_surface(self.config["input"])
            c = 0.5 * (v.min(0) + v.max(0))
            return (v - c) / np.linalg.norm(v - c, axis=1).max(), f  # centred in the unit ball
        return builtin_shape(name)

    def step(self, it):
        name = first_pending(self.names, self.results)
        if name is None:
            return {"converged": True}
        c = self.config
        v, f = self._ground_truth(name)
        cams = render.orbit_cameras(int(c["n_azimuth"]), int(c["n_elevation"]), radius=float(c["radius"]),
                                    fov_degrees=float(c["fov_degrees"]),
                                    resolution=(int(c["image_size"]), int(c["image_size"])))
        gt = render.rasterize(v, f, cams)
        rec = dmesh.reconstruct_multiview({"alpha": gt.alpha, "depth": gt.depth}, cams, seed=int(c["seed"]),
                                          resolution=float(c["resolution"]) or None,
                                          iterations=int(c["dmesh_iterations"]), stages=int(c["stages"]),
                                          refine_iterations=int(c["refine_iterations"]),
                                          views_per_step=int(c["views_per_step"]),
                                          depth_weight=float(c["depth_weight"]))
        ref, ref_n = _samples_with_normals(v, f, int(c["eval_points"]), int(c["seed"]))
        score = sampling.chamfer_f1(rec.vertices, rec.faces, ref, n=int(c["eval_points"]), tau=float(c["f1_tau"]))
        score["normal_consistency"] = normal_consistency(rec.vertices, rec.faces, ref, ref_n)
        hist = [{"iteration": i, "loss": h["loss"]} for i, h in enumerate(rec.history + rec.render_history)]
        self.results[name] = {"vertices": rec.vertices, "faces": rec.faces, "score": score,
                              "seconds": rec.stats["seconds"], "samples": rec.stats["samples"],
                              "loss": np.array([h["loss"] for h in hist]),
                              "points_iterations": len(rec.history)}
        self._write(name, v, f, cams)
        return {f"{name}_chamfer": score["chamfer"], f"{name}_f1": score["f1"],
                "converged": len(self.results) == len(self.names)}

    def _write(self, name, v, f, cams):
        r = self.results[name]
        io.write_surface(self.out / f"{name}.ply", r["vertices"], r["faces"])
        pick = cams[np.linspace(0, len(cams) - 1, 4).round().astype(int)]
        a = render.rasterize(v, f, pick)
        b = render.rasterize(r["vertices"], r["faces"], pick)
        plotting.normal_grid([a.normal, b.normal], [a.alpha, b.alpha], ["ground truth", "reconstruction"],
                             self.out / f"{name}_views.png",
                             title=f"{name}: Chamfer {100 * r['score']['chamfer']:.3f}% of the diagonal, "
                                   f"F1 (1%) {r['score']['f1']:.3f}, normal consistency "
                                   f"{r['score']['normal_consistency']:.3f}")
        plotting.loss_curve([{"iteration": i, "loss": x} for i, x in enumerate(r["loss"])], ["loss"],
                            self.out / f"{name}_loss.png",
                            title=f"{name}: point-cloud stages, then {len(r['loss']) - r['points_iterations']} "
                                  "steps against the images")

    def state(self):
        st = {"done": np.array(list(self.results), dtype=str)}
        for name, r in self.results.items():
            for k in ("vertices", "faces", "loss"):
                st[f"{name}__{k}"] = r[k]
            st[f"{name}__score"] = np.array([r["score"][k] for k in _SCORE_KEYS])
            st[f"{name}__meta"] = np.array([r["seconds"], r["samples"], r["points_iterations"]], float)
        return st

    def load_state(self, state):
        for name in [str(x) for x in state["done"]]:
            r = {k: state[f"{name}__{k}"] for k in ("vertices", "faces", "loss")}
            r["score"] = dict(zip(_SCORE_KEYS, map(float, state[f"{name}__score"])))
            sec, ns, npi = state[f"{name}__meta"]
            r.update(seconds=float(sec), samples=int(ns), points_iterations=int(npi))
            self.results[name] = r

    def finish(self, history):
        out = {}
        for name, r in self.results.items():
            s = r["score"]
            out[name] = {"chamfer_percent_of_diagonal": round(100 * s["chamfer"], 5), "f1_at_1_percent": round(s["f1"], 5),
                         "normal_consistency": round(s["normal_consistency"], 5),
                         "precision": round(s["precision"], 5), "recall": round(s["recall"], 5),
                         "vertices": int(len(r["vertices"])), "faces": int(len(r["faces"])),
                         "back_projected_samples": r["samples"], "seconds": round(r["seconds"], 2),
                         **_topology(r["vertices"], r["faces"])}
        if out:
            shapes = list(out.values())
            out["chamfer_percent_max"] = max(v["chamfer_percent_of_diagonal"] for v in shapes)
            out["f1_min"] = min(v["f1_at_1_percent"] for v in shapes)
        return out
