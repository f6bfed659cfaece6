"""Batch runs of a scene on Dask: parameter sweeps and seeds past one process or one machine
(extra ``tigeom[batch]``).

    tigeom batch drag2d --grid reynolds=10,20 --grid iters=20,40 --seeds 2 --out sweep/
    rows = tigeom.batch.run("drag2d", {"iters": [20, 40]}, seeds=2, out="sweep/")

Every combination of the grid's values and every seed is one Dask task that runs the scene as
``tigeom run`` would, into its own folder under ``out``. ``out/results.csv`` gets a row per run
as it finishes (parameters, seed, status, wall time, error, and the scalar figures of its
``summary.json``), rewritten atomically. A task that raises is recorded as failed and the batch
goes on; a task whose worker dies is run again elsewhere by Dask. Running the same batch again
reuses the runs whose ``summary.json`` exists and runs the others (failed or unfinished ones
resume from their checkpoints).
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import os
import re
import time
from pathlib import Path

from . import scene as _scene

__all__ = ["run", "parse_grid", "plan"]

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*$")
FIXED_COLUMNS = ("run", "seed", "status", "reused", "wall_s", "error")


# --------------------------------------------------------------------------- the plan


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets and quotes (``size=[1, 2],[3, 4]`` gives two values)."""
    out, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    out.append(cur)
    return out


def _scalar(token: str, key: str):
    """A value of ``--grid`` as TOML reads it; a bare word is a string."""
    import tomllib

    tok = token.strip()
    try:
        return tomllib.loads(f"v = {tok}")["v"]
    except tomllib.TOMLDecodeError:
        if _WORD.match(tok):
            return tok
        raise ValueError(f"--grid {key}: malformed value {token!r} (TOML scalars: 3, 0.5, true, "
                         f"\"text\", [1, 2], or a bare word)") from None


