"""Device array primitives, portable across CPU and CUDA: the exclusive prefix sum over int32
kernel arrays, row compaction, per-segment sorts, row copies and small reductions.

Blocked two-level scan: per-block sums (parallel over blocks), a scan of the block sums (the
same routine, recursively, until one block remains), then a per-block scan seeded with the
block offsets. Deterministic, no atomics, one code path on every arch.
"""


import numpy as np
import taichi as ti

from .. import runtime
from . import device as _device
from .launch import fast_module_kernels

_BLOCK = 256
SERIAL_ON_CPU = 1 << 22  # on a CPU backend one thread scans up to this many values (a few ms) faster
# than the blocked passes, each of which costs a thread-pool round trip


@ti.func
def block_sums(x: ti.template(), sums: ti.template(), n, block: ti.template()):
    nb = (n + block - 1) // block
    for b in range(nb):
        s = 0
        for i in range(b * block, ti.min(n, (b + 1) * block)):
            s += x[i]
        sums[b] = s


@ti.func
def block_scan(x: ti.template(), out: ti.template(), offsets: ti.template(), n, block: ti.template()):
    nb = (n + block - 1) // block
    for b in range(nb):
        s = offsets[b]
        for i in range(b * block, ti.min(n, (b + 1) * block)):
            v = x[i]
            out[i] = s
            s += v
        if b == nb - 1:
            out[n] = s  # the total, in the extra last slot


@ti.func
def scan_in_thread(x: ti.template(), out: ti.template(), n):
    """Exclusive scan of x[:n] into out (total in out[n]) by the calling thread, inside a loop
    of the caller's (several such scans can share one task)."""
    s = 0
    for i in range(n):
        v = x[i]
        out[i] = s
        s += v
    out[n] = s


@ti.func
def serial_scan(x: ti.template(), out: ti.template(), n):
    for _ in range(1):  # one thread
        scan_in_thread(x, out, n)


