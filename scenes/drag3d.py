"""Scene ``drag3d``: minimise the drag of a 3D body of fixed volume in channel flow.

What it shows: 3D physics-driven shape optimisation through an implicit shape, with a real,
differentiable flow solver in the loop. The design variable is a signed-distance grid. Every
iteration extracts its zero level set with ``tigeom.marching_cubes``, solves the steady flow
around that triangle mesh with ``sim.Flow3D`` (warm-started), and pulls the drag gradient back
to the surface with ``res.vjp`` and to the grid with the MeshSDF ``normal_adjoint``. The normal
velocity (the L2 gradient density: per-vertex adjoint over the vertex's area, smoothed over the
mesh, projected so the volume and centroid stay put to first order) is extended to the grid
(value of the nearest vertex) and the field moves as a level set, ``phi - t v``. A Newton
correction ``phi - delta - tau . grad(phi)`` restores the volume and the centroid; the field
is re-distanced away from the surface with the values at crossed grid edges kept. A step that
raises the drag is rejected and shortened (the minimum of the parabola through the drag, its
slope and the trial's drag). The run stops when the step gets tiny or the drag stalls.

Default setup: uniform inflow U = 1 in a square slip-wall channel 1.2 x 0.5 x 0.5, the body of
the volume of a sphere of diameter D = 0.2 starting as that sphere at (0.4, 0.25, 0.25),
viscosity for Re = U D / nu = 20, 8 cells per D (lattice velocity 0.1), sized so that the run
fits in about 20 minutes on 2 CPU cores; ``--arch cuda`` with a finer configuration file runs
the same at 16 or more cells per D. The final shape is compared with prolate spheroids of the
same volume and centroid (aspect ratios 1.5-4) at the same resolution.

Outputs: ``shape_initial.ply``, ``shape_final.ply``, ``shapes.png`` (renders of both shapes from
three sides), ``drag.png`` (drag coefficient per iteration), ``shape_XXXX.ply`` snapshots and
``summary.json`` with ``summary["flow"]`` (the ``sim.Flow3D`` keyword arguments) and
``summary["volume"]``.
"""

from __future__ import annotations

import warnings

import numpy as np

import tigeom
from tigeom.io import read_surface, write_surface
from tigeom.scene import Scene
from tigeom.sim import ConvergenceWarning, Flow3D, meshes
from tigeom.spatial import NearestIndex

from . import plotting
from ._levelset import accepted_state, crossed_nodes, load_accepted, shortened_step, stalled, trial_drag


class OutOfDesignBox(RuntimeError):
    """The level set reached the border of the design grid."""


def _mesh_moments(v, f):
    """(volume, centroid of the enclosed volume, area, area-weighted face-centroid sum)."""
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    tv = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0
    vol = tv.sum()
    cen = (tv[:, None] * (a + b + c)).sum(axis=0) / (4.0 * vol)
    fa = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    return vol, cen, fa.sum(), (fa[:, None] * (a + b + c) / 3.0).sum(axis=0)


