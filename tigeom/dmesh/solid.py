"""The solid a 3D DMesh bounds: inside tets of its own triangulation, a watertight surface.

A DMesh surface is a subset of the faces of a (weighted) Delaunay triangulation of its points
("minball": every extracted face has an empty minimum ball, so it is a Delaunay face), so the
volume it bounds is already tetrahedralised. :func:`solid` labels every tet of that
triangulation inside or outside and returns the inside tets and their boundary:

1. Votes. From each tet's centroid, ``rays`` rays in fixed random directions are walked from
   tet to tet to the hull; the parity of the surface faces crossed is one vote. A hole in the
   surface, or a stray face, misleads only the rays that pass through it, so the majority
   holds (ties and failed walks count as outside).
2. Clean-up. Inside components (face-connected) smaller than ``min_component`` of the inside
   volume are dropped; outside pockets not connected to the hull and smaller than that are
   filled.
3. Repair. Where the boundary of the inside set is not a 2-manifold (an edge in more than two
   boundary faces, or a vertex whose boundary faces form more than one fan), the tets around
   that edge or vertex are added to the inside, until none is left.
4. Peeling. Flat tets (smallest dihedral angle under 20 degrees) with two or more faces on the
   boundary, which no move of an interior vertex could fix, go outside; flat outside tets with
   three or more inside neighbours come in; as long as the boundary stays a 2-manifold.

The boundary is then closed, consistently oriented (outward normals) and a 2-manifold, its
triangles are faces of the tets, and every tet is positively oriented. Where the surface had
holes, the boundary closes them with faces of the triangulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import runtime
from .._core import device as _device
from .._core.validate import as_index_array, as_points

_OPP = np.array([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]])  # face opposite k, outward for a positive tet
PEEL_ANGLE = 20.0  # boundary slivers below this smallest dihedral angle (degrees) are peeled


@dataclass(eq=False)
class SolidMesh:
    """Result of :func:`solid`.

    vertices : (N, 3) the points the tets use; tets : (M, 4) positively oriented;
    faces : (F, 3) the boundary of the tets, oriented outward (a closed 2-manifold);
    stats : counts of the labelling, the clean-up and the repair.
    """

    vertices: np.ndarray
    tets: np.ndarray
    faces: np.ndarray
    stats: dict = field(default_factory=dict)

    @property
    def volume(self) -> float:
        return float(_volumes(self.vertices, self.tets).sum())


def _volumes(v, t) -> np.ndarray:
    a = v[t[:, 0]]
    return np.einsum("ij,ij->i", np.cross(v[t[:, 1]] - a, v[t[:, 2]] - a), v[t[:, 3]] - a) / 6.0


def _face_keys(f: np.ndarray, n: int) -> np.ndarray:
    s = np.sort(f, axis=1).astype(np.int64)
    return (s[:, 0] * n + s[:, 1]) * n + s[:, 2]


def _directions(rays: int, seed: int) -> np.ndarray:
    d = np.random.default_rng(seed).normal(size=(rays, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def solid(mesh, *, threshold: float = 0.5, rays: int = 15, seed: int = 0, min_component: float = 1e-3,
          max_repairs: int = 20, interior_spacing: float | None = None) -> SolidMesh:
    """Inside tets and a watertight surface from a 3D DMesh surface (see the module docstring).

    mesh : a 3D :class:`tigeom.dmesh.Reconstruction` (results in the samples' coordinates), a
        3D :class:`tigeom.dmesh.DMesh` (its faces with probability above ``threshold`` and a
        positive margin are the surface), or a tuple ``(points (N, 3), faces (F, 3))``: any
        triangle set whose faces are faces of the Delaunay triangulation of ``points``.
    rays : votes per tet (odd; at least 3). seed : their directions.
    min_component : inside components and enclosed outside pockets below this fraction of the
        inside volume are dropped or filled.
    max_repairs : rounds of the manifold repair before giving up (ValueError).
    interior_spacing : None, or the spacing (in the result's coordinates) of a body-centred
        cubic lattice of points added inside: a surface's own triangulation has few points
        inside, so its tets span from one side to the other. The lattice keeps half a spacing
        from the surface's vertices and out of its faces' diametral balls (so those faces stay
        Delaunay faces), the points are triangulated again, and the first pass's closed
        boundary is the wall of a second vote.
    """
    points, faces, weights, scale, origin = _surface_of(mesh, threshold)
    rays = int(rays)
    if rays < 3 or rays % 2 == 0:
        raise ValueError(f"rays: expected an odd number >= 3, got {rays}")
    if not 0 <= min_component < 1:
        raise ValueError(f"min_component: must lie in [0, 1), got {min_component}")
    T, nb, inside, stats = _label(points, weights, faces, rays, seed, min_component, max_repairs)
    if interior_spacing is not None:
        h = float(interior_spacing) / scale
        if not h > 0:
            raise ValueError(f"interior_spacing: must be > 0, got {interior_spacing}")
        walls = _boundary(T, nb, inside)
        extra = _lattice_inside(points, T[inside], walls, h)
        points = np.concatenate([points, extra])
        weights = None if weights is None else np.concatenate([weights, np.zeros(len(extra))])
        first = stats
        T, nb, inside, stats = _label(points, weights, walls, rays, seed, min_component, max_repairs)
        stats = {**first, "interior_points": int(len(extra)), "second_pass": stats}
    n = len(points)
    tets = T[inside]
    bfaces = _boundary(T, nb, inside)
    used, inv = np.unique(tets, return_inverse=True)
    verts = points[used] * scale + origin
    tets = inv.reshape(tets.shape)
    skeys = _face_keys(faces, n) if len(faces) else np.zeros(0, np.int64)
    kept = int(np.isin(_face_keys(bfaces, n), skeys).sum())
    bfaces = np.searchsorted(used, bfaces)
    stats.update(tets=int(len(tets)), faces=int(len(bfaces)), faces_from_surface=kept,
                 faces_filled=int(len(bfaces) - kept))
    return SolidMesh(vertices=verts, tets=tets.astype(np.int64), faces=bfaces.astype(np.int64), stats=stats)


def _label(points, weights, faces, rays, seed, min_component, max_repairs):
    """(tets, face neighbours, inside mask, stats) of the triangulation of ``points`` with
    ``faces`` as the walls of the votes."""
    from ..delaunay import weighted_delaunay

    tri = weighted_delaunay(points, weights)
    T = tri.simplices.astype(np.int64)
    if len(T) == 0:
        raise ValueError("mesh: the points span no volume (no tets in their triangulation)")
    nb = tri.neighbors.astype(np.int64)
    n = len(points)
    wall, found = _walls(T, faces, n)
    inside = _vote(points, T, nb, wall, rays, seed)
    stats = {"triangulation_tets": int(len(T)), "surface_faces": int(len(faces)),
             "surface_faces_in_triangulation": int(found), "inside_by_vote": int(inside.sum()), "rays": rays}
    inside, dropped, filled = _clean(inside, nb, _volumes(points, T), min_component)
    inside, rounds, added = _repair(T, nb, inside, n, max_repairs)
    inside, peeled = _peel(points, T, nb, inside, n)
    stats.update(components_dropped=dropped, pockets_filled=filled, repair_rounds=rounds, repair_tets_added=added,
                 slivers_peeled=peeled)
    return T, nb, inside, stats


def _peel(points, T, nb, inside, n, min_angle: float = PEEL_ANGLE, rounds: int = 5):
    """Flat tets on the boundary that no interior move can fix: an inside tet with two or more
    boundary faces goes outside, an outside tet with three or more inside neighbours comes in,
    when its smallest dihedral angle is below ``min_angle`` degrees and the boundary stays a
    2-manifold. Returns (inside, tets toggled)."""
    from ..tetmesh import tet_quality

    toggled = 0
    for _ in range(rounds):
        nbin = (nb >= 0) & inside[np.where(nb >= 0, nb, 0)]
        cand = np.flatnonzero((inside & ((~nbin).sum(1) >= 2)) | (~inside & (nbin.sum(1) >= 3)))
        if len(cand) == 0:
            break
        flat = cand[tet_quality(points, T[cand])["min_dihedral"] < min_angle]
        if len(flat) == 0:
            break
        trial = inside.copy()
        trial[flat] = ~trial[flat]
        bad_e, bad_v = _bad_edges_and_vertices(_boundary(T, nb, trial), n)
        if len(bad_e) or len(bad_v):
            break
        inside = trial
        toggled += len(flat)
    return inside, toggled


def _lattice_inside(points, tets, faces, h) -> np.ndarray:
    """Points of a body-centred cubic lattice of spacing h inside the tets, at least h/2 from
    the faces' vertices and outside the faces' diametral balls (checked against the 8 nearest
    face centres)."""
    from ..spatial import NearestIndex, PointGrid

    used = points[np.unique(tets)]
    lo, hi = used.min(0), used.max(0)
    axes = [np.arange(a, b + h, h) for a, b in zip(lo, hi)]
    G = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    cand = np.concatenate([G, G + 0.5 * h])
    sv = points[np.unique(faces)]
    _, dist = NearestIndex(sv).query(cand)
    cand = cand[dist > 0.5 * h]
    a, b, c = (points[faces[:, k]] for k in range(3))
    centre = (a + b + c) / 3.0
    rad = np.max([np.linalg.norm(x - centre, axis=1) for x in (a, b, c)], axis=0)  # covers the diametral ball
    idx, d = PointGrid(centre).knn(8, cand)
    ok = ((idx < 0) | (d >= rad[np.maximum(idx, 0)])).all(1)
    cand = cand[ok]
    return cand[_in_tets(points, tets, cand)]


def _in_tets(points, tets, q) -> np.ndarray:
    """Whether each query point lies in one of the tets (barycentric test against the tets whose
    centroids are nearest)."""
    from ..spatial import PointGrid

    cen = points[tets].mean(1)
    idx, _ = PointGrid(cen).knn(16, q)
    out = np.zeros(len(q), bool)
    for j in range(idx.shape[1]):
        t = tets[np.maximum(idx[:, j], 0)]
        a = points[t[:, 0]]
        M = np.stack([points[t[:, 1]] - a, points[t[:, 2]] - a, points[t[:, 3]] - a], -1)
        lam = np.linalg.solve(M, (q - a)[..., None])[..., 0]
        out |= (idx[:, j] >= 0) & (lam.min(1) >= 0) & (lam.sum(1) <= 1)
    return out


def _surface_of(mesh, threshold):
    """(points, surface faces indexing them, weights or None, scale, origin) of ``mesh``."""
    from .model import DMesh
    from .reconstruct import Reconstruction

    scale, origin = 1.0, np.zeros(3)
    if isinstance(mesh, Reconstruction):
        scale, origin = float(mesh.scale), np.asarray(mesh.origin, np.float64)
        mesh = mesh.mesh
    if isinstance(mesh, DMesh):
        if mesh.dim != 3:
            raise ValueError("mesh: solid() needs a 3D DMesh (a 2D one bounds areas, not volumes)")
        fp = mesh.probabilities()
        keep = (fp.probs > threshold) & (fp.margin > 0)
        w = mesh.weights if mesh.method == "wdt" else None
        return np.asarray(mesh.points, np.float64), mesh.faces[keep].astype(np.int64), w, scale, origin
    if isinstance(mesh, tuple) and len(mesh) == 2:
        p = as_points(mesh[0], "points", dims=(3,))
        f = as_index_array(mesh[1], "faces", len(p), width=3)
        return p, f.astype(np.int64), None, scale, origin
    raise TypeError(f"mesh: expected a 3D Reconstruction, DMesh or (points, faces), got {type(mesh).__name__}")


def _walls(T, faces, n):
    """(M, 4) int32: 1 where the face opposite local vertex k is a surface face; and how many
    surface faces were found among the triangulation's faces."""
    tk = _face_keys(T[:, _OPP].reshape(-1, 3), n)
    if len(faces) == 0:
        return np.zeros(T.shape, np.int32), 0
    sk = np.unique(_face_keys(faces, n))
    wall = np.isin(tk, sk).reshape(T.shape).astype(np.int32)
    found = int(np.isin(sk, tk).sum())
    return wall, found


def _vote(points, T, nb, wall, rays, seed) -> np.ndarray:
    from . import _solid_kernels as K

    runtime.ensure_init()
    votes = _device.empty((len(T), rays), np.int32)
    K.ray_votes(_device.upload(points.astype(np.float64)), _device.upload(T.astype(np.int32)),
                _device.upload(nb.astype(np.int32)), _device.upload(wall), _device.upload(_directions(rays, seed)),
                int(4 * len(T) ** (1 / 3) + 64), votes)
    v = _device.fetch(votes, len(T))
    return (v == 1).sum(1) > (v == 0).sum(1) + (v == -1).sum(1)


def _components(mask, nb) -> np.ndarray:
    """Labels (M,) of the face-connected components of the tets in ``mask`` (-1 elsewhere), by
    propagating the smallest index to a fixed point."""
    m = len(mask)
    lab = np.where(mask, np.arange(m), -1)
    has = (nb >= 0)
    nbc = np.where(has, nb, 0)
    while True:
        other = np.where(has & mask[nbc], lab[nbc], m)
        new = np.where(mask, np.minimum(lab, other.min(1)), -1)
        new = np.where(mask, new[np.where(mask, new, 0)], -1)  # pointer jumping: new[j] <= j
        if np.array_equal(new, lab):
            return lab
        lab = new


def _clean(inside, nb, vol, frac):
    """Drop small inside components, fill small enclosed outside pockets."""
    total = vol[inside].sum()
    lab = _components(inside, nb)
    ids, inv = np.unique(lab[inside], return_inverse=True)
    cv = np.bincount(inv, weights=vol[inside])
    small = ids[cv < frac * total]
    dropped = int(len(small))
    inside = inside & ~np.isin(lab, small)
    out = ~inside
    lab = _components(out, nb)
    hull = np.unique(lab[out & (nb < 0).any(1)])
    ids, inv = np.unique(lab[out], return_inverse=True)
    cv = np.bincount(inv, weights=vol[out])
    pockets = ids[(cv < frac * total) & ~np.isin(ids, hull)]
    inside = inside | np.isin(lab, pockets)
    return inside, dropped, int(len(pockets))


def _boundary(T, nb, inside) -> np.ndarray:
    """(F, 3) outward faces of the inside tets that border outside tets or the hull."""
    outside_nb = (nb < 0) | ~inside[np.where(nb >= 0, nb, 0)]
    t, k = np.nonzero(inside[:, None] & outside_nb)
    return T[t[:, None], _OPP[k]]


def _bad_edges_and_vertices(F, n):
    """Edges in more than two boundary faces, and vertices whose boundary faces form more than
    one fan (two fans of a vertex share no boundary edge at it)."""
    e = np.sort(np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]]), axis=1)
    ek, ecount = np.unique(e[:, 0] * n + e[:, 1], return_counts=True)
    bad_e = ek[ecount > 2]
    # fans: (vertex, face) incidences joined through the faces' edges at that vertex
    nf = len(F)
    inc_v = F.reshape(-1)  # incidence 3 f + c: vertex F[f, c] in face f
    lab = np.arange(len(inc_v))
    pairs = []
    for a, b in ((0, 1), (1, 2), (2, 0)):
        key = np.sort(F[:, [a, b]], axis=1)
        key = key[:, 0] * n + key[:, 1]
        for c in (a, b):
            pairs.append((key, F[:, c], np.arange(nf) * 3 + c))
    key = np.concatenate([p[0] for p in pairs])
    vert = np.concatenate([p[1] for p in pairs])
    idx = np.concatenate([p[2] for p in pairs])
    order = np.lexsort((idx, vert, key))
    key, vert, idx = key[order], vert[order], idx[order]
    same = (key[1:] == key[:-1]) & (vert[1:] == vert[:-1])
    a, b = idx[:-1][same], idx[1:][same]
    for _ in range(64):
        m = np.minimum(lab[a], lab[b])
        new = lab.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        if np.array_equal(new, lab):
            break
        lab = new
    fans = np.unique(np.column_stack([inc_v, lab]), axis=0)
    vcount = np.bincount(fans[:, 0], minlength=n)
    return bad_e, np.flatnonzero(vcount > 1)


