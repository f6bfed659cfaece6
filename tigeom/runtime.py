"""Runtime configuration: one idempotent ``init()`` and lazy first-use initialisation.

Taichi is never initialised at import time. The first entry point that needs a kernel calls
:func:`ensure_init`, which initialises with the defaults unless :func:`init` ran before.

Re-initialising with different arguments calls ``ti.reset()``: every Taichi field and ndarray
created before becomes invalid, kernels are recompiled on their next call, and objects cached
through :func:`cached` are dropped. Results returned by tigeom are plain numpy arrays and survive.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

logger = logging.getLogger(__name__)

_ARCHS = ("auto", "cpu", "cuda", "vulkan", "metal")
_PRECISIONS = ("f32", "f64")


@dataclass(frozen=True)
class RuntimeConfig:
    """The configuration in force: what was asked for and the arch actually obtained."""

    arch: str
    seed: int
    precision: str
    debug: bool
    backend: str  # the arch Taichi actually runs on: "cpu", "cuda", ...


_config: RuntimeConfig | None = None
_requested: tuple | None = None
_generation = 0
_cache: dict[Any, Any] = {}


def _validate(arch: str, seed: int, precision: str, debug: bool) -> None:
    if arch not in _ARCHS:
        raise ValueError(f"arch: expected one of {_ARCHS}, got {arch!r}")
    if precision not in _PRECISIONS:
        raise ValueError(f"precision: expected one of {_PRECISIONS}, got {precision!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    if not isinstance(debug, bool):
        raise TypeError(f"debug: expected a bool, got {type(debug).__name__}")


def init(arch: str = "auto", seed: int = 0, precision: str = "f32", debug: bool = False) -> RuntimeConfig:
    """Initialise the Taichi runtime used by every tigeom kernel.

    Parameters
    ----------
    arch : "auto" (CUDA when present, else CPU), "cpu", "cuda", "vulkan" or "metal".
        An unavailable GPU arch falls back to the CPU with a logged warning.
    seed : seed of Taichi's random generator, Python's ``random`` and numpy's legacy generator.
    precision : "f32" or "f64", the float type of all Taichi computation.
    debug : Taichi debug mode (bounds checks; slow).

    Calling it again with the same arguments does nothing. With different arguments it calls
    ``ti.reset()`` and initialises anew: Taichi objects created before become invalid.

    Returns the :class:`RuntimeConfig` in force.
    """
    global _config, _requested, _generation
    _validate(arch, seed, precision, debug)
    key = (arch, int(seed), precision, debug)
    if _config is not None and key == _requested:
        return _config

    import taichi as ti

    if _config is not None:
        logger.info("tigeom.init: re-initialising Taichi (%s -> %s); earlier Taichi objects are invalid",
                    _requested, key)
        ti.reset()
        _cache.clear()

    want = {"auto": None, "cpu": ti.cpu, "cuda": ti.cuda, "vulkan": ti.vulkan, "metal": ti.metal}[arch]
    fp = ti.f64 if precision == "f64" else ti.f32
    kwargs = dict(default_fp=fp, default_ip=ti.i32, random_seed=int(seed), debug=debug,
                  log_level=ti.WARN, offline_cache=True)
    if want is None:
        ti.init(arch=ti.gpu if _cuda_likely() else ti.cpu, **kwargs)
    else:
        ti.init(arch=want, **kwargs)
    backend = _current_backend()
    if arch == "auto" and backend != "cuda":
        logger.info("tigeom.init: no CUDA device found, running on the CPU (%s)", backend)
    elif arch not in ("auto", backend):
        logger.warning("tigeom.init: arch %r is not available here, fell back to %r", arch, backend)
    _cache_framework_checks()
    random.seed(int(seed))
    np.random.seed(int(seed) % (2**32))
    _config = RuntimeConfig(arch=arch, seed=int(seed), precision=precision, debug=debug, backend=backend)
    _requested = key
    _generation += 1
    return _config


def _cache_framework_checks() -> None:
    """Taichi 1.7 asks ``has_pytorch()``/``has_paddle()`` about a dozen times per kernel launch
    with an ndarray argument. Each call reads an environment variable and imports a module; that
    was about a tenth of a small launch's host time. The answers cannot change within a process
    once the runtime is up, so the functions in the modules that call them are replaced by cached
    ones."""
    import functools

    from taichi.lang import kernel_impl, util

    for name in ("has_pytorch", "has_paddle"):
        fn = getattr(util, name)
        if not hasattr(fn, "cache_info"):
            cached = functools.lru_cache(maxsize=None)(fn)
            for mod in (util, kernel_impl):
                if getattr(mod, name, None) is fn:
                    setattr(mod, name, cached)


def _cuda_likely() -> bool:
    """Whether asking Taichi for a GPU is worth it: avoids Vulkan/OpenGL on CUDA-less machines."""
    import os
    import shutil

    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    return shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0") or os.path.exists(
        "/proc/driver/nvidia")


def _current_backend() -> str:
    from taichi.lang import impl

    name = str(impl.current_cfg().arch)  # e.g. "Arch.x64"
    name = name.split(".")[-1]
    return {"x64": "cpu", "arm64": "cpu"}.get(name, name)


def ensure_init() -> RuntimeConfig:
    """Initialise with defaults unless already initialised; return the config in force."""
    if _config is None:
        return init()
    return _config


def config() -> RuntimeConfig:
    """The configuration in force (initialising with defaults on first use)."""
    return ensure_init()


def real_dtype() -> np.dtype:
    """numpy float dtype matching the Taichi precision in force."""
    return np.dtype(np.float64 if ensure_init().precision == "f64" else np.float32)


def on_gpu() -> bool:
    return ensure_init().backend not in ("cpu",)


def generation() -> int:
    """Counter bumped at every (re-)initialisation."""
    ensure_init()
    return _generation


def cached(key: Any, factory: Callable[[], Any]) -> Any:
    """Object cached for the lifetime of the current Taichi runtime (dropped on re-init)."""
    ensure_init()
    if key not in _cache:
        _cache[key] = factory()
    return _cache[key]


def sync() -> None:
    """Wait for all queued Taichi kernels (for timing)."""
    import taichi as ti

    ensure_init()
    ti.sync()
