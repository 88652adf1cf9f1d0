"""API keys: made, checked, listed, revoked and charged (no Flask here; the CLI uses it too).

A key looks like ``cut_`` + 43 URL-safe characters (32 random bytes from :mod:`secrets`). It is
shown once, when made; stores keep only its SHA-256 and its first characters (to recognise it
in a list). Every check reads the store, so a revoked key stops working on the next request,
in every process, and a key made on the command line works at once on a running server.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cutout.errors import (
    AuthFailed,
    Forbidden,
    InvalidName,
    InvalidParameter,
    KeyRevoked,
    NotFound,
)
from cutout.storage.base import now_created_on
from cutout.storage.keys import ApiKey, KeyStore, NewKey
from cutout.text import UNSAFE_CHARACTERS

log = logging.getLogger(__name__)

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
        self,
        user_id: str,
        name: str | None,
        credits: float | None = None,
        *,
        max_active: int | None = None,
    ) -> tuple[ApiKey, str]:
        """Make a key for *user_id*; return it with its secret (the only time it exists).

        The name is cleaned like a record's (control characters, escape sequences and
        bidirectional overrides removed: it reaches operators' terminals). With *max_active*,
        a user who already holds that many live keys gets :class:`Forbidden`.
        """
        clean = " ".join(UNSAFE_CHARACTERS.sub("", " ".join((name or "").split())).split())
        if not clean:
            raise InvalidName("Please give the key a name, e.g. the program that will use it.")
        if len(clean) > NAME_MAX:
            raise InvalidName(f"The key name is too long: at most {NAME_MAX} characters.")
        if not _USER_ID.fullmatch(user_id):
            raise InvalidParameter("A user id is 1-64 letters, digits, '.', '_' or '-'.")
        if credits is not None and not credits >= 0:  # also refuses NaN
            raise InvalidParameter("Credits must be zero or more.")
        if max_active is not None:
            live = [k for k in self.store.list_keys(user_id) if not k.revoked]
            if len(live) >= max_active:
                raise Forbidden(
                    f"You have {len(live)} API keys already, the most one user may hold: "
                    "revoke one you no longer use first."
                )
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

    def charge(self, key: ApiKey, cost: float, token: str | None = None) -> ApiKey:
        """Charge *cost* to *key*, atomically within its allowance.

        :raises InsufficientCredits: not enough left (402).
        :raises KeyRevoked: the key was revoked since the request began (403).
        """
        try:
            return self.store.charge_key(key.id, cost, token)
        except NotFound:
            raise KeyRevoked("API key invalid: it was revoked while this request ran.") from None

    @contextmanager
    def spend(self, key: ApiKey, cost: float) -> Iterator[ApiKey]:
        """Charge *cost* before the work in the block, and give it back if the work fails.

        Charging first is what keeps the allowance exact when requests race: of two requests
        for a key's last credit only one gets past here, so no work is ever done unpaid.
        """
        charged = self.charge(key, cost)
        try:
            yield charged
        except BaseException:
            self.refund(key, cost)
            raise

    def refund(self, key: ApiKey, cost: float, token: str | None = None) -> None:
        """Give back a charge whose work failed (nothing to do if the key is gone); with
        *token*, only a charge made under it, once."""
        try:
            self.store.charge_key(key.id, -cost, token)
        except NotFound:
            log.info("no refund of %s credits: key %s was revoked meanwhile", cost, key.id)


def service_account_id() -> str:
    """A fresh user id for a key made on the command line: the same shape as a browser's."""
    return secrets.token_hex(16)
