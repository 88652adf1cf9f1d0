"""remove.bg's request parameters, parsed the way real clients send them (no Flask here).

Tolerated, because published clients do it (``../shared/docs/api-contracts.md`` section 7):
an empty string means "not set" (the official Node CLI sends every field, empty); booleans
may be ``true/false/True/False/1/0``; ROI values may be bare numbers (pixels); unknown
parameters (``shadow_type``, ``shadow_opacity``, ``shadow_method``, anything newer) are ignored.
A value we cannot read is a 400 with remove.bg's code for that parameter (``invalid_roi``...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from cutout.errors import InvalidInput, InvalidParameter
from cutout.imaging.compose import SolidColor, parse_color

PREVIEW_PIXELS = 250_000  # ~0.25 MP, e.g. 625x400
#: Output caps per size. None: "full", whose cap depends on the format (see output_cap).
SIZES: dict[str, int | None] = {
    "preview": PREVIEW_PIXELS,
    "small": PREVIEW_PIXELS,
    "regular": PREVIEW_PIXELS,
    "medium": 1_500_000,
    "hd": 4_000_000,
    "full": None,
    "4k": None,
    "auto": None,
    "50mp": None,
}
PREVIEW_SIZES = {"preview", "small", "regular"}
FORMATS = {"auto": "auto", "png": "png", "jpg": "jpg", "jpeg": "jpg", "webp": "webp", "zip": "zip"}
TYPES = {"auto", "person", "product", "car", "animal", "graphic", "graphics", "transportation"}
TRUE, FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
_LENGTH = re.compile(r"(-?[0-9]+(?:\.[0-9]+)?)(px|%)?", re.ASCII)  # 0-9 only: cutout.numbers
_HEX = re.compile(r"[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8}")

Length = tuple[float, bool]  # value, is_percent


@dataclass(frozen=True)
class Params:
    size: str = "preview"
    type: str = "auto"
    type_level: str = "1"
    format: str = "auto"
    roi: tuple[Length, Length, Length, Length] | None = None
    crop: bool = False
    crop_margin: tuple[Length, Length, Length, Length] = ((0, False),) * 4  # top right bottom left
    scale: float | None = None  # a fraction of the canvas, 0.1-1.0; None: "original"
    position: tuple[float, float] | None = None  # fractions; None: "original"
    channels: Literal["rgba", "alpha"] = "rgba"
    bg_color: SolidColor | None = None
    bg_image_url: str | None = None
    semitransparency: bool = True
    add_shadow: bool = False

    @property
    def preview(self) -> bool:
        return self.size in PREVIEW_SIZES

    def canvas_bound(self, width: int, height: int) -> int:
        """The most pixels the canvases for a *width* x *height* photo can have, before the
        output is scaled to its cap: with ``crop``, the subject (at most the photo) plus its
        margins, which may reach past the photo (a percentage is of the subject's size)."""
        if not self.crop:
            return width * height
        top, right, bottom, left = (
            round(value * extent / 100) if pct else round(value)
            for (value, pct), extent in zip(
                self.crop_margin, (height, width, height, width), strict=True
            )
        )
        return (width + left + right) * (height + top + bottom)

    def output_cap(self) -> int:
        """Most output pixels for this size and format (remove.bg: PNG stops at 10 MP)."""
        cap = SIZES[self.size]
        if cap is not None:
            return cap
        if self.format in ("png", "auto") and self.channels == "rgba":
            return 10_000_000
        return 50_000_000 if self.size == "50mp" else 25_000_000


def parse(form: Mapping[str, object]) -> Params:
    """Read remove.bg's parameters from *form* (strings, or JSON values)."""
    size = _choice(form, "size", SIZES, "preview", "invalid_size")
    kind = _text(form, "type") or "auto"
    channels = _choice(form, "channels", {"rgba": 1, "alpha": 1}, "rgba", "invalid_channels")
    crop_margin = _text(form, "crop_margin")
    return Params(
        size=size,
        type=kind.lower() if kind.lower() in TYPES else "auto",  # a hint we cannot act on
        type_level=(_text(form, "type_level") or "1").lower(),
        format=FORMATS[_choice(form, "format", FORMATS, "auto", "invalid_format")],
        roi=_roi(_text(form, "roi")),
        crop=_bool(form, "crop", False),
        crop_margin=_margins(crop_margin) if crop_margin else Params.crop_margin,
        scale=_scale(_text(form, "scale")),
        position=_position(_text(form, "position")),
        channels="alpha" if channels == "alpha" else "rgba",
        bg_color=_color(_text(form, "bg_color")),
        bg_image_url=_text(form, "bg_image_url"),
        semitransparency=_bool(form, "semitransparency", True),
        add_shadow=_bool(form, "add_shadow", False),
    )


def _text(form: Mapping[str, object], name: str) -> str | None:
    """The parameter as trimmed text; None when absent, empty or null."""
    value = form.get(name)
    if value is None or isinstance(value, dict | list):
        return None if value is None else str(value)
    text = str(value).strip()
    return text or None


def _choice(
    form: Mapping[str, object], name: str, allowed: Mapping[str, object], default: str, code: str
) -> str:
    text = _text(form, name)
    if text is None:
        return default
    if text.lower() not in allowed:
        raise InvalidParameter(
            f"Invalid value for parameter '{name}': {text[:40]!r}; use one of "
            f"{', '.join(allowed)}.",
            code,
        )
    return text.lower()


def _bool(form: Mapping[str, object], name: str, default: bool) -> bool:
    value = form.get(name)
    if isinstance(value, bool):
        return value
    text = _text(form, name)
    if text is None:
        return default
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise InvalidParameter(
        f"Invalid {name} parameter given: {text[:40]!r}; use true or false.", f"invalid_{name}"
    )


def _length(text: str, code: str, name: str) -> Length:
    match = _LENGTH.fullmatch(text)
    if not match:
        raise InvalidParameter(f"Invalid {name} parameter given: {text[:40]!r}.", code)
    return float(match.group(1)), match.group(2) == "%"


def _roi(text: str | None) -> tuple[Length, Length, Length, Length] | None:
    if text is None:
        return None
    parts = text.split()
    if len(parts) != 4:
        raise InvalidParameter(
            "Invalid roi parameter given: four values x1 y1 x2 y2, in px or %.", "invalid_roi"
        )
    lengths = [_length(p, "invalid_roi", "roi") for p in parts]
    if any(v < 0 or (pct and v > 100) for v, pct in lengths):
        raise InvalidParameter("Invalid roi parameter given: values out of range.", "invalid_roi")
    return lengths[0], lengths[1], lengths[2], lengths[3]


def _margins(text: str) -> tuple[Length, Length, Length, Length]:
    """1, 2 or 4 values, as in CSS: all; vertical horizontal; top right bottom left."""
    parts = [_length(p, "invalid_crop_margin", "crop_margin") for p in text.split()]
    if len(parts) not in (1, 2, 4) or any(v < 0 or v > (50 if pct else 500) for v, pct in parts):
        raise InvalidParameter(
            "Invalid crop_margin parameter given: 1, 2 or 4 values, each at most 500px or 50%.",
            "invalid_crop_margin",
        )
    if len(parts) == 1:
        return parts[0], parts[0], parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1], parts[0], parts[1]
    return parts[0], parts[1], parts[2], parts[3]


