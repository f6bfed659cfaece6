import numpy as np
import pytest

import tigeom


@pytest.fixture(scope="session", autouse=True)
def _runtime():
    """The whole suite runs on the CPU in f64 (finite-difference checks need it)."""
    tigeom.init(arch="cpu", precision="f64", seed=0)
    yield


def grid(n, lo=-1.0, hi=1.0, dim=3):
    x = np.linspace(lo, hi, n)
    return x[1] - x[0], np.meshgrid(*([x] * dim), indexing="ij")
