"""Fuzz the CLI's batch path (`cutout remove`'s run_jobs) with damaged photos, real model.

Each failure is one line of ours (never "unexpected error", never Pillow's raw text); each
success is a full-size RGBA PNG. The subprocess wrapper around run_jobs only prints those
lines (tests/test_cli.py runs it for real).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cutout.batch import Job, run_jobs
from cutout.config import Settings
from cutout.engine.local import LocalEngine
from cutout.imaging.compose import OutputOptions
from tests.fuzz.conftest import MODEL_CASES, kept_if_failing, tally
from tests.fuzz.mutate import Seed, mutated

#: The beginnings of our decode errors (cutout.imaging.decode).
OURS = re.compile(r"The file is |The image |\w+ images are not supported\. ")


@pytest.mark.model
@settings(settings.get_profile("fuzz"), max_examples=MODEL_CASES)
@given(data=st.data())
def test_the_cli_reports_every_bad_photo_in_one_line_of_ours(
    tmp_path_factory: pytest.TempPathFactory,
    model_settings: Settings,
    real_engine: LocalEngine,
    seed_pool: list[Seed],
    data: st.DataObject,
) -> None:
    name, payload = mutated(data, seed_pool)
    with kept_if_failing(name, payload):
        folder = tmp_path_factory.mktemp("fuzz-cli")
        source, target = folder / "in.bin", folder / "out.png"
        source.write_bytes(payload)
        job = Job(source, target, "png")
        failures = run_jobs([job], real_engine, model_settings, OutputOptions(), workers=1)
        if failures:
            ((_, message),) = failures
            tally("cli", "refused")
            assert OURS.match(message), (name, message)
            assert not target.exists() and [p.name for p in folder.iterdir()] == ["in.bin"]
            return
        tally("cli", "done")
        with Image.open(target) as out:
            assert out.format == "PNG" and out.mode == "RGBA"
