"""Scene ``drag2d``: minimise the drag of a 2D body of fixed area in channel flow.

What it shows: physics-driven shape optimisation through an implicit shape. The design variable
is a signed-distance field on a grid. Every iteration extracts its boundary with
``tigeom.marching_squares``, solves the steady flow around that polygon with ``sim.Flow2D``
(warm-started from the previous iteration), and pulls the drag gradient back to the boundary
with ``res.vjp`` and the MeshSDF ``normal_adjoint``. The normal velocity (the L2 gradient
density, smoothed along the curve, projected so that the area and the centroid stay put to first
order) is extended to the grid (the value at the nearest boundary point) and the field moves as a
level set: ``phi - t v``. A Newton correction of the form ``phi - delta - tau . grad(phi)``
restores the area and the centroid exactly. Accepted fields are re-distanced away from the
boundary with the values at the crossed grid edges kept, so the extracted boundary does not
change (no round-trip noise). A step that raises the drag is rejected and shortened (the minimum
of the parabola through the drag, its predicted slope and the trial's drag); the flow's
tolerance follows the predicted decrease, and the adjoint's tightens when short steps fail.
The run stops when the step gets tiny or the drag stops falling.

Default setup: the Schaefer-Turek 2D-1 channel (2.2 x 0.41, parabolic inflow peak 0.3,
viscosity 1e-3, Re 20 on the diameter) at 10 cells per diameter, starting from the circle of
diameter 0.1 at (0.3, 0.2), whose area and centroid the body keeps. The final shape is compared
with ellipses of the same area, centroid and resolution (``compare_aspects``).

Outputs: ``shape_initial.npz`` and ``shape_final.npz`` (``vertices``, ``segments``),
``shapes.png`` (the shapes over the iterations on the final velocity field), ``drag.png`` (drag
coefficient per iteration), ``shape_XXXX.npz`` snapshots and ``summary.json`` with
``summary["flow"]`` holding the ``sim.Flow2D`` keyword arguments.
"""

from __future__ import annotations

import warnings

import numpy as np

import tigeom
from tigeom.sim import Flow2D, polygons
from tigeom.sim.flow2d import ConvergenceWarning
from tigeom.scene import Scene

from . import plotting
from ._levelset import accepted_state, crossed_nodes, load_accepted, shortened_step, stalled, trial_drag


