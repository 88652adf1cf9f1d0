"""Mask refinement and foreground estimation: properties that must hold on any photo."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cutout.imaging import refine
from cutout.imaging.refine import box_filter, estimate_foreground, refine_alpha
from tests.helpers import synthetic_photo


def test_box_filter_matches_a_direct_mean() -> None:
    x = np.random.default_rng(0).random((23, 31), dtype=np.float32)
    for r in (1, 3, 6):  # shifted sums (r <= 4) and cumulative sums
        padded = np.pad(x, r, constant_values=np.nan)
        windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * r + 1, 2 * r + 1))
        expected = np.nanmean(windows, axis=(-2, -1))
        assert np.allclose(box_filter(x, r), expected, atol=1e-5)


def test_alpha_is_full_size_and_follows_the_mask() -> None:
    photo = synthetic_photo(640, 480)
    mask = np.zeros((1024, 1024), np.float32)
    mask[256:768, 256:768] = 1.0
    alpha = np.asarray(refine_alpha(photo, mask))
    assert alpha.shape == (480, 640) and alpha.dtype == np.uint8
    assert alpha[240, 320] == 255 and alpha[10, 10] == 0  # inside / outside
    assert alpha.min() == 0 and alpha.max() == 255


def test_levels_remove_haze_and_fill_the_interior() -> None:
    photo = synthetic_photo(200, 100)
    haze = np.full((1024, 1024), 0.04, np.float32)
    assert np.asarray(refine_alpha(photo, haze)).max() == 0
    nearly = np.full((1024, 1024), 0.93, np.float32)
    assert np.asarray(refine_alpha(photo, nearly)).min() == 255


def test_strips_give_the_same_result_as_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    photo = synthetic_photo(700, 1300)  # taller than a strip, larger than the working size
    mask = np.random.default_rng(1).random((1024, 1024), dtype=np.float32)
    whole = np.asarray(refine_alpha(photo, mask))
    monkeypatch.setattr(refine, "STRIP", 37)
    strips = np.asarray(refine_alpha(photo, mask))
    diff = np.abs(strips.astype(int) - whole.astype(int))
    # Pillow resamples a strip from fractional source rows: rounding may flip a value by one
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001


def test_foreground_estimation_removes_the_old_background_colour() -> None:
    """A grey subject with a soft edge over red: the edge pixels must lose their red cast."""
    height, width = 200, 800
    ramp = np.clip((np.arange(width) - 400) / 12.0, 0, 1).astype(np.float32)  # a 12 px edge
    alpha = np.tile(ramp, (height, 1))
    foreground, background = np.array([90, 90, 90.0]), np.array([230, 20, 20.0])
    photo = alpha[..., None] * foreground + (1 - alpha[..., None]) * background
    rgb = Image.fromarray(np.rint(photo).astype(np.uint8), "RGB")
    alpha_image = Image.fromarray(np.rint(alpha * 255).astype(np.uint8), "L")
    estimated = np.asarray(estimate_foreground(rgb, alpha_image), np.float32)
    edge = (alpha > 0.2) & (alpha < 0.8)
    before = np.abs(photo[edge] - foreground).mean()
    after = np.abs(estimated[edge] - foreground).mean()
    assert after < before / 5, (before, after)  # measured: 46.7 -> 4.8
    solid = alpha >= 0.999
    assert np.abs(estimated[solid] - foreground).max() <= 2  # opaque pixels keep their colour


def test_foreground_estimation_on_images_thinner_than_its_window() -> None:
    """A 2-pixel-tall strip (or 1 px wide) must not break the small box filter."""
    for size in ((300, 2), (1, 50), (1, 1)):
        rgb = Image.new("RGB", size, (200, 10, 10))
        alpha = Image.new("L", size, 128)
        out = estimate_foreground(rgb, alpha)
        assert out.size == size
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.allclose(box_filter(x, 3), np.full((2, 3), x.mean()))


def test_foreground_strips_and_onto_give_the_whole_image_composite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Strips sized by pixels (a few rows of a wide photo) give the whole-image foreground,
    and ``onto`` gives exactly Pillow's composite of it over the backdrop."""
    photo = synthetic_photo(900, 700)
    y, x = np.mgrid[0:700, 0:900]
    soft = np.clip(255 - np.hypot(x - 450, y - 350) / 1.2, 0, 255).astype(np.uint8)
    alpha = Image.fromarray(soft, "L")
    whole = estimate_foreground(photo, alpha)
    monkeypatch.setattr(refine, "FOREGROUND_STRIP_PIXELS", 900 * 13)  # 13-row strips
    strips = estimate_foreground(photo, alpha)
    diff = np.abs(np.asarray(strips, int) - np.asarray(whole, int))
    # Pillow resamples a strip from fractional source rows: rounding may flip a value by one
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001
    backdrop = Image.new("RGB", photo.size, (20, 200, 40))
    expected = Image.composite(strips, backdrop, alpha)
    flattened = estimate_foreground(photo, alpha, onto=backdrop)
    assert flattened is backdrop
    assert np.array_equal(np.asarray(flattened), np.asarray(expected))
