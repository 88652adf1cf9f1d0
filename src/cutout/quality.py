"""Scoring cut-outs against ground truth: the numbers the quality test and `make bench` report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Score:
    mae: float  # mean |alpha - truth|, both in [0, 1]
    iou: float  # intersection over union of alpha > 0.5 and truth > 0.5


def score(alpha: Image.Image, truth: Image.Image) -> Score:
    """Compare an L-mode alpha with an L-mode ground-truth mask of the same size."""
    if alpha.size != truth.size:
        raise ValueError(f"alpha is {alpha.size}, ground truth is {truth.size}")
    a = np.asarray(alpha, np.float32) / 255.0
    t = np.asarray(truth, np.float32) / 255.0
    fg_a, fg_t = a > 0.5, t > 0.5
    union = np.logical_or(fg_a, fg_t).sum()
    iou = float(np.logical_and(fg_a, fg_t).sum() / union) if union else 1.0
    return Score(mae=float(np.abs(a - t).mean()), iou=iou)


def mean_score(scores: Iterable[Score]) -> Score:
    items = list(scores)
    return Score(
        mae=float(np.mean([s.mae for s in items])), iou=float(np.mean([s.iou for s in items]))
    )


def bare_alpha(mask: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The baseline: the model's mask resized bilinearly to *size*, no refinement."""
    small = Image.fromarray(np.clip(mask, 0.0, 1.0).astype(np.float32), "F")
    full = np.asarray(small.resize(size, Image.Resampling.BILINEAR), np.float32)
    return Image.fromarray(np.rint(np.clip(full, 0, 1) * 255).astype(np.uint8), "L")
