"""The KeyStore contract (keys, credits, idempotency, improvements) on [sqlite] and [mongomock]."""

from __future__ import annotations

import threading
import time

import pytest

from cutout.apikeys import KeyService, digest
from cutout.errors import (
    AuthFailed,
    Forbidden,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidName,
    KeyRevoked,
    NotFound,
    QuotaExceeded,
)
from cutout.storage import KeyStore, open_key_store
from cutout.storage.keys import IDEMPOTENCY_TTL, Improvement, Quota, StoredResponse
from cutout.storage.sqlite import SQLiteStore
from tests.storage.conftest import Backend


@pytest.fixture
def keys(backend: Backend) -> KeyStore:
    return open_key_store(backend.store)


def test_a_key_is_found_by_its_secret_only_and_the_secret_is_not_stored(
    keys: KeyStore, backend: Backend
) -> None:
    service = KeyService(keys)
    key, secret = service.create("alice", "  shop   sync ", credits=None)

    assert secret.startswith("cut_") and len(secret) == 47
    assert key.name == "shop sync" and key.prefix == secret[:8] and not key.revoked
    assert service.authenticate(secret).id == key.id
    assert keys.find_key(digest(secret)) is not None
    with pytest.raises(AuthFailed):
        service.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert secret not in dump(backend)  # only the digest is kept
    assert digest(secret) in dump(backend)


def test_keys_are_listed_per_user_newest_first(keys: KeyStore) -> None:
    service = KeyService(keys)
    first, _ = service.create("alice", "one")
    second, _ = service.create("alice", "two")
    other, _ = service.create("bob", "three")

    assert [k.id for k in service.list("alice")] == [second.id, first.id]
    assert {k.id for k in service.list()} == {first.id, second.id, other.id}
    assert keys.get_key(first.id) == first


def test_revoking_stops_the_key_at_once_and_only_its_owner_can(keys: KeyStore) -> None:
    service = KeyService(keys)
    key, secret = service.create("alice", "ci")
    with pytest.raises(NotFound):
        service.revoke(key.id, user_id="mallory")
    assert service.authenticate(secret).id == key.id

    revoked = service.revoke(key.id, user_id="alice")

    assert revoked.revoked and revoked.revoked_on
    with pytest.raises(AuthFailed, match="revoked"):
        service.authenticate(secret)
    assert service.revoke(key.id).revoked_on == revoked.revoked_on  # idempotent
    with pytest.raises(NotFound):
        keys.revoke_key("0" * 24)


def test_bad_names_are_refused(keys: KeyStore) -> None:
    with pytest.raises(InvalidName):
        KeyService(keys).create("alice", "   ")
    with pytest.raises(InvalidName):
        KeyService(keys).create("alice", "x" * 101)


def test_credits_are_charged_atomically_and_never_overdrawn(keys: KeyStore) -> None:
    service = KeyService(keys)
    limited, _ = service.create("alice", "limited", credits=2)
    unlimited, _ = service.create("alice", "unlimited")

    assert service.charge(limited, 0.25).credits_used == 0.25
    assert service.charge(limited, 1).credits_left == 0.75
    with pytest.raises(InsufficientCredits):
        service.charge(limited, 1)
    assert keys.get_key(limited.id).credits_used == 1.25
    for _ in range(3):
        charged = service.charge(unlimited, 1)
    assert charged.credits_used == 3 and charged.credits_left is None
    service.revoke(limited.id)
    with pytest.raises(NotFound):
        keys.charge_key(limited.id, 0.25)
    with pytest.raises(KeyRevoked):  # revoked while its request ran: a 403, not a 404
        service.charge(limited, 0.25)


def test_spending_charges_first_and_gives_back_what_failed(keys: KeyStore) -> None:
    service = KeyService(keys)
    key, _ = service.create("alice", "limited", credits=1)

    with pytest.raises(RuntimeError), service.spend(key, 1):
        assert keys.get_key(key.id).credits_used == 1  # held while the work runs
        raise RuntimeError("the removal failed")
    assert keys.get_key(key.id).credits_used == 0
    with service.spend(key, 1):
        pass
    with pytest.raises(InsufficientCredits), service.spend(key, 1):
        raise AssertionError("no work without credits")
    assert keys.get_key(key.id).credits_used == 1


def test_key_names_are_cleaned_and_live_keys_capped(keys: KeyStore) -> None:
    service = KeyService(keys)
    key, _ = service.create("bob", "shop\x1b[31m \u202egnp.exe\x07 sync")
    assert key.name == "shop[31m gnp.exe sync"
    service.create("bob", "second", max_active=2)
    with pytest.raises(Forbidden, match="revoke one"):
        service.create("bob", "third", max_active=2)
    service.revoke(key.id)
    service.create("bob", "third", max_active=2)