def parse_grid(specs) -> dict[str, list]:
    """``["KEY=V1,V2", ...]`` (or a dict of lists) as {key: [values]}."""
    if isinstance(specs, dict):
        grid = {str(k): (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in specs.items()}
    else:
        grid = {}
        for spec in specs:
            key, sep, values = str(spec).partition("=")
            key = key.strip()
            if not sep or not key or not values.strip():
                raise ValueError(f"--grid: expected KEY=V1,V2,..., got {spec!r}")
            if key in grid:
                raise ValueError(f"--grid: key {key!r} given twice")
            grid[key] = [_scalar(t, key) for t in _split_top(values)]
    for key, vals in grid.items():
        if not vals:
            raise ValueError(f"--grid {key}: no values")
    return grid


def _folder_name(params: dict, seed: int) -> str:
    parts = [f"{k}={v}" for k, v in params.items()] + [f"seed={seed}"]
    return re.sub(r"[^A-Za-z0-9_.=+\-]+", "_", "_".join(parts))


def plan(scene: str, grid, seeds: int = 1) -> list[dict]:
    """The runs of a batch: [{"run": folder name, "params": {...}, "seed": s}], after checking
    the scene, the keys and every run's resolved configuration (ValueError before anything
    runs)."""
    names = _scene.available()
    if scene not in names:
        raise ValueError(f"scene: unknown scene {scene!r}; known: {sorted(names)}")
    cls = _scene.load(scene)
    grid = parse_grid(grid)
    if int(seeds) < 1:
        raise ValueError(f"seeds: need at least 1, got {seeds}")
    known = set(_scene.resolve_config(cls))
    unknown = sorted(set(grid) - known)
    if unknown:
        raise ValueError(f"--grid: unknown keys {unknown} for scene {scene!r}; known: {sorted(known)}")
    if "seed" in grid:
        raise ValueError("--grid: sweep seeds with --seeds, not a seed key")
    runs = []
    for combo in itertools.product(*grid.values()):
        params = dict(zip(grid, combo))
        for s in range(int(seeds)):
            _scene.resolve_config(cls, **params, seed=s)  # raises on values the scene refuses up front
            runs.append({"run": _folder_name(params, s), "params": params, "seed": s})
    if len({r["run"] for r in runs}) != len(runs):
        raise ValueError("--grid: two runs would share a folder (repeated values?)")
    return runs


# --------------------------------------------------------------------------- one task


def _scalars(figures: dict, prefix: str = "") -> dict:
    """The scalar figures of a summary, nested keys joined by '.'."""
    out = {}
    for k, v in (figures or {}).items():
        if isinstance(v, dict):
            out.update(_scalars(v, f"{prefix}{k}."))
        elif isinstance(v, bool) or (isinstance(v, (int, float)) and not isinstance(v, bool)):
            out[f"{prefix}{k}"] = v
    return out


def _read_summary(folder: Path) -> dict | None:
    import json

    path = folder / "summary.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None  # a torn or foreign file: run again


def _task(scene: str, params: dict, seed: int, folder: str, arch: str | None) -> dict:
    """Run one scene into ``folder`` (in a worker). Exceptions become a failed row."""
    t0 = time.perf_counter()
    try:
        extra = {k: v for k, v in params.items() if k != "iters"}
        summary = _scene.run(scene, out=folder, arch=arch, iters=params.get("iters"), seed=seed, extra=extra,
                             progress=False)
        return {"status": "ok", "wall_s": time.perf_counter() - t0, "error": "",
                "figures": _scalars(summary.get("figures"))}
    except Exception as exc:  # recorded, the batch goes on
        return {"status": "failed", "wall_s": time.perf_counter() - t0, "error": f"{type(exc).__name__}: {exc}",
                "figures": {}}


# --------------------------------------------------------------------------- the table


def _write_csv(path: Path, rows: list[dict], param_keys: list[str]) -> None:
    """All rows, atomically (a temporary file renamed over the table)."""
    figure_keys = sorted({k for r in rows for k in r.get("figures", {})})
    cols = ["run", *param_keys, "seed", "status", "reused", "wall_s", "error", *figure_keys]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in sorted(rows, key=lambda r: r["run"]):
            vals = {**r["params"], **r.get("figures", {}), **{k: r.get(k, "") for k in FIXED_COLUMNS}}
            w.writerow([vals.get(c, "") for c in cols])
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _main_figure(rows: list[dict], figure: str | None) -> str | None:
    """The figure to plot: ``figure`` when given, else the first with 'final' in its name, else
    the first."""
    names = [k for r in rows for k in r.get("figures", {})]
    if figure and figure in names:
        return figure
    if figure:
        logging.getLogger(__name__).warning("figure: %r is not among the runs' figures %s; plotting the default",
                                            figure, sorted(set(names)))
    return next((k for k in names if "final" in k), names[0] if names else None)


def _plot(path: Path, rows: list[dict], grid: dict, figure: str | None = None) -> None:
    """One panel per swept numeric parameter: the figure against it, a line per combination of
    the other parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok" and r.get("figures")]
    keys = [k for k, vals in grid.items() if all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in vals) and len(vals) > 1]
    name = _main_figure(ok, figure)
    if not ok or not keys or name is None:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(4.8 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        groups: dict = {}
        for r in ok:
            if name in r["figures"]:
                other = tuple((k, v) for k, v in r["params"].items() if k != key) + (("seed", r["seed"]),)
                groups.setdefault(other, []).append((r["params"][key], r["figures"][name]))
        for other, pts in list(groups.items())[:12]:
            pts.sort()
            label = ", ".join(f"{k}={v}" for k, v in other if k != "seed" or len({o[-1] for o in groups}) > 1)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", alpha=0.85, label=label or None)
        ax.set_xlabel(key)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if any(ax.get_legend_handles_labels()[1]):
            ax.legend(fontsize=7)
    fig.suptitle(f"{name}: {len(ok)} runs")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the batch


def _distributed():
    try:
        import dask.distributed
    except ImportError as exc:
        raise ImportError("tigeom batch needs Dask distributed: pip install 'tigeom[batch]'") from exc
    return dask.distributed


def _client(scheduler: str | None, workers: int | None, arch: str | None):
    """(client, owned): a client of the scheduler at ``scheduler``, or of a new local cluster of
    ``workers`` single-threaded processes (one per GPU with arch cuda, pinned by
    CUDA_VISIBLE_DEVICES)."""
    dd = _distributed()
    Client, LocalCluster = dd.Client, dd.LocalCluster
    if scheduler:
        try:
            return Client(scheduler, timeout="5s"), True
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"scheduler: cannot reach {scheduler!r} ({exc})") from None
    n = int(workers) if workers else 2
    if n < 1:
        raise ValueError(f"workers: need at least 1, got {workers}")
    if arch == "cuda":
        Nanny, Scheduler, SpecCluster = dd.Nanny, dd.Scheduler, dd.SpecCluster
        specs = {f"gpu{i}": {"cls": Nanny, "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": str(i)}}}
                 for i in range(n)}
        cluster = SpecCluster(scheduler={"cls": Scheduler, "options": {"dashboard_address": None}}, workers=specs)
    else:
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster), True


def run(scene: str, grid, seeds: int = 1, scheduler: str | None = None, out: str = "batch",
        workers: int | None = None, arch: str | None = None, progress: bool = True, client=None,
        figure: str | None = None) -> list[dict]:
    """Run ``scene`` for every combination of ``grid`` ({key: [values]} or ["KEY=V1,V2", ...])
    and ``seeds`` seeds on Dask; returns the rows of ``out/results.csv``.

    ``scheduler``: a Dask scheduler address (default: a local cluster of ``workers`` processes,
    2 unless given; with ``arch="cuda"`` one worker per GPU). ``client``: an existing
    ``dask.distributed.Client`` to use instead (left open). ``figure``: the summary figure that
    ``out/batch.png`` plots (default: the first with 'final' in its name).
    """
    grid = parse_grid(grid)
    runs = plan(scene, grid, seeds)
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    table = outdir / "results.csv"
    rows, todo = [], []
    for r in runs:
        summary = _read_summary(outdir / r["run"])
        if summary is not None:
            rows.append({**r, "status": "ok", "reused": True, "wall_s": "", "error": "",
                         "figures": _scalars(summary.get("figures"))})
        else:
            todo.append(r)
    _write_csv(table, rows, list(grid))
    if todo:
        _run_tasks(scene, todo, rows, outdir, table, grid, scheduler, workers, arch, progress, client)
    _plot(outdir / "batch.png", rows, grid, figure)
    return sorted(rows, key=lambda r: r["run"])


def _run_tasks(scene, todo, rows, outdir, table, grid, scheduler, workers, arch, progress, client):
    from ._core.progress import progress_bar

    as_completed = _distributed().as_completed

    owned = client is None
    if owned:
        client, _ = _client(scheduler, workers, arch)
    try:
        futures = {}
        for r in todo:
            f = client.submit(_task, scene, r["params"], r["seed"], str((outdir / r["run"]).resolve()), arch,
                              key=f"tigeom-batch-{scene}-{r['run']}-{math.floor(time.time() * 1e3)}", pure=False)
            futures[f] = r
        with progress_bar(progress, len(todo), f"batch {scene}") as advance:
            for f in as_completed(futures):
                res = f.result()
                rows.append({**futures[f], "reused": False, **res})
                _write_csv(table, rows, list(grid))
                advance(f"batch {scene}: {futures[f]['run']} {res['status']}")
    finally:
        if owned:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
