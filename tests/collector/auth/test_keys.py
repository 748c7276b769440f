"""Tests for `collector/auth/keys.py`: the key format, hashing, `Authenticator` and the bootstrap.

Minted keys go through a real store in a temporary directory; declared keys are the config
file's. Every failure is checked by its machine code, the one API errors carry.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.auth.keys import (
    Authenticator,
    AuthError,
    KeyRecord,
    bootstrap_default_org,
    display_prefix,
    ensure_org,
    hash_secret,
    mint_key,
    parse_key,
)
from collector.model import SCOPES, Principal
from collector.store.lake import StoreSettings
from collector.store.writer import Store

ACME_INGEST = "al_live_aaaa0001_" + "1" * 40
ACME_READ = "al_read_aaaa0002_" + "2" * 40
GLOBEX_ADMIN = "al_admin_bbbb0003_" + "6" * 40
SHAPE = re.compile(r"al_(live|read|admin)_[0-9a-f]{8}_[0-9a-f]{40}")


def open_store(tmp: Path) -> Store:
    store = Store(
        StoreSettings(catalog=str(tmp / "catalog.ducklake"), data_path=str(tmp / "data") + "/")
    )
    store.open()
    return store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def auth(store: Store) -> Authenticator:
    a = Authenticator(store)
    a.load()
    a.declare("acme", "ingest", ACME_INGEST, "ci")
    a.declare("acme", "read", ACME_READ)
    a.declare("globex", "admin", GLOBEX_ADMIN)
    return a


def code_of(auth: Authenticator, header: str | None, scope: str = "ingest") -> str:
    with pytest.raises(AuthError) as info:
        auth.authenticate(header, scope)  # type: ignore[arg-type]
    assert info.value.status == 401
    return info.value.code


# -- format ----------------------------------------------------------------------------------


def test_minted_keys_have_the_documented_shape_per_scope() -> None:
    prefixes = {"ingest": "al_live_", "read": "al_read_", "admin": "al_admin_"}
    for scope in SCOPES:
        key, key_id, secret = mint_key(scope)
        assert SHAPE.fullmatch(key), key
        assert key == f"{prefixes[scope]}{key_id}_{secret}"
        assert len(key_id) == 8 and len(secret) == 40
        assert parse_key(key) == (scope, key_id, secret)
    assert len({mint_key("ingest")[0] for _ in range(50)}) == 50


@pytest.mark.parametrize(
    "text",
    [
        "",
        "al_live_aaaa0001",
        "al_live_aaaa0001_" + "1" * 39,
        "al_live_aaaa0001_" + "1" * 41,
        "al_live_aaaa001_" + "1" * 40,
        "al_live_AAAA0001_" + "1" * 40,  # uppercase hex
        "al_live_aaaa0001_" + "g" * 40,
        "al_test_aaaa0001_" + "1" * 40,
        "al-live-aaaa0001-" + "1" * 40,
        " al_live_aaaa0001_" + "1" * 40,
        "al_live_aaaa0001_" + "1" * 40 + "\n",  # a trailing newline is not part of a key
        "al_live_aaaa0001_" + "1" * 40 + "x",
        "sk-proj-" + "1" * 40,
    ],
)
def test_parse_key_refuses_anything_else(text: str) -> None:
    assert parse_key(text) is None


def test_hash_and_display_prefix_never_contain_the_secret() -> None:
    secret = "1" * 40
    assert hash_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert hash_secret(secret) != hash_secret("2" * 40)
    assert display_prefix("aaaa0001", "ingest") == "al_live_aaaa0001"
    assert display_prefix("aaaa0001", "admin") == "al_admin_aaaa0001"
    assert display_prefix("aaaa0001", "read") == "al_read_aaaa0001"


# -- authenticate ----------------------------------------------------------------------------


def test_declared_keys_authenticate_with_their_org_and_scope(auth: Authenticator) -> None:
    assert auth.authenticate(f"Bearer {ACME_INGEST}", "ingest") == Principal(
        "acme", "aaaa0001", "ingest"
    )
    assert auth.authenticate(f"bearer   {ACME_READ}  ", "read") == Principal(
        "acme", "aaaa0002", "read"
    )
    assert auth.authenticate(f"Bearer {GLOBEX_ADMIN}", "admin").org == "globex"


def test_missing_and_malformed_authorization(auth: Authenticator) -> None:
    assert code_of(auth, None) == "missing_authorization"
    assert code_of(auth, "") == "missing_authorization"
    assert code_of(auth, "Bearer") == "invalid_api_key"
    assert code_of(auth, "Bearer   ") == "invalid_api_key"
    assert code_of(auth, f"Basic {ACME_INGEST}") == "invalid_api_key"
    assert code_of(auth, ACME_INGEST) == "invalid_api_key"  # no scheme
    assert code_of(auth, "Bearer not-a-key") == "invalid_api_key"
    assert code_of(auth, f"Bearer {ACME_INGEST.upper()}") == "invalid_api_key"


def test_unknown_id_and_wrong_secret_are_refused(auth: Authenticator) -> None:
    assert code_of(auth, "Bearer al_live_cccc0001_" + "1" * 40) == "invalid_api_key"
    assert code_of(auth, "Bearer al_live_aaaa0001_" + "9" * 40) == "invalid_api_key"


def test_a_key_of_another_scope_is_refused(auth: Authenticator) -> None:
    assert code_of(auth, f"Bearer {ACME_READ}", "ingest") == "invalid_api_key"
    assert code_of(auth, f"Bearer {GLOBEX_ADMIN}", "ingest") == "invalid_api_key"
    assert code_of(auth, f"Bearer {ACME_INGEST}", "read") == "invalid_api_key"
    assert code_of(auth, f"Bearer {ACME_INGEST}", "admin") == "invalid_api_key"
    # The right id and secret behind the prefix of another scope are refused too.
    relabelled = ACME_INGEST.replace("al_live_", "al_read_")
    assert code_of(auth, f"Bearer {relabelled}", "read") == "invalid_api_key"
    assert code_of(auth, f"Bearer {relabelled}", "ingest") == "invalid_api_key"


def test_declare_refuses_a_malformed_or_mislabelled_key(auth: Authenticator) -> None:
    with pytest.raises(ValueError, match="malformed"):
        auth.declare("acme", "ingest", "al_live_short")
    with pytest.raises(ValueError, match="malformed"):
        auth.declare("acme", "admin", ACME_INGEST)
    assert auth.is_declared("aaaa0001", "acme")
    assert not auth.is_declared("aaaa0001", "globex")  # another org's key is not found
    assert not auth.is_declared("cccc0001", "acme")


# -- minted keys -----------------------------------------------------------------------------


def test_created_keys_work_are_listed_and_survive_a_reload(
    tmp_path: Path, store: Store, auth: Authenticator
) -> None:
    key, record = auth.create_key("acme", "ingest", "pipeline")
    assert SHAPE.fullmatch(key) and key.startswith(f"al_live_{record.key_id}_")
    assert record.secret_hash == hash_secret(key.rsplit("_", 1)[1])
    assert record.source == "api" and record.revoked_at is None
    public = record.public()
    assert key.rsplit("_", 1)[1] not in str(public)
    assert public["prefix"] == f"al_live_{record.key_id}"
    assert public["created_at"].endswith("Z")
    assert auth.authenticate(f"Bearer {key}", "ingest") == Principal(
        "acme", record.key_id, "ingest"
    )

    listed = {r.key_id: r for r in auth.list_keys("acme")}
    assert set(listed) == {"aaaa0001", "aaaa0002", record.key_id}
    assert listed[record.key_id].last_used_at is not None  # just used
    assert listed["aaaa0002"].last_used_at is None
    assert [r.key_id for r in auth.list_keys("globex")] == ["bbbb0003"]
    assert auth.list_keys("nobody") == []

    fresh = Authenticator(store)
    fresh.load()
    assert fresh.authenticate(f"Bearer {key}", "ingest").key_id == record.key_id
    assert [r.key_id for r in fresh.list_keys("acme")] == [record.key_id]  # not declared here


def test_a_new_key_never_reuses_an_existing_id(
    auth: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, record = auth.create_key("acme", "ingest", "first")
    taken = [
        (first, record.key_id, first.rsplit("_", 1)[1]),  # a minted key's id
        (ACME_INGEST, "aaaa0001", "1" * 40),  # a declared key's id
        ("al_live_0000beef_" + "7" * 40, "0000beef", "7" * 40),
    ]
    monkeypatch.setattr("collector.auth.keys.mint_key", lambda scope: taken.pop(0))
    key, second = auth.create_key("globex", "ingest", "second")
    assert (key, second.key_id) == ("al_live_0000beef_" + "7" * 40, "0000beef")
    assert auth.authenticate(f"Bearer {first}", "ingest").org == "acme"  # still valid
    assert auth.authenticate(f"Bearer {ACME_INGEST}", "ingest").org == "acme"
    assert auth.authenticate(f"Bearer {key}", "ingest").org == "globex"


def test_create_key_refuses_an_unknown_scope(auth: Authenticator) -> None:
    with pytest.raises(ValueError, match="scope"):
        auth.create_key("acme", "superuser", "x")  # type: ignore[arg-type]


def test_revoked_keys_get_key_revoked_also_after_reload(store: Store, auth: Authenticator) -> None:
    key, record = auth.create_key("acme", "read", "grafana")
    assert auth.revoke("globex", record.key_id) is None  # another org's key: not found
    assert auth.authenticate(f"Bearer {key}", "read").key_id == record.key_id
    revoked = auth.revoke("acme", record.key_id)
    assert revoked is not None and revoked.revoked_at is not None
    assert code_of(auth, f"Bearer {key}", "read") == "key_revoked"
    again = auth.revoke("acme", record.key_id)
    assert again is not None and again.revoked_at == revoked.revoked_at  # idempotent
    assert auth.revoke("acme", "ffffffff") is None
    assert auth.revoke("acme", "aaaa0001") is None  # declared keys are not revoked here

    fresh = Authenticator(store)
    fresh.load()
    with pytest.raises(AuthError) as info:
        fresh.authenticate(f"Bearer {key}", "read")
    assert info.value.code == "key_revoked"
    # A wrong secret for a revoked id says nothing about the revocation.
    wrong = f"al_read_{record.key_id}_" + "0" * 40
    assert code_of(fresh, f"Bearer {wrong}", "read") == "invalid_api_key"


def test_last_used_at_is_flushed_to_the_store(store: Store, auth: Authenticator) -> None:
    key, record = auth.create_key("acme", "ingest", "n")
    auth.flush_last_used()  # nothing used yet: nothing written
    assert store.query("SELECT last_used_at FROM api_keys") == [(None,)]
    auth.authenticate(f"Bearer {key}", "ingest")
    auth.authenticate(f"Bearer {ACME_INGEST}", "ingest")  # declared: never written
    auth.flush_last_used()
    [(used,)] = store.query("SELECT last_used_at FROM api_keys WHERE key_id = ?", [record.key_id])
    assert used is not None
    fresh = Authenticator(store)
    fresh.load()
    [listed] = fresh.list_keys("acme")
    assert listed.last_used_at == used
    # The declared key's use is still known in memory.
    declared = {r.key_id: r for r in auth.list_keys("acme")}["aaaa0001"]
    assert declared.last_used_at is not None


# -- bootstrap -------------------------------------------------------------------------------


def test_bootstrap_creates_default_org_keys_once(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    try:
        auth = Authenticator(store)
        auth.load()
        keys = bootstrap_default_org(store, auth)
        assert keys is not None and set(keys) == set(SCOPES)
        for scope, key in keys.items():
            assert SHAPE.fullmatch(key)
            assert parse_key(key) is not None and parse_key(key)[0] == scope  # type: ignore[index]
            assert auth.authenticate(f"Bearer {key}", scope) == Principal(
                "default", key.split("_")[2], scope
            )
        assert bootstrap_default_org(store, auth) is None
        assert store.query("SELECT name FROM orgs") == [("default",)]
        # Only hashes are stored.
        stored = store.query("SELECT secret_hash, prefix FROM api_keys ORDER BY prefix")
        assert len(stored) == 3
        for key in keys.values():
            assert all(key.rsplit("_", 1)[1] not in "".join(row) for row in stored)
    finally:
        store.close()
    reopened = open_store(tmp_path)
    try:
        auth = Authenticator(reopened)
        auth.load()
        assert bootstrap_default_org(reopened, auth) is None
        assert auth.authenticate(f"Bearer {keys['ingest']}", "ingest").org == "default"
    finally:
        reopened.close()


def test_bootstrap_does_nothing_when_orgs_exist(store: Store) -> None:
    ensure_org(store, "acme")
    ensure_org(store, "acme")  # idempotent
    assert store.query("SELECT name FROM orgs") == [("acme",)]
    auth = Authenticator(store)
    assert bootstrap_default_org(store, auth) is None
    assert store.query("SELECT count(*) FROM api_keys") == [(0,)]


def test_key_record_public_has_no_hash() -> None:
    from datetime import UTC, datetime

    record = KeyRecord(
        "abcd1234", "acme", "read", "n", "al_read_abcd1234", "f" * 64, datetime.now(UTC)
    )
    public = record.public()
    assert "f" * 64 not in str(public)
    assert set(public) == {
        "id",
        "name",
        "scope",
        "prefix",
        "source",
        "created_at",
        "last_used_at",
        "revoked_at",
    }
