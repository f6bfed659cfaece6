"""Test meshes built in code: a small exact Delaunay tetrahedralisation and sliver-rich families.

``delaunay_tets`` is a reference Bowyer-Watson tetrahedralisation in numpy with exact
arithmetic on ties, for building test inputs of up to a few thousand points. It is not the
library's triangulation (that is :func:`tigeom.weighted_delaunay`, in Taichi kernels); it exists
because the sliver-rich families below are built from points on planar grids and on spheres,
the most degenerate inputs there are, and a test mesh must be right before anything else.

Ties (five cospherical points) are broken by symbolic perturbation of the lifted heights:
point k is lifted to |p_k|^2 + eps^(k+1) with lower indices dominating, a genuine perturbation
of the input, so the result is the regular triangulation of a perturbed point set and every
decision is consistent with every other.
"""

from __future__ import annotations

import numpy as np

from .._validate import as_points


def _det3(u, v, w):
    return (u[0] * (v[1] * w[2] - v[2] * w[1]) - u[1] * (v[0] * w[2] - v[2] * w[0])
            + u[2] * (v[0] * w[1] - v[1] * w[0]))


def _exact_ints(P: np.ndarray) -> list[tuple[int, int, int]]:
    """The coordinates as Python integers on one common power-of-two scale (exact)."""
    ratios = [[float(x).as_integer_ratio() for x in row] for row in P]
    shift = max(den.bit_length() - 1 for row in ratios for _, den in row)
    return [tuple(num << (shift - (den.bit_length() - 1)) for num, den in row) for row in ratios]


def _conflict_exact(Q: list, tet, e: int) -> bool:
    """Whether point e lies strictly inside the perturbed circumsphere of the positive tet.

    With coordinates relative to e, lam_i = D_i / D (D_i: the tet with p_i replaced by e) and
    e is inside iff sum lam_i |p_i - e|^2 > 0; integers throughout.
    """
    pe = Q[e]
    rel = [tuple(a - b for a, b in zip(Q[int(i)], pe)) for i in tet]
    zero = (0, 0, 0)

    def orient(r):
        return _det3(*[[r[j][k] - r[0][k] for k in range(3)] for j in (1, 2, 3)])

    D = orient(rel)
    Di = [orient([zero if j == i else rel[j] for j in range(4)]) for i in range(4)]
    f0 = sum(Di[i] * sum(x * x for x in rel[i]) for i in range(4))
    sgn = 1 if D > 0 else -1
    if f0 != 0:
        return f0 * sgn > 0
    # tie: the perturbation of the lowest index with a nonzero coefficient decides
    coef = {int(tet[i]): Di[i] * sgn for i in range(4)}
    coef[int(e)] = -1
    for k in sorted(coef):
        if coef[k] != 0:
            return coef[k] > 0
    return False  # unreachable: e's coefficient is -1


