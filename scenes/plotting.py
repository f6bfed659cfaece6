"""Matplotlib helpers shared by the scenes (Agg backend: headless)."""

from __future__ import annotations

import io as _io

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path) -> None:
    from tigeom.io import write_bytes_atomic

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    _plt().close(fig)
    write_bytes_atomic(path, buf.getvalue())


def loss_curve(history, keys, path, title="", log=True) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    its = [h["iteration"] for h in history]
    for k in keys:
        ax.plot(its, [h[k] for h in history], label=k)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    save_png(fig, path)


def _shaded_collection(vertices, faces, two_sided=False, rgb=(0.35, 0.55, 0.85)):
    """Poly3DCollection of a mesh with Lambert shading from a fixed light."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
    light = np.array([0.4, 0.3, 0.85])
    lam = n @ (light / np.linalg.norm(light))
    shade = 0.35 + 0.65 * (np.abs(lam) if two_sided else np.clip(lam, 0, 1))
    colors = np.column_stack([rgb[0] * shade, rgb[1] * shade, rgb[2] * shade, np.ones_like(shade)])
    return Poly3DCollection(tri, facecolors=colors, edgecolor="none")


def _cube_limits(ax, c, r):
    for a, setl in zip(range(3), (ax.set_xlim, ax.set_ylim, ax.set_zlim)):
        setl(c[a] - r, c[a] + r)


def render_mesh(vertices, faces, path, points=None, title="", two_sided=False) -> None:
    """Shaded render of a triangle mesh (and optional points) from two viewpoints
    (``two_sided``: light both sides, for faces without a consistent orientation)."""
    plt = _plt()
    fig = plt.figure(figsize=(10, 5))
    lo, hi = vertices.min(0), vertices.max(0)
    c, r = (lo + hi) / 2, (hi - lo).max() / 2
    for k, (elev, azim) in enumerate([(30, 35), (75, -60)]):
        ax = fig.add_subplot(1, 2, k + 1, projection="3d")
        ax.add_collection3d(_shaded_collection(vertices, faces, two_sided))
        if points is not None:
            ax.scatter(*points[:: max(len(points) // 1500, 1)].T, s=0.3, c="k", alpha=0.3)
        _cube_limits(ax, c, r)
        ax.view_init(elev, azim)
        ax.set_axis_off()
    fig.suptitle(title)
    save_png(fig, path)


def render_meshes(panels, path, title="", views=((20, -60), (0, -90), (90, -90))) -> None:
    """Shaded renders of several meshes on one scale: one row per mesh, one column per view
    (elevation, azimuth); ``panels`` is a list of (vertices, faces, label)."""
    plt = _plt()
    fig = plt.figure(figsize=(4 * len(views), 3.4 * len(panels)))
    allv = np.concatenate([p[0] for p in panels])
    lo, hi = allv.min(0), allv.max(0)
    c, r = (lo + hi) / 2, 0.52 * (hi - lo).max()
    tints = ((0.55, 0.55, 0.6), (0.3, 0.55, 0.9), (0.9, 0.5, 0.3))
    for row, (v, f, label) in enumerate(panels):
        for col, (elev, azim) in enumerate(views):
            ax = fig.add_subplot(len(panels), len(views), row * len(views) + col + 1, projection="3d")
            ax.add_collection3d(_shaded_collection(v, f, rgb=tints[row % len(tints)]))
            _cube_limits(ax, c, r)
            ax.set_box_aspect((1, 1, 1), zoom=1.5)
            ax.view_init(elev, azim)
            ax.set_axis_off()
            if col == 0:
                ax.set_title(label, loc="left", fontsize=10)
    fig.suptitle(title)
    save_png(fig, path)


def flow_shapes(x, y, speed, snapshots, initial, final, path, title="") -> None:
    """Speed field (nx, ny) around the final body, with the body outlines over the iterations."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 3.2))
    im = ax.imshow(speed.T, origin="lower", extent=(0, x[-1] + x[0], 0, y[-1] + y[0]), cmap="viridis",
                   aspect="equal")
    fig.colorbar(im, ax=ax, label="|u|", shrink=0.8)
    cmap = plt.get_cmap("autumn")

    def outline(shape, **kw):
        v, s = np.asarray(shape["vertices"]), np.asarray(shape["segments"])
        seg = v[s]
        for a, b in seg:
            ax.plot([a[0], b[0]], [a[1], b[1]], **kw)

    for k, snap in enumerate(snapshots):
        outline(snap, color=cmap(k / max(len(snapshots) - 1, 1)), lw=0.6, alpha=0.7)
    outline(initial, color="white", lw=1.0, ls="--")
    outline({"vertices": final.vertices, "segments": final.segments}, color="red", lw=1.5)
    ax.set_xlim(0, min(1.0, x[-1]))
    ax.set_title(title)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    save_png(fig, path)


