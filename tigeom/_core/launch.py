"""Kernel launches with less host work per call.

Taichi's ``Kernel.__call__`` inspects and converts every argument on every launch. Each array
argument costs 10-20 µs of Python: type checks, a numpy ``iinfo`` lookup, and the torch branch
of ``set_arg_ext_array``. A kernel with eighteen array arguments thus spends about 0.3 ms on the
host before the device starts. ``fast(kernel)`` returns a launcher that does this work once per
argument signature. The first call of a signature goes through Taichi itself, which compiles
and validates. Later calls with the same signature set the arguments straight into the
kernel's launch context and launch the compiled kernel.

A signature fixes, per argument, its kind, dtype, number of dimensions and device, and the value
of a template argument. Anything the fast path does not handle goes through Taichi's own
``__call__``: template arguments other than plain scalars, vector element types, tensors that require grad or are not contiguous, arrays on the other device,
kernels that return values. Behaviour is therefore the same, and only the host time changes.
"""

from __future__ import annotations

import numpy as np

from .. import runtime

_FALLBACK = object()


def _torch_tensor_type():
    import sys

    torch = sys.modules.get("torch")
    return None if torch is None else torch.Tensor


class FastKernel:
    """A launcher for one ``@ti.kernel`` function; call it as the kernel."""

    def __init__(self, kernel):
        from taichi.types import template

        self.kernel = kernel
        self._plans: dict = {}
        primal = getattr(kernel, "_primal", None)
        # template arguments select the compiled instance by value, and take no launch slot
        arguments = getattr(primal, "arguments", ())
        self._templates = frozenset(i for i, arg in enumerate(arguments) if isinstance(arg.annotation, template))
        self._keyfns = [_template_key if i in self._templates else _signature for i in range(len(arguments))]

    def _lookup(self, args):
        """(signature key, prepared plan or None or _FALLBACK); key None when only Taichi's own
        path applies (another backend, a wrong argument count)."""
        backend = runtime.config().backend
        if backend not in ("cpu", "cuda") or len(args) != len(self._keyfns):
            return None, None  # on a wrong argument count Taichi reports it
        _GPU[0] = backend == "cuda"
        key = (runtime.generation(), *[f(a) for f, a in zip(self._keyfns, args)])
        return key, self._plans.get(key)

    def __call__(self, *args):
        key, plan = self._lookup(args)
        if key is None:
            return self.kernel(*args)
        if plan is None or plan is _FALLBACK:
            self.kernel(*args)  # compiles, checks and launches through Taichi
            if plan is None:
                self._plans[key] = self._plan(args, key)
            return None
        t_kernel, prog, setters = plan
        ctx = t_kernel.make_launch_context()
        for slot, i, setter in setters:
            setter(ctx, (slot,), args[i])
        # compile_kernel is a cache lookup here; keeping its result across launches instead made
        # every CUDA launch slower (measured on an H200: 0.92 -> 1.3-1.45 ms for marching cubes)
        prog.launch_kernel(prog.compile_kernel(prog.config(), prog.get_device_caps(), t_kernel), ctx)
        return None

    def bind(self, args: tuple, late):
        """A launch of this kernel with every argument but those at the indices ``late`` (an int
        or a tuple of ints) set now; the returned function takes those arguments, in that order,
        sets them and launches, once. The ``args`` at ``late`` are placeholders of the same
        signature (kind, dtype, dimensions, device) as the values that come later, e.g. a
        backward pass prepared in its forward, where the host is less busy. None when the
        signature has no prepared launch yet (its first call goes through Taichi): launch
        normally then."""
        late = (late,) if isinstance(late, int) else tuple(late)
        if any(i in self._templates for i in late):
            return None
        key, plan = self._lookup(args)
        if plan is None or plan is _FALLBACK:
            return None
        t_kernel, prog, setters = plan
        ctx = t_kernel.make_launch_context()
        slots = {}
        for slot, i, setter in setters:
            if i in late:
                slots[i] = (slot, setter)
            else:
                setter(ctx, (slot,), args[i])
        todo = [(slots[i][0], slots[i][1], key[1 + i]) for i in late]

        def launch(*values) -> bool:
            """Launch with ``values`` as the late arguments; False (nothing launched) when one's
            signature differs from its placeholder's."""
            if any(_signature(v) != want for v, (_s, _f, want) in zip(values, todo)):
                return False
            for v, (slot, setter, _want) in zip(values, todo):
                setter(ctx, (slot,), v)
            prog.launch_kernel(prog.compile_kernel(prog.config(), prog.get_device_caps(), t_kernel), ctx)
            return True

        return launch

    def _plan(self, args, key):
        """(Taichi kernel, the program it runs in, one argument setter per argument), or
        _FALLBACK. The key holds the runtime's generation, so the program outlives the plan."""
        from taichi.lang import impl

        primal = getattr(self.kernel, "_primal", None)
        if (primal is None or None in key or primal.return_type is not None or getattr(primal, "has_print", False)
                or len(args) != len(primal.arguments)):
            return _FALLBACK
        setters = []
        for i, (a, arg) in enumerate(zip(args, primal.arguments)):
            if i in self._templates:
                continue
            setter = _setter(arg.annotation, a)
            if setter is None:
                return _FALLBACK
            setters.append((len(setters), i, setter))
        if impl.get_runtime().target_tape is not None or impl.get_runtime().fwd_mode_manager is not None:
            return _FALLBACK
        ckey = primal.ensure_compiled(*args)
        return primal.compiled_kernels[ckey], impl.get_runtime().prog, tuple(setters)

    def __getattr__(self, name):  # grad, _primal and the rest stay reachable
        return getattr(self.kernel, name)