def test_concurrent_charges_cannot_spend_more_than_the_allowance(keys: KeyStore) -> None:
    key, _ = KeyService(keys).create("alice", "race", credits=3)
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def charge() -> None:
        start.wait()
        try:
            keys.charge_key(key.id, 1)
            outcomes.append("ok")
        except InsufficientCredits:
            outcomes.append("refused")

    threads = [threading.Thread(target=charge) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 5
    assert keys.get_key(key.id).credits_used == 3


def test_idempotency_replays_the_first_answer_and_refuses_reuse(keys: KeyStore) -> None:
    now = time.time()
    assert keys.begin_idempotent("alice", "k1", "fp", now) is None
    with pytest.raises(IdempotencyConflict, match="still being processed"):
        keys.begin_idempotent("alice", "k1", "fp", now)
    keys.finish_idempotent("alice", "k1", StoredResponse(201, '{"id": "x"}'))

    assert keys.begin_idempotent("alice", "k1", "fp", now + 1) == StoredResponse(201, '{"id": "x"}')
    with pytest.raises(IdempotencyConflict, match="different request"):
        keys.begin_idempotent("alice", "k1", "other", now + 1)
    assert keys.begin_idempotent("bob", "k1", "other", now) is None  # keys are per user
    # A day later the key is forgotten and may be used again.
    assert keys.begin_idempotent("alice", "k1", "new", now + IDEMPOTENCY_TTL + 5) is None


def test_an_abandoned_claim_lets_the_retry_run(keys: KeyStore) -> None:
    now = time.time()
    assert keys.begin_idempotent("alice", "k2", "fp", now) is None
    keys.abandon_idempotent("alice", "k2")
    assert keys.begin_idempotent("alice", "k2", "fp", now) is None


ROOMY = Quota(per_key=10**9, total=10**9)


def test_improvements_are_kept(keys: KeyStore, backend: Backend) -> None:
    item = Improvement("k" * 24, "alice", "car.jpg", "batch_1", "image/jpeg", b"\xff\xd8 bytes")
    first = keys.add_improvement(item, ROOMY)
    second = keys.add_improvement(item, ROOMY)
    assert first != second
    assert keys.count_improvements("k" * 24) == 2
    assert keys.count_improvements("other") == 0
    info, data = keys.read_improvement(first)
    assert data == item.data and info.size_bytes == len(item.data) and info.tag == "batch_1"
    assert {i.id for i in keys.list_improvements("k" * 24)} == {first, second}


def test_improvements_keep_their_bytes_out_of_the_database(
    keys: KeyStore, backend: Backend
) -> None:
    """Five 12 MB submissions grew the SQLite file from 1.2 to 59 MB."""
    data = bytes(range(256)) * 4096  # 1 MB
    keys.add_improvement(Improvement("k" * 24, "alice", None, None, "image/png", data), ROOMY)
    store = backend.store
    if isinstance(store, SQLiteStore):  # a file of its own; the row only names it
        folder = store.data_dir / "improvements"
        assert [p.stat().st_size for p in folder.iterdir()] == [len(data)]
        assert store.db_path.stat().st_size < len(data) // 4


def test_improvement_quotas_hold_per_key_and_in_all(keys: KeyStore) -> None:
    quota = Quota(per_key=250, total=400)

    def add(key: str) -> None:
        keys.add_improvement(Improvement(key, "alice", None, None, "image/png", b"x" * 100), quota)

    add("a")
    add("a")
    with pytest.raises(QuotaExceeded, match="this key"):
        add("a")
    add("b")
    add("b")
    with pytest.raises(QuotaExceeded, match="this server"):
        add("c")
    assert keys.purge_improvements(key_id="a") == (2, 200)
    add("c")
    assert keys.count_improvements("a") == 0 and keys.count_improvements("c") == 1


def test_concurrent_improvements_cannot_pass_the_quota(keys: KeyStore) -> None:
    quota = Quota(per_key=500, total=10**6)
    start = threading.Barrier(10)
    outcomes: list[str] = []

    def add() -> None:
        start.wait()
        try:
            keys.add_improvement(Improvement("a", "u", None, None, "image/png", b"x" * 100), quota)
            outcomes.append("kept")
        except QuotaExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=add) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("kept") == 5 and keys.count_improvements("a") == 5


def test_purge_by_age(keys: KeyStore) -> None:
    keys.add_improvement(Improvement("a", "u", None, None, "image/png", b"x"), ROOMY)
    assert keys.purge_improvements(before="2000-01-01 00:00:00") == (0, 0)
    assert keys.purge_improvements(before="2999-01-01 00:00:00") == (1, 1)
    assert keys.list_improvements() == []


def dump(backend: Backend) -> str:
    """Everything the backend holds about keys, as text (to look for leaked secrets)."""
    if backend.database is not None:
        return repr(list(backend.database["api_keys"].find()))
    store = backend.store
    assert hasattr(store, "db_path")
    import sqlite3

    with sqlite3.connect(store.db_path) as conn:
        return repr(conn.execute("SELECT * FROM api_keys").fetchall())


def test_a_charge_under_a_token_happens_once_and_so_does_its_refund(keys: KeyStore) -> None:
    service = KeyService(keys)
    key, _ = service.create("alice", "jobs", credits=3)
    assert service.charge(key, 1, token="item-1").credits_used == 1
    assert service.charge(key, 1, token="item-1").credits_used == 1  # the same item again
    service.refund(key, 1, token="item-2")  # never charged: nothing to give back
    assert keys.get_key(key.id).credits_used == 1
    service.refund(key, 1, token="item-1")
    service.refund(key, 1, token="item-1")
    assert keys.get_key(key.id).credits_used == 0
    assert service.charge(key, 1, token="item-1").credits_used == 1  # charged again after it
    service.charge(key, 2, token="item-3")
    with pytest.raises(InsufficientCredits):
        service.charge(key, 1, token="item-4")
    assert service.charge(key, 1, token="item-3").credits_used == 3  # still a no-op when full
    service.refund(key, 1, token="item-4")  # the refused charge left no token behind
    assert keys.get_key(key.id).credits_used == 3
