"""The operator's commands print what clients wrote as text, never as terminal controls."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cutout.apikeys import digest, new_secret
from cutout.cli import main
from cutout.storage import SQLiteKeyStore, SQLiteStore
from cutout.storage.keys import Improvement, NewKey, Quota

NASTY = "shop\x1b]0;pwned\x07\x1b[2J\u202egnp.exe"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CUTOUT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CUTOUT_ENV", "testing")
    return tmp_path / "data"


def test_keys_list_escapes_control_characters(data_dir: Path) -> None:
    """A name stored before names were cleaned (or written to the database by hand) still
    cannot retitle the operator's terminal, clear it, or reverse the line."""
    store = SQLiteKeyStore(SQLiteStore(data_dir))
    secret = new_secret()
    store.add_key(NewKey("u\x1b[31m", NASTY, secret[:8], digest(secret), None))

    out = CliRunner().invoke(main, ["keys", "list"]).output

    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert r"shop\x1b]0;pwned\x07\x1b[2J\u202egnp.exe" in out


def test_improvements_list_and_purge(data_dir: Path) -> None:
    store = SQLiteKeyStore(SQLiteStore(data_dir))
    roomy = Quota(10**9, 10**9)
    for key in ("k1", "k1", "k2"):
        store.add_improvement(Improvement(key, "u", NASTY, "t", "image/png", b"x" * 1000), roomy)
    runner = CliRunner()

    listed = runner.invoke(main, ["improvements", "list"]).output
    assert "3 submission(s)" in listed and "\x1b" not in listed and r"\x1b" in listed
    purged = runner.invoke(main, ["improvements", "purge", "--key", "k1", "--yes"])
    assert purged.exit_code == 0 and "Purged 2 submission(s)" in purged.output
    assert [i.key_id for i in store.list_improvements()] == ["k2"]
    refused = runner.invoke(main, ["improvements", "purge"], input="n\n")
    assert refused.exit_code == 1 and len(store.list_improvements()) == 1
    assert runner.invoke(main, ["improvements", "purge", "--yes"]).exit_code == 0
    assert store.list_improvements() == []
    assert list((data_dir / "improvements").iterdir()) == []