def _scale(text: str | None) -> float | None:
    if text is None or text.lower() == "original":
        return None
    value, pct = _length(text, "invalid_scale", "scale")
    if not pct or not 10 <= value <= 100:
        raise InvalidParameter(
            "Invalid scale parameter given: use original or 10% to 100%.", "invalid_scale"
        )
    return value / 100


def _position(text: str | None) -> tuple[float, float] | None:
    if text is None or text.lower() == "original":
        return None
    if text.lower() == "center":
        return 0.5, 0.5
    parts = [_length(p, "invalid_position", "position") for p in text.split()]
    if len(parts) not in (1, 2) or any(not pct or not 0 <= v <= 100 for v, pct in parts):
        raise InvalidParameter(
            "Invalid position parameter given: original, center, or one or two values 0%-100%.",
            "invalid_position",
        )
    return parts[0][0] / 100, parts[-1][0] / 100


def _color(text: str | None) -> SolidColor | None:
    if text is None:
        return None
    try:
        return parse_color("#" + text if _HEX.fullmatch(text) else text)
    except InvalidInput:
        raise InvalidParameter(
            f"Invalid bg_color parameter given: {text[:40]!r}; use hex (81d4fa, 81d4fa77) or a "
            "colour name.",
            "invalid_bg_color",
        ) from None
