"""Scene ``drag2d``: minimise the drag of a 2D body of fixed area in channel flow.

What it shows: physics-driven shape optimisation through an implicit shape. The body is a
signed-distance field on a grid. Every iteration extracts its boundary with
``tigeom.marching_squares``, solves the steady flow around that polygon with ``sim.Flow2D``
(warm-started from the previous iteration), and pulls the drag gradient back to the boundary
with ``res.vjp`` and the MeshSDF ``normal_adjoint``. The normal velocity (the L2 gradient
density, smoothed along the curve) is projected so that the area and the centroid stay put to
first order; the boundary moves, an exact area/centroid correction follows, and the distance
field is rebuilt from the moved boundary (re-initialisation at every step). A step that raises
the drag is rejected and the step length halved; the run stops when the step gets tiny or the
drag stops falling.

Default setup: the Schaefer-Turek 2D-1 channel (2.2 x 0.41, parabolic inflow peak 0.3,
viscosity 1e-3, Re 20 on the diameter) at 10 cells per diameter, starting from the circle of
diameter 0.1 at (0.3, 0.2). The final shape is compared with ellipses of the same area,
centroid and resolution (``compare_aspects``).

Outputs: ``shape_initial.npz`` and ``shape_final.npz`` (``vertices``, ``segments``),
``shapes.png`` (the shapes over the iterations on the final velocity field), ``drag.png`` (drag
coefficient per iteration), ``shape_XXXX.npz`` snapshots and ``summary.json`` with
``summary["flow"]`` holding the ``sim.Flow2D`` keyword arguments.
"""

from __future__ import annotations

import warnings

import numpy as np

import tigeom
from sim import Flow2D, shapes
from sim.flow2d import ConvergenceWarning
from tigeom.scene import Scene

from . import plotting