def dihedral_histograms(panels, path, title="") -> None:
    """One panel per mesh: histograms of every dihedral angle before and after (log counts)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    bins = np.linspace(0, 180, 73)
    for ax, (name, before, after) in zip(axes[0], panels):
        ax.hist(np.ravel(before), bins=bins, alpha=0.55, label=f"before (min {np.min(before):.1f} deg)")
        ax.hist(np.ravel(after), bins=bins, alpha=0.55, label=f"after (min {np.min(after):.1f} deg)")
        for x in (30, 150):
            ax.axvline(x, color="k", lw=0.6, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("dihedral angle [deg]")
        ax.set_ylabel("count")
        ax.set_title(name)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    save_png(fig, path)


def dmesh_2d(samples, points, cand, probs, vertices, edges, path, title="") -> None:
    """Three panels: the sample points; the probabilistic mesh (candidate edges shaded by their
    probability, points with the data); the extracted edges."""
    plt = _plt()
    from matplotlib.collections import LineCollection

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    axes[0].scatter(samples[:, 0], samples[:, 1], s=0.5, c="k")
    axes[0].set_title(f"{len(samples)} sample points")
    keep = probs > 0.01
    segs = points[cand[keep]]
    rgba = np.zeros((keep.sum(), 4))
    rgba[:, 2] = 0.8
    rgba[:, 3] = probs[keep]
    axes[1].add_collection(LineCollection(segs, colors=rgba, linewidths=0.8))
    axes[1].scatter(points[:, 0], points[:, 1], s=0.3, c="0.6")
    axes[1].set_title("probabilistic mesh (edge opacity = probability)")
    axes[2].add_collection(LineCollection(vertices[edges], colors="k", linewidths=0.9))
    axes[2].set_title(f"extracted: {len(edges)} edges")
    lo, hi = samples.min(0), samples.max(0)
    pad = 0.05 * (hi - lo).max()
    for ax in axes:
        ax.set_xlim(lo[0] - pad, hi[0] + pad)
        ax.set_ylim(lo[1] - pad, hi[1] + pad)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    save_png(fig, path)


def displacement(vertices, faces, u, path, title="") -> None:
    """The deformed surface (vertices + u, with u scaled to 10% of the extent) coloured by |u|,
    beside the undeformed one in grey, seen from the side (-y)."""
    plt = _plt()
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    mag = np.linalg.norm(u, axis=1)
    ext = float((vertices.max(0) - vertices.min(0)).max())
    k = 0.1 * ext / max(float(mag.max()), 1e-300)
    fig = plt.figure(figsize=(9, 5))
    ax = fig.add_subplot(1, 1, 1, projection="3d")
    ax.add_collection3d(Poly3DCollection(vertices[faces], facecolor=(0.8, 0.8, 0.8, 0.15), edgecolor="none"))
    col = plt.get_cmap("viridis")(mag[faces].mean(1) / max(float(mag.max()), 1e-300))
    ax.add_collection3d(Poly3DCollection((vertices + k * u)[faces], facecolors=col, edgecolor="none"))
    lo, hi = vertices.min(0), vertices.max(0)
    _cube_limits(ax, (lo + hi) / 2, 0.6 * ext)
    ax.view_init(5, -90)
    ax.set_axis_off()
    sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, float(mag.max())))
    fig.colorbar(sm, ax=ax, shrink=0.6, label=f"|u| (drawn x{k:.3g})")
    fig.suptitle(title)
    save_png(fig, path)


def normal_grid(normals, alphas, labels, path, title="") -> None:
    """Rows of normal renders (one row per entry of ``normals``, (C, H, W, 3) each, with its
    coverage ``alphas``), normals mapped to colours as (n + 1) / 2 over a white background."""
    plt = _plt()
    rows, cols = len(normals), normals[0].shape[0]
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    for r, (nrm, a, label) in enumerate(zip(normals, alphas, labels)):
        for c in range(cols):
            rgb = np.clip(0.5 * (nrm[c] + 1.0), 0, 1) * a[c][..., None] + (1 - a[c][..., None])
            ax = axes[r, c]
            ax.imshow(rgb)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label)
    fig.suptitle(title, fontsize=9)
    save_png(fig, path)
