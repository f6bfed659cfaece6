"""Arrays handed to kernels: numpy on the CPU (Taichi reads them in place), device ndarrays on a GPU.

On a GPU, passing a numpy array to a kernel copies it to the device and back after every launch;
uploading once into a Taichi ndarray avoids that. Nothing here leaks to the public API.
"""

from __future__ import annotations

import numpy as np

from . import runtime

_TI_TYPES = {}


def ti_dtype(dtype):
    import taichi as ti

    if not _TI_TYPES:
        _TI_TYPES.update({np.dtype(np.float32): ti.f32, np.dtype(np.float64): ti.f64,
                          np.dtype(np.int32): ti.i32, np.dtype(np.int64): ti.i64,
                          np.dtype(np.uint8): ti.u8})
    return _TI_TYPES[np.dtype(dtype)]


def upload(arr: np.ndarray):
    """A kernel-ready copy of ``arr`` (contiguous numpy on CPU, a Taichi ndarray on GPU)."""
    arr = np.ascontiguousarray(arr)
    if not runtime.on_gpu():
        return arr
    import taichi as ti

    if arr.size == 0:  # Taichi has no empty ndarrays: a placeholder no kernel may read
        return empty(arr.shape, arr.dtype)
    nd = ti.ndarray(ti_dtype(arr.dtype), shape=arr.shape if arr.ndim else (1,))
    nd.from_numpy(arr.reshape(nd.shape))
    return nd


def empty(shape, dtype):
    shape = tuple(int(s) for s in shape)
    if not runtime.on_gpu():
        return np.empty(shape, dtype)
    import taichi as ti

    return ti.ndarray(ti_dtype(dtype), shape=tuple(max(s, 1) for s in shape) if shape else (1,))


def zeros(shape, dtype):
    buf = empty(shape, dtype)
    buf.fill(0)
    return buf


def fetch(buf, n: int | None = None) -> np.ndarray:
    """numpy copy (or view, on the CPU) of a kernel array, first ``n`` rows."""
    arr = buf if isinstance(buf, np.ndarray) else buf.to_numpy()
    return arr if n is None else arr[:n]