def delaunay_tets(points) -> np.ndarray:
    """Delaunay tetrahedralisation (M, 4) of ``points`` (N, 3), positively oriented.

    Exact on ties (symbolic perturbation), so grids and cospherical sets are handled. O(N M):
    meant for test meshes of up to a few thousand points. ValueError: wrong shape, NaN/inf,
    duplicate points, fewer than 4 points or all points coplanar.
    """
    pts = as_points(points, "points", dims=(3,))
    n = len(pts)
    if n < 4:
        raise ValueError(f"points: need at least 4 points, got {n}")
    if len(np.unique(pts, axis=0)) != n:
        raise ValueError("points: contains duplicate points")
    c0 = pts.mean(0)
    ext = float(np.abs(pts - c0).max())
    if np.linalg.matrix_rank(pts - c0, tol=1e-12 * max(ext, 1e-300)) < 3:
        raise ValueError("points: all points are coplanar")
    big = 1e3 * ext
    sup = c0 + big * np.array([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    P = np.vstack([pts, sup])  # the enclosing tet gets indices n .. n + 3 (lowest priority in ties)
    cap = 16 * n + 64
    T = np.zeros((cap, 4), np.int64)
    T[0] = [n, n + 1, n + 2, n + 3]
    if _det3(*(P[T[0, 1:]] - P[T[0, 0]])) < 0:
        T[0, [2, 3]] = T[0, [3, 2]]
    alive = np.zeros(cap, bool)
    alive[0] = True
    cen = np.zeros((cap, 3))
    rad2 = np.zeros(cap)
    shaky = np.zeros(cap, bool)  # circumsphere too ill-conditioned for the float test
    m = 1

    def spheres(ids):
        a = P[T[ids, 0]]
        u, v, w = (P[T[ids, k]] - a for k in (1, 2, 3))
        det = np.einsum("ij,ij->i", u, np.cross(v, w))
        num = ((u * u).sum(1)[:, None] * np.cross(v, w) + (v * v).sum(1)[:, None] * np.cross(w, u)
               + (w * w).sum(1)[:, None] * np.cross(u, v))
        scale = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1) * np.linalg.norm(w, axis=1)
        ok = np.abs(det) > 1e-6 * scale
        c = num / (2.0 * np.where(ok, det, 1.0))[:, None]
        cen[ids] = a + c
        rad2[ids] = (c * c).sum(1)
        shaky[ids] = ~ok

    spheres(np.array([0]))
    Q = _exact_ints(P)
    for e in range(n):
        ids = np.flatnonzero(alive[:m])
        d = rad2[ids] - ((cen[ids] - P[e]) ** 2).sum(1)
        tol = 1e-9 * rad2[ids]
        inside = d > tol
        amb = (np.abs(d) <= tol) | shaky[ids]
        for k in np.flatnonzero(amb):
            inside[k] = _conflict_exact(Q, T[ids[k]], e)
        cav = ids[inside]
        # boundary faces of the cavity: faces of cavity tets that appear once
        faces = np.concatenate([np.delete(T[cav], k, axis=1) for k in range(4)])
        tet_of = np.tile(cav, 4)
        opp = np.repeat(np.arange(4), len(cav))
        key = np.sort(faces, axis=1)
        _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        once = cnt[inv.ravel()] == 1
        new = T[tet_of[once]].copy()
        new[np.arange(len(new)), opp[once]] = e  # the cavity is star-shaped from e: orientation kept
        alive[cav] = False
        k_new = len(new)
        if m + k_new > cap:
            grow = max(cap, k_new)
            T = np.vstack([T, np.zeros((grow, 4), np.int64)])
            alive = np.concatenate([alive, np.zeros(grow, bool)])
            cen = np.vstack([cen, np.zeros((grow, 3))])
            rad2 = np.concatenate([rad2, np.zeros(grow)])
            shaky = np.concatenate([shaky, np.zeros(grow, bool)])
            cap += grow
        T[m:m + k_new] = new
        alive[m:m + k_new] = True
        spheres(np.arange(m, m + k_new))
        m += k_new
        if m > 0.75 * cap:  # compact
            keep = np.flatnonzero(alive[:m])
            T[:len(keep)], cen[:len(keep)], rad2[:len(keep)], shaky[:len(keep)] = (
                T[keep], cen[keep], rad2[keep], shaky[keep])
            alive[:] = False
            alive[:len(keep)] = True
            m = len(keep)
    out = T[:m][alive[:m]]
    return out[(out < n).all(1)]


def _with_interior(surface: np.ndarray, n_interior: int, inside, lo, hi, margin: float, rng) -> np.ndarray:
    pts = []
    while sum(len(p) for p in pts) < n_interior:
        c = rng.uniform(lo + margin, hi - margin, size=(2 * n_interior + 16, 3))
        pts.append(c[inside(c)])
    return np.vstack([surface, np.concatenate(pts)[:n_interior]])


def cube_mesh(grid: int = 6, n_interior: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit cube: a regular ``grid`` x ``grid`` surface grid plus random interior points, Delaunay.

    The family REFERENCE.md measures MMG3D on (min dihedral about 0.5-0.7 degrees): Delaunay
    tetrahedralisation leaves slivers between the random points and next to the planar faces.
    """
    pts = cube_points(grid, n_interior, seed)
    return pts, delaunay_tets(pts)


def cube_points(grid: int = 6, n_interior: int = 400, seed: int = 0) -> np.ndarray:
    """The points of :func:`cube_mesh`: the surface grid, then the random interior points. For
    meshes beyond a few thousand points, triangulate them with ``tigeom.weighted_delaunay``."""
    if grid < 1 or n_interior < 0:
        raise ValueError(f"grid must be >= 1 and n_interior >= 0, got {grid}, {n_interior}")
    g = np.linspace(0.0, 1.0, grid + 1)
    P = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    surf = P[np.any((P == 0) | (P == 1), axis=1)]
    rng = np.random.default_rng(seed)
    return _with_interior(surf, n_interior, lambda c: np.ones(len(c), bool), 0.0, 1.0, 0.25 / grid, rng)


def sphere_mesh(subdivisions: int = 2, n_interior: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit ball: icosphere surface points (all cospherical) plus random interior points, Delaunay."""
    if subdivisions < 0 or n_interior < 0:
        raise ValueError(f"subdivisions and n_interior must be >= 0, got {subdivisions}, {n_interior}")
    import trimesh

    surf = np.asarray(trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0).vertices, np.float64)
    h = 2.0 / (2 ** subdivisions * 2.0)  # about the surface edge length
    rng = np.random.default_rng(seed)
    pts = _with_interior(surf, n_interior, lambda c: (c * c).sum(1) < (1.0 - 0.25 * h) ** 2, -1.0, 1.0, 0.0, rng)
    return pts, delaunay_tets(pts)
