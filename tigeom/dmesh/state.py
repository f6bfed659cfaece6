"""A DMesh's optimisation state on the device, for the whole of :meth:`DMesh.optimize`.

Master copies of the positions, weights and real values (float64) and their Adam moments live
in kernel arrays; every step casts them once into the working copies (the runtime's float type,
with gradient buffers) that the probability and loss kernels read, zeroes the gradients, lets
the loss and the probabilities accumulate into them (reverse mode, on the device) and applies
Adam there. What a step brings to the host: the loss value, the probabilities (to pick the
likely faces) and, for the "wdt" method, the positions and weights (the triangulation is built
from them).
"""

from __future__ import annotations

import numpy as np

from .. import runtime
from .._core import device as _device

# Adam's decay rates and epsilon, as in tigeom.optim.Adam
BETAS = (0.9, 0.999)
EPS = 1e-8


class _Param:
    """One optimised array: the float64 master, its working copy with a gradient, Adam moments."""

    def __init__(self, values: np.ndarray, lr: float, max_step: float, lo: float, hi: float):
        rdt = runtime.real_dtype()
        self.master = _device.ndarray(np.float64, values.shape)
        self.master.from_numpy(np.ascontiguousarray(values, np.float64))
        self.work = _device.ndarray(rdt, values.shape, needs_grad=True)
        self.m = _device.ndarray(np.float64, values.shape)
        self.v = _device.ndarray(np.float64, values.shape)
        self.m.fill(0)
        self.v.fill(0)
        self.lr, self.max_step, self.lo, self.hi = float(lr), float(max_step), float(lo), float(hi)

    def step(self, K, move, t: int) -> None:
        b1, b2 = BETAS
        prm = np.array([self.lr, b1, b2, 1 - b1 ** t, 1 - b2 ** t, EPS, self.max_step, self.lo, self.hi])
        K.adam_step(self.master, self.work.grad, self.m, self.v, move, _device.upload(prm))

    def fetch(self) -> np.ndarray:
        return self.master.to_numpy()


class DeviceState:
    """Positions (n, d), weights (n,) and real values (n,) of a DMesh being optimised.

    ``P``, ``W``, ``R``: the working copies (with ``.grad``); ``P3``: the positions padded to
    three coordinates for the selection kernels; ``box()``: their bounding box.
    """

    def __init__(self, points, weights, reals, *, lr: float, max_step: float, lr_reals: float,
                 weight_step: tuple[float, float] | None, fixed: np.ndarray | None):
        from . import _kernels as K

        self.K = K
        n, d = points.shape
        self.n, self.d = n, d
        inf = np.inf
        self.points = _Param(points, lr, max_step, -inf, inf)
        self.reals = _Param(reals, lr_reals, 0.1, 0.0, 1.0)
        self.weights = _Param(weights, *(weight_step or (1.0, 0.0)), -inf, inf)
        self.optimise_weights = weight_step is not None
        move = np.ones(n, np.int32) if fixed is None else (~np.asarray(fixed, bool)).astype(np.int32)
        self.move = _device.upload(move)
        self.all = _device.upload(np.ones(n, np.int32))
        self.P3 = _device.ndarray(runtime.real_dtype(), (n, 3))
        self._box = _device.ndarray(np.float64, (6,))
        self.t = 0
        self.refresh_working()

    @property
    def P(self):
        return self.points.work

    @property
    def R(self):
        return self.reals.work

    @property
    def W(self):
        return self.weights.work

    def refresh_working(self) -> None:
        """Working copies (and the padded positions and their box) from the master values, with
        zeroed gradients: the start of a step."""
        K = self.K
        dt = _device.ti_dtype(runtime.real_dtype())
        for prm in (self.points, self.reals, self.weights):
            K.working_copy(prm.master, prm.work, dt)
            prm.work.grad.fill(0)
        K.padded_copy(self.points.master, self.P3, self._box, dt)

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        b = self._box.to_numpy()
        return b[:3].copy(), b[3:].copy()

    def step(self) -> None:
        """One Adam step of every parameter from the gradients accumulated in the working copies."""
        self.t += 1
        self.points.step(self.K, self.move, self.t)
        self.reals.step(self.K, self.all, self.t)
        if self.optimise_weights:
            self.weights.step(self.K, self.all, self.t)

    def add_host_gradients(self, grad_points: np.ndarray, grad_reals: np.ndarray) -> None:
        """Add host gradients (from a loss without a device backward) to the working copies'."""
        for prm, g in ((self.points, grad_points), (self.reals, grad_reals)):
            cur = prm.work.grad.to_numpy().astype(np.float64)
            prm.work.grad.from_numpy((cur + g).astype(runtime.real_dtype()))

    def set(self, name: str, values: np.ndarray) -> None:
        """Replace the master values of "points", "weights" or "reals" (same shape)."""
        prm = getattr(self, name)
        if values.shape != tuple(prm.master.shape):
            raise ValueError(f"{name}: expected shape {tuple(prm.master.shape)} during optimize, got {values.shape}")
        prm.master.from_numpy(np.ascontiguousarray(values, np.float64))

    def fetch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions, weights, real values) on the host, float64."""
        return self.points.fetch(), self.weights.fetch(), self.reals.fetch()
