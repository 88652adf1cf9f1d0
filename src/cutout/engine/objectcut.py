"""The seed's external engine: ObjectCut's "Background Removal" API on RapidAPI.

Contract (``docs/api-contracts.md`` section 1): a form-urlencoded POST with ``image_base64`` and
``output_format=base64``; the backend always answers HTTP 200 and signals failure with an
``error`` flag (a boolean, or the string ``"false"`` in RapidAPI's docs) plus ``error_id``
``001``/``002``/``003``; the RapidAPI gateway itself answers 401/403 (bad key, no subscription)
and 429 (rate limit). We retry only what can succeed on retry (429, 5xx, connection failures),
with exponential backoff, and turn everything else into a clear :class:`RemoteEngineError`.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import requests
from PIL import Image

from cutout.errors import ConfigError, RemoteEngineError
from cutout.numbers import header_int

log = logging.getLogger(__name__)

#: ObjectCut downscales anything larger itself; sending less saves upload time and quota.
MAX_SIDE = 2500
ERROR_IDS = {
    "001": "ObjectCut could not process the image",
    "002": "ObjectCut could not read the image",
    "003": "ObjectCut rejected the request parameters",
}


class ObjectCutEngine:
    """Calls the ObjectCut API; the mask is the alpha of the PNG it returns."""

    def __init__(
        self,
        *,
        api_key: str | None,
        api_host: str,
        endpoint: str,
        timeout: float,
        retries: int,
        session: requests.Session | None = None,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise ConfigError("The objectcut engine needs X_RAPID_API_KEY (your RapidAPI key).")
        self._headers = {"X-RapidAPI-Key": api_key, "X-RapidAPI-Host": api_host}
        self._endpoint = endpoint
        self._timeout = timeout
        self._retries = retries
        self._http = session or requests.Session()
        self._backoff = backoff
        self._sleep = sleep

    name = "objectcut"
    model = "objectcut"
    runtime = "remote"

    def predict_mask(self, image: Image.Image) -> np.ndarray:
        form = {
            "image_base64": _encode(image),
            "output_format": "base64",
            "to_remove": "background",
            "color_removal": "transparent",
        }
        body = self._post(form)
        return _alpha_of(_result_png(body))

    def _post(self, form: dict[str, str]) -> dict[str, Any]:
        """POST with retries on 429/5xx/connection errors; return the decoded JSON body."""
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                response = self._http.post(
                    self._endpoint, data=form, headers=self._headers, timeout=self._timeout
                )
            except requests.Timeout as exc:
                raise RemoteEngineError(
                    f"ObjectCut did not answer within {self._timeout:g} s."
                ) from exc
            except requests.ConnectionError as exc:
                if last:
                    raise RemoteEngineError(
                        f"Could not reach ObjectCut at {self._endpoint}."
                    ) from exc
                self._pause(attempt, None)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if last:
                    raise RemoteEngineError(_gateway_message(response))
                self._pause(attempt, response.headers.get("Retry-After"))
                continue
            if response.status_code != 200:
                raise RemoteEngineError(_gateway_message(response))
            return _json(response)
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _pause(self, attempt: int, retry_after: str | None) -> None:
        delay = self._backoff * 2**attempt
        seconds = header_int(retry_after)
        if seconds is not None:
            delay = max(delay, float(seconds))
        log.warning("ObjectCut busy or failing; retry %d in %.1f s", attempt + 1, delay)
        self._sleep(min(delay, 30.0))


def _encode(image: Image.Image) -> str:
    rgb = image.convert("RGB")
    if max(rgb.size) > MAX_SIDE:
        rgb = rgb.copy()
        rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", quality=95)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise RemoteEngineError("ObjectCut answered with something that is not JSON.") from None
    if not isinstance(body, dict):
        raise RemoteEngineError("ObjectCut answered with an unexpected JSON shape.")
    return body


def _result_png(body: dict[str, Any]) -> bytes:
    """Return the PNG bytes of a success body, or raise with the API's own explanation."""
    if body.get("error") not in (False, "false", "False", None, ""):
        code = str(body.get("error_id", ""))
        reason = ERROR_IDS.get(code, "ObjectCut reported an error")
        detail = body.get("message") or "no details"
        raise RemoteEngineError(f"{reason} (error {code or '?'}: {detail}).")
    encoded = (body.get("response") or {}).get("image_base64")
    if not isinstance(encoded, str):
        raise RemoteEngineError("ObjectCut's answer has no response.image_base64.")
    if encoded.startswith("data:"):
        encoded = encoded.partition(",")[2]
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RemoteEngineError("ObjectCut returned an image that is not valid base64.") from None


def _alpha_of(png: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(png)) as result:
            rgba = result.convert("RGBA")
    except (OSError, ValueError):
        raise RemoteEngineError("ObjectCut returned data that is not an image.") from None
    return np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0


def _gateway_message(response: requests.Response) -> str:
    try:
        message = response.json().get("message", "")
    except (ValueError, AttributeError):
        message = ""
    hints = {
        401: "check X_RAPID_API_KEY",
        403: "check X_RAPID_API_KEY and your subscription to the API",
        429: "rate limit or monthly quota reached",
    }
    hint = hints.get(response.status_code, "the service is failing")
    text = f": {message}" if message else ""
    return f"ObjectCut/RapidAPI answered HTTP {response.status_code}{text} ({hint})."
