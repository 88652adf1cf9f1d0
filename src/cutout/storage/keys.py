"""The API's own storage: keys, idempotency records, improvement-program submissions.

One protocol (:class:`KeyStore`), two backends living beside the image store: the same SQLite
file (tables from migration 0003) or the same MongoDB database (collections ``api_keys``,
``idempotency``, ``improvements`` and the GridFS bucket ``improvements``).

A key's secret never reaches a store: callers pass its SHA-256 (:func:`cutout.apikeys.digest`),
and a store can only find a key by that digest. Keys carry 256 random bits, so a plain, fast
hash is enough; a slow password hash would only add latency to every API call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

#: An Idempotency-Key's stored answer is replayed for this long, then forgotten.
IDEMPOTENCY_TTL = 24 * 3600.0


@dataclass(frozen=True)
class ApiKey:
    """What we keep about a key. ``credits`` is the allowance (None: unlimited)."""

    id: str
    user_id: str
    name: str
    prefix: str  # the first characters of the secret, to recognise it in a list
    created_on: str  # "YYYY-MM-DD HH:MM:SS" UTC, like records
    last_used_on: str | None
    credits: float | None
    credits_used: float
    revoked_on: str | None

    @property
    def revoked(self) -> bool:
        return self.revoked_on is not None

    @property
    def credits_left(self) -> float | None:
        return None if self.credits is None else max(0.0, self.credits - self.credits_used)


@dataclass(frozen=True)
class NewKey:
    user_id: str
    name: str
    prefix: str
    secret_hash: str
    credits: float | None


@dataclass(frozen=True)
class StoredResponse:
    """The answer first given to a request with an Idempotency-Key."""

    status: int
    body: str  # JSON text


@dataclass(frozen=True)
class Improvement:
    key_id: str
    user_id: str
    image_filename: str | None
    tag: str | None
    media_type: str
    data: bytes


@dataclass(frozen=True)
class Quota:
    """Bytes of improvement submissions one key, and all keys together, may keep."""

    per_key: int
    total: int


@dataclass(frozen=True)
class ImprovementInfo:
    """A kept submission, without its bytes (``cutout improvements list``)."""

    id: str
    key_id: str
    user_id: str
    created_on: str
    image_filename: str | None
    tag: str | None
    media_type: str
    size_bytes: int


class KeyStore(Protocol):
    """Implementations must be thread-safe and, like :class:`ImageStore`, lazy."""

    def add_key(self, key: NewKey) -> ApiKey: ...

    def find_key(self, secret_hash: str) -> ApiKey | None:
        """The key with this digest (revoked ones too: the caller decides)."""
        ...

    def list_keys(self, user_id: str | None = None) -> list[ApiKey]:
        """Newest first; every user's when *user_id* is None (the command line)."""
        ...

    def get_key(self, key_id: str) -> ApiKey:
        """:raises NotFound:"""
        ...

    def revoke_key(self, key_id: str, user_id: str | None = None) -> ApiKey:
        """Mark revoked (idempotent). With *user_id*, only that user's key. :raises NotFound:"""
        ...

    def touch_key(self, key_id: str, when: str) -> None:
        """Record a use (callers throttle this to one write a minute per key)."""
        ...

    def charge_key(self, key_id: str, cost: float, token: str | None = None) -> ApiKey:
        """Add *cost* to the key's usage, atomically refusing to exceed its allowance.

        With *token* (a job item's id) the charge happens once per token, however often it is
        asked for, and a refund (negative *cost*) only of a charge made under it, once.

        :raises InsufficientCredits: the allowance left is below *cost*.
        :raises NotFound: no such key, or it was revoked meanwhile.
        """
        ...

    def begin_idempotent(
        self, user_id: str, key: str, fingerprint: str, now: float
    ) -> StoredResponse | None:
        """Claim *key* for a new request, or return the stored answer of the first one.

        :raises IdempotencyConflict: the key is in flight, or was used for another request.
        """
        ...

    def finish_idempotent(self, user_id: str, key: str, response: StoredResponse) -> None: ...

    def abandon_idempotent(self, user_id: str, key: str) -> None:
        """Release a claim whose request failed, so a retry runs again."""
        ...

    def add_improvement(self, item: Improvement, quota: Quota) -> str:
        """Keep a ``/v1.0/improve`` submission for the operator; return its id.

        Its bytes go to a file (GridFS), like images. Atomic with respect to *quota*: the key's
        submissions and everybody's together never pass it, however many arrive at once.
        :raises QuotaExceeded:
        """
        ...

    def count_improvements(self, key_id: str) -> int: ...

    def list_improvements(self, key_id: str | None = None) -> list[ImprovementInfo]:
        """Newest first; every key's when *key_id* is None."""
        ...

    def read_improvement(self, improvement_id: str) -> tuple[ImprovementInfo, bytes]:
        """:raises NotFound:"""
        ...

    def purge_improvements(
        self, key_id: str | None = None, before: str | None = None
    ) -> tuple[int, int]:
        """Delete submissions (of *key_id*; made before *before*, a ``created_on`` string):
        rows and bytes, and files no row names. Return (submissions, bytes) removed."""
        ...
