"""The one exception tree of ``cutout``.

Every error the engine, the imaging pipeline, the storage or the services raise is a
:class:`CutoutError`. Each carries a stable machine-readable ``code`` and a message that tells
the user how to fix the problem. Nothing here knows about HTTP: the web layer maps these
classes to status codes in one place (``cutout.web.errors``), the CLI maps them to exit codes.

::

    CutoutError
    ├── InvalidInput                 bad data from the caller
    │   ├── InvalidJSON              a request body that is not valid JSON (or too deep)
    │   ├── InvalidImage             not a decodable image (or truncated)
    │   ├── UnsupportedFormat        an image, but not a format we accept
    │   ├── ImageTooLarge            over the byte or pixel limit
    │   ├── RequestTooCostly         would cost more CPU or memory than one request may
    │   ├── BodyTooLarge             a request body over its endpoint's limit
    │   ├── InvalidName              an image name that is empty or too long
    │   ├── InvalidUrl               a URL we will not fetch (scheme, private address)
    │   ├── DownloadFailed           a URL we tried to fetch and could not
    │   └── InvalidParameter         an API parameter with a bad value (carries its own code)
    ├── NotFound                     no such record (or not the caller's)
    ├── LimitReached                 the user is at USER_LIMIT
    ├── TooManyDownloads             this client runs as many URL downloads as it may (429)
    ├── QuotaExceeded                a storage quota is full (improvement submissions)
    ├── AuthFailed                   no API key, or an unknown or revoked one
    │   └── KeyRevoked               revoked while its request ran (403)
    ├── Forbidden                    allowed to nobody here, or not now (403)
    ├── InsufficientCredits          the API key's credit allowance is used up
    ├── IdempotencyConflict          an Idempotency-Key reused for another request, or in flight
    ├── ModelError                   model provisioning
    │   ├── UnknownModel             not in the registry
    │   ├── ModelNotFetched          registry knows it, model dir lacks it
    │   └── FetchError               download/checksum failure
    ├── EngineError                  background removal failed
    │   ├── EngineBusy               inference queue full: retry later
    │   │   └── DownloadsBusy        as many URL downloads as the process allows: retry later
    │   └── RemoteEngineError        the external API said no
    ├── StorageError                 the store failed (disk, database)
    ├── ConfigError                  a setting is missing or malformed
    └── JobServerError               a server refused a job, or stopped answering
"""

from __future__ import annotations


class CutoutError(Exception):
    """Base class: ``code`` is stable and safe to show, ``str(e)`` is the human message."""

    code = "cutout_error"


class InvalidInput(CutoutError):
    code = "invalid_input"


class InvalidJSON(InvalidInput):
    code = "invalid_json"


class InvalidImage(InvalidInput):
    code = "invalid_image"


class UnsupportedFormat(InvalidInput):
    code = "unsupported_format"


class ImageTooLarge(InvalidInput):
    code = "image_too_large"


class RequestTooCostly(InvalidInput):
    """Valid, but beyond what one request may cost (413), e.g. a touch-up of 50,000 points
    with a brush half the photo wide: refused before the work starts."""

    code = "too_costly"


class BodyTooLarge(InvalidInput):
    """A request body larger than its endpoint takes (413), refused before it is read."""

    code = "body_too_large"


class InvalidName(InvalidInput):
    code = "invalid_name"


class InvalidUrl(InvalidInput):
    code = "invalid_url"


class DownloadFailed(InvalidInput):
    code = "download_failed"


class InvalidParameter(InvalidInput):
    """A request parameter with a value we cannot use; ``code`` names it (``invalid_roi``)."""

    code = "invalid_parameter"

    def __init__(self, message: str, code: str = "invalid_parameter") -> None:
        super().__init__(message)
        self.code = code


class NotFound(CutoutError):
    code = "not_found"


class AuthFailed(CutoutError):
    code = "auth_failed"


class KeyRevoked(AuthFailed):
    """The key was revoked while its request was running: refused (403), nothing charged."""

    code = "key_revoked"


class Forbidden(CutoutError):
    """The server does not allow this (a setting says so), or not now (a cap is reached)."""

    code = "forbidden"


class InsufficientCredits(CutoutError):
    code = "insufficient_credits"


class IdempotencyConflict(CutoutError):
    code = "idempotency_conflict"


class LimitReached(CutoutError):
    """The user keeps USER_LIMIT records already; the message is the seed's, word for word."""

    code = "limit_reached"
    MESSAGE = "Max limit reached. Please remove a record."

    def __init__(self, message: str = MESSAGE) -> None:
        super().__init__(message)


class QuotaExceeded(CutoutError):
    """Keeping this would pass a storage quota the operator set (409)."""

    code = "quota_exceeded"


class ModelError(CutoutError):
    code = "model_error"


class UnknownModel(ModelError):
    code = "unknown_model"


class ModelNotFetched(ModelError):
    code = "model_not_fetched"


class FetchError(ModelError):
    code = "fetch_failed"


class EngineError(CutoutError):
    code = "engine_failed"


class EngineBusy(EngineError):
    """Raised instead of queueing without bound; ``retry_after`` is a hint in seconds."""

    code = "busy"

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DownloadsBusy(EngineBusy):
    """Every URL download slot of the process is taken. Under :class:`EngineBusy` so that
    every surface answers it the same way: 503 with Retry-After."""

    code = "busy"


class TooManyDownloads(CutoutError):
    """One client asked for more URL downloads at once than it may (429, Retry-After)."""

    code = "too_many_downloads"

    def __init__(self, message: str, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RemoteEngineError(EngineError):
    code = "remote_engine_failed"


class StorageError(CutoutError):
    code = "storage_failed"


class ConfigError(CutoutError):
    code = "config_error"


class JobServerError(CutoutError):
    """``cutout remove --server``: the server refused the job or the key, or stopped answering.

    The job goes on on the server; running the same command again resumes it.
    """

    code = "job_server_error"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the server's HTTP status, when it answered
