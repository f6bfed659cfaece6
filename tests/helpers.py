"""Helpers shared by the tests (imported as a module; conftest.py holds fixtures only)."""

import os

import numpy as np

# TIGEOM_TEST_ARCH=cuda runs the suite on a GPU (CI has none and uses the CPU)
ARCH = os.environ.get("TIGEOM_TEST_ARCH", "cpu")


def grid(n, lo=-1.0, hi=1.0, dim=3):
    """Node spacing and the ``dim`` coordinate arrays of an n^dim grid over [lo, hi]^dim."""
    x = np.linspace(lo, hi, n)
    return x[1] - x[0], np.meshgrid(*([x] * dim), indexing="ij")


def render_scene(resolution=(20, 24)):
    """(vertices, faces, cameras): a semi-transparent pyramid of four faces and a triangle
    floating in front of it, seen by two cameras (one tilted, one from the side)."""
    from tigeom import render

    V = np.array([[-0.5, -0.4, 0.0], [0.5, -0.45, 0.05], [0.45, 0.5, -0.02], [-0.48, 0.42, 0.03], [0.0, 0.0, 0.35],
                  [-0.2, -0.3, 0.6], [0.3, 0.1, 0.55], [-0.1, 0.35, 0.7]])
    F = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4], [5, 6, 7]])
    K = render.orbit_cameras(1, 1, resolution=resolution).K[0]
    cams = render.Cameras(np.stack([K, K]), np.stack([render.look_at([0.3, -0.2, 2.5], [0, 0, 0.2], [0, 1, 0]),
                                                      render.look_at([2.2, 0.4, 1.0], [0, 0, 0.2])]), resolution)
    return V, F, cams
