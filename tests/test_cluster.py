"""Spherical k-means (vrpsam.cluster), shared by pseudo-classes and the prototype prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vrpsam.cluster import spherical_kmeans


def test_spherical_kmeans_finds_separated_directions():
    rng = np.random.default_rng(0)
    centres = np.eye(4, dtype=np.float32)[:3]
    points = np.concatenate([c + 0.05 * rng.standard_normal((50, 4)).astype(np.float32) for c in centres])
    points = torch.nn.functional.normalize(torch.from_numpy(points), dim=1)
    found = spherical_kmeans(points, 3, iterations=10, seed=1)
    assert torch.allclose(found.norm(dim=1), torch.ones(3), atol=1e-5)
    assert (found @ torch.from_numpy(centres).T).max(0).values.min() > 0.99  # every true centre is found


def test_spherical_kmeans_is_a_function_of_its_inputs_and_needs_enough_points():
    points = torch.nn.functional.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    assert torch.equal(spherical_kmeans(points, 4, 5, seed=3), spherical_kmeans(points.clone(), 4, 5, seed=3))
    with pytest.raises(ValueError, match="5 clusters need at least 5 points"):
        spherical_kmeans(points[:4], 5, 5, seed=0)