@ti.func
def scan_two_levels(x: ti.template(), out: ti.template(), s1: ti.template(), o1: ti.template(), s2: ti.template(),
                    o2: ti.template(), n):
    """The blocked scan of n <= BLOCK^3 values as five passes of one kernel (one launch from the
    host): block sums, sums of those, a serial scan of at most BLOCK values, then two seeded
    block scans. Each top-level loop finishes before the next starts."""
    nb1 = (n + _BLOCK - 1) // _BLOCK
    block_sums(x, s1, n, _BLOCK)
    block_sums(s1, s2, nb1, _BLOCK)
    serial_scan(s2, o2, (nb1 + _BLOCK - 1) // _BLOCK)
    block_scan(s1, o1, o2, nb1, _BLOCK)
    block_scan(x, out, o1, n, _BLOCK)


nd1_i32 = ti.types.ndarray(dtype=ti.i32, ndim=1)


@ti.kernel
def _block_sums(x: nd1_i32, sums: nd1_i32, n: ti.i32):
    block_sums(x, sums, n, _BLOCK)


@ti.kernel
def _block_scan(x: nd1_i32, out: nd1_i32, offsets: nd1_i32, n: ti.i32):
    block_scan(x, out, offsets, n, _BLOCK)


@ti.kernel
def _serial_scan(x: nd1_i32, out: nd1_i32, n: ti.i32):
    serial_scan(x, out, n)


@ti.kernel
def _scan_two_levels(x: nd1_i32, out: nd1_i32, s1: nd1_i32, o1: nd1_i32, s2: nd1_i32, o2: nd1_i32, n: ti.i32):
    scan_two_levels(x, out, s1, o1, s2, o2, n)


class ExclusiveScan:
    """Reusable scan of up to ``capacity`` int32 values: ``out[i] = sum(x[:i])``, ``out[n]`` = total.

    Scratch buffers are allocated once per capacity; ``run`` returns nothing and does not sync.
    Up to BLOCK^3 (16.7 million) values it is one kernel launch (:func:`scan_two_levels`), beyond
    that a recursion of block passes. On a CPU backend, up to SERIAL_ON_CPU values are scanned
    by one thread (:meth:`serial`).
    """

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self._levels = []
        n = self.capacity
        while n > _BLOCK or len(self._levels) < 2:  # two levels at least: the one-launch scan's scratch
            nb = max((n + _BLOCK - 1) // _BLOCK, 1)
            self._levels.append((_device.ndarray(np.int32, (nb,)), _device.ndarray(np.int32, (nb + 1,))))
            n = nb

    @property
    def one_launch(self) -> bool:
        """Whether every n up to the capacity scans in one launch."""
        return self.capacity <= _BLOCK ** 3

    def scratch(self) -> tuple:
        """(s1, o1, s2, o2): the two levels' block sums and offsets, for :func:`scan_two_levels`
        inside another kernel."""
        return (*self._levels[0], *self._levels[1])

    def serial(self, n: int) -> bool:
        """Whether a scan of n values runs in one thread (small, or on a CPU backend)."""
        return n <= _BLOCK or (n <= SERIAL_ON_CPU and not runtime.on_gpu())

    def run(self, x, out, n: int) -> None:
        if n > self.capacity:
            raise ValueError(f"n: {n} exceeds the scan capacity {self.capacity}")
        if self.serial(n):
            _serial_scan(x, out, n)
        elif n <= _BLOCK ** 3:
            _scan_two_levels(x, out, *self.scratch(), n)
        else:
            self._run(x, out, n, 0)

    def _run(self, x, out, n: int, level: int) -> None:
        if n <= _BLOCK:
            _serial_scan(x, out, n)
            return
        sums, offsets = self._levels[level]
        _block_sums(x, sums, n)
        nb = (n + _BLOCK - 1) // _BLOCK
        self._run(sums, offsets, nb, level + 1)
        _block_scan(x, out, offsets, n)


def exclusive_scan_numpy(x: np.ndarray) -> np.ndarray:
    """Reference used in tests: exclusive scan with the total appended."""
    out = np.zeros(len(x) + 1, np.int64)
    np.cumsum(x, out=out[1:])
    return out


@ti.kernel
def _row_live(src: ti.types.ndarray(dtype=ti.i32, ndim=2), flag: ti.types.ndarray(dtype=ti.i32, ndim=1), n: ti.i32):
    for r in range(n):
        flag[r] = 1 if src[r, 0] >= 0 else 0


@ti.kernel
def _row_scatter(src: ti.types.ndarray(dtype=ti.i32, ndim=2), slot: ti.types.ndarray(dtype=ti.i32, ndim=1),
                 dst: ti.types.ndarray(dtype=ti.i32, ndim=2), n: ti.i32, cols: ti.template()):
    for r in range(n):
        if src[r, 0] >= 0:
            for c in ti.static(range(cols)):
                dst[slot[r], c] = src[r, c]


def compact_rows(src, n: int):
    """The first ``n`` rows of the int32 device array ``src`` whose column 0 is >= 0, in order:
    (device array of shape (k, columns), k). Rows with a negative first entry are holes."""
    flag = _device.empty((max(n, 1),), np.int32)
    slot = _device.empty((n + 1,), np.int32)
    if n:
        _row_live(src, flag, n)
        ExclusiveScan(n).run(flag, slot, n)
        k = element(slot, n)
    else:
        k = 0
    dst = _device.empty((max(k, 1), src.shape[1]), np.int32)
    if k:
        _row_scatter(src, slot, dst, n, int(src.shape[1]))
    return dst, k


@ti.kernel
def sort_segments(start: ti.types.ndarray(dtype=ti.i32, ndim=1), order: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    """Sort each CSR segment ``order[start[f]:start[f + 1]]`` ascending in place (insertion sort:
    segments hold a handful), so that the order no longer depends on atomics."""
    for f in range(start.shape[0] - 1):
        for a in range(start[f] + 1, start[f + 1]):
            v = order[a]
            b = a - 1
            while b >= start[f]:  # not `and order[b] > v`: no short-circuit, order[-1] at f = 0
                if order[b] > v:
                    order[b + 1] = order[b]
                    b -= 1
                else:
                    break
            order[b + 1] = v


# --------------------------------------------------------------------------- small device primitives


@ti.kernel
def _copy_rows(src: ti.types.ndarray(ndim=2), dst: ti.types.ndarray(ndim=2), n: ti.i32, cols: ti.template()):
    for r in range(n):
        for c in ti.static(range(cols)):
            dst[r, c] = src[r, c]


def copy_rows(src, dst, n: int) -> None:
    """``dst[:n] = src[:n]`` for two (rows, columns) kernel arrays of one dtype, on the device."""
    if n:
        _copy_rows(src, dst, n, int(src.shape[1]))


@ti.kernel
def _count_positive(x: ti.types.ndarray(dtype=ti.i32, ndim=1), n: ti.i32, out: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    for i in range(n):
        if x[i] > 0:
            ti.atomic_add(out[0], 1)


def count_positive(x, n: int) -> int:
    """How many of the first n entries of an int32 kernel array are > 0 (one int comes back)."""
    out = _device.zeros((1,), np.int32)
    if n:
        _count_positive(x, n, out)
    return int(_device.fetch(out)[0])


@ti.kernel
def _min_f64(x: ti.types.ndarray(dtype=ti.f64, ndim=1), n: ti.i32, out: ti.types.ndarray(dtype=ti.f64, ndim=1)):
    for i in range(n):
        ti.atomic_min(out[0], x[i])


def min_value(x, n: int) -> float:
    """Smallest of the first n entries of a float64 kernel array (inf when n is 0)."""
    out = _device.upload(np.array([np.inf]))
    if n:
        _min_f64(x, n, out)
    return float(_device.fetch(out)[0])


@ti.kernel
def _element(x: ti.types.ndarray(dtype=ti.i32, ndim=1), i: ti.i32, out: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    out[0] = x[i]


def element(x, i: int) -> int:
    """Entry i of an int32 kernel array (one value crosses to the host, not the array)."""
    if isinstance(x, np.ndarray):
        return int(x[i])
    out = _device.empty((1,), np.int32)
    _element(x, int(i), out)
    return int(_device.fetch(out)[0])


def exclusive_offsets(counts, n: int) -> tuple[object, int]:
    """Exclusive scan of the first n entries of an int32 kernel array: (offsets (n + 1,), total)."""
    off = _device.empty((n + 1,), np.int32)
    ExclusiveScan(max(n, 1)).run(counts, off, n)
    return off, element(off, n)


fast_module_kernels(globals())  # every kernel above launches through a prepared launch context
