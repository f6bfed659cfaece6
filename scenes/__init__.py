"""Runnable scenes (``tigeom run NAME``): physics-driven and data-driven shape optimisation.

Each module holds one :class:`tigeom.scene.Scene` subclass, registered in pyproject.toml under
the entry-point group ``tigeom.scenes``.
"""
