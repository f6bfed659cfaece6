"""Closed triangle meshes of simple bodies for :class:`Flow3D` (spheres, spheroids, cylinders),
outward oriented, as (vertices (V, 3), faces (F, 3)) numpy arrays."""

from __future__ import annotations

import numpy as np

from tigeom._core.validate import as_array


def _center(center):
    c = as_array(center, "center")
    if c.shape != (3,):
        raise ValueError(f"center: expected a 3-vector, got shape {c.shape}")
    return c


def spheroid(center, semi_axes, subdivisions: int = 4):
    """Ellipsoid with semi-axes (a, b, c) along x, y, z: an icosphere (20 * 4^subdivisions faces)
    scaled, so every vertex lies on the exact surface."""
    import trimesh

    ax = as_array(semi_axes, "semi_axes")
    if ax.shape != (3,) or not (ax > 0).all():
        raise ValueError(f"semi_axes: expected three positive lengths, got {ax.tolist()}")
    if not 0 <= int(subdivisions) <= 7:
        raise ValueError(f"subdivisions: expected 0..7, got {subdivisions}")
    m = trimesh.creation.icosphere(subdivisions=int(subdivisions), radius=1.0)
    return np.asarray(m.vertices) * ax + _center(center), np.asarray(m.faces, np.int64)


def sphere(center, radius: float, subdivisions: int = 4):
    if radius <= 0:
        raise ValueError(f"radius: must be > 0, got {radius}")
    return spheroid(center, (radius, radius, radius), subdivisions)


def equal_volume_spheroid(center, volume: float, aspect: float, subdivisions: int = 4):
    """Prolate spheroid of the given volume whose axis along x is ``aspect`` times its diameter."""
    if volume <= 0 or aspect <= 0:
        raise ValueError(f"volume, aspect: must be > 0, got {volume}, {aspect}")
    b = (3.0 * volume / (4.0 * np.pi * aspect)) ** (1.0 / 3.0)
    return spheroid(center, (aspect * b, b, b), subdivisions)


def cylinder(center, radius: float, length: float, axis: int = 2, sections: int = 128):
    """Closed circular cylinder (capped) of the given length along coordinate ``axis``."""
    import trimesh

    if radius <= 0 or length <= 0:
        raise ValueError(f"radius, length: must be > 0, got {radius}, {length}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis: expected 0, 1 or 2, got {axis}")
    m = trimesh.creation.cylinder(radius=radius, height=length, sections=int(sections))
    v = np.asarray(m.vertices)
    v = np.roll(v, axis - 2, axis=1)  # trimesh's axis is z
    return v + _center(center), np.asarray(m.faces, np.int64)
