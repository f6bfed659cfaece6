"""The layout's rules (docs/architecture.md), checked on the source: one import namespace, which
part may import which, no reach into another part's private modules or names, short functions."""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# folder -> the package it installs as
FOLDERS = {"tigeom": "tigeom", "sim": "tigeom.sim", "scenes": "tigeom.scenes"}
GEOMETRY_PARTS = {"delaunay", "dmesh", "isosurface", "render", "spatial", "tetmesh"}
MAX_FUNCTION_LINES = 100


def _modules():
    """(module name, path) of every source file of the three folders."""
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([package, *parts]), path


def part_of(module: str) -> str:
    """The part a module belongs to: a geometry subpackage, ``_core``, ``sim``, ``scenes``, or
    the module itself for the top-level modules of tigeom (runtime, io, scene, cli, optim)."""
    names = module.split(".")
    if names[0] != "tigeom":
        return "external"
    if len(names) == 1:
        return "tigeom"
    return names[1] if names[1] in GEOMETRY_PARTS | {"_core", "sim", "scenes"} else module


def _imports(module: str, path: pathlib.Path):
    """(imported module, imported name or None, line) for every import statement."""
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for a in node.names:
                yield target, a.name, node.lineno


def _violations():
    modules = dict(_modules())
    out = []
    for module, path in modules.items():
        src = part_of(module)
        for target, name, line in _imports(module, path):
            if not target.startswith("tigeom"):
                continue
            # `from pkg import sub` imports the module pkg.sub when it exists
            full = f"{target}.{name}" if name and f"{target}.{name}" in modules else target
            dst = part_of(full)
            where = f"{path.relative_to(ROOT)}:{line} imports {full}" + (f" ({name})" if name and full == target else "")
            if src != "sim" and src != "scenes" and dst in ("sim", "scenes"):
                out.append(f"{where}: the geometry never imports tigeom.sim or tigeom.scenes")
            if src == "sim" and dst == "scenes":
                out.append(f"{where}: tigeom.sim never imports tigeom.scenes")
            if src == "_core" and dst not in ("_core", "tigeom.runtime"):
                out.append(f"{where}: _core imports no other part (only tigeom.runtime)")
            if dst == src or dst == "_core":
                continue
            private = [p for p in full.split(".")[1:] if p.startswith("_") and p != "_core"]
            if private or (name and full == target and name.startswith("_")):
                out.append(f"{where}: a part reaches another only through its public names or _core")
    return out


def test_import_rules_hold():
    assert _violations() == []


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    """The rule test can fail: a geometry module importing the physics, or another part's
    private kernels, is reported."""
    bad = tmp_path / "tigeom"
    (bad / "dmesh").mkdir(parents=True)
    (bad / "__init__.py").write_text("")
    (bad / "dmesh" / "__init__.py").write_text("")
    (bad / "dmesh" / "x.py").write_text("from tigeom.sim import Flow2D\nfrom ..spatial import _kernels\n"
                                        "from ..spatial.grid import _secret\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "FOLDERS", {"tigeom": "tigeom"})
    found = _violations()
    assert len(found) == 3, found


def test_no_function_is_longer_than_the_limit():
    long = []
    for _, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


@pytest.mark.parametrize("name", ["sim", "scenes"])
def test_one_namespace(name, tmp_path):
    """`import sim` / `import scenes` fail outside the repository (and inside it, the folder
    refuses to import under its bare name); `tigeom.sim` and `tigeom.scenes` work."""
    env = dict(os.environ, PYTHONPATH="")
    for cwd in (tmp_path, ROOT):
        bare = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=cwd, env=env, capture_output=True, text=True)
        assert bare.returncode != 0 and ("ImportError" in bare.stderr or "ModuleNotFoundError" in bare.stderr)
    ok = subprocess.run([sys.executable, "-c", f"import tigeom; m = tigeom.{name}; print(m.__name__)"], cwd=tmp_path,
                        env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith(f"tigeom.{name}")


def test_scene_entry_points_live_in_the_namespace():
    from tigeom import scene

    eps = scene.available()
    assert eps and all(ep.value.startswith("tigeom.scenes.") for ep in eps.values())
