import pytest
from helpers import ARCH

import tigeom


@pytest.fixture(autouse=True)
def _runtime():
    """Every test starts on the CPU in f64 (finite-difference checks need it). Scenes may switch
    the runtime; re-initialising with the same arguments is free."""
    tigeom.init(arch=ARCH, precision="f64", seed=0)
    yield
