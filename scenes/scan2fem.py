"""Scene ``scan2fem``: a point cloud to a simulation, in one engine.

point cloud -> DMesh reconstruction (``tigeom.dmesh.reconstruct``) -> the solid it bounds, tets
of its own triangulation with a watertight surface (``tigeom.dmesh.solid``) -> ``improve_tets``
(surface kept) -> linear elasticity (``tigeom.sim.TetElasticity``): clamped at the low-x end,
loaded by its own weight, before and after the improvement.

Default input: samples of a capsule along x (``length``, ``radius``), whose volume is known, with
the same solve on a reference mesh of the true capsule (regular surface rings and a
body-centred cubic lattice inside, spacing ``reference_spacing``). ``interior_spacing`` (0: none)
adds a lattice of points inside the solid before its tets are made (see ``dmesh.solid``). ``--input`` reads a point
file instead (.npy, .xyz or .ply); then there is no reference.

One iteration per stage (reconstruct, solid, improve, simulate), so a run checkpoints and
resumes between stages. Outputs: ``surface.ply`` (the solid's boundary), ``tets.vtu`` (before
improvement) and ``tets_improved.vtu`` (cell data: min dihedral; point data: displacement),
``surface.png``, ``worst_tets.png``, ``displacement.png`` and ``summary.json``.
"""

from __future__ import annotations

import json
import time

import numpy as np

from tigeom import dmesh, io
from tigeom.dmesh import sampling
from tigeom.scene import Scene
from tigeom.tetmesh import improve_tets, output_index, tet_quality

from . import plotting

STAGES = ("reconstruct", "solid", "improve", "simulate")


