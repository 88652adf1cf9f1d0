"""Validation photos with exact truth, made without downloads: the soft-matted subjects of the
licensed set pasted onto the CC0 photos (issue 17).

Each alphamatting.com subject (a photo and its ground-truth alpha) is cut out, scaled, maybe
mirrored, and pasted at a seeded random place onto one of the scikit-image photos (which have
subjects of their own: an astronaut, a cat, a cup, a rocket, so the model may well pick the
wrong one). The paste's alpha is the composite's truth, exactly. Subjects may hang over the
photo's edge: a subject cut by the border is one of the cases the confidence must handle.

The subject's colour at its partly transparent pixels is the original photo's, which still holds
some of the original background; :func:`foreground` removes an estimate of it first (the
background's colour, from the fully transparent pixels nearby), so the new edges look as if shot
there rather than carrying a halo of the old backdrop.

Used by ``scripts/confidence_study.py`` (hundreds) and ``tests/test_confidence.py`` (a few, on the
fly). Nothing is written to the repository: the licensed photos stay in ../shared/testdata.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

#: Whole CC0 photos (tests/photos.py) as backgrounds: "scenes", each with a subject of its own
#: that competes with the pasted one.
SCENES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "horse.png")
#: Crops of them with no object in them, scaled to 512 px on the longer side: "backdrops", where
#: the pasted subject is the only candidate and the errors are the edges' and the shape's.
#: Name -> (photo, box (left, upper, right, lower)), boxes chosen by eye.
BACKDROPS = {
    "wood": ("coffee.png", (0, 140, 65, 400)),
    "wood-corner": ("coffee.png", (480, 200, 600, 400)),
    "night-sky": ("rocket.jpg", (95, 0, 560, 110)),
    "grey-sky": ("camera.png", (260, 0, 512, 105)),
    "grass": ("camera.png", (415, 250, 512, 512)),
    "white": ("horse.png", (0, 0, 60, 60)),
}


@dataclass(frozen=True)
class Subject:
    name: str
    colour: np.ndarray  # float32 H x W x 3 in [0, 1], old background removed at the edges
    alpha: np.ndarray  # float32 H x W in [0, 1]


@dataclass(frozen=True)
class Composite:
    name: str
    image: Image.Image  # RGB
    truth: Image.Image  # L, exact


def soft_subjects(testdata: Path) -> list[Path]:
    """The photos of the set whose truth is a soft matte (fractional values), sorted."""
    found = []
    for image in sorted((testdata / "images").iterdir()):
        with Image.open(testdata / "masks" / f"{image.stem}.png") as mask:
            values = np.unique(np.asarray(mask.convert("L")))
        if not set(values.tolist()) <= {0, 255}:
            found.append(image)
    return found


def load_subject(image: Path, mask: Path) -> Subject:
    """The subject of *image*, cropped to its matte (with a margin), its colour de-haloed."""
    with Image.open(image) as i, Image.open(mask) as m:
        rgb = np.asarray(i.convert("RGB"), np.float32) / 255.0
        alpha = np.asarray(m.convert("L"), np.float32) / 255.0
    rows, cols = np.nonzero(alpha > 0.02)
    margin = 4
    top, bottom = max(rows.min() - margin, 0), min(rows.max() + margin + 1, alpha.shape[0])
    left, right = max(cols.min() - margin, 0), min(cols.max() + margin + 1, alpha.shape[1])
    colour = foreground(rgb, alpha)[top:bottom, left:right]
    return Subject(image.stem, colour, alpha[top:bottom, left:right])


def foreground(rgb: np.ndarray, alpha: np.ndarray, sigma: float = 6.0) -> np.ndarray:
    """Solve rgb = a*F + (1-a)*B for F where 0 < a < 1, with B the nearby clear background
    (a normalised Gaussian average over the pixels with a == 0)."""
    clear = (alpha <= 0.0).astype(np.float32)
    weight = ndimage.gaussian_filter(clear, sigma) + 1e-6
    back = np.stack(
        [ndimage.gaussian_filter(rgb[..., c] * clear, sigma) / weight for c in range(3)], -1
    )
    a = np.maximum(alpha, 0.05)[..., None]
    solved = (rgb - (1.0 - alpha[..., None]) * back) / a
    partial = ((alpha > 0) & (alpha < 1))[..., None]
    result: np.ndarray = np.clip(np.where(partial, solved, rgb), 0.0, 1.0).astype(np.float32)
    return result


def background(path: Path, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The photo at *path* (or its *box*, scaled to 512 px on its longer side) as RGB floats."""
    with Image.open(path) as opened:
        # horse.png is a silhouette with its own alpha: over white, as the engine would see it
        image = opened.convert("RGBA")
        flat = Image.new("RGBA", image.size, "white")
        flat.alpha_composite(image)
        rgb = flat.convert("RGB")
    if box is not None:
        rgb = rgb.crop(box)
        factor = 512 / max(rgb.size)
        size = (round(rgb.width * factor), round(rgb.height * factor))
        rgb = rgb.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(rgb, np.float32) / 255.0


