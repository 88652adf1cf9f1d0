"""Each endpoint that does heavy work, sent the worst request that passes its validation, on
the real server (gunicorn, the real model), under the production settings of the ConfigMap
(25 MP photos, an 800 MB budget): the worker's peak memory must stay within what admission
reserved for that request, so the budget really bounds the process.

The figures (time and peak growth per endpoint) are printed; the README's memory section lists
them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from cutout.imaging.brush import Stroke, plan
from cutout.memory import (
    MB,
    decode_cost,
    estimate,
    output_cost,
    render_cost,
    touch_up_cost,
)
from tests.helpers import encode, synthetic_photo
from tests.live import LiveServer, proc_status, reset_peak
from tests.web.test_live import browser_session

pytestmark = pytest.mark.model

ENV = {
    "CUTOUT_MAX_MEGAPIXELS": "25",
    "CUTOUT_MEMORY_BUDGET_MB": "800",
    "USER_LIMIT": "50",
    "CUTOUT_API_RATE_LIMIT": "100000/minute",
    "CUTOUT_QUEUE_TIMEOUT": "300",
}
LARGEST = (5000, 5000)  # 25 MP, the most CUTOUT_MAX_MEGAPIXELS=25 admits
RECORD = (4000, 4000)  # the studio's record: room left for a background picture
BACKGROUND = (5000, 5000)  # the largest picture CUTOUT_MAX_MEGAPIXELS admits, flat: 100 KB
FLAT_BACKGROUND = encode(Image.new("RGB", BACKGROUND, (30, 120, 200)), "PNG")


@dataclass
class Measured:
    endpoint: str
    status: int
    seconds: float
    peak_growth: int
    reserved: int


def hand_strokes(count: int, points: int, radius: float, softness: float) -> list[Stroke]:
    rng = np.random.default_rng(3)
    strokes = []
    for i in range(count):
        x, y, heading = *rng.uniform(0.1, 0.9, 2), rng.uniform(0, 2 * math.pi)
        walk = []
        for _ in range(points):
            heading += rng.normal(0, 0.3)
            x = min(max(x + 0.01 * math.cos(heading), 0.0), 1.0)
            y = min(max(y + 0.01 * math.sin(heading), 0.0), 1.0)
            walk.append((float(x), float(y)))
        strokes.append(Stroke("erase" if i % 2 else "restore", radius, softness, tuple(walk)))
    return strokes


def test_the_worst_request_of_each_heavy_endpoint_stays_within_its_reservation(
    tmp_path: Path,
) -> None:
    big = encode(synthetic_photo(*LARGEST), "JPEG", quality=90)
    record_photo = encode(synthetic_photo(*RECORD), "JPEG", quality=90)
    small = (2600, 2600)  # with 50 % margins and a 25 MP background: just within 800 MB
    removebg_photo = encode(synthetic_photo(*small), "JPEG", quality=90)
    strokes = hand_strokes(300, 60, 0.03, 0.3)  # near the touch-up bound at 16 MP
    plan(strokes, *RECORD)  # accepted: this is the worst that passes, not a refusal
    results: list[Measured] = []
    resident: list[int] = []  # the worker's RSS over its idle RSS before each request

    with LiveServer(tmp_path / "data", ENV) as server:
        session, token = browser_session(server.url)
        (worker,) = server.workers()
        json_headers = {"Accept": "application/json"}
        user = session.get(server.url + "/", headers=json_headers).json()["user_id"]
        headers = {"X-Api-Key": _key(server, user)}  # the browser's: its records are shared

        def measure(name: str, reserved: int, send: Callable[[], requests.Response]) -> Any:
            rss = proc_status(worker, "VmRSS")
            resident.append(rss - idle)
            reset_peak(worker)
            started = time.perf_counter()
            response = send()
            seconds = time.perf_counter() - started
            growth = proc_status(worker, "VmHWM") - rss
            results.append(Measured(name, response.status_code, seconds, growth, reserved))
            assert response.status_code < 300, (name, response.text[:300])
            return response

        warm = session.post(
            server.url + "/",
            headers=json_headers,
            data={"name": "warm-up", "csrf_token": token},
            files={"image": ("w.jpg", encode(synthetic_photo(640, 480), "JPEG"), "image/jpeg")},
            timeout=300,
        )
        assert warm.status_code == 201
        idle = proc_status(worker, "VmRSS")
        measure(
            "POST / (25 MP)",
            estimate(*LARGEST),
            lambda: session.post(
                server.url + "/",
                headers=json_headers,
                data={"name": "largest", "csrf_token": token},
                files={"image": ("big.jpg", big, "image/jpeg")},
                timeout=600,
            ),
        )

        def api_upload(output: str, label: str) -> Any:
            """The 16 MP record through /api/v1/images, written as *output*."""
            return measure(
                f"POST /api/v1/images (16 MP, {label} output)",
                estimate(*RECORD)
                + output_cost(RECORD[0] * RECORD[1], format=output, flattened=False),
                lambda: requests.post(
                    server.url + "/api/v1/images",
                    headers=headers,
                    data={"name": f"record-{output}", "format": output},
                    files={"image": ("r.jpg", record_photo, "image/jpeg")},
                    timeout=600,
                ),
            )

        record = api_upload("jpeg", "JPEG").json()  # JPEG is flattened: output_cost knows
        api_upload("webp", "WebP")
        page_record = session.post(
            server.url + "/",
            headers=json_headers,
            data={"name": "studio", "csrf_token": token},
            files={"image": ("r.jpg", record_photo, "image/jpeg")},
            timeout=600,
        ).json()
        studio = f"{server.url}/records/{page_record['_id']}"
        measure(
            "GET thumbnail made on request (16 MP)",
            estimate(*RECORD),
            lambda: requests.get(
                f"{server.url}/records/{record['id']}/thumbnail/processed",
                cookies=session.cookies,
                timeout=300,
            ),
        )
        measure(
            "POST /records/<id>/edits (300 strokes near the bound, 16 MP)",
            estimate(*RECORD) + touch_up_cost(RECORD[0] * RECORD[1]),
            lambda: session.post(
                studio + "/edits",
                data=json.dumps({"strokes": [_stroke_json(s) for s in strokes]}),
                headers={"X-CSRFToken": token, "Content-Type": "application/json"},
                timeout=600,
            ),
        )
        measure(
            "GET /records/<id>/export (blurred background, 16 MP)",
            estimate(*RECORD) + output_cost(RECORD[0] * RECORD[1], format="png", flattened=True),
            lambda: session.get(studio + "/export?background=blur&blur=0.1", timeout=600),
        )
        measure(
            "POST /records/<id>/export (25 MP background picture, 16 MP)",
            estimate(*RECORD)
            + output_cost(RECORD[0] * RECORD[1], format="jpeg", flattened=True)
            + decode_cost(*BACKGROUND),
            lambda: session.post(
                studio + "/export",
                data={"background": "image", "format": "jpeg", "csrf_token": token},
                files={"background_image": ("bg.png", FLAT_BACKGROUND, "image/png")},
                timeout=600,
            ),
        )
        width, height = small
        measure(
            "POST /v1.0/removebg (50 % margins, zip, 25 MP background)",
            estimate(width, height)
            + render_cost(4 * width * height)
            + output_cost(4 * width * height, format="png", flattened=True)
            + decode_cost(*BACKGROUND),
            lambda: requests.post(
                server.url + "/v1.0/removebg",
                headers=headers,
                data={"size": "full", "crop": "true", "crop_margin": "50%", "format": "zip"},
                files={
                    "image_file": ("p.jpg", removebg_photo, "image/jpeg"),
                    "bg_image_file": ("bg.png", FLAT_BACKGROUND, "image/png"),
                },
                timeout=600,
            ),
        )

    for m in results:
        print(
            f"{m.endpoint}: {m.status} in {m.seconds:.1f} s, peak +{m.peak_growth / MB:.0f} MB, "
            f"reserved {m.reserved / MB:.0f} MB"
        )
    print("resident before each request, over idle:", [f"{r / MB:.0f} MB" for r in resident])
    for m in results:
        assert m.peak_growth <= m.reserved, m


def _key(server: LiveServer, user: str) -> str:
    from tests.api.test_live_api import cli_key

    return cli_key(server, "worst", "--user", user)


def _stroke_json(stroke: Stroke) -> dict[str, object]:
    return {
        "mode": stroke.mode,
        "radius": stroke.radius,
        "softness": stroke.softness,
        "points": [list(p) for p in stroke.points],
    }
