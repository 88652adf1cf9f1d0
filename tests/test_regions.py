"""The fusion's and the confidence's region operations agree with scipy.ndimage, which they
replaced for its import time: same components, same dilation, on random and edge-case grids."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cutout.imaging.regions import dilate, label, sizes, touching


def grids() -> list[np.ndarray]:
    rng = np.random.default_rng(17)
    shapes = [(256, 256), (64, 200), (1, 50), (50, 1)]
    found = [rng.random(shape) < density for shape in shapes for density in (0.3, 0.5, 0.6)]
    spiral = np.zeros((21, 21), bool)  # one long winding component
    spiral[::4, :] = True
    spiral[:, 0] = True
    diagonal = np.eye(30, dtype=bool)  # 8-connected only: 30 components with 4-connectivity
    return [*found, spiral, diagonal, np.zeros((8, 8), bool), np.ones((8, 8), bool)]


@pytest.mark.parametrize("grid", grids(), ids=lambda g: f"{g.shape}-{int(g.sum())}")
def test_labels_and_sizes_match_scipy(grid: np.ndarray) -> None:
    expected, expected_count = ndimage.label(grid)
    labels, count = label(grid)
    assert count == expected_count
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(
        sizes(labels, count), ndimage.sum_labels(grid, expected, range(1, count + 1))
    )


@pytest.mark.parametrize("steps", [1, 2, 5])
@pytest.mark.parametrize("grid", grids()[:6], ids=lambda g: f"{g.shape}-{int(g.sum())}")
def test_dilation_matches_scipy(grid: np.ndarray, steps: int) -> None:
    sparse = grid & (np.random.default_rng(steps).random(grid.shape) < 0.02)
    expected = ndimage.binary_dilation(sparse, iterations=steps)
    np.testing.assert_array_equal(dilate(sparse, steps), expected)


def test_touching_keeps_exactly_the_components_hit_by_a_seed() -> None:
    regions = np.zeros((10, 10), bool)
    regions[1:3, 1:3] = True  # hit by the seed
    regions[6:9, 6:9] = True  # not hit
    regions[1, 6:9] = True  # not hit, though a seed lies next to it outside the regions
    seeds = np.zeros_like(regions)
    seeds[2, 2] = seeds[1, 5] = True
    expected = np.zeros_like(regions)
    expected[1:3, 1:3] = True
    np.testing.assert_array_equal(touching(regions, seeds), expected)
    assert not touching(regions, np.zeros_like(regions)).any()
