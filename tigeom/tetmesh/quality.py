"""Per-tet quality measures: ``tet_quality(vertices, tets)``."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from .. import runtime
from .._core import device as _device
from .._core.validate import as_index_array, as_points

logger = logging.getLogger(__name__)

def validate_mesh(vertices, tets, *, reorient: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(vertices (N, 3) float64, tets (M, 4) int64)``; negative tets reoriented with a warning.

    Zero-volume tets are allowed (they are what improvement removes). A tet that uses a vertex
    twice is an error, since it has no orientation at all.
    """
    v = as_points(vertices, "vertices", dims=(3,))
    t = as_index_array(tets, "tets", len(v), width=4)
    if len(t):
        s = np.sort(t, axis=1)
        rep = np.flatnonzero(np.any(s[:, 1:] == s[:, :-1], axis=1))
        if len(rep):
            raise ValueError(f"tets: {len(rep)} tet(s) repeat a vertex (first: tet {rep[0]} = {t[rep[0]].tolist()})")
    if reorient and len(t):
        vol = signed_volumes(v, t)
        neg = vol < 0
        if neg.any():
            logger.warning("tets: %d of %d tets are negatively oriented; reoriented (vertices 2 and 3 swapped)",
                           int(neg.sum()), len(t))
            t = t.copy()
            t[neg, 2], t[neg, 3] = t[neg, 3], t[neg, 2].copy()
    return v, t


def signed_volumes(v: np.ndarray, t: np.ndarray) -> np.ndarray:
    """det[b - a, c - a, d - a] / 6 per tet (numpy, f64)."""
    a = v[t[:, 0]]
    return np.einsum("ij,ij->i", v[t[:, 1]] - a, np.cross(v[t[:, 2]] - a, v[t[:, 3]] - a)) / 6.0


