"""What the drag scenes' level-set line search shares (drag2d in 2D, drag3d in 3D)."""

from __future__ import annotations

import numpy as np


def crossed_nodes(inside: np.ndarray) -> np.ndarray:
    """Nodes at either end of a grid edge whose ends differ in ``inside``: the values that
    decide where the extracted level set lies (re-distancing keeps them)."""
    keep = np.zeros_like(inside)
    for ax in range(inside.ndim):
        cut = np.diff(inside, axis=ax) != 0
        lo = [slice(None)] * inside.ndim
        hi = [slice(None)] * inside.ndim
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        keep[tuple(lo)] |= cut
        keep[tuple(hi)] |= cut
    return keep


def shortened_step(t: float, drag: float, accepted_drag: float, slope: float) -> float:
    """Step after a rejected trial of length t: the minimiser of the parabola through the
    accepted drag, its slope and the trial's drag, kept within [0.1 t, 0.5 t] (0.5 t when the
    trial failed or the parabola has no minimum)."""
    curv = drag - accepted_drag - slope * t
    t_new = -slope * t * t / (2.0 * curv) if (np.isfinite(drag) and slope < 0 and curv > 0) else 0.5 * t
    return min(max(t_new, 0.1 * t), 0.5 * t)


def trial_drag(solve, accepted):
    """(result, drag) of ``solve()`` for a trial shape. When the flow grid refuses the shape (a
    ValueError: thinner than 3 cells, too close to the channel's boundary) the result is None and
    the drag infinite, so the step is rejected like one that raised the drag; the first shape
    (nothing accepted yet) must be feasible."""
    try:
        res = solve()
    except ValueError:
        if accepted is None:
            raise
        return None, np.inf
    return res, res.drag


def stalled(cd_hist, patience: int, stop_rel: float) -> bool:
    """The accepted drag improved by less than stop_rel (relative) over ``patience`` accepted steps."""
    return len(cd_hist) > patience and (cd_hist[-patience - 1] - cd_hist[-1]) < stop_rel * cd_hist[-1]


def accepted_state(accepted) -> dict:
    """Checkpoint arrays of an accepted step (phi, drag, extended direction, slope), or none."""
    if accepted is None:
        return {}
    phi, drag, vext, slope = accepted
    return dict(acc_phi=phi, acc_drag=np.array(drag), acc_vext=vext, acc_slope=np.array(slope))


def load_accepted(state):
    """The accepted step back from :func:`accepted_state`'s arrays (None if there was none)."""
    if "acc_phi" not in state:
        return None
    return (np.array(state["acc_phi"], float), float(state["acc_drag"]), np.array(state["acc_vext"], float),
            float(state["acc_slope"]))
