"""Connected regions of boolean grids, and their dilation: what the fusion and the confidence
ask of a mask (:mod:`cutout.imaging.fuse`, :mod:`cutout.imaging.confidence`).

Labelling is cc3d's (connected-components-3d), with 4-connectivity, the default of
``scipy.ndimage.label`` that it replaces: the same components, numbered the same way. scipy
cost 0.3 s of CPU to import (its array-API layer pulls in numpy.testing and f2py), once per
process but on a 2-core machine a tenth of a folder of six 2 MP photos; cc3d costs 0.01 s.
"""

from __future__ import annotations

import cc3d
import numpy as np

Array = np.ndarray


def label(mask: Array) -> tuple[Array, int]:
    """The 4-connected components of the boolean 2-D *mask*: labels (0 outside) and count."""
    labels, count = cc3d.connected_components(mask, connectivity=4, return_N=True)
    return labels, int(count)


def sizes(labels: Array, count: int) -> Array:
    """Pixels in each of the components 1..*count* of *labels*."""
    counts: Array = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return counts


def touching(regions: Array, seeds: Array) -> Array:
    """The connected components of the boolean *regions* that overlap the boolean *seeds*."""
    labels, count = label(regions)
    hit = np.zeros(count + 1, bool)
    hit[labels[seeds]] = True
    hit[0] = False
    found: Array = hit[labels]
    return found


def dilate(mask: Array, steps: int) -> Array:
    """*mask* grown by *steps* pixels along rows and columns (a cross, repeated: what
    ``scipy.ndimage.binary_dilation(mask, iterations=steps)`` does, outside the frame empty)."""
    grown = np.array(mask, bool)
    for _ in range(steps):
        step = grown.copy()
        step[1:] |= grown[:-1]
        step[:-1] |= grown[1:]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        grown = step
    return grown
