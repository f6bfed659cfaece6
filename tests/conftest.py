import os

import numpy as np
import pytest

import tigeom

# TIGEOM_TEST_ARCH=cuda runs the suite on a GPU (CI has none and uses the CPU)
ARCH = os.environ.get("TIGEOM_TEST_ARCH", "cpu")


@pytest.fixture(autouse=True)
def _runtime():
    """Every test starts on the CPU in f64 (finite-difference checks need it). Scenes may switch
    the runtime; re-initialising with the same arguments is free."""
    tigeom.init(arch=ARCH, precision="f64", seed=0)
    yield


def grid(n, lo=-1.0, hi=1.0, dim=3):
    x = np.linspace(lo, hi, n)
    return x[1] - x[0], np.meshgrid(*([x] * dim), indexing="ij")