def fast(kernel) -> FastKernel:
    """The launcher of ``kernel``, made once per kernel and kept on it."""
    launcher = getattr(kernel, "_tigeom_fast", None)
    if launcher is None:
        launcher = FastKernel(kernel)
        try:
            kernel._tigeom_fast = launcher
        except AttributeError:  # a kernel object that takes no attributes: not kept
            pass
    return launcher


def fast_module_kernels(namespace: dict) -> None:
    """Replace every ``@ti.kernel`` in a module's namespace (``globals()``, at the module's end)
    by its fast launcher, so that the module's callers and its importers launch through it."""
    for name, obj in list(namespace.items()):
        if getattr(obj, "_is_wrapped_kernel", False) and not getattr(obj, "_is_classkernel", False):
            namespace[name] = fast(obj)


def _template_key(a):
    """A template argument's value, when it is a plain scalar (anything else: Taichi's path)."""
    if isinstance(a, (int, float, np.integer, np.floating, np.bool_, str)):
        return ("T", type(a).__name__, a)
    return None


def _signature(a):
    """What must match for a prepared launch to be valid: kind, dtype, ndim, device; None
    where only Taichi's own path may take the argument."""
    kind = _KINDS.get(type(a))
    if kind is not None:
        return kind
    tensor = _TENSOR[0] or _torch_tensor_type()
    if tensor is not None and isinstance(a, tensor):
        _TENSOR[0] = tensor
        if a.requires_grad or not a.is_contiguous() or a.numel() == 0:
            return None
        cuda = a.is_cuda
        if cuda != _GPU[0]:
            return None  # Taichi copies such tensors across devices itself
        return ("torch", a.dtype, a.dim(), cuda)
    if isinstance(a, np.ndarray):
        return ("np", a.dtype.str, a.ndim) if a.flags.c_contiguous and a.size else None
    if isinstance(a, (int, np.integer, np.bool_)):
        return "i"
    if isinstance(a, (float, np.floating)):
        return "f"
    arr = getattr(a, "arr", None)
    if arr is not None and hasattr(a, "dtype") and getattr(a, "grad", None) is None:
        return ("ti", str(a.dtype), len(a.shape), type(a).__name__)
    return None


_TENSOR = [None]  # torch.Tensor once torch has been seen
_KINDS = {int: "i", bool: "i", float: "f"}
_GPU = [False]  # whether the runtime is CUDA, refreshed per launch (see FastKernel.__call__)


