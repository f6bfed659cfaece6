"""Integer tuples as one int64 key each: sorting and deduplicating 1D keys is far faster than
``np.unique(axis=0)`` on rows (which numpy runs as a structured-dtype sort)."""

from __future__ import annotations

import numpy as np


def keys_fit(n: int, k: int) -> bool:
    """Whether k-tuples of indices below n fit in one int64 key."""
    return float(max(n, 1)) ** k < 2.0 ** 62


def row_keys(rows, n: int) -> np.ndarray:
    """(M,) int64 keys (r0 n + r1) n + ... of the (M, k) rows of indices in [0, n): equal rows get
    equal keys, and keys sort like the rows (lexicographically). Needs ``keys_fit(n, k)``."""
    rows = np.asarray(rows, np.int64)
    key = rows[:, 0].copy()
    for c in range(1, rows.shape[1]):
        key = key * n + rows[:, c]
    return key


def decode_keys(keys: np.ndarray, n: int, k: int) -> np.ndarray:
    """The (M, k) rows back from :func:`row_keys`."""
    out = np.empty((len(keys), k), np.int64)
    for c in range(k - 1, -1, -1):
        out[:, c] = keys % n
        keys = keys // n
    return out


def unique_keys(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct keys (sort + neighbour test: numpy 2's hashing np.unique is slower here)."""
    keys = np.sort(keys)
    return keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
