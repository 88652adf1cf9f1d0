"""Where records and images live: pick the backend once, from the settings.

``MONGO_URI`` set → :class:`MongoStore` (records in MongoDB, images in GridFS), as the seed
ran. Otherwise → :class:`SQLiteStore` under ``CUTOUT_DATA_DIR`` (nothing to install). The rest
of the code sees only :class:`ImageStore`. Neither store touches the network or the disk until
its first call, so building one at app start never fails for an unreachable backend;
``/ready`` (which calls :meth:`ImageStore.ping`) reports that instead.
"""

from __future__ import annotations

from cutout.config import Settings
from cutout.faults import NO_FAULTS, Faults
from cutout.storage.base import (
    KINDS,
    ImageInfo,
    ImageStore,
    Kind,
    NewImage,
    NewRecord,
    Record,
    now_created_on,
)
from cutout.storage.mongo import MongoStore
from cutout.storage.sqlite import SQLiteStore

__all__ = [
    "KINDS",
    "ImageInfo",
    "ImageStore",
    "Kind",
    "MongoStore",
    "NewImage",
    "NewRecord",
    "Record",
    "SQLiteStore",
    "now_created_on",
    "open_store",
]


def open_store(settings: Settings) -> ImageStore:
    """The store *settings* ask for: MongoDB when ``mongo_uri`` is set, else SQLite."""
    faults = NO_FAULTS
    if settings.test_faults and settings.env == "testing":  # validated: testing only
        faults = Faults.from_spec(settings.test_faults, settings.data_dir)
    if settings.mongo_uri:
        return MongoStore(settings.mongo_uri, faults=faults)
    return SQLiteStore(settings.data_dir, faults=faults)
