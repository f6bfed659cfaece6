"""Helpers shared by the tests (imported as a module; conftest.py holds fixtures only)."""

import os

import numpy as np

# TIGEOM_TEST_ARCH=cuda runs the suite on a GPU (CI has none and uses the CPU)
ARCH = os.environ.get("TIGEOM_TEST_ARCH", "cpu")


def grid(n, lo=-1.0, hi=1.0, dim=3):
    """Node spacing and the ``dim`` coordinate arrays of an n^dim grid over [lo, hi]^dim."""
    x = np.linspace(lo, hi, n)
    return x[1] - x[0], np.meshgrid(*([x] * dim), indexing="ij")
