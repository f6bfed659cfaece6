"""Iso-surface extraction (marching squares / cubes) with adjoint gradients."""

from .extract import Curve, Surface, marching_cubes, marching_squares

__all__ = ["Curve", "Surface", "marching_cubes", "marching_squares"]
