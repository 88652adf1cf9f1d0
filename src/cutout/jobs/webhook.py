"""A finished job's webhook: one signed POST, retried with backoff for a bounded time.

The body is the job's JSON; ``X-Cutout-Signature: sha256=<hex>`` is HMAC-SHA256 of the body
under the job's webhook secret, which is derived from the API key that made the job
(:func:`webhook_secret`), so the receiver can check it knowing only its key, and the server
keeps no extra secret. The URL goes through the image-URL fetcher's address checks (no
private or loopback addresses unless the operator allowed them), with no redirects.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from cutout.errors import CutoutError, InvalidUrl
from cutout.urlfetch import FetchPolicy, post

log = logging.getLogger(__name__)

HEADER = "X-Cutout-Signature"
CONTEXT = b"cutout-webhook"


def webhook_secret(api_key: str) -> str:
    """The signing secret of *api_key*'s jobs: HMAC-SHA256(SHA-256 hex of the key, context)."""
    key_digest = hashlib.sha256(api_key.encode()).hexdigest().encode()
    return hmac.new(key_digest, CONTEXT, hashlib.sha256).hexdigest()


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(
    url: str,
    payload: dict[str, Any],
    secret: str,
    policy: FetchPolicy,
    *,
    give_up_after: float,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """POST until a 2xx answer or *give_up_after* seconds; return whether it was taken."""
    body = json.dumps(payload, sort_keys=True).encode()
    headers = {"Content-Type": "application/json", HEADER: signature(secret, body)}
    deadline, delay = time.monotonic() + give_up_after, 1.0
    while True:
        try:
            status = post(url, body, headers, policy)
            if 200 <= status < 300:
                return True
            log.info("webhook %s answered %s", url, status)
        except InvalidUrl as exc:  # will never work: no retry
            log.warning("webhook %s refused: %s", url, exc)
            return False
        except CutoutError as exc:
            log.info("webhook %s failed: %s", url, exc)
        if time.monotonic() + delay > deadline:
            log.warning("webhook %s given up", url)
            return False
        sleep(delay)
        delay = min(delay * 2, 60.0)


def deliver_in_background(
    url: str, payload: dict[str, Any], secret: str, policy: FetchPolicy, give_up_after: float
) -> threading.Thread:
    thread = threading.Thread(
        target=deliver,
        args=(url, payload, secret, policy),
        kwargs={"give_up_after": give_up_after},
        name="webhook",
        daemon=True,
    )
    thread.start()
    return thread
