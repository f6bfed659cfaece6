"""Scene machinery shared by every runnable scene: configuration, output folder, progress bar,
checkpoints with resume, and an atomic ``summary.json``.

A scene subclasses :class:`Scene` (the warp ``Example`` pattern) and is registered as an entry
point in the group ``tigeom.scenes``; ``tigeom run NAME`` finds it there, so this package never
imports the scene package.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
import platform
import time
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np

from . import runtime
from .io import atomic_path, write_bytes_atomic

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.npz"


class Scene(ABC):
    """Base class of a scene.

    Subclasses set ``name``, ``summary`` (one line) and ``defaults`` (a flat dict of TOML-able
    values, including ``iters``) and implement ``step``; the rest has working defaults.
    """

    name = "scene"
    summary = ""
    defaults: dict[str, Any] = {"iters": 100, "seed": 0, "checkpoint_every": 25}

    def __init__(self, config: dict[str, Any], out: Path):
        self.config = config
        self.out = Path(out)

    # -- to implement -------------------------------------------------------------------------
    @abstractmethod
    def step(self, it: int) -> dict[str, float]:
        """One iteration; returns the metrics to log. ``{"converged": True}`` stops the run."""

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that reproduce the run from here (written to the checkpoint)."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned."""

    def save_iteration(self, it: int) -> None:
        """Write the meshes of iteration ``it`` (called every ``save_every`` iterations)."""

    def finish(self, history: list[dict]) -> dict[str, Any]:
        """Write final meshes and plots; return the figures for ``summary.json``."""
        return {}

    def render(self) -> None:
        """Interactive display; scenes run headless, so this does nothing by default."""


def first_pending(names, done) -> str | None:
    """The first of ``names`` not in ``done`` (None when all are): for scenes that handle one
    target per iteration, so that a run checkpoints and resumes between targets."""
    return next((n for n in names if n not in done), None)


def available() -> dict[str, Any]:
    """Registered scenes: name -> entry point."""
    return {ep.name: ep for ep in entry_points(group="tigeom.scenes")}


def load(name: str) -> type[Scene]:
    scenes = available()
    if name not in scenes:
        raise ValueError(f"scene: unknown scene {name!r}; available: {sorted(scenes)}")
    return scenes[name].load()


def resolve_config(cls: type[Scene], config_file: str | None = None, **overrides) -> dict[str, Any]:
    """Defaults, then the TOML file, then command-line overrides (None means not given)."""
    cfg = dict(Scene.defaults)
    cfg.update(cls.defaults)
    if config_file:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        path = Path(config_file)
        if not path.is_file():
            raise ValueError(f"config: no such file {config_file!r}")
        with open(path, "rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"config: {config_file!r} is not valid TOML ({exc})") from None
        unknown = sorted(set(data) - set(cfg) - {"arch"})
        if unknown:
            raise ValueError(f"config: unknown keys {unknown} for scene {cls.name!r}; known: {sorted(cfg)}")
        cfg.update(data)
    for key, val in overrides.items():
        if val is not None:
            cfg[key] = val
    if int(cfg["iters"]) < 0:
        raise ValueError(f"iters: must be >= 0, got {cfg['iters']}")
    return cfg


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path, data) -> None:
    write_bytes_atomic(path, json.dumps(data, indent=2, default=_json_default).encode())


def _save_checkpoint(out: Path, it: int, cfg: dict, scene: Scene, history: list[dict], elapsed: float) -> None:
    arrays = {f"state/{k}": np.asarray(v) for k, v in scene.state().items()}
    meta = json.dumps({"iteration": it, "config": cfg, "history": history, "elapsed": elapsed},
                      default=_json_default)
    with atomic_path(out / CHECKPOINT) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, __meta__=np.frombuffer(meta.encode(), np.uint8), **arrays)


def _load_checkpoint(out: Path, cfg: dict):
    path = out / CHECKPOINT
    if not path.is_file():
        return None
    with np.load(path) as data:
        meta = json.loads(bytes(data["__meta__"]).decode())
        state = {k[len("state/"):]: data[k] for k in data.files if k.startswith("state/")}
    same = {k: v for k, v in meta["config"].items() if k != "iters"} == {k: v for k, v in json.loads(
        json.dumps(cfg, default=_json_default)).items() if k != "iters"}
    if not same:
        raise ValueError(f"out: {str(out)!r} holds a checkpoint of a different configuration; "
                         "use another --out or --no-resume")
    return meta, state


def run(name: str, out: str | None = None, arch: str | None = None, iters: int | None = None,
        seed: int | None = None, config_file: str | None = None, resume: bool = True,
        progress: bool = True, extra: dict | None = None) -> dict[str, Any]:
    """Run scene ``name``; returns the summary (also written to ``OUT/summary.json``).

    If ``OUT`` holds a checkpoint of the same configuration, the run resumes from it.
    """
    cls = load(name)
    cfg = resolve_config(cls, config_file, iters=iters, seed=seed, **(extra or {}))
    cfg["arch"] = arch or cfg.get("arch", "auto")
    rt = runtime.init(arch=cfg["arch"], seed=int(cfg["seed"]), precision=cfg.get("precision", "f32"))
    outdir = Path(out) if out else Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    outdir.mkdir(parents=True, exist_ok=True)
    scene = cls(cfg, outdir)
    start_it, history, elapsed0 = 0, [], 0.0
    ck = _load_checkpoint(outdir, cfg) if resume else None
    if ck is not None:
        meta, state = ck
        scene.load_state(state)
        start_it, history, elapsed0 = meta["iteration"], meta["history"], meta["elapsed"]
        logger.info("resuming %s from iteration %d", name, start_it)
    n_iter = int(cfg["iters"])
    every = max(int(cfg.get("checkpoint_every", 25)), 1)
    save_every = max(int(cfg.get("save_every", every)), 1)
    t0 = time.perf_counter()
    converged = False
    bar = _progress(progress)
    with bar:
        task = bar.add_task(name, total=n_iter, completed=start_it)
        it = start_it
        while it < n_iter and not converged:
            metrics = scene.step(it)
            converged = bool(metrics.pop("converged", False))
            history.append({"iteration": it, **{k: float(v) for k, v in metrics.items()}})
            it += 1
            if it % save_every == 0 or it == n_iter or converged:
                scene.save_iteration(it)
            if it % every == 0 and it < n_iter and not converged:
                _save_checkpoint(outdir, it, cfg, scene, history, elapsed0 + time.perf_counter() - t0)
            desc = " ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:3])
            bar.update(task, completed=it, description=f"{name} {desc}")
    if start_it == 0 and n_iter == 0:
        scene.save_iteration(0)
    loop_time = elapsed0 + time.perf_counter() - t0
    t1 = time.perf_counter()
    figures = scene.finish(history)
    summary = {
        "scene": name,
        "config": cfg,
        "figures": figures,
        "iterations": it,
        "converged": converged,
        "resumed_from": start_it,
        "timings": {"loop_s": loop_time, "finish_s": time.perf_counter() - t1,
                    "per_iteration_s": loop_time / max(it, 1)},
        "runtime": {"backend": rt.backend, "precision": rt.precision, "python": platform.python_version(),
                    "machine": platform.machine()},
        "history": history,
    }
    summary.update(getattr(scene, "summary_extra", {}))
    write_json(outdir / "summary.json", summary)
    (outdir / CHECKPOINT).unlink(missing_ok=True)
    summary["out"] = str(outdir)
    return summary


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=False)
