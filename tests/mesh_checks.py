"""Topology checks shared by the tests."""

import numpy as np


def directed_edges(faces):
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def assert_closed_oriented_manifold(faces):
    """Every undirected edge in exactly two faces, traversed once in each direction."""
    de = directed_edges(faces)
    keys = de[:, 0] * (faces.max() + 1) + de[:, 1]
    assert len(np.unique(keys)) == len(keys), "a directed edge appears twice (orientation flip or non-manifold)"
    rev = de[:, 1] * (faces.max() + 1) + de[:, 0]
    assert np.isin(rev, keys).all(), "an edge has no opposite half-edge (hole)"


def assert_vertex_manifold(faces):
    """Around every vertex the faces form one fan: the edges opposite the vertex (its link) are
    one connected chain."""
    n = int(faces.max()) + 1
    links = [[] for _ in range(n)]
    for a, b, c in faces:
        links[a].append((b, c))
        links[b].append((c, a))
        links[c].append((a, b))
    for v, edges in enumerate(links):
        if not edges:
            continue
        parent = {}

        def find(x):
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        for a, b in edges:
            parent[find(a)] = find(b)
        roots = {find(x) for e in edges for x in e}
        assert len(roots) == 1, f"vertex {v}: its faces form {len(roots)} fans"


def assert_edge_manifold(faces):
    """Open surfaces: every undirected edge in one or two faces, consistently oriented."""
    de = directed_edges(faces)
    keys = de[:, 0] * (faces.max() + 1) + de[:, 1]
    assert len(np.unique(keys)) == len(keys)
    und = np.sort(de, axis=1)
    _, cnt = np.unique(und, axis=0, return_counts=True)
    assert cnt.max() <= 2


def euler(vertices, faces):
    edges = np.unique(np.sort(directed_edges(faces), axis=1), axis=0)
    used = np.unique(faces)
    return len(used) - len(edges) + len(faces)


def face_areas(vertices, faces):
    v = vertices[faces]
    return 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)


def assert_closed_curves(segments):
    """Every vertex has exactly one outgoing and one incoming segment."""
    n = segments.max() + 1
    assert np.bincount(segments[:, 0], minlength=n).max() == 1
    assert np.bincount(segments[:, 1], minlength=n).max() == 1
    assert (np.bincount(segments[:, 0], minlength=n) == np.bincount(segments[:, 1], minlength=n)).all()
