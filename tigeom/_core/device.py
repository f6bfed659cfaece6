"""Arrays handed to kernels: numpy on the CPU (Taichi reads them in place), device ndarrays on a GPU.

On a GPU, passing a numpy array to a kernel copies it to the device and back after every launch;
uploading once into a Taichi ndarray avoids that. Nothing here leaks to the public API.
"""

from __future__ import annotations

import numpy as np

from .. import runtime

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
    if arr.size == 0:  # Taichi has no empty ndarrays: a placeholder no kernel may read
        return empty(arr.shape, arr.dtype)
    nd = ndarray(arr.dtype, arr.shape if arr.ndim else (1,))
    nd.from_numpy(arr.reshape(nd.shape))
    return nd


def _creation_site(stacklevel=1):
    import sys

    f = sys._getframe(stacklevel + 1)
    return f'  File "{f.f_code.co_filename}", line {f.f_lineno}, in {f.f_code.co_name}\n'


def ndarray(dtype, shape, needs_grad: bool = False):
    """``ti.ndarray(dtype, shape, needs_grad)`` without Taichi's per-array debug traceback.

    Taichi 1.7 formats the whole Python stack (reading source lines) into every new ndarray's
    debug info, about 0.2 ms per array with tigeom's call depths, which is a large share of a
    DMesh step on a GPU. Here the debug info names only the creating line; the array is the same.
    """
    import taichi as ti
    from taichi.lang import _ndarray

    full = _ndarray.get_traceback
    _ndarray.get_traceback = _creation_site
    try:
        return ti.ndarray(ti_dtype(dtype), shape=shape, needs_grad=needs_grad)
    finally:
        _ndarray.get_traceback = full


def empty(shape, dtype):
    shape = tuple(int(s) for s in shape)
    if not runtime.on_gpu():
        return np.empty(shape, dtype)
    return ndarray(dtype, tuple(max(s, 1) for s in shape) if shape else (1,))


def zeros(shape, dtype):
    buf = empty(shape, dtype)
    buf.fill(0)
    return buf


def fetch(buf, n: int | None = None) -> np.ndarray:
    """numpy copy (or view, on the CPU) of a kernel array, first ``n`` rows."""
    if isinstance(buf, np.ndarray):
        arr = buf
    elif hasattr(buf, "to_numpy"):
        arr = buf.to_numpy()
    else:  # a tensor handed to the kernels in place (tigeom.torch)
        arr = buf.detach().cpu().numpy()
    return arr if n is None else arr[:n]
