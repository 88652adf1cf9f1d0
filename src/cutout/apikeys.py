"""API keys: made, checked, listed, revoked and charged (no Flask here; the CLI uses it too).

A key looks like ``cut_`` + 43 URL-safe characters (32 random bytes from :mod:`secrets`). It is
shown once, when made; stores keep only its SHA-256 and its first characters (to recognise it
in a list). Every check reads the store, so a revoked key stops working on the next request,
in every process, and a key made on the command line works at once on a running server.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field

from cutout.errors import AuthFailed, InvalidName, InvalidParameter
from cutout.storage.base import now_created_on
from cutout.storage.keys import ApiKey, KeyStore, NewKey

PREFIX = "cut_"
PREFIX_SHOWN = len(PREFIX) + 4
NAME_MAX = 100
_SHAPE = re.compile(r"cut_[A-Za-z0-9_-]{43}")
_USER_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: last_used_on is written at most this often per key and process: not one write per call.
TOUCH_EVERY = 60.0


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class KeyService:
    store: KeyStore
    _touched: dict[str, float] = field(default_factory=dict)

    def create(
        self, user_id: str, name: str | None, credits: float | None = None
    ) -> tuple[ApiKey, str]:
        """Make a key for *user_id*; return it with its secret (the only time it exists)."""
        clean = " ".join((name or "").split())
        if not clean:
            raise InvalidName("Please give the key a name, e.g. the program that will use it.")
        if len(clean) > NAME_MAX:
            raise InvalidName(f"The key name is too long: at most {NAME_MAX} characters.")
        if not _USER_ID.fullmatch(user_id):
            raise InvalidParameter("A user id is 1-64 letters, digits, '.', '_' or '-'.")
        if credits is not None and not credits >= 0:  # also refuses NaN
            raise InvalidParameter("Credits must be zero or more.")
        secret = new_secret()
        key = self.store.add_key(
            NewKey(user_id, clean, secret[:PREFIX_SHOWN], digest(secret), credits)
        )
        return key, secret

    def authenticate(self, secret: str | None) -> ApiKey:
        """The live key for *secret*. :raises AuthFailed: missing, unknown or revoked."""
        if not secret:
            raise AuthFailed(
                "Missing API key: send it as the X-Api-Key header or as Authorization: Bearer."
            )
        key = self.store.find_key(digest(secret)) if _SHAPE.fullmatch(secret) else None
        if key is None:
            raise AuthFailed("API key invalid.")
        if key.revoked:
            raise AuthFailed("API key invalid: it was revoked.")
        self._touch(key)
        return key

    def _touch(self, key: ApiKey) -> None:
        now = time.monotonic()
        if now - self._touched.get(key.id, -TOUCH_EVERY) >= TOUCH_EVERY:
            self._touched[key.id] = now
            self.store.touch_key(key.id, now_created_on())

    def list(self, user_id: str | None = None) -> list[ApiKey]:
        return self.store.list_keys(user_id)

    def revoke(self, key_id: str, user_id: str | None = None) -> ApiKey:
        return self.store.revoke_key(key_id, user_id)

    def charge(self, key: ApiKey, cost: float) -> ApiKey:
        return self.store.charge_key(key.id, cost)


def service_account_id() -> str:
    """A fresh user id for a key made on the command line: the same shape as a browser's."""
    return secrets.token_hex(16)
