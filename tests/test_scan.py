import numpy as np
import pytest

import tigeom  # noqa: F401  (the conftest fixture initialises the runtime)
from tigeom._core.scan import ExclusiveScan, exclusive_scan_numpy


@pytest.mark.parametrize("serial_on_cpu", [True, False])
@pytest.mark.parametrize("n", [0, 1, 5, 256, 257, 1000, 65536 + 3, 300_000, 256 ** 3 + 5])
def test_exclusive_scan_matches_numpy(n, serial_on_cpu, monkeypatch):
    """One thread on a CPU up to SERIAL_ON_CPU values; the GPU's blocked kernels (forced here)
    in one launch up to 256^3 values, recursive block passes beyond."""
    from tigeom._core import scan

    if not serial_on_cpu:
        monkeypatch.setattr(scan, "SERIAL_ON_CPU", 0)
    rng = np.random.default_rng(n)
    x = rng.integers(0, 7, n).astype(np.int32)
    out = np.full(n + 1, -1, np.int32)
    ExclusiveScan(n).run(x, out, n)  # one launch up to 256^3 values, block passes beyond
    np.testing.assert_array_equal(out, exclusive_scan_numpy(x))


def test_scan_capacity_error():
    with pytest.raises(ValueError, match="capacity"):
        ExclusiveScan(4).run(np.zeros(8, np.int32), np.zeros(9, np.int32), 8)


@pytest.mark.parametrize("n", [0, 1, 300, 70_000])
def test_compact_rows_keeps_rows_with_a_nonnegative_first_entry(n):
    from tigeom._core import device as _device
    from tigeom._core.scan import compact_rows

    rng = np.random.default_rng(n)
    src = rng.integers(-3, 9, size=(max(n, 1), 5)).astype(np.int32)
    dst, k = compact_rows(src, n)
    want = src[:n][src[:n, 0] >= 0]
    assert k == len(want)
    np.testing.assert_array_equal(_device.fetch(dst, k).reshape(-1, 5), want)
