"""Linear elasticity on tetrahedral meshes: what mesh quality does to a finite-element simulation.

``TetElasticity(vertices, tets)`` builds the shape gradients in a Taichi kernel and applies the
stiffness matrix free (element forces scattered with atomics). It reports the figures a sliver
ruins: the conjugate-gradient iterations of a static solve, the condition number estimated
from that solve's Lanczos coefficients, and the largest stable explicit (central difference)
time step 2 / omega_max with a lumped mass matrix, omega_max^2 the largest eigenvalue of
M^-1 K found by Lanczos.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from tigeom import runtime
from tigeom._core import device as _device
from tigeom._core.validate import as_scalar
from tigeom.tetmesh import validate_mesh


@dataclass
class StaticSolve:
    displacement: np.ndarray  # (N, 3)
    iterations: int
    converged: bool
    residuals: np.ndarray  # relative residual norm per iteration
    cond_estimate: float  # of the (preconditioned) operator, from the CG Lanczos coefficients


@dataclass
class Compliance:
    value: float  # f . u
    gradient: np.ndarray  # (N, 3), d value / d vertices
    solve: StaticSolve


class TetElasticity:
    """Isotropic linear elasticity on linear tets.

    Parameters
    ----------
    vertices, tets : the mesh (tets positively oriented; negative ones are reoriented).
    young, poisson, density : material (defaults: a unit-stiffness solid, nu = 0.3).
    clamped : vertex indices or mask with zero displacement. Default: the vertices within 5% of
        the extent from the lowest x, at least four (a cantilever clamped at one end).
    """

    def __init__(self, vertices, tets, young: float = 1.0, poisson: float = 0.3, density: float = 1.0,
                 clamped=None):
        v, t = validate_mesh(vertices, tets)
        young, poisson, density = (as_scalar(young, "young"), as_scalar(poisson, "poisson"),
                                   as_scalar(density, "density"))
        if young <= 0 or density <= 0:
            raise ValueError(f"young and density must be > 0, got {young}, {density}")
        if not -1.0 < poisson < 0.5:
            raise ValueError(f"poisson: must lie in (-1, 0.5), got {poisson}")
        if len(t) == 0:
            raise ValueError("tets: the mesh has no tets")
        self.vertices, self.tets = v, t
        self.young, self.poisson, self.density = young, poisson, density
        self.lam = young * poisson / ((1 + poisson) * (1 - 2 * poisson))
        self.mu = young / (2 * (1 + poisson))
        n = len(v)
        if clamped is None:
            x = v[:, 0]
            mask = x <= x.min() + 0.05 * (x.max() - x.min())
            if mask.sum() < 4:  # a pointed end: clamp the four lowest vertices (no rigid mode left)
                mask[np.argsort(x, kind="stable")[:4]] = True
        else:
            arr = np.asarray(clamped)
            mask = arr.copy() if arr.dtype == bool else np.isin(np.arange(n), arr)
            if mask.shape != (n,):
                raise ValueError(f"clamped: a mask must have shape ({n},), got {mask.shape}")
        if not mask.any():
            raise ValueError("clamped: no vertex is clamped, the stiffness matrix would be singular")
        self.clamped = mask
        used = np.zeros(n, bool)
        used[t.ravel()] = True
        self.free = (~mask & used)[:, None].repeat(3, 1)  # DOF mask
        runtime.ensure_init()
        from . import _fem_kernels as K

        self._K = K
        self._T = _device.upload(t.astype(np.int32))
        G = _device.empty((len(t), 4, 3), np.float64)
        vol = _device.empty((len(t),), np.float64)
        K.shape_gradients(_device.upload(v), self._T, G, vol)
        self._G, self._vol = G, vol
        volumes = _device.fetch(vol).copy()
        if not (volumes > 0).all():
            raise ValueError(f"tets: {int((volumes <= 0).sum())} tet(s) have zero volume; FEM needs positive tets")
        self.mass = np.bincount(t.ravel(), weights=np.repeat(density * volumes / 4.0, 4), minlength=n)
        self.mass = np.where(used, self.mass, 1.0)

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """K x with the clamped DOFs removed (zero in and out)."""
        xin = np.where(self.free, x, 0.0)
        y = _device.zeros(xin.shape, np.float64)
        self._K.apply_stiffness(self._T, self._G, self._vol, self.lam, self.mu, _device.upload(xin), y)
        return np.where(self.free, _device.fetch(y), 0.0)

    def gravity(self, g=(0.0, 0.0, -1.0)) -> np.ndarray:
        return self.mass[:, None] * np.asarray(g, np.float64)[None, :]

    def solve(self, load=None, *, tol: float = 1e-8, max_iter: int = 20000, precondition: str = "jacobi") -> StaticSolve:
        """Static solve K u = f by (Jacobi-preconditioned) conjugate gradients; f defaults to gravity."""
        if precondition not in ("jacobi", "none"):
            raise ValueError(f"precondition: expected 'jacobi' or 'none', got {precondition!r}")
        f = self.gravity() if load is None else np.asarray(load, np.float64)
        if f.shape != self.vertices.shape:
            raise ValueError(f"load: expected shape {self.vertices.shape}, got {f.shape}")
        f = np.where(self.free, f, 0.0)
        dinv = 1.0 / self.diagonal() if precondition == "jacobi" else np.ones_like(f)
        u = np.zeros_like(f)
        r = f.copy()
        z = dinv * r
        p = z.copy()
        rz = float((r * z).sum())
        fn = float(np.linalg.norm(f)) or 1.0
        res, alphas, betas = [], [], []
        converged = False
        for _ in range(max_iter):
            Ap = self.matvec(p)
            alpha = rz / float((p * Ap).sum())
            u += alpha * p
            r -= alpha * Ap
            res.append(float(np.linalg.norm(r)) / fn)
            alphas.append(alpha)
            if res[-1] < tol:
                converged = True
                break
            z = dinv * r
            rz_new = float((r * z).sum())
            if rz_new == 0.0:  # the residual vanished in the preconditioned norm: nothing left to solve
                break
            beta = rz_new / rz
            betas.append(beta)
            rz = rz_new
            p = z + beta * p
        return StaticSolve(u, len(res), converged, np.array(res), _lanczos_cond(alphas, betas))

    def moved(self, vertices) -> "TetElasticity":
        """The same tets, material and clamped vertices on new vertex positions (N, 3)."""
        v = np.asarray(vertices, np.float64)
        if v.shape != self.vertices.shape:
            raise ValueError(f"vertices: expected shape {self.vertices.shape}, got {v.shape}")
        return TetElasticity(v, self.tets, young=self.young, poisson=self.poisson, density=self.density,
                             clamped=self.clamped)

    def compliance(self, load=None, *, tol: float = 1e-10, max_iter: int = 20000) -> Compliance:
        """The compliance f . u at equilibrium (K u = f, Jacobi-CG to ``tol``) and its exact
        gradient with respect to the vertices, (N, 3): the clamped vertices and a given ``load``
        (N, 3) held fixed; the default load, gravity (0, 0, -1) lumped as density V / 4 per
        vertex, moves with the tets' volumes and the gradient includes that. Per tet, the
        gradient is the strain energy's derivative with respect to the vertices (the Eshelby
        stress, the displacement held) and the load's; its accuracy follows ``tol``."""
        sol = self.solve(load, tol=tol, max_iter=max_iter)
        if not sol.converged:
            warnings.warn(f"compliance: the static solve stopped at a relative residual of {sol.residuals[-1]:.2e}, "
                          f"above tol={tol}; the gradient is that inaccurate", RuntimeWarning, stacklevel=2)
        f = self.gravity() if load is None else np.asarray(load, np.float64)
        u = sol.displacement
        value = float((np.where(self.free, f, 0.0) * u).sum())
        rho_g = self.density * np.array([0.0, 0.0, -1.0]) if load is None else np.zeros(3)
        out = _device.zeros(u.shape, np.float64)
        self._K.compliance_gradient(self._T, self._G, self._vol, self.lam, self.mu, _device.upload(u),
                                    _device.upload(rho_g), out)
        return Compliance(value, _device.fetch(out).copy(), sol)

    def diagonal(self) -> np.ndarray:
        """Diagonal of K (free DOFs; 1 on clamped ones), from the element gradients."""
        G = _device.fetch(self._G)
        vol = _device.fetch(self._vol)
        # K_aa[i, i] = V (lam g_i^2 + mu g_i^2 + mu |g|^2)
        d = vol[:, None, None] * ((self.lam + self.mu) * G ** 2 + self.mu * (G ** 2).sum(-1, keepdims=True))
        diag = np.zeros(self.vertices.shape)
        np.add.at(diag, self.tets.ravel(), d.reshape(-1, 3))
        return np.where(self.free, diag, 1.0)

    def stable_time_step(self, steps: int = 80, seed: int = 0) -> float:
        """2 / omega_max, omega_max^2 the largest eigenvalue of M^-1 K (Lanczos on M^-1/2 K M^-1/2)."""
        ms = np.sqrt(self.mass)[:, None]
        rng = np.random.default_rng(seed)
        q = np.where(self.free, rng.standard_normal(self.vertices.shape), 0.0)
        q /= np.linalg.norm(q)
        Q, a, b = [q], [], []
        for k in range(min(steps, int(self.free.sum()))):
            w = self.matvec(Q[-1] / ms) / ms
            a.append(float((w * Q[-1]).sum()))
            for qq in Q:  # full reorthogonalisation (steps is small)
                w -= float((w * qq).sum()) * qq
            nrm = float(np.linalg.norm(w))
            if nrm < 1e-14 * max(abs(a[-1]), 1e-300):
                break
            b.append(nrm)
            Q.append(w / nrm)
        m = len(a)
        H = np.diag(a) + np.diag(b[:m - 1], 1) + np.diag(b[:m - 1], -1)
        lmax = float(np.linalg.eigvalsh(H)[-1])
        return float(2.0 / np.sqrt(lmax))

    def report(self, tol: float = 1e-8) -> dict:
        """The figures mesh quality changes: CG iterations (plain and Jacobi), condition numbers, dt."""
        plain = self.solve(tol=tol, precondition="none")
        jac = self.solve(tol=tol, precondition="jacobi")
        return {
            "cg_iterations": plain.iterations, "cg_converged": plain.converged,
            "cond_estimate": plain.cond_estimate,
            "pcg_iterations": jac.iterations, "pcg_converged": jac.converged,
            "pcg_cond_estimate": jac.cond_estimate,
            "stable_time_step": self.stable_time_step(),
            "max_displacement": float(np.abs(jac.displacement).max()),
        }


def _lanczos_cond(alphas, betas) -> float:
    """Condition number of the operator from CG's coefficients (the Lanczos tridiagonal matrix).

    Only the first 1000 steps are used (a dense eigensolve of the tridiagonal matrix); their
    extreme Ritz values converge first, so the estimate holds for longer solves too.
    """
    k = min(len(alphas), 1000)
    if k == 0:
        return float("nan")
    d = np.empty(k)
    d[0] = 1.0 / alphas[0]
    for j in range(1, k):
        d[j] = 1.0 / alphas[j] + betas[j - 1] / alphas[j - 1]
    off = [np.sqrt(betas[j]) / alphas[j] for j in range(k - 1)]
    ev = np.linalg.eigvalsh(np.diag(d) + np.diag(off, 1) + np.diag(off, -1))
    return float(ev[-1] / ev[0]) if ev[0] > 0 else float("inf")