class Drag2D(Scene):
    name = "drag2d"
    summary = "minimise the drag of a fixed-area body in channel flow (LBM adjoint through marching squares)"
    defaults = {
        "iters": 80, "seed": 0, "checkpoint_every": 10, "save_every": 10,
        # flow (sim.Flow2D keywords)
        "size": [2.2, 0.41], "resolution": 100, "viscosity": 1e-3, "inflow_velocity": 0.3,
        "inflow_profile": "parabolic", "walls": "no-slip", "flow_tol": 2e-6, "flow_tol_max": 2e-5, "flow_tol_factor": 3e-3,
        "adjoint_tol": 3e-4, "eval_tol": 1e-6,
        # body and design grid
        "body": "circle", "aspect": 1.0, "center": [0.3, 0.2], "diameter": 0.1,
        "design_box": [0.1, 0.03, 0.6, 0.38], "design_spacing": 0.005,
        # optimiser: step = boundary move in flow cells
        "step_cells": 0.8, "min_step_cells": 0.02, "smooth_passes": 20, "patience": 5, "stop_rel": 1e-3,
        "refine_below_cells": 0.1, "adjoint_tol_min": 3e-5, "adjoint_max_steps": 20000,
        "compare_aspects": [3.0, 4.0, 4.5, 5.0, 6.0],
        "precision": "f32",
    }

    def __init__(self, config, out):
        super().__init__(config, out)
        c = config
        self.flow = Flow2D(size=c["size"], resolution=c["resolution"], viscosity=c["viscosity"],
                           inflow_velocity=c["inflow_velocity"], inflow_profile=c["inflow_profile"],
                           walls=c["walls"], tol=c["flow_tol"])
        for key in ("flow_tol", "flow_tol_max", "flow_tol_factor", "adjoint_tol", "adjoint_tol_min", "eval_tol",
                    "step_cells", "min_step_cells", "refine_below_cells", "adjoint_max_steps", "stop_rel"):
            val = float(c[key])
            if not (np.isfinite(val) and val > 0):
                raise ValueError(f"{key}: must be a finite number > 0, got {c[key]!r}")
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
        aspect = float(c["aspect"])
        if not (np.isfinite(aspect) and aspect > 0):
            raise ValueError(f"aspect: must be a finite number > 0, got {c['aspect']!r}")
        if c["body"] == "circle" and aspect != 1.0:  # the ellipse of the circle's area
            v, s = polygons.equal_area_ellipse(c["center"], np.pi * D * D / 4, aspect, 256)
        elif c["body"] == "circle":
            v, s = polygons.circle(c["center"], D / 2, 256)
        elif c["body"] == "square":
            a = D / 2
            cx, cy = c["center"]
            v = np.array([[cx - a, cy - a], [cx + a, cy - a], [cx + a, cy + a], [cx - a, cy + a]])
            s = polygons.ring(4)
        else:
            raise ValueError(f"body: expected 'circle' or 'square', got {c['body']!r}")
        # the body keeps the area and centroid of the given polygon (so ellipses of that area are a
        # fair comparison): its distance field's extraction is corrected to them first
        self.area0, self.centroid0 = polygons.area_centroid(v, s)
        self.phi = self._constrain(self._sdf(v, s))
        curve = self._extract()
        self.dref = 2.0 * np.sqrt(self.area0 / np.pi)  # diameter of the equal-area circle
        self.max_step = float(c["step_cells"]) * self.flow.dx
        self.step_len = self.max_step
        self.adjoint_tol = float(c["adjoint_tol"])
        self.tol_range = (float(c["flow_tol"]), max(float(c["flow_tol"]), float(c["flow_tol_max"])))
        self.trial_tol = self.tol_range[1]
        self.accepted = None  # (phi, drag, extended direction on the design grid)
        self.accepted_res = None  # FlowResult of the accepted shape (not checkpointed: re-solved)
        self.warm = False
        self.cd_hist = []  # Cd of the accepted shapes, for the stalling test
        np.savez(self.out / "shape_initial.npz", vertices=curve.vertices, segments=curve.segments)
        # the keywords that re-evaluate a shape as finish() does (at the evaluation tolerance)
        self.summary_extra = {"flow": {**self.flow.kwargs(), "tol": float(c["eval_tol"])}}

    # ------------------------------------------------------------------ geometry

    def _sdf(self, v, s):
        return polygons.signed_distance(self.nodes, v, s).reshape(self.shape)

    def _extract(self, phi=None):
        phi = self.phi if phi is None else phi
        curve = tigeom.marching_squares(phi, spacing=(self.h, self.h), origin=self.origin)
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
        return d

    def _nearest(self, curve):
        """(distance, segment, parameter) of every design node's nearest point on ``curve``."""
        return polygons.nearest_on_segments(self.nodes, curve.vertices, curve.segments)

    def _extend(self, curve, d, near=None):
        """Extend a per-vertex normal velocity to every design node: the value at the nearest
        point of the curve (linear along its segment), the level-set velocity extension."""
        _, k, t = self._nearest(curve) if near is None else near
        a, b = curve.segments[k, 0], curve.segments[k, 1]
        return ((1.0 - t) * d[a] + t * d[b]).reshape(self.shape)

    def _reinitialise(self, phi, curve, near=None):
        """Signed distance to ``curve`` away from it; the values at the ends of grid edges the
        level set crosses are kept, so the extracted curve is exactly the same afterwards."""
        inside = phi < 0.0  # marching squares counts value >= level as outside
        keep = crossed_nodes(inside)
        dist, _, _ = self._nearest(curve) if near is None else near
        dist = np.maximum(dist.reshape(self.shape), 1e-9 * self.h)
        return np.where(keep, phi, np.where(inside, -dist, dist))

    def _constrain(self, phi):
        """Restore the area and centroid of the extracted body: phi - delta - tau . grad(phi)
        moves the boundary out by delta and translates it by tau (Newton, 4 iterations)."""
        gx, gy = np.gradient(phi, self.h)
        delta, tau = 0.0, np.zeros(2)
        out = phi
        for _ in range(4):
            curve = self._extract(out)
            V, S = curve.vertices, curve.segments
            area, cen = polygons.area_centroid(V, S)
            seg = np.linalg.norm(V[S[:, 1]] - V[S[:, 0]], axis=1)
            mid = 0.5 * (V[S[:, 1]] + V[S[:, 0]])
            L, M1 = seg.sum(), (mid * seg[:, None]).sum(axis=0)
            dd = (self.area0 - area) / L  # d area = L d delta
            dt = (self.area0 * self.centroid0 - area * cen - M1 * dd) / area  # d(A c) = M1 d delta + A d tau
            delta += dd
            tau += dt
            out = phi - delta - tau[0] * gx - tau[1] * gy
        return out

    # ------------------------------------------------------------------ scene protocol

    def _new_direction(self, res, curve, near=None):
        """(direction on the design grid, the drag's slope along it per unit step, adjoint steps)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            grad = res.vjp([1.0, 0.0], tol=self.adjoint_tol, max_steps=int(self.config["adjoint_max_steps"]))
        d = self._direction(curve, grad)
        vext = self._extend(curve, d / max(np.abs(d).max(), 1e-30), near)
        slope = -float((curve.vjp(grad) * vext).sum())  # trial phi = phi - t vext
        return vext, slope, res.adjoint.get("steps", 0)

    def step(self, it):
        c = self.config
        curve = self._extract()

        def solve():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                return self.flow.solve(curve.vertices, curve.segments, warm_start=self.warm, tol=self.trial_tol)

        res, drag = trial_drag(solve, self.accepted)
        self.warm = True
        accepted = self.accepted is None or drag <= self.accepted[1]
        adj_steps = 0
        if accepted:
            near = self._nearest(curve)  # one nearest-point query serves both
            phi = self._reinitialise(self.phi, curve, near)
            vext, slope, adj_steps = self._new_direction(res, curve, near)
            if self.accepted is not None:
                self.step_len = min(self.step_len * 1.5, self.max_step)
            self.accepted = (phi, drag, vext, slope)
            self.accepted_res = res
            self.cd_hist.append(self._cd(drag))
        else:
            acc_phi, acc_drag, vext, slope = self.accepted
            self.step_len = shortened_step(self.step_len, drag, acc_drag, slope)
            if (self.step_len < float(c["refine_below_cells"]) * self.flow.dx
                    and self.adjoint_tol > float(c["adjoint_tol_min"]) * 1.0001):
                # small steps fail: the gradient may be too inexact; tighten the adjoint once more
                self.adjoint_tol = max(self.adjoint_tol * 0.1, float(c["adjoint_tol_min"]))
                acc_curve = self._extract(acc_phi)
                if self.accepted_res is None:  # after a resume
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        self.accepted_res = self.flow.solve(acc_curve.vertices, acc_curve.segments)
                vext, slope, adj_steps = self._new_direction(self.accepted_res, acc_curve)
                self.accepted = (acc_phi, acc_drag, vext, slope)
                self.step_len = max(self.step_len, float(c["refine_below_cells"]) * self.flow.dx)
        acc_phi, drag_acc, vext, slope = self.accepted
        self.phi = self._constrain(acc_phi - self.step_len * vext)
        # converge the trial's flow just enough to see the predicted decrease through the noise
        predicted = -slope * self.step_len / drag_acc
        self.trial_tol = float(np.clip(float(c["flow_tol_factor"]) * predicted, *self.tol_range))
        pat = int(c["patience"])
        converged = (self.step_len < float(c["min_step_cells"]) * self.flow.dx
                     or stalled(self.cd_hist, pat, float(c["stop_rel"])))
        area = polygons.area_centroid(curve.vertices, curve.segments)[0]
        return {"cd": self._cd(drag if res is not None else drag_acc), "cd_best": self._cd(drag_acc),
                "accepted": float(accepted), "infeasible": float(res is None),
                "step_cells": self.step_len / self.flow.dx, "flow_steps": res.steps if res is not None else 0,
                "adjoint_steps": adj_steps, "adjoint_tol": self.adjoint_tol, "flow_tol": self.trial_tol,
                "area_rel_err": abs(area / self.area0 - 1.0), "converged": converged}

    def state(self):
        st = {"phi": self.phi, "step_len": np.array(self.step_len), "cd_hist": np.array(self.cd_hist),
              "adjoint_tol": np.array(self.adjoint_tol), "trial_tol": np.array(self.trial_tol)}
        st.update(accepted_state(self.accepted))
        return st

    def load_state(self, state):
        self.phi = np.array(state["phi"], float)
        self.step_len = float(state["step_len"])
        self.adjoint_tol = float(state["adjoint_tol"])
        self.trial_tol = float(state["trial_tol"])
        self.cd_hist = list(np.asarray(state["cd_hist"], float))
        self.accepted = load_accepted(state)

    def save_iteration(self, it):
        curve = self._extract()
        np.savez(self.out / f"shape_{it:04d}.npz", vertices=curve.vertices, segments=curve.segments)

    def _best_shape(self):
        """The accepted shape with the lowest drag (the last accepted one)."""
        return self._extract(None if self.accepted is None else self.accepted[0])

    def finish(self, history):
        curve = self._best_shape()
        np.savez(self.out / "shape_final.npz", vertices=curve.vertices, segments=curve.segments)
        init = np.load(self.out / "shape_initial.npz")
        tol = float(self.config["eval_tol"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ell, skipped = {}, {}
            warm = False
            for asp in self.config["compare_aspects"]:
                v, s = polygons.equal_area_ellipse(self.centroid0, self.area0, float(asp), 256)
                try:  # each ellipse starts from the previous one's flow, converged to eval_tol
                    ell[f"{float(asp):g}"] = self._cd(self.flow.solve(v, s, tol=tol, warm_start=warm).drag)
                    warm = True
                except ValueError as exc:  # too thin for this flow grid: say so, do not compare
                    skipped[f"{float(asp):g}"] = str(exc)
            f_init = self.flow.solve(init["vertices"], init["segments"], tol=tol)
            f_final = self.flow.solve(curve.vertices, curve.segments, tol=tol)
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
        area, cen = polygons.area_centroid(curve.vertices, curve.segments)
        return {"cd_initial": cd0, "cd_final": cd1, "drag_initial": f_init.drag, "drag_final": f_final.drag,
                "drag_reduction": 1.0 - cd1 / cd0, "cd_ellipses": ell,
                "beats_every_compared_ellipse": bool(cd1 < min(ell.values())) if ell else None,
                "ellipses_not_resolved": skipped,
                "final_converged": bool(f_final.converged), "final_aspect_ratio": float(
                    np.ptp(xs) / np.ptp(curve.vertices[:, 1])),
                "area_rel_err": abs(area / self.area0 - 1.0), "centroid_shift": float(np.linalg.norm(cen - self.centroid0)),
                "reference_diameter": self.dref, "reynolds": self.flow.reynolds(self.dref),
                "cells_per_diameter": self.dref / self.flow.dx}
