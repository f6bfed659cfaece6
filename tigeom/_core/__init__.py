"""Private plumbing shared by every part of tigeom (and by ``tigeom.sim``): kernel arrays on the
device (:mod:`.device`), argument validation (:mod:`.validate`), scans and segment sorts on the
device (:mod:`.scan`), int64 row keys (:mod:`.keys`), the progress bar (:mod:`.progress`) and the
Taichi functions of the uniform point grid (:mod:`.gridfuncs`).

Nothing here is public API; any part may import it, and it imports no other part (only
:mod:`tigeom.runtime`).
"""