class Drag3D(Scene):
    name = "drag3d"
    summary = "minimise the drag of a fixed-volume 3D body in channel flow (3D LBM adjoint through marching cubes)"
    defaults = {
        "iters": 40, "seed": 0, "checkpoint_every": 5, "save_every": 5,
        # flow (sim.Flow3D keywords; viscosity 0 means U D / reynolds)
        "size": [1.2, 0.5, 0.5], "resolution": 40, "reynolds": 20.0, "viscosity": 0.0, "inflow_velocity": 1.0,
        "inflow_profile": "uniform", "walls": "slip", "lattice_velocity": 0.1,
        "flow_tol": 1e-5, "adjoint_tol": 3e-4, "eval_tol": 1e-6,
        # body and design grid (spacing 0 means the flow's cell size)
        "center": [0.4, 0.25, 0.25], "diameter": 0.2, "design_box": [0.08, 0.1, 0.1, 0.95, 0.4, 0.4],
        "design_spacing": 0.0,
        # optimiser: step = surface move in flow cells
        "step_cells": 0.8, "min_step_cells": 0.03, "smooth_passes": 8, "patience": 4, "stop_rel": 1e-3,
        "compare_aspects": [1.5, 2.0, 2.5, 3.0, 3.5, 4.0],
        "precision": "f32",
    }

    def __init__(self, config, out):
        super().__init__(config, out)
        c = config
        D = float(c["diameter"])
        nu = float(c["viscosity"]) or float(c["inflow_velocity"]) * D / float(c["reynolds"])
        self.flow = Flow3D(size=c["size"], resolution=c["resolution"], viscosity=nu,
                           inflow_velocity=c["inflow_velocity"], inflow_profile=c["inflow_profile"],
                           walls=c["walls"], lattice_velocity=c["lattice_velocity"], tol=c["flow_tol"])
        for key in ("flow_tol", "adjoint_tol", "eval_tol", "step_cells", "min_step_cells", "stop_rel", "diameter"):
            val = float(c[key])
            if not (np.isfinite(val) and val > 0):
                raise ValueError(f"{key}: must be a finite number > 0, got {c[key]!r}")
        box = np.asarray(c["design_box"], float)
        h = float(c["design_spacing"]) or self.flow.dx
        if box.shape != (6,) or not (box[3:] > box[:3]).all() or h <= 0:
            raise ValueError(f"design_box/design_spacing: need (x0, y0, z0, x1, y1, z1) with x1 > x0 ... and "
                             f"spacing > 0, got {c['design_box']}, {h}")
        self.h, self.origin = h, box[:3]
        self.shape = tuple(int(round((box[3 + a] - box[a]) / h)) + 1 for a in range(3))
        axes = [box[a] + h * np.arange(self.shape[a]) for a in range(3)]
        self.nodes = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        center = np.asarray(c["center"], float)
        self.volume0 = np.pi * D ** 3 / 6.0
        self.centroid0 = center
        self.dref = D
        # the body keeps the volume and centroid of the sphere (so spheroids of that volume are a
        # fair comparison): its distance field's extraction is corrected to them first
        self.phi = self._constrain((np.linalg.norm(self.nodes - center, axis=1) - D / 2).reshape(self.shape))
        surf = self._extract()
        write_surface(self.out / "shape_initial.ply", surf.vertices, surf.faces)
        self.max_step = float(c["step_cells"]) * self.flow.dx
        self.step_len = self.max_step
        self.accepted = None  # (phi, drag, extended direction on the design grid, slope)
        self.warm = False
        self.cd_hist = []
        self.summary_extra = {"flow": {**self.flow.kwargs(), "tol": float(c["eval_tol"])},
                              "volume": self.volume0, "centroid": center.tolist()}

    # ------------------------------------------------------------------ geometry

    def _extract(self, phi=None):
        phi = self.phi if phi is None else phi
        for a in range(3):
            edge = np.take(phi, [0, -1], axis=a)
            if (edge < 0).any():
                raise OutOfDesignBox("drag3d: the body reached the design box; enlarge design_box")
        surf = tigeom.marching_cubes(phi, spacing=self.h, origin=self.origin)
        if len(surf.faces) == 0:
            raise RuntimeError("drag3d: the body vanished from the design grid")
        return surf

    def _cd(self, drag):
        return 2.0 * drag / (self.flow.mean_inflow ** 2 * np.pi * self.dref ** 2 / 4.0)

    def _constrain(self, phi):
        """Restore the volume and centroid of the extracted body: phi - delta - tau . grad(phi)
        moves the surface out by delta and translates it by tau (Newton, 4 iterations)."""
        grads = np.gradient(phi, self.h)
        delta, tau = 0.0, np.zeros(3)
        out = phi
        for _ in range(4):
            s = self._extract(out)
            vol, cen, area, m1 = _mesh_moments(s.vertices, s.faces)
            dd = (self.volume0 - vol) / area  # d volume = area d delta
            dt = (self.volume0 * self.centroid0 - vol * cen - m1 * dd) / vol  # d(V c) = M1 d delta + V d tau
            delta += dd
            tau += dt
            out = phi - delta - sum(tau[a] * grads[a] for a in range(3))
        return out

    def _vertex_areas_and_neighbours(self, surf):
        v, f = surf.vertices, surf.faces
        fa = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
        area = np.zeros(len(v))
        for k in range(3):
            np.add.at(area, f[:, k], fa / 3.0)
        edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        return np.maximum(area, 1e-30), edges

    def _direction(self, surf, grad):
        """Smoothed, constraint-projected descent direction (outward normal velocity) per vertex."""
        area, edges = self._vertex_areas_and_neighbours(surf)
        d = surf.normal_adjoint(grad) / area  # L2 steepest descent: move outward by +ds/area
        deg = np.bincount(edges[:, 0], minlength=len(d)).astype(float)
        for _ in range(int(self.config["smooth_passes"])):
            nb = np.bincount(edges[:, 0], weights=d[edges[:, 1]], minlength=len(d))
            d = 0.5 * d + 0.5 * nb / np.maximum(deg, 1.0)
        B = np.column_stack([np.ones(len(d)), surf.vertices - self.centroid0])
        Wb = B * area[:, None]
        return d - B @ np.linalg.solve(B.T @ Wb, Wb.T @ d)

    def _reinitialise(self, phi, near):
        """Distance to the surface (nearest vertex) away from it; the values at the ends of grid
        edges the level set crosses are kept, so the extracted surface does not change."""
        inside = phi < 0.0
        keep = crossed_nodes(inside)
        dist = np.maximum(near[1].reshape(self.shape), 1e-9 * self.h)
        return np.where(keep, phi, np.where(inside, -dist, dist))

    # ------------------------------------------------------------------ scene protocol

    def _solve(self, surf, tol):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self.flow.solve(surf.vertices, surf.faces, warm_start=self.warm, tol=tol)

    def step(self, it):
        c = self.config
        surf = self._extract()
        res, drag = trial_drag(lambda: self._solve(surf, float(c["flow_tol"])), self.accepted)
        self.warm = True
        accepted = self.accepted is None or drag <= self.accepted[1]
        adj_steps = 0
        if accepted:
            near = NearestIndex(surf.vertices).query(self.nodes)
            phi = self._reinitialise(self.phi, near)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                grad = res.vjp([1.0, 0.0, 0.0], tol=float(c["adjoint_tol"]))
            adj_steps = res.adjoint.get("steps", 0)
            d = self._direction(surf, grad)
            vext = (d / max(np.abs(d).max(), 1e-30))[near[0]].reshape(self.shape)
            slope = -float((surf.vjp(grad) * vext).sum())  # trial phi = phi - t vext
            if self.accepted is not None:
                self.step_len = min(self.step_len * 1.5, self.max_step)
            self.accepted = (phi, drag, vext, slope)
            self.cd_hist.append(self._cd(drag))
        else:
            _, acc_drag, _, slope = self.accepted
            self.step_len = shortened_step(self.step_len, drag, acc_drag, slope)
        acc_phi, drag_acc, vext, slope = self.accepted
        out_of_box = False
        while True:  # a step that leaves the design grid is shortened like a rejected one
            try:
                self.phi = self._constrain(acc_phi - self.step_len * vext)
                break
            except OutOfDesignBox:
                out_of_box = True
                self.step_len *= 0.5
                if self.step_len < float(c["min_step_cells"]) * self.flow.dx:
                    self.phi = acc_phi
                    break
        pat = int(c["patience"])
        converged = (self.step_len < float(c["min_step_cells"]) * self.flow.dx
                     or stalled(self.cd_hist, pat, float(c["stop_rel"])))
        vol = _mesh_moments(surf.vertices, surf.faces)[0]
        return {"cd": self._cd(drag if res is not None else drag_acc), "cd_best": self._cd(drag_acc),
                "accepted": float(accepted), "infeasible": float(res is None), "out_of_box": float(out_of_box),
                "step_cells": self.step_len / self.flow.dx, "flow_steps": res.steps if res is not None else 0,
                "adjoint_steps": adj_steps, "volume_rel_err": abs(vol / self.volume0 - 1.0), "converged": converged}

    def state(self):
        st = {"phi": self.phi, "step_len": np.array(self.step_len), "cd_hist": np.array(self.cd_hist)}
        st.update(accepted_state(self.accepted))
        return st

    def load_state(self, state):
        self.phi = np.array(state["phi"], float)
        self.step_len = float(state["step_len"])
        self.cd_hist = list(np.asarray(state["cd_hist"], float))
        self.accepted = load_accepted(state)

    def save_iteration(self, it):
        surf = self._extract()
        write_surface(self.out / f"shape_{it:04d}.ply", surf.vertices, surf.faces)

    def _spheroids(self, tol):
        """Cd of same-volume, same-centroid prolate spheroids at the flow's resolution."""
        out, skipped = {}, {}
        warm = False
        for asp in self.config["compare_aspects"]:
            v, f = meshes.equal_volume_spheroid(self.centroid0, self.volume0, float(asp), 4)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    out[f"{float(asp):g}"] = self._cd(self.flow.solve(v, f, tol=tol, warm_start=warm).drag)
                warm = True
            except ValueError as exc:  # too thin for this flow grid: say so, do not compare
                skipped[f"{float(asp):g}"] = str(exc)
        return out, skipped

    def finish(self, history):
        surf = self._extract(None if self.accepted is None else self.accepted[0])
        write_surface(self.out / "shape_final.ply", surf.vertices, surf.faces)
        v0, f0 = read_surface(self.out / "shape_initial.ply")
        tol = float(self.config["eval_tol"])
        sph, skipped = self._spheroids(tol)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            f_init = self.flow.solve(v0, f0, tol=tol)
            f_final = self.flow.solve(surf.vertices, surf.faces, tol=tol)
        cd0, cd1 = self._cd(f_init.drag), self._cd(f_final.drag)
        best = min(sph.values()) if sph else None
        plotting.render_meshes([(v0, f0, f"initial: sphere, Cd {cd0:.4f}"),
                                (surf.vertices, surf.faces, f"final, Cd {cd1:.4f}")], self.out / "shapes.png",
                               title="drag3d: flow along +x" + (f" (best spheroid Cd {best:.4f})" if best else ""))
        plotting.loss_curve(history, ["cd", "cd_best"], self.out / "drag.png", log=False,
                            title="drag3d: drag coefficient per iteration")
        vol, cen, _, _ = _mesh_moments(surf.vertices, surf.faces)
        ext = np.ptp(surf.vertices, axis=0)
        return {"cd_initial": cd0, "cd_final": cd1, "drag_initial": f_init.drag, "drag_final": f_final.drag,
                "drag_reduction": 1.0 - cd1 / cd0, "cd_spheroids": sph, "spheroids_not_resolved": skipped,
                "best_spheroid_cd": best, "final_vs_best_spheroid": (cd1 / best - 1.0) if best else None,
                "beats_every_compared_spheroid": bool(cd1 < best) if best else None,
                "final_converged": bool(f_final.converged), "final_aspect_ratio": float(ext[0] / ext[1:].mean()),
                "volume_rel_err": abs(vol / self.volume0 - 1.0),
                "centroid_shift": float(np.linalg.norm(cen - self.centroid0)),
                "reference_diameter": self.dref, "reynolds": self.flow.reynolds(self.dref),
                "cells_per_diameter": self.dref / self.flow.dx, "faces_final": int(len(surf.faces))}
