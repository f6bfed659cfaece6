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
    if not _cuda_copy(nd, arr, to_device=True):
        nd.from_numpy(arr.reshape(nd.shape))
    return nd


_CUDA: list = []  # [(cuMemcpyDtoH, cuMemcpyHtoD, cuCtxSynchronize) or None], once looked up


def _cuda_driver():
    """The CUDA driver's copy functions through ctypes, or None where there is no driver."""
    if not _CUDA:
        import ctypes

        fns = None
        for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                continue
            dtoh, htod, sync = lib.cuMemcpyDtoH_v2, lib.cuMemcpyHtoD_v2, lib.cuCtxSynchronize
            dtoh.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
            htod.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t]
            dtoh.restype = htod.restype = sync.restype = ctypes.c_int
            fns = (dtoh, htod, sync)
            break
        _CUDA.append(fns)
    return _CUDA[0]


def _cuda_copy(nd, host: np.ndarray, to_device: bool) -> bool:
    """Copy between the contiguous numpy array ``host`` and the start of the CUDA ndarray ``nd``
    with one driver call; False (nothing copied) off CUDA or when the driver refuses.

    Taichi's own ``from_numpy``/``to_numpy`` launch a kernel with the numpy array as an external
    argument, which on CUDA copies that array to the device before the launch and back after it:
    two transfers of the whole array (and a zero fill) for every one needed."""
    if host.nbytes == 0 or runtime.config().backend != "cuda" or tuple(nd.arr.element_shape()):
        return False
    fns = _cuda_driver()
    if fns is None:
        return False
    from taichi.lang import impl

    dtoh, htod, sync = fns
    runtime.sync()
    ptr = int(impl.get_runtime().prog.get_ndarray_data_ptr_as_int(nd.arr))
    if to_device:
        ok = htod(ptr, host.ctypes.data, host.nbytes) == 0
        return ok and sync() == 0
    return dtoh(host.ctypes.data, ptr, host.nbytes) == 0


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


def _np_dtype(nd):
    """The numpy dtype of a Taichi ndarray of one of ``ti_dtype``'s types, else None."""
    ti_dtype(np.float64)  # fills the table
    for k, v in _TI_TYPES.items():
        if nd.dtype == v:
            return k
    return None


def empty(shape, dtype):
    shape = tuple(int(s) for s in shape)
    if not runtime.on_gpu():
        return np.empty(shape, dtype)
    return ndarray(dtype, tuple(max(s, 1) for s in shape) if shape else (1,))


def zeros(shape, dtype):
    """A zeroed kernel array; on the CPU ``np.zeros``, whose pages stay unmapped until written."""
    if not runtime.on_gpu():
        return np.zeros(tuple(int(s) for s in shape), dtype)
    buf = empty(shape, dtype)
    buf.fill(0)
    return buf


TOUCH_BYTES = 32 << 20  # host arrays from this size on get their pages in parallel threads
_PAGE = 4096
_POOL: list = []


def host_empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` whose memory pages the process has already touched.

    A fresh large array is mapped lazily: its pages fault in, one by one, on first write. A copy
    from the device into it then runs at the speed of those faults: on an H200 host a fetch of
    0.54 GB into a fresh array took 0.19-0.24 s, and into one already touched 0.05 s. The pages
    of a large array are therefore touched first, by a few threads at once (one write per page;
    the faults of different threads proceed in parallel): 0.07 s for that fetch, touching
    included. The values stay undefined, as with ``np.empty``."""
    out = np.empty(shape, dtype)
    if out.nbytes < TOUCH_BYTES:
        return out
    import os

    flat = out.reshape(-1).view(np.uint8)
    workers = max(1, min(8, os.cpu_count() or 1))
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(ThreadPoolExecutor(max_workers=8, thread_name_prefix="tigeom-touch"))
    per = -(-len(flat) // (workers * _PAGE)) * _PAGE  # page-aligned chunks

    def touch(k):
        flat[k * per:(k + 1) * per:_PAGE] = 0  # numpy releases the GIL in the strided store

    list(_POOL[0].map(touch, range(workers)))
    return out


def fetch(buf, n: int | None = None) -> np.ndarray:
    """numpy copy (or view, on the CPU) of a kernel array, first ``n`` rows."""
    if isinstance(buf, np.ndarray):
        arr = buf
    elif hasattr(buf, "to_numpy"):
        dt = _np_dtype(buf)
        shape = tuple(buf.shape)
        if dt is not None and shape:
            rows = shape[0] if n is None else max(min(int(n), shape[0]), 0)
            cuda = runtime.config().backend == "cuda"
            out = (host_empty if cuda else np.empty)((rows, *shape[1:]), dt)
            if _cuda_copy(buf, out, to_device=False):
                return out
        arr = buf.to_numpy()
    else:  # a tensor handed to the kernels in place (tigeom.torch)
        arr = buf.detach().cpu().numpy()
    return arr if n is None else arr[:n]