def _repair(T, nb, inside, n, max_rounds):
    """Add the tets around non-manifold boundary edges and vertices to the inside until none is
    left. Returns (inside, rounds, tets added)."""
    added = 0
    for r in range(max_rounds + 1):
        F = _boundary(T, nb, inside)
        bad_e, bad_v = _bad_edges_and_vertices(F, n)
        if len(bad_e) == 0 and len(bad_v) == 0:
            return inside, r, added
        if r == max_rounds:
            break
        grow = np.zeros(len(T), bool)
        if len(bad_e):
            a, b = bad_e // n, bad_e % n
            has_a = np.isin(T, a).any(1)
            cand = np.flatnonzero(has_a & ~inside)
            for t in cand:  # tets holding both ends of a bad edge
                ek = np.sort(np.array([[T[t, i], T[t, j]] for i in range(4) for j in range(i + 1, 4)]), axis=1)
                if np.isin(ek[:, 0] * n + ek[:, 1], bad_e).any():
                    grow[t] = True
        if len(bad_v):
            grow |= np.isin(T, bad_v).any(1) & ~inside
        added += int(grow.sum())
        inside = inside | grow
    raise ValueError(f"mesh: the boundary of the inside tets is still not a manifold after {max_rounds} repair "
                     f"rounds ({len(bad_e)} edges, {len(bad_v)} vertices)")
