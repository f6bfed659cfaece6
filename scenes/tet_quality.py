"""Scene ``tet_quality``: improve sliver-rich tet meshes and measure what it does to a simulation.

With no ``--input`` it builds two meshes in code: the Delaunay tets of a unit cube with a
regular surface grid plus random interior points, and of a ball with an icosphere surface plus
random interior points (minimum dihedral angles well under 1 degree). Every iteration is one
improvement sweep (``tigeom.improve_tets`` with ``max_sweeps=1``) of every mesh that still
improves, so a run checkpoints and resumes between sweeps.

Outputs: ``NAME_before.vtu`` and ``NAME_after.vtu`` (cell data: min/max dihedral, mean ratio),
``dihedrals.png`` (before/after histograms), ``quality.png`` (worst angle per sweep) and
``summary.json`` with the quality figures and the finite-element figures (``sim.TetElasticity``:
CG iterations, condition number, stable explicit time step) before and after.
"""

from __future__ import annotations

import numpy as np

from tigeom import io
from tigeom.scene import Scene
from tigeom.tetmesh import cube_mesh, improve_tets, sphere_mesh, tet_quality

from . import plotting


class TetQualityScene(Scene):
    name = "tet_quality"
    summary = "improve sliver-rich tet meshes (cube, ball) keeping the boundary; FEM figures before/after"
    defaults = {
        "iters": 60, "seed": 0, "checkpoint_every": 5, "save_every": 1000,
        "input": "", "meshes": ["cube", "sphere"], "cube_grid": 6, "cube_interior": 400,
        "sphere_subdivisions": 2, "sphere_interior": 300, "patience": 3, "insert": True, "fem": True,
    }

    def __init__(self, config, out):
        super().__init__(config, out)
        c = config
        self.inputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if c["input"]:
            v, t = io.read_volume(c["input"])
            self.inputs["input"] = (v, t)
        else:
            for name in c["meshes"]:
                if name == "cube":
                    self.inputs[name] = cube_mesh(int(c["cube_grid"]), int(c["cube_interior"]), int(c["seed"]))
                elif name == "sphere":
                    self.inputs[name] = sphere_mesh(int(c["sphere_subdivisions"]), int(c["sphere_interior"]),
                                                    int(c["seed"]))
                else:
                    raise ValueError(f"meshes: unknown test mesh {name!r}; expected 'cube' or 'sphere'")
        self.current = {k: (v.copy(), t.copy()) for k, (v, t) in self.inputs.items()}
        self.best = {k: float(tet_quality(v, t)["min_sine"].min()) for k, (v, t) in self.inputs.items()}
        self.stalled = {k: 0 for k in self.inputs}
        self.seconds = {k: 0.0 for k in self.inputs}

    def step(self, it):
        metrics = {}
        for name, (v, t) in self.current.items():
            if self.stalled[name] >= int(self.config["patience"]):
                continue
            out = improve_tets(v, t, max_sweeps=1, insert=bool(self.config["insert"]))
            self.current[name] = (out.vertices, out.tets)
            self.seconds[name] += out.stats["seconds"]
            q = float(out.history[-1]["min_sine"]) if out.history else self.best[name]
            if q > self.best[name] + 1e-6:
                self.best[name], self.stalled[name] = q, 0
            else:
                self.stalled[name] += 1
            metrics[f"{name}_min_dihedral"] = out.after["min_dihedral"]
        metrics["converged"] = all(s >= int(self.config["patience"]) for s in self.stalled.values())
        return metrics

    def state(self):
        st = {}
        for name, (v, t) in self.current.items():
            st[f"{name}_v"], st[f"{name}_t"] = v, t
        st["best"] = np.array([self.best[k] for k in self.current])
        st["stalled"] = np.array([self.stalled[k] for k in self.current])
        st["seconds"] = np.array([self.seconds[k] for k in self.current])
        return st

    def load_state(self, state):
        for i, name in enumerate(self.current):
            self.current[name] = (state[f"{name}_v"], state[f"{name}_t"])
            self.best[name] = float(state["best"][i])
            self.stalled[name] = int(state["stalled"][i])
            self.seconds[name] = float(state["seconds"][i])

    def finish(self, history):
        from tigeom.sim import TetElasticity

        figures, panels = {}, []
        for name, (v0, t0) in self.inputs.items():
            v1, t1 = self.current[name]
            q0, q1 = tet_quality(v0, t0), tet_quality(v1, t1)
            for tag, v, t, q in (("before", v0, t0, q0), ("after", v1, t1, q1)):
                io.write_volume(self.out / f"{name}_{tag}.vtu", v, t, cell_data={
                    "min_dihedral": q["min_dihedral"], "max_dihedral": q["max_dihedral"],
                    "mean_ratio": q["mean_ratio"]})
            panels.append((name, q0["dihedrals"], q1["dihedrals"]))
            fig = {"before": q0.summary(), "after": q1.summary(), "improve_seconds": round(self.seconds[name], 3),
                   "vertices_before": len(v0), "vertices_after": len(v1)}
            if self.config["fem"]:
                fig["fem_before"] = TetElasticity(v0, t0).report()
                fig["fem_after"] = TetElasticity(v1, t1).report()
            figures[name] = fig
        plotting.dihedral_histograms(panels, self.out / "dihedrals.png", "dihedral angles before / after improve_tets")
        keys = sorted({k for h in history for k in h if k.endswith("_min_dihedral")})
        if keys:  # a mesh that stopped improving has no entry in later sweeps
            filled = [{"iteration": h["iteration"], **{k: h.get(k, np.nan) for k in keys}} for h in history]
            plotting.loss_curve(filled, keys, self.out / "quality.png", title="worst dihedral angle per sweep",
                                log=False)
        figures["min_dihedral_after"] = min(f["after"]["min_dihedral"] for f in figures.values())
        return figures