def paste(subject: Subject, back: np.ndarray, rng: np.random.Generator, name: str) -> Composite:
    """*subject* at a random scale (its longer side 25-95% of the photo's shorter side) and
    place (its centre anywhere in the photo, so it may hang over the edge), maybe mirrored."""
    height, width = back.shape[:2]
    side = rng.uniform(0.25, 0.95) * min(height, width)
    factor = side / max(subject.alpha.shape)
    size = (
        max(2, round(subject.alpha.shape[1] * factor)),
        max(2, round(subject.alpha.shape[0] * factor)),
    )
    colour, alpha = _resized(subject.colour, size), _resized(subject.alpha, size)
    if rng.random() < 0.5:
        colour, alpha = colour[:, ::-1], alpha[:, ::-1]
    cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.1, 0.9) * width
    top, left = round(cy - size[1] / 2), round(cx - size[0] / 2)
    truth = np.zeros((height, width), np.float32)
    fg = np.zeros_like(back)
    # the part of the pasted rectangle inside the photo
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size[1], height), min(left + size[0], width)
    truth[y0:y1, x0:x1] = alpha[y0 - top : y1 - top, x0 - left : x1 - left]
    fg[y0:y1, x0:x1] = colour[y0 - top : y1 - top, x0 - left : x1 - left]
    out = truth[..., None] * fg + (1.0 - truth[..., None]) * back
    return Composite(
        name,
        Image.fromarray(np.rint(out * 255).astype(np.uint8), "RGB"),
        Image.fromarray(np.rint(truth * 255).astype(np.uint8), "L"),
    )


def _resized(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if a.ndim == 2:
        image = Image.fromarray(a, "F").resize(size, Image.Resampling.BILINEAR)
        return np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    channels = [_resized(a[..., c].copy(), size) for c in range(a.shape[2])]
    return np.stack(channels, -1)


def backgrounds(photos: Path, family: str) -> dict[str, np.ndarray]:
    """The backgrounds of a *family*: "scene" (whole photos) or "backdrop" (empty crops)."""
    if family == "scene":
        return {Path(name).stem: background(photos / name) for name in SCENES}
    return {name: background(photos / file, box) for name, (file, box) in BACKDROPS.items()}


def composites(
    testdata: Path,
    photos: Path,
    *,
    family: str,
    per_pair: int,
    subjects: int | None = None,
    seed: int = 17,
) -> Iterator[Composite]:
    """*per_pair* composites for every (soft subject, background of *family*) pair. Each one's
    placement is seeded by its own name, so the same composite comes out whatever the
    arguments (a smaller *per_pair* or *subjects* gives a subset of a larger run's)."""
    chosen = soft_subjects(testdata)[:subjects]
    backs = backgrounds(photos, family)
    for s, image in enumerate(chosen):
        subject = load_subject(image, testdata / "masks" / f"{image.stem}.png")
        for b, (back_name, back) in enumerate(backs.items()):
            for i in range(per_pair):
                rng = np.random.default_rng([seed, s, b, i, family == "scene"])
                yield paste(subject, back, rng, f"{subject.name}@{back_name}#{i}")
