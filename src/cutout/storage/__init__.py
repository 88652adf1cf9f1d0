"""Where records and images live: pick the backend once, from the settings.

``MONGO_URI`` set → :class:`MongoStore` (records in MongoDB, images in GridFS), as the seed
ran. Otherwise → :class:`SQLiteStore` under ``CUTOUT_DATA_DIR`` (nothing to install). The rest
of the code sees only :class:`ImageStore`. Neither store touches the network or the disk until
its first call, so building one at app start never fails for an unreachable backend;
``/ready`` (which calls :meth:`ImageStore.ping`) reports that instead.
"""

from __future__ import annotations

from cutout.config import Settings
from cutout.faults import configured
from cutout.storage.base import (
    KINDS,
    ImageInfo,
    ImageStore,
    Kind,
    NewImage,
    NewRecord,
    Record,
    Thumbnail,
    now_created_on,
)
from cutout.storage.jobs import JobStore
from cutout.storage.keys import KeyStore
from cutout.storage.mongo import MongoStore
from cutout.storage.mongo_jobs import MongoJobStore
from cutout.storage.mongo_keys import MongoKeyStore
from cutout.storage.sqlite import SQLiteStore
from cutout.storage.sqlite_jobs import SQLiteJobStore
from cutout.storage.sqlite_keys import SQLiteKeyStore

__all__ = [
    "KINDS",
    "ImageInfo",
    "ImageStore",
    "JobStore",
    "KeyStore",
    "Kind",
    "MongoJobStore",
    "MongoKeyStore",
    "MongoStore",
    "NewImage",
    "NewRecord",
    "Record",
    "SQLiteJobStore",
    "SQLiteKeyStore",
    "SQLiteStore",
    "Thumbnail",
    "now_created_on",
    "open_job_store",
    "open_key_store",
    "open_store",
]


def open_store(settings: Settings) -> ImageStore:
    """The store *settings* ask for: MongoDB when ``mongo_uri`` is set, else SQLite."""
    faults = configured(settings.test_faults, settings.env, settings.data_dir)
    if settings.mongo_uri:
        return MongoStore(settings.mongo_uri, faults=faults)
    return SQLiteStore(settings.data_dir, faults=faults)


def open_key_store(images: ImageStore) -> KeyStore:
    """The API's store, beside *images*: the same SQLite file or the same MongoDB database."""
    while isinstance(getattr(images, "inner", None), MongoStore | SQLiteStore):
        images = images.inner  # type: ignore[attr-defined]  # a wrapper (metrics) around one
    if isinstance(images, MongoStore):
        return MongoKeyStore(images)
    if isinstance(images, SQLiteStore):
        return SQLiteKeyStore(images)
    raise TypeError(f"No key store for {type(images).__name__}.")


def open_job_store(images: ImageStore) -> JobStore:
    """Batch jobs' store, beside *images*: the same SQLite file or MongoDB database."""
    while isinstance(getattr(images, "inner", None), MongoStore | SQLiteStore):
        images = images.inner  # type: ignore[attr-defined]  # a wrapper (metrics) around one
    if isinstance(images, MongoStore):
        return MongoJobStore(images)
    if isinstance(images, SQLiteStore):
        return SQLiteJobStore(images)
    raise TypeError(f"No job store for {type(images).__name__}.")