class Drag2D(Scene):
    name = "drag2d"
    summary = "minimise the drag of a fixed-area body in channel flow (LBM adjoint through marching squares)"
    defaults = {
        "iters": 80, "seed": 0, "checkpoint_every": 10, "save_every": 10,
        # flow (sim.Flow2D keywords)
        "size": [2.2, 0.41], "resolution": 100, "viscosity": 1e-3, "inflow_velocity": 0.3,
        "inflow_profile": "parabolic", "walls": "no-slip", "flow_tol": 2e-5, "adjoint_tol": 3e-4,
        # body and design grid
        "body": "circle", "center": [0.3, 0.2], "diameter": 0.1,
        "design_box": [0.1, 0.03, 0.6, 0.38], "design_spacing": 0.005,
        # optimiser: step = boundary move in flow cells
        "step_cells": 0.8, "min_step_cells": 0.02, "smooth_passes": 20, "patience": 8, "stop_rel": 2e-4,
        "compare_aspects": [3.0, 4.0, 5.0],
        "precision": "f32",
    }

    def __init__(self, config, out):
        super().__init__(config, out)
        c = config
        self.flow = Flow2D(size=c["size"], resolution=c["resolution"], viscosity=c["viscosity"],
                           inflow_velocity=c["inflow_velocity"], inflow_profile=c["inflow_profile"],
                           walls=c["walls"], tol=c["flow_tol"])
        x0, y0, x1, y1 = (float(t) for t in c["design_box"])
        h = float(c["design_spacing"])
        if not (x1 > x0 and y1 > y0 and h > 0):
            raise ValueError(f"design_box/design_spacing: need x1 > x0, y1 > y0 and spacing > 0, got {c['design_box']}, {h}")
        self.h = h
        self.origin = np.array([x0, y0])
        self.shape = (int(round((x1 - x0) / h)) + 1, int(round((y1 - y0) / h)) + 1)
        gx = x0 + h * np.arange(self.shape[0])
        gy = y0 + h * np.arange(self.shape[1])
        X, Y = np.meshgrid(gx, gy, indexing="ij")
        self.nodes = np.column_stack([X.ravel(), Y.ravel()])
        D = float(c["diameter"])
        if c["body"] == "circle":
            v, s = shapes.circle(c["center"], D / 2, 256)
        elif c["body"] == "square":
            a = D / 2
            cx, cy = c["center"]
            v = np.array([[cx - a, cy - a], [cx + a, cy - a], [cx + a, cy + a], [cx - a, cy + a]])
            s = shapes.ring(4)
        else:
            raise ValueError(f"body: expected 'circle' or 'square', got {c['body']!r}")
        self.phi = self._sdf(v, s)
        curve = self._extract()
        self.area0, self.centroid0 = shapes.area_centroid(curve.vertices, curve.segments)
        self.dref = 2.0 * np.sqrt(self.area0 / np.pi)  # diameter of the equal-area circle
        self.step_len = float(c["step_cells"]) * self.flow.dx
        self.accepted = None  # (phi, drag, direction on that curve as (vertices, segments, d))
        self.warm = False
        self.cd_hist = []  # Cd of the accepted shapes, for the stalling test
        np.savez(self.out / "shape_initial.npz", vertices=curve.vertices, segments=curve.segments)
        self.summary_extra = {"flow": self.flow.kwargs()}

    # ------------------------------------------------------------------ geometry

    def _sdf(self, v, s):
        return shapes.signed_distance(self.nodes, v, s).reshape(self.shape)

    def _extract(self):
        curve = tigeom.marching_squares(self.phi, spacing=(self.h, self.h), origin=self.origin)
        if len(curve.segments) == 0:
            raise RuntimeError("drag2d: the body vanished from the design grid")
        return curve

    def _cd(self, drag):
        return 2.0 * drag / (self.flow.mean_inflow ** 2 * self.dref)

    def _direction(self, curve, grad):
        """Smoothed, constraint-projected descent direction (outward normal velocity) per vertex."""
        V, S = curve.vertices, curve.segments
        nxt = np.empty(len(V), np.int64)
        prv = np.empty(len(V), np.int64)
        nxt[S[:, 0]] = S[:, 1]
        prv[S[:, 1]] = S[:, 0]
        ell = 0.5 * (np.linalg.norm(V[nxt] - V, axis=1) + np.linalg.norm(V - V[prv], axis=1))
        ds = curve.normal_adjoint(grad)  # = -n . dJ/dv: dJ/d(outward move) = -ds
        d = ds / np.maximum(ell, 1e-12)  # L2 steepest descent: move outward by +ds/ell
        for _ in range(int(self.config["smooth_passes"])):
            d = 0.5 * d + 0.25 * (d[nxt] + d[prv])
        # keep area and centroid to first order: d orthogonal to 1, x - xc, y - yc (weights ell)
        B = np.column_stack([np.ones(len(V)), V - self.centroid0])
        Wb = B * ell[:, None]
        d = d - B @ np.linalg.solve(B.T @ Wb, Wb.T @ d)
        return d, curve.normals

    def _move(self, V, S, d, n, length):
        """Move the boundary by ``length`` (max displacement) along d n, restore area and centroid
        exactly (translate, scale about the centroid), rebuild the distance field."""
        W = V + (length / max(np.abs(d).max(), 1e-30)) * d[:, None] * n
        area, cen = shapes.area_centroid(W, S)
        W = self.centroid0 + (W - cen) * np.sqrt(self.area0 / area)
        return self._sdf(W, S)

    # ------------------------------------------------------------------ scene protocol

    def step(self, it):
        curve = self._extract()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                res = self.flow.solve(curve.vertices, curve.segments, warm_start=self.warm)
        except ValueError:
            # the trial shape is infeasible for the flow grid (thinner than 3 cells, or too close
            # to the channel's boundary): reject it like a step that raised the drag
            if self.accepted is None:
                raise
            res = None
        self.warm = True
        drag = res.drag if res is not None else np.inf
        accepted = self.accepted is None or drag <= self.accepted[1]
        if accepted:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                grad = res.vjp([1.0, 0.0], tol=float(self.config["adjoint_tol"]))
            d, n = self._direction(curve, grad)
            if self.accepted is not None:
                self.step_len = min(self.step_len * 1.25, float(self.config["step_cells"]) * self.flow.dx)
            self.accepted = (self.phi.copy(), drag, (curve.vertices, curve.segments, d, n))
        else:
            self.step_len *= 0.5
        _, drag_acc, (V, S, d, n) = self.accepted
        self.phi = self._move(V, S, d, n, self.step_len)
        cd = self._cd(drag if res is not None else drag_acc)  # an infeasible trial reports the accepted Cd
        if accepted:
            self.cd_hist.append(self._cd(drag_acc))
        pat = int(self.config["patience"])
        stalled = len(self.cd_hist) > pat and (self.cd_hist[-pat - 1] - self.cd_hist[-1]) < float(
            self.config["stop_rel"]) * self.cd_hist[-1]
        converged = self.step_len < float(self.config["min_step_cells"]) * self.flow.dx or stalled
        return {"cd": cd, "cd_best": self._cd(drag_acc), "accepted": float(accepted), "infeasible": float(res is None),
                "step_cells": self.step_len / self.flow.dx, "flow_steps": res.steps if res is not None else 0,
                "adjoint_steps": res.adjoint.get("steps", 0) if accepted else 0,
                "area_rel_err": abs(shapes.area_centroid(curve.vertices, curve.segments)[0] / self.area0 - 1.0),
                "converged": converged}

    def state(self):
        st = {"phi": self.phi, "step_len": np.array(self.step_len), "cd_hist": np.array(self.cd_hist)}
        if self.accepted is not None:
            phi, drag, (V, S, d, n) = self.accepted
            st.update(acc_phi=phi, acc_drag=np.array(drag), acc_V=V, acc_S=S, acc_d=d, acc_n=n)
        return st

    def load_state(self, state):
        self.phi = np.array(state["phi"], float)
        self.step_len = float(state["step_len"])
        self.cd_hist = list(np.asarray(state["cd_hist"], float))
        if "acc_phi" in state:
            self.accepted = (np.array(state["acc_phi"], float), float(state["acc_drag"]),
                             (np.array(state["acc_V"]), np.array(state["acc_S"]), np.array(state["acc_d"]),
                              np.array(state["acc_n"])))

    def save_iteration(self, it):
        curve = self._extract()
        np.savez(self.out / f"shape_{it:04d}.npz", vertices=curve.vertices, segments=curve.segments)

    def _best_shape(self):
        """The accepted shape with the lowest drag (the last accepted one)."""
        if self.accepted is None:
            return self._extract()
        cur = self.phi
        self.phi = self.accepted[0]
        curve = self._extract()
        self.phi = cur
        return curve

    def finish(self, history):
        curve = self._best_shape()
        np.savez(self.out / "shape_final.npz", vertices=curve.vertices, segments=curve.segments)
        init = np.load(self.out / "shape_initial.npz")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            f_init = self.flow.solve(init["vertices"], init["segments"])
            f_final = self.flow.solve(curve.vertices, curve.segments)
            ell, skipped = {}, {}
            for asp in self.config["compare_aspects"]:
                v, s = shapes.equal_area_ellipse(self.centroid0, self.area0, float(asp), 256)
                try:
                    ell[f"{float(asp):g}"] = self._cd(self.flow.solve(v, s).drag)
                except ValueError as exc:  # too thin for this flow grid: say so, do not compare
                    skipped[f"{float(asp):g}"] = str(exc)
        cd0, cd1 = self._cd(f_init.drag), self._cd(f_final.drag)
        x = f_final.flow.dx * (np.arange(self.flow.nx) + 0.5)
        y = f_final.flow.dx * (np.arange(self.flow.ny) + 0.5)
        u, _ = f_final.fields()
        snaps = sorted(self.out.glob("shape_0*.npz"))
        plotting.flow_shapes(x, y, np.linalg.norm(u, axis=-1), [np.load(p) for p in snaps], init, curve,
                             self.out / "shapes.png",
                             title=f"drag2d: Cd {cd0:.3f} -> {cd1:.3f}"
                             + (f" (best ellipse {min(ell.values()):.3f})" if ell else ""))
        plotting.loss_curve(history, ["cd", "cd_best"], self.out / "drag.png", log=False,
                            title="drag2d: drag coefficient per iteration")
        xs = curve.vertices[:, 0]
        area, cen = shapes.area_centroid(curve.vertices, curve.segments)
        return {"cd_initial": cd0, "cd_final": cd1, "drag_initial": f_init.drag, "drag_final": f_final.drag,
                "drag_reduction": 1.0 - cd1 / cd0, "cd_ellipses": ell,
                "beats_every_compared_ellipse": bool(cd1 < min(ell.values())) if ell else None,
                "ellipses_not_resolved": skipped,
                "final_converged": bool(f_final.converged), "final_aspect_ratio": float(
                    np.ptp(xs) / np.ptp(curve.vertices[:, 1])),
                "area_rel_err": abs(area / self.area0 - 1.0), "centroid_shift": float(np.linalg.norm(cen - self.centroid0)),
                "reference_diameter": self.dref, "reynolds": self.flow.reynolds(self.dref),
                "cells_per_diameter": self.dref / self.flow.dx}