def _plain(o):
    """numpy scalars and arrays as JSON values (for the figures kept in the checkpoint)."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def capsule_sdf(p, length, radius):
    q = np.zeros_like(p)
    q[:, 0] = np.clip(p[:, 0], 0.0, length)
    return np.linalg.norm(p - q, axis=1) - radius


def capsule_reference_points(length, radius, h):
    """Points of a reference tet mesh of the capsule: rings of spacing ~h on its surface, a
    body-centred cubic lattice of spacing h inside (0.6 h from the surface)."""
    pts = []
    nt = max(int(round(2 * np.pi * radius / h)), 6)
    nx = max(int(round(length / h)), 1)
    for k in range(nx + 1):
        th = 2 * np.pi * (np.arange(nt) + 0.5 * (k % 2)) / nt
        pts.append(np.column_stack([np.full(nt, k * length / nx), radius * np.cos(th), radius * np.sin(th)]))
    na = max(int(round(0.5 * np.pi * radius / h)), 2)
    for side, x0 in ((-1.0, 0.0), (1.0, length)):
        for i in range(1, na + 1):
            phi = 0.5 * np.pi * i / na  # from the end circle (0) to the pole (pi/2)
            rr = radius * np.cos(phi)
            m = max(int(round(2 * np.pi * rr / h)), 1)
            th = 2 * np.pi * (np.arange(m) + 0.5 * (i % 2)) / m
            pts.append(np.column_stack([np.full(m, x0 + side * radius * np.sin(phi)), rr * np.cos(th),
                                        rr * np.sin(th)]))
    g = [np.arange(-radius, length + radius + h, h)] + [np.arange(-radius, radius + h, h)] * 2
    G = np.stack(np.meshgrid(*g, indexing="ij"), -1).reshape(-1, 3)
    B = np.concatenate([G, G + 0.5 * h])
    pts.append(B[capsule_sdf(B, length, radius) < -0.6 * h])
    return np.concatenate(pts)


def value_at(v, t, u, x):
    """Linear interpolation of the vertex field ``u`` at the point ``x`` (in the tet holding it,
    or the nearest to holding it)."""
    a = v[t[:, 0]]
    M = np.stack([v[t[:, 1]] - a, v[t[:, 2]] - a, v[t[:, 3]] - a], -1)
    lam = np.linalg.solve(M, (x - a)[..., None])[..., 0]
    b = np.column_stack([1 - lam.sum(1), lam])
    i = int(np.argmax(b.min(1)))
    return (b[i][:, None] * u[t[i]]).sum(0)


def fem(v, t, clamp_x, probe, tol):
    """Static solve under the body's own weight (-z), clamped where x <= clamp_x: the report
    (CG iterations, condition estimate, stable time step), the displacement, and its z
    component at ``probe``."""
    from tigeom.sim import TetElasticity

    fe = TetElasticity(v, t, clamped=v[:, 0] <= clamp_x)
    sol = fe.solve(fe.gravity(), tol=tol, max_iter=50000)
    rep = fe.report(tol=tol)
    rep.update(static_cg_iterations=int(sol.iterations), static_converged=bool(sol.converged),
               tip_displacement_z=float(value_at(v, t, sol.displacement, probe)[2]))
    return rep, sol.displacement


class Scan2Fem(Scene):
    name = "scan2fem"
    summary = "point cloud -> DMesh surface -> watertight solid tets -> improve_tets -> linear elasticity"
    defaults = {
        "iters": len(STAGES), "seed": 0, "checkpoint_every": 1, "save_every": 1000,
        "input": "", "length": 0.6, "radius": 0.2, "samples": 20000, "noise": 0.0,
        "dmesh_iterations": 60, "stages": 2, "resolution": 0.0, "rays": 15, "interior_spacing": 0.05,
        "improve_sweeps": 40,
        "clamp_fraction": 0.15, "reference_spacing": 0.025, "fem_tol": 1e-8,
    }

    def __init__(self, config, out):
        super().__init__(config, out)
        c = config
        if c["input"]:
            self.samples = io.read_points(c["input"])
            self.known = False
        else:
            if not (float(c["length"]) > 0 and float(c["radius"]) > 0):
                raise ValueError(f"length, radius: must be > 0, got {c['length']}, {c['radius']}")
            rng = np.random.default_rng(int(c["seed"]))
            x = sampling.capsule_samples(int(c["samples"]), float(c["length"]), float(c["radius"]), rng=rng)
            self.samples = x + float(c["noise"]) * rng.normal(size=x.shape)
            self.known = True
        self.arrays: dict[str, np.ndarray] = {}
        self.figures: dict = {}
        self.seconds: dict[str, float] = {}

    def step(self, it):
        stage = STAGES[min(it, len(STAGES) - 1)]
        t0 = time.perf_counter()
        getattr(self, f"_{stage}")()
        self.seconds[stage] = round(time.perf_counter() - t0, 3)
        return {f"{stage}_seconds": self.seconds[stage], "converged": stage == STAGES[-1]}

    def _reconstruct(self):
        c = self.config
        res = dmesh.reconstruct(self.samples, seed=int(c["seed"]), iterations=int(c["dmesh_iterations"]),
                                stages=int(c["stages"]), resolution=float(c["resolution"]) or None)
        m = res.mesh
        fp = m.probabilities()
        keep = (fp.probs > 0.5) & (fp.margin > 0)  # the extracted surface, as faces of all the DMesh's points
        self.arrays.update(dm_points=m.points * res.scale + res.origin, dm_faces=m.faces[keep])
        self.figures["reconstruction"] = {"faces": int(keep.sum()), "points": int(len(m.points))}

    def _solid(self):
        c = self.config
        sp = float(c["interior_spacing"])
        sol = dmesh.solid((self.arrays["dm_points"], self.arrays["dm_faces"]), rays=int(c["rays"]),
                          seed=int(c["seed"]), interior_spacing=sp if sp > 0 else None)
        self.arrays.update(v0=sol.vertices, t0=sol.tets, f0=sol.faces)
        self.figures["solid"] = {**sol.stats, "volume": sol.volume}

    def _improve(self):
        out = improve_tets(self.arrays["v0"], self.arrays["t0"], max_sweeps=int(self.config["improve_sweeps"]),
                           progress=False)
        self.arrays.update(v1=out.vertices, t1=out.tets, src1=out.input_index)
        self.figures["quality_before"], self.figures["quality_after"] = out.before, out.after
        self.figures["improve_stats"] = out.stats

    def _simulate(self):
        c = self.config
        v0 = self.arrays["v0"]
        lo, hi = v0.min(0), v0.max(0)
        clamp_x = float(lo[0] + float(c["clamp_fraction"]) * (hi[0] - lo[0]))
        probe = np.array([float(c["length"]), 0.0, 0.0]) if self.known else 0.5 * (lo + hi) + np.array(
            [0.4 * (hi[0] - lo[0]), 0.0, 0.0])
        tol = float(c["fem_tol"])
        fig = {"clamp_x": clamp_x, "probe": probe.tolist()}
        for tag, v, t in (("before", v0, self.arrays["t0"]), ("after", self.arrays["v1"], self.arrays["t1"])):
            fig[f"fem_{tag}"], self.arrays[f"u_{tag}"] = fem(v, t, clamp_x, probe, tol)
        if self.known:
            from tigeom import weighted_delaunay

            L, r = float(c["length"]), float(c["radius"])
            p = capsule_reference_points(L, r, float(c["reference_spacing"]))
            T = weighted_delaunay(p).simplices
            T = T[capsule_sdf(p[T].mean(1), L, r) < 0]
            fig["fem_reference"], _ = fem(p, T, clamp_x, probe, tol)
            fig["reference_tets"] = int(len(T))
            ref = fig["fem_reference"]["tip_displacement_z"]
            for tag in ("before", "after"):
                fig[f"tip_error_{tag}"] = fig[f"fem_{tag}"]["tip_displacement_z"] / ref - 1
        self.figures["fem"] = fig

    def state(self):
        st = {k: np.asarray(v) for k, v in self.arrays.items()}
        st["stage_seconds"] = np.array([self.seconds.get(k, np.nan) for k in STAGES])
        text = json.dumps(self.figures, default=_plain).encode()
        st["figures_json"] = np.frombuffer(text, np.uint8)  # the earlier stages' figures, for finish()
        return st

    def load_state(self, state):
        skip = ("stage_seconds", "figures_json")
        self.arrays = {k: np.asarray(v) for k, v in state.items() if k not in skip}
        self.seconds = {k: float(x) for k, x in zip(STAGES, state["stage_seconds"]) if np.isfinite(x)}
        self.figures = json.loads(bytes(np.asarray(state["figures_json"], np.uint8)).decode())

    def finish(self, history):
        from tigeom.tetmesh.topology import boundary_faces

        a = self.arrays
        if "t0" not in a:
            return {"stages_done": list(self.seconds)}
        io.write_surface(self.out / "surface.ply", a["v0"], a["f0"])
        q0 = tet_quality(a["v0"], a["t0"])
        io.write_volume(self.out / "tets.vtu", a["v0"], a["t0"], cell_data={"min_dihedral": q0["min_dihedral"]})
        figs = dict(self.figures)
        if self.known:
            L, r = float(self.config["length"]), float(self.config["radius"])
            figs["reference_volume"] = sampling.capsule_volume(L, r)
            figs["volume_error"] = float(figs["solid"]["volume"] / figs["reference_volume"] - 1)
        plotting.render_mesh(a["v0"], a["f0"], self.out / "surface.png", points=self.samples,
                             title="solid's surface (closed, outward) and the samples")
        if "t1" in a:
            q1 = tet_quality(a["v1"], a["t1"])
            cell = {"min_dihedral": q1["min_dihedral"]}
            point = {"displacement": a["u_after"]} if "u_after" in a else None
            io.write_volume(self.out / "tets_improved.vtu", a["v1"], a["t1"], cell_data=cell, point_data=point)
            bf1 = boundary_faces(a["t1"])
            pos = output_index(a["src1"], len(a["v0"]))  # improve_tets may remove interior vertices
            sv = np.unique(a["f0"])
            figs["boundary_kept"] = bool((pos[sv] >= 0).all()
                                         and np.array_equal(np.unique(np.sort(pos[a["f0"]], axis=1), axis=0), bf1)
                                         and np.array_equal(a["v1"][pos[sv]], a["v0"][sv]))
            panels = []
            for tag, v, t, q in (("before", a["v0"], a["t0"], q0), ("after", a["v1"], a["t1"], q1)):
                worst = t[np.argsort(q["min_dihedral"])[:40]]
                faces = np.concatenate([worst[:, [1, 2, 3]], worst[:, [0, 3, 2]], worst[:, [0, 1, 3]], worst[:, [0, 2, 1]]])
                panels.append((v, faces, f"40 worst tets {tag} improve_tets (min {q['min_dihedral'].min():.1f} deg)"))
            plotting.render_meshes(panels, self.out / "worst_tets.png", title="worst tets by min dihedral angle")
            if "u_after" in a:
                plotting.displacement(a["v1"], bf1, a["u_after"], self.out / "displacement.png",
                                      title="displacement under the body's weight (clamped at low x)")
        figs["seconds"] = self.seconds
        return figs