def _setter(needed, a):
    """The function that puts argument ``a`` of annotation ``needed`` into a launch context."""
    from taichi.lang import _ndarray
    from taichi.lang.util import cook_dtype
    from taichi.types import ndarray_type, primitive_types
    from taichi.types.utils import is_signed

    if id(needed) in primitive_types.real_type_ids:
        return lambda ctx, idx, v: ctx.set_arg_float(idx, float(v))
    if id(needed) in primitive_types.integer_type_ids:
        if is_signed(cook_dtype(needed)):
            return lambda ctx, idx, v: ctx.set_arg_int(idx, int(v))
        return lambda ctx, idx, v: ctx.set_arg_uint(idx, int(v))
    if not isinstance(needed, ndarray_type.NdarrayType):
        return None
    if not (needed.dtype is None or id(needed.dtype) in primitive_types.type_ids):
        return None  # vector or matrix elements: Taichi strips their dimensions
    if isinstance(a, _ndarray.Ndarray):
        return lambda ctx, idx, v: ctx.set_arg_ndarray(idx, v.arr)
    if int(np.prod(a.shape)) > np.iinfo(np.int32).max:
        return None  # Taichi warns about int32 indexing; let it
    if isinstance(a, np.ndarray):
        return lambda ctx, idx, v: ctx.set_arg_external_array_with_shape(idx, int(v.ctypes.data), v.nbytes,
                                                                          v.shape, 0)
    # element_size() * nelement(), not nbytes: torch.compile traces through here, and nbytes fails
    # on its symbolic sizes
    return lambda ctx, idx, v: ctx.set_arg_external_array_with_shape(idx, v.data_ptr(), v.element_size() * v.nelement(),
                                                                      tuple(v.shape), 0)


def light_compile(kernel=None, *, backends=None):
    """``kernel`` (a ``@ti.kernel`` function) compiled without Taichi's advanced IR optimisation,
    on every backend or only on those named in ``backends`` (``("cuda",)``); use as
    ``@light_compile`` or ``@light_compile(backends=...)`` above ``@ti.kernel``.

    For large kernels Taichi's own IR passes, not LLVM, take most of the first call: the 3D
    power-cell kernel took 25-34 s to compile with them (CPU and CUDA) and 2-3 s without, with
    the same results and warm times within noise (docs/benchmarks.md). Taichi reads the setting
    when it compiles, keys its offline cache by it and keeps a compiled kernel for later
    launches, so the switch is set only around this kernel's launches (and restored when they
    raise), and every other kernel keeps the full optimisation. Where the setting changes a
    kernel's floating-point rounding on one backend (the CPU's, for the tet improver's), name
    the backends where it does not."""
    import functools

    from taichi.lang import impl

    if kernel is None:
        return functools.partial(light_compile, backends=backends)
    only = None if backends is None else frozenset(backends)

    @functools.wraps(kernel)  # keeps _primal, grad and the wrapped-kernel marks
    def launch(*args, **kwargs):
        if only is not None and runtime.config().backend not in only:
            return kernel(*args, **kwargs)
        cfg = impl.current_cfg()
        before = cfg.advanced_optimization
        cfg.advanced_optimization = False
        try:
            return kernel(*args, **kwargs)
        finally:
            cfg.advanced_optimization = before

    return launch


# Taichi 1.7's CPU backend hands a parallel range-for to its threads in tasks of 512 iterations:
# a range of 512 iterations or fewer runs on one thread, whatever ``ti.loop_config`` asks. A
# kernel whose loop runs over a fixed number of workers (each with its own scratch) therefore
# needs several times 512 workers per thread to keep every core busy; with 128 per core, the
# Delaunay cell kernels ran on one of two cores.
CPU_TASK = 512


def cpu_workers(tasks_per_thread: int = 4) -> int:
    """Workers for a per-worker CPU kernel: ``tasks_per_thread`` Taichi tasks for every thread, so
    the threads balance the load between them."""
    import os

    return CPU_TASK * tasks_per_thread * max(os.cpu_count() or 1, 1)
