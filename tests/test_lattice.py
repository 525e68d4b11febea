import numpy as np
import pytest

from naqs.lattice import cluster, cluster_names, kagome, make_lattice, parse_size, square, triangle


def test_square_edges_counts():
    obc = square(4, 4, pbc=False)
    assert len(obc.j1_edges) == 2 * 4 * 3
    assert len(obc.j2_edges) == 2 * 3 * 3
    pbc = square(4, 4, pbc=True)
    assert len(pbc.j1_edges) == 32 and len(pbc.j2_edges) == 32
    assert obc.sublattice is not None  # bipartite
    assert pbc.n_symmetries == 16 * 8


@pytest.mark.parametrize("name", ["square-24", "triangle-24", "kagome-24", "square-30", "triangle-30", "kagome-30", "square-36"])
def test_clusters_and_symmetries(name):
    lat = cluster(name)
    degrees = np.bincount(lat.edges.ravel(), minlength=lat.n_sites)
    assert degrees.min() == degrees.max()  # every site has the same J1 + J2 coordination
    assert np.array_equal(lat.perms[0], np.arange(lat.n_sites))
    for perm in lat.perms[: min(len(lat.perms), 20)]:
        assert lat._preserves_edges(perm)
    assert lat.n_symmetries >= lat.n_sites // 3  # at least the translations


def test_cluster_shapes_match_square_builder():
    sq = cluster("square-24")
    built = square(4, 6, pbc=True)
    assert np.array_equal(sq.j1_edges, built.j1_edges)
    assert np.array_equal(sq.j2_edges, built.j2_edges)


def test_triangle_and_kagome_builders():
    tri = triangle(6, 4, pbc=True)
    assert np.array_equal(tri.j1_edges, cluster("triangle-24").j1_edges)
    assert len(tri.j2_edges) == 24
    kag = kagome(2, 4, pbc=True)
    assert kag.n_sites == 24 and len(kag.j1_edges) == 32 and len(kag.j2_edges) == 16


def test_bad_input():
    with pytest.raises(ValueError, match="unknown cluster"):
        cluster("hexagon-12")
    with pytest.raises(ValueError, match="size"):
        parse_size("4by4")
    with pytest.raises(ValueError, match="unknown lattice"):
        make_lattice("honeycomb", "4x4")
    with pytest.raises(ValueError):
        square(0, 3)


def test_cluster_names():
    assert {"square-24", "kagome-24", "square-36"} <= set(cluster_names())
