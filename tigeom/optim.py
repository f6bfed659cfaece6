"""Optimisers shared by every optimisation loop (numpy state, checkpointable)."""

from __future__ import annotations

import numpy as np


class Adam:
    """Adam (Kingma & Ba 2015) on one numpy array, with an optional cap on each step's size.

    ``max_step`` bounds every entry's update (DMesh-style capped updates); ``state()`` and
    ``load_state()`` make it checkpointable.
    """

    def __init__(self, shape, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, max_step: float | None = None):
        if lr <= 0:
            raise ValueError(f"lr: must be > 0, got {lr}")
        self.lr, self.b1, self.b2, self.eps, self.max_step = float(lr), betas[0], betas[1], eps, max_step
        self.m = np.zeros(shape)
        self.v = np.zeros(shape)
        self.t = 0

    def step(self, grad: np.ndarray) -> np.ndarray:
        """The update to add to the parameters for gradient ``grad`` (descent)."""
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        mh = self.m / (1 - self.b1**self.t)
        vh = self.v / (1 - self.b2**self.t)
        upd = -self.lr * mh / (np.sqrt(vh) + self.eps)
        if self.max_step is not None:
            np.clip(upd, -self.max_step, self.max_step, out=upd)
        return upd

    def state(self, prefix: str = "adam") -> dict[str, np.ndarray]:
        return {f"{prefix}_m": self.m, f"{prefix}_v": self.v, f"{prefix}_t": np.array(self.t)}

    def load_state(self, state: dict[str, np.ndarray], prefix: str = "adam") -> None:
        self.m = np.array(state[f"{prefix}_m"], dtype=float)
        self.v = np.array(state[f"{prefix}_v"], dtype=float)
        self.t = int(state[f"{prefix}_t"])
