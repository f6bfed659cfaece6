"""Input validation shared by the public entry points: clear ValueError/TypeError messages."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def as_array(x, name: str, dtype=np.float64, ndim: int | None = None, finite: bool = True) -> np.ndarray:
    """``np.asarray(x, dtype)`` with the argument named in every error (dtype None: keep floats)."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name}: cannot be converted to an array ({exc})") from None
    if arr.dtype == object:
        raise ValueError(f"{name}: expected a numeric array, got a ragged or object array")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-dimensional array, got shape {arr.shape}")
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    elif not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if finite and np.issubdtype(arr.dtype, np.floating) and arr.size and not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.isfinite(arr).sum())
        raise ValueError(f"{name}: contains {bad} NaN or infinite value(s)")
    return arr


def as_points(x, name: str, dims: Sequence[int] = (2, 3), finite: bool = True) -> np.ndarray:
    arr = as_array(x, name, ndim=2, finite=finite)
    if arr.shape[1] not in dims:
        raise ValueError(f"{name}: expected shape (N, d) with d in {tuple(dims)}, got {arr.shape}")
    return arr


def as_index_array(x, name: str, n_vertices: int, width: int | None = None) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except Exception as exc:
        raise ValueError(f"{name}: cannot be converted to an array ({exc})") from None
    if arr.size == 0:
        arr = arr.reshape(0, width or (arr.shape[-1] if arr.ndim == 2 else 0))
    if arr.ndim != 2 or (width is not None and arr.shape[1] != width):
        raise ValueError(f"{name}: expected shape (M, {width or 'k'}), got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name}: expected integer indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n_vertices):
        raise ValueError(f"{name}: index out of range [0, {n_vertices}) (min {arr.min()}, max {arr.max()})")
    return arr


def as_vector(x, name: str, dim: int, positive: bool = False) -> np.ndarray:
    arr = as_array(x, name)
    if arr.ndim == 0:
        arr = np.full(dim, float(arr))
    if arr.shape != (dim,):
        raise ValueError(f"{name}: expected a scalar or {dim} values, got shape {arr.shape}")
    if positive and not (arr > 0).all():
        raise ValueError(f"{name}: every entry must be > 0, got {arr.tolist()}")
    return arr


def as_scalar(x, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a real number, got {type(x).__name__}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name}: must be finite, got {v}")
    return v
