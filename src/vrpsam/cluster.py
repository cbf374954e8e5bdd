"""Spherical k-means: clusters of unit feature vectors, shared by the data (pseudo-classes) and the models
(the prototype prior's background prototypes)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def spherical_kmeans(points: torch.Tensor, count: int, iterations: int, seed: int) -> torch.Tensor:
    """(N, C) unit vectors, N >= ``count`` -> (count, C) unit centroids maximising the summed cosine similarity.

    Starts from ``count`` distinct points drawn with ``seed`` (so the result is a function of the
    inputs and the seed); a cluster left empty keeps its centroid.
    """
    if len(points) < count:
        raise ValueError(f"{count} clusters need at least {count} points, got {len(points)}")
    start = np.random.default_rng(seed).choice(len(points), size=count, replace=False)
    centroids = points[torch.from_numpy(start)]
    for _ in range(iterations):
        assignment = (points @ centroids.T).argmax(1)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        filled = sums.norm(dim=1) > 0
        centroids = torch.where(filled[:, None], F.normalize(sums, dim=1), centroids)
    return centroids
