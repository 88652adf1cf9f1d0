"""Fuzz the decoder (every format we accept, damaged): a photo, or one of our errors.

This is the code behind both POST / and `cutout remove`; the other two files drive it through
those surfaces with the real model. Here there is no model, so it gets the most cases.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cutout.errors import InvalidInput
from cutout.imaging.decode import Limits, load_image, probe
from tests.fuzz.conftest import CASES, kept_if_failing, tally
from tests.fuzz.mutate import Seed, mutated

#: The server's defaults: 25 MB, 50 MP.
LIMITS = Limits(max_bytes=25 * 1024 * 1024, max_pixels=50_000_000)


@settings(settings.get_profile("fuzz"), max_examples=CASES)
@given(data=st.data())
def test_the_decoder_never_fails_in_an_unexpected_way(
    seed_pool: list[Seed], data: st.DataObject
) -> None:
    name, payload = mutated(data, seed_pool)
    with kept_if_failing(name, payload):
        try:
            size = probe(payload, LIMITS)
        except InvalidInput as exc:
            tally("decoder", f"refused from the header: {exc.code}")
            try:
                load_image(payload, LIMITS)
            except InvalidInput as again:  # decoding refuses what probing refused
                assert type(again) is type(exc), (name, exc, again)
            else:
                raise AssertionError(f"{name}: probe refused ({exc}) but decoding accepted")
            return
        try:
            photo = load_image(payload, LIMITS)
        except InvalidInput as exc:
            tally("decoder", f"refused while decoding: {exc.code}")
            assert "Truncated File Read" not in str(exc) and "(" not in str(exc)[:40], str(exc)
            return
        tally("decoder", "decoded")
        assert photo.rgb.mode == "RGB"
        assert sorted(photo.size) == sorted(size)  # EXIF orientation may swap the two
