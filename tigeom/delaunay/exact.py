"""Exact rational recomputation of power cells, with the same symbolic perturbation of the
weights as the kernels: the fallback for cells whose neighbours disagree (or that overflowed)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .simplices import orthocenters


def _fr(x) -> list[Fraction]:
    return [Fraction(float(v)) for v in x]


def _det_exact(rows: list[list[Fraction]]) -> Fraction:
    a = [list(r) for r in rows]
    n = len(a)
    det = Fraction(1)
    for c in range(n):
        piv = next((r for r in range(c, n) if a[r][c] != 0), None)
        if piv is None:
            return Fraction(0)
        if piv != c:
            a[c], a[piv] = a[piv], a[c]
            det = -det
        det *= a[c][c]
        for r in range(c + 1, n):
            if a[r][c] != 0:
                f = a[r][c] / a[c][c]
                a[r] = [x - f * y for x, y in zip(a[r], a[c])]
    return det


class Exact:
    """Exact rational predicates with the same symbolic perturbation as the kernels."""

    def __init__(self, points: np.ndarray, weights: np.ndarray):
        self.p = points
        self.w = weights
        self._pf: dict[int, list[Fraction]] = {}
        self._wf: dict[int, Fraction] = {}

    def pt(self, i):
        if i not in self._pf:
            self._pf[i] = _fr(self.p[i])
            self._wf[i] = Fraction(float(self.w[i]))
        return self._pf[i], self._wf[i]

    def orient(self, idx) -> int:
        """Sign of the homogeneous det [x 1] of the sorted points idx."""
        rows = [self.pt(i)[0] + [Fraction(1)] for i in idx]
        d = _det_exact(rows)
        return (d > 0) - (d < 0)

    def lifted(self, idx) -> int:
        """Sign of the homogeneous det [x |x|^2-w 1] of sorted idx, perturbed weights."""
        rows = []
        for i in idx:
            x, w = self.pt(i)
            rows.append(x + [sum(v * v for v in x) - w, Fraction(1)])
        d = _det_exact(rows)
        if d != 0:
            return (d > 0) - (d < 0)
        dim = len(idx) - 2
        for r in range(len(idx)):
            h = self.orient([v for q, v in enumerate(idx) if q != r])
            if h != 0:
                return (-1 if (r + dim) % 2 == 0 else 1) * h
        return 0

    def conflict(self, i, S, j) -> bool:
        u = [i, *S]
        h = self.orient(sorted(u)) * _parity(u)
        if h == 0:
            return False
        v = u + [j]
        return self.lifted(sorted(v)) * _parity(v) * h > 0


def _parity(v) -> int:
    v = list(v)
    par = 1
    for a in range(len(v)):
        for b in range(len(v) - 1 - a):
            if v[b] > v[b + 1]:
                v[b], v[b + 1] = v[b + 1], v[b]
                par = -par
    return par


def _solve_exact(A: list[list[Fraction]], b: list[Fraction]) -> list[Fraction] | None:
    n = len(A)
    M = [list(A[r]) + [b[r]] for r in range(n)]
    for c in range(n):
        piv = next((r for r in range(c, n) if M[r][c] != 0), None)
        if piv is None:
            return None
        M[c], M[piv] = M[piv], M[c]
        for r in range(n):
            if r != c and M[r][c] != 0:
                f = M[r][c] / M[c][c]
                M[r] = [x - f * y for x, y in zip(M[r], M[c])]
    return [M[r][n] / M[r][r] for r in range(n)]


def exact_cell(i: int, ex: Exact, cand: np.ndarray, box_lo, box_hi, band, wmax) -> list[tuple] | None:
    """Power cell of point i with exact arithmetic; returns its simplices (sorted tuples of the
    other d points) or None when the cell is empty (hidden). ``cand``: candidate points sorted by
    distance from p_i."""
    p, w = ex.p, ex.w
    d = p.shape[1]
    pi, wi = ex.pt(i)

    def plane(pid):
        if pid >= 0:
            x, wj = ex.pt(pid)
            dv = [a - b for a, b in zip(x, pi)]
            return [2 * v for v in dv], sum(v * v for v in dv) - wj + wi
        k = -1 - pid
        ax, side = divmod(k, 2)
        n = [Fraction(0)] * d
        if side == 0:
            n[ax] = Fraction(-1)
            return n, -(Fraction(float(box_lo[ax])) - pi[ax])
        n[ax] = Fraction(1)
        return n, Fraction(float(box_hi[ax])) - pi[ax]

    verts: dict[frozenset, list[Fraction]] = {}
    for bits in range(2 ** d):
        ids = [-1 - (2 * a + ((bits >> a) & 1)) for a in range(d)]
        rows = [plane(q) for q in ids]
        verts[frozenset(ids)] = _solve_exact([r[0] for r in rows], [r[1] for r in rows])
    for j in cand:
        j = int(j)
        R2 = max(sum(float(v) ** 2 for v in y) for y in verts.values())
        dist = float(np.sqrt(((p[j] - p[i]) ** 2).sum()))
        R = np.sqrt(R2)
        if dist > (R + np.sqrt(R2 + max(wmax - float(w[i]), 0.0))) * (1 + 1e-9):
            break
        nj, cj = plane(j)
        out = {}
        for key, y in verts.items():
            if all(q >= 0 for q in key):
                out[key] = ex.conflict(i, sorted(key), j)
                continue
            g = sum(a * b for a, b in zip(nj, y)) - cj
            if g != 0:
                out[key] = g > 0
                continue
            # tie at a box vertex: the sign of dg under the weight perturbation (as in the kernels)
            keys = sorted(key)
            rows = [plane(q)[0] for q in keys]
            u = _solve_exact([list(col) for col in zip(*rows)], nj)
            coef = {j: Fraction(1), i: sum(u[a] for a, q in enumerate(keys) if q >= 0) - 1}
            for a, q in enumerate(keys):
                if q >= 0:
                    coef[q] = -u[a]
            first = min(k for k, v in coef.items() if v != 0)
            out[key] = coef[first] > 0
        if not any(out.values()):
            continue
        if all(out.values()):
            return None
        new = {}
        for u, fu in out.items():
            if not fu:
                continue
            for v, fv in out.items():
                if fv:
                    continue
                shared = u & v
                if len(shared) == d - 1:
                    key = shared | {j}
                    if key not in new:
                        rows = [plane(q) for q in key]
                        y = _solve_exact([r[0] for r in rows], [r[1] for r in rows])
                        if y is not None:
                            new[key] = y
        verts = {k: y for k, y in verts.items() if not out[k]}
        verts.update(new)
    simp = []
    for key, y in verts.items():
        if all(q >= 0 for q in key):
            x = orthocenters(p, w, np.array([sorted([i, *key])]))[0]
            if np.all(x > box_lo + band) and np.all(x < box_hi - band):
                simp.append(tuple(sorted(key)))
    return sorted(simp)
