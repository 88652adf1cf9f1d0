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
    │   └── InvalidName              an image name that is empty or too long
    ├── NotFound                     no such record (or not the caller's)
    ├── LimitReached                 the user is at USER_LIMIT
    ├── ModelError                   model provisioning
    │   ├── UnknownModel             not in the registry
    │   ├── ModelNotFetched          registry knows it, model dir lacks it
    │   └── FetchError               download/checksum failure
    ├── EngineError                  background removal failed
    │   ├── EngineBusy               inference queue full: retry later
    │   └── RemoteEngineError        the external API said no
    ├── StorageError                 the store failed (disk, database)
    └── ConfigError                  a setting is missing or malformed
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


class InvalidName(InvalidInput):
    code = "invalid_name"


class NotFound(CutoutError):
    code = "not_found"


class LimitReached(CutoutError):
    """The user keeps USER_LIMIT records already; the message is the seed's, word for word."""

    code = "limit_reached"
    MESSAGE = "Max limit reached. Please remove a record."

    def __init__(self, message: str = MESSAGE) -> None:
        super().__init__(message)


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


class RemoteEngineError(EngineError):
    code = "remote_engine_failed"


class StorageError(CutoutError):
    code = "storage_failed"


class ConfigError(CutoutError):
    code = "config_error"