class TetQuality(Mapping):
    """Per-tet quality arrays (a read-only mapping) with summary statistics and histograms.

    Keys: ``volume`` (signed), ``min_dihedral`` and ``max_dihedral`` (degrees), ``radius_ratio``
    (3 r_in / R_circ, 1 for the regular tet, signed), ``mean_ratio`` (12 (3|V|)^(2/3) / sum of
    squared edge lengths, 1 regular, signed), ``amips`` (tr(J^T J) / det(J)^(2/3) against the
    regular tet, 3 at best, inf when not positive), ``min_sine`` (smallest dihedral sine, the
    measure :func:`improve_tets` maximises) and ``dihedrals`` (M, 6), every angle.

    :meth:`vjp` gives the gradient of any weighted sum of these arrays with respect to the
    vertices.
    """

    def __init__(self, arrays: dict[str, np.ndarray], vertices=None, tets=None):
        self._a = arrays
        self._mesh = (vertices, tets)

    def __getitem__(self, key):
        return self._a[key]

    def __iter__(self):
        return iter(self._a)

    def __len__(self):
        return len(self._a)

    @property
    def n_tets(self) -> int:
        return len(self._a["volume"])

    def summary(self) -> dict:
        """Worst and mean figures plus counts of bad angles (plain floats, JSON-ready)."""
        if self.n_tets == 0:
            return {"tets": 0}
        d = self._a["dihedrals"]
        vol = self._a["volume"]
        return {
            "tets": self.n_tets,
            "min_dihedral": float(d.min()),
            "max_dihedral": float(d.max()),
            "mean_min_dihedral": float(self._a["min_dihedral"].mean()),
            "min_radius_ratio": float(self._a["radius_ratio"].min()),
            "min_mean_ratio": float(self._a["mean_ratio"].min()),
            "max_amips": float(self._a["amips"].max()),
            "min_volume": float(vol.min()),
            "total_volume": float(vol.sum()),
            "inverted": int((vol < 0).sum()),
            "flat": int((vol == 0).sum()),
            "tets_below_10deg": int((self._a["min_dihedral"] < 10).sum()),
            "tets_below_30deg": int((self._a["min_dihedral"] < 30).sum()),
            "tets_above_150deg": int((self._a["max_dihedral"] > 150).sum()),
            "tets_outside_30_150deg": int(((self._a["min_dihedral"] < 30) | (self._a["max_dihedral"] > 150)).sum()),
            # every dihedral angle (6 per tet) in 10-degree bins [0, 10), ..., [170, 180]
            "dihedral_histogram_10deg": [int(c) for c in np.histogram(d.ravel(), bins=18, range=(0.0, 180.0))[0]],
        }

    def histogram(self, bins=36, key: str = "dihedrals", range=(0.0, 180.0)):
        """``np.histogram`` of every dihedral angle (default) or of one per-tet key."""
        return np.histogram(np.asarray(self._a[key]).ravel(), bins=bins, range=range)

    def vjp(self, grads: Mapping) -> np.ndarray:
        """``d(sum over keys of sum(grads[key] * self[key])) / d vertices``, (N, 3) float64.

        ``grads`` maps any of the keys to an array of that key's shape ((M,), or (M, 6) for
        ``dihedrals``); missing keys weigh nothing. The gradients are exact (hand-derived, in a
        Taichi kernel, f64). Where a measure is not differentiable: ``min_dihedral``,
        ``max_dihedral`` and ``min_sine`` pass their gradient to the smallest (largest) angle
        (the first on ties); ``amips`` is infinite and constant on tets whose mean ratio is not
        positive, so it passes nothing there; a flat tet's mean ratio has an infinite slope and
        gives NaN where its gradient weight is not 0; a dihedral angle of a face with no area
        passes nothing. ValueError: an unknown key, a wrong shape, NaN or infinite weights.
        """
        v, t = self._mesh
        if v is None:
            raise ValueError("vjp: this TetQuality was not made by tet_quality, so it has no mesh")
        if not isinstance(grads, Mapping):
            raise ValueError(f"grads: expected a mapping of key -> array, got {type(grads).__name__}")
        m = self.n_tets
        w = {}
        for key, g in grads.items():
            if key not in self._a:
                raise ValueError(f"grads: unknown key {key!r} (keys: {', '.join(self._a)})")
            arr = np.asarray(g, dtype=np.float64)
            want = (m, 6) if key == "dihedrals" else (m,)
            if arr.shape == () and key != "dihedrals":
                arr = np.full(want, float(arr))
            if arr.shape != want:
                raise ValueError(f"grads[{key!r}]: expected shape {want}, got {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"grads[{key!r}]: contains NaN or infinite values")
            w[key] = arr
        g3, gd = fold_weights(self._a, w, m)
        out = np.zeros((len(v), 3))
        if m and (g3.any() or gd.any()):
            runtime.ensure_init()
            out_d = _device.upload(out)
            measures_vjp_into(_device.upload(v), _device.upload(t.astype(np.int32)), _device.upload(g3),
                              _device.upload(gd), out_d)
            out = _device.fetch(out_d).copy()
        return out


def measures_into(v, t, out, dih) -> None:
    """The measures of the tets ``t`` (M, 4) int32 of ``v`` (N, 3) float64 into ``out`` (M, 5):
    volume, radius ratio, mean ratio, AMIPS, smallest sine, and ``dih`` (M, 6), degrees; each a
    kernel-ready array (numpy, a Taichi ndarray, or a contiguous tensor on the runtime's
    device). The mesh is not checked here."""
    from . import _kernels as K

    K.measures(v, t, out, dih)


def measures_vjp_into(v, t, g3, gd, out) -> None:
    """``out`` (N, 3) += the gradient of the measures weighted by ``g3`` (M, 3: volume, radius
    ratio, mean ratio) and ``gd`` (M, 6: the angles); arrays as in :func:`measures_into`, all
    float64 but ``t``."""
    from . import _kernels as K

    K.measures_vjp(v, t, g3, gd, out)


def fold_weights(a: Mapping, w: dict, m: int, xp=np, zeros=np.zeros):
    """The weights on (volume, radius ratio, mean ratio) and on the six angles, (M, 3) and
    (M, 6), that the weights ``w`` on any keys of the measures ``a`` amount to: the derived keys
    go back to the measures they come from. ``xp`` and ``zeros((rows, cols))``: numpy's, or
    torch's on the arrays' device in float64 (``tigeom.torch``)."""
    g3 = zeros((m, 3))
    gd = zeros((m, 6))
    if "dihedrals" in w:
        gd = gd + w["dihedrals"]
    for col, key in enumerate(("volume", "radius_ratio", "mean_ratio")):
        if key in w:
            g3[:, col] += w[key]
    if m == 0:
        return g3, gd
    rows = xp.arange(m) if xp is np else xp.arange(m, device=g3.device)
    d = a["dihedrals"]
    if "amips" in w:  # amips = 3 / mean ratio where that is positive
        mr = a["mean_ratio"]
        pos = mr > 0
        g3[pos, 2] -= w["amips"][pos] * 3.0 / mr[pos] ** 2
    if "min_dihedral" in w:
        gd[rows, d.argmin(1)] += w["min_dihedral"]
    if "max_dihedral" in w:
        gd[rows, d.argmax(1)] += w["max_dihedral"]
    if "min_sine" in w:  # the sine of the angle in degrees
        rad = d * (np.pi / 180.0)
        k = xp.sin(rad).argmin(1)
        gd[rows, k] += w["min_sine"] * xp.cos(rad[rows, k]) * (np.pi / 180.0)
    return g3, gd


def tet_quality(vertices, tets) -> TetQuality:
    """Quality measures of every tet, computed in a Taichi kernel in f64 (see :class:`TetQuality`).

    Tets are measured as given: a negatively oriented tet gets a negative volume and negative
    ratios. ValueError: wrong shapes, NaN/inf, an index out of range, a tet repeating a vertex.
    """
    v, t = validate_mesh(vertices, tets, reorient=False)
    m = len(t)
    if m == 0:
        out, dih = np.zeros((0, 5)), np.zeros((0, 6))
    else:
        runtime.ensure_init()
        out_d = _device.empty((m, 5), np.float64)
        dih_d = _device.empty((m, 6), np.float64)
        measures_into(_device.upload(v), _device.upload(t.astype(np.int32)), out_d, dih_d)
        out, dih = _device.fetch(out_d).copy(), _device.fetch(dih_d).copy()
    return TetQuality({
        "volume": out[:, 0], "min_dihedral": dih.min(1) if m else np.zeros(0),
        "max_dihedral": dih.max(1) if m else np.zeros(0), "radius_ratio": out[:, 1], "mean_ratio": out[:, 2],
        "amips": out[:, 3], "min_sine": out[:, 4], "dihedrals": dih,
    }, v, t)


_EDGE_I = np.array([0, 0, 0, 1, 1, 2])  # the six tet edges in the order of ``dihedrals``' columns
_EDGE_J = np.array([1, 2, 3, 2, 3, 3])


def boundary_crease_min(tets, dihedrals, bfaces) -> float:
    """The smallest interior angle (degrees) of a tet mesh's boundary at its edges: the sum of
    the dihedral angles of the tets around a boundary edge. The tets around that edge split it,
    so no mesh with this boundary has a minimum dihedral angle above it: it bounds what
    :func:`improve_tets` can reach. ``dihedrals``: (M, 6) from :func:`tet_quality`; ``bfaces``:
    the boundary triangles. inf for a mesh without boundary."""
    t = np.asarray(tets, np.int64)
    if len(bfaces) == 0 or len(t) == 0:
        return float("inf")
    n = int(t.max()) + 1
    f = np.asarray(bfaces, np.int64)
    be = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [0, 2]]]), axis=1)
    bkey = np.unique(be[:, 0] * n + be[:, 1])
    a, b = t[:, _EDGE_I], t[:, _EDGE_J]
    key = (np.minimum(a, b) * n + np.maximum(a, b)).ravel()
    pos = np.clip(np.searchsorted(bkey, key), 0, len(bkey) - 1)
    hit = bkey[pos] == key
    angle = np.zeros(len(bkey))
    np.add.at(angle, pos[hit], np.asarray(dihedrals, float).ravel()[hit])
    return float(angle.min())
