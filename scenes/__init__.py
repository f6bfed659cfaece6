"""Runnable scenes (``tigeom run NAME``): physics-driven and data-driven shape optimisation.

Each module holds one :class:`tigeom.scene.Scene` subclass, registered in pyproject.toml under
the entry-point group ``tigeom.scenes``.
"""

if __name__ != "tigeom.scenes":  # the folder installs as tigeom.scenes; a bare `import scenes` is not this package
    raise ImportError("scenes/ is the package tigeom.scenes: use `import tigeom.scenes`")

