"""Tests for the `auth:` section (`collector/auth/config.py`): declared keys and orgs, their
shapes, prefixes and scopes, and that a secret never shows in full in an error or a repr.
"""

from __future__ import annotations

import pytest

from collector.auth.config import KeyConfig
from collector.config import org_settings_groups, parse_config
from collector.configparse import ConfigError, ConfigIssue
from tests.collector.confighelp import ADMIN, INGEST, READ, messages

# --- keys and orgs ------------------------------------------------------------------------------


def auth(*keys: dict[str, str], org: str = "acme") -> dict[str, object]:
    return {"auth": {"orgs": [{"name": org, "keys": list(keys)}]}}


def test_valid_keys_load() -> None:
    config = parse_config(
        auth(
            {"scope": "ingest", "key": INGEST, "name": "agents"},
            {"scope": "read", "key": READ},
            {"scope": "admin", "key": ADMIN},
        ),
        {},
    )
    keys = config.auth.orgs[0].keys
    assert [k.key_id for k in keys] == ["0123abcd", "4567ef01", "89abcdef"]
    assert keys[0] == KeyConfig(scope="ingest", key=INGEST, name="agents")


@pytest.mark.parametrize(
    "key",
    [
        "hunter2-but-longer-than-twelve",
        INGEST.upper(),
        INGEST[:-1],
        INGEST + "0",
        "al_test_0123abcd_" + "a" * 40,
        "al_live_0123abc_" + "a" * 41,
    ],
)
def test_malformed_key_is_rejected_without_showing_it(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(auth({"scope": "ingest", "key": key}), {})
    assert caught.value.issues == [
        ConfigIssue(
            "auth.orgs[0].keys[0].key",
            "not a valid agentledger key (expected al_<live|read|admin>_<8 hex id>_"
            "<40 hex secret>, lowercase hex; the value is not shown)",
        )
    ]
    assert key[12:] not in str(caught.value)


@pytest.mark.parametrize(
    ("scope", "key", "message"),
    [
        ("read", INGEST, "an al_live_ key has scope 'ingest', not 'read' (a read key starts "
         "with al_read_)"),
        ("ingest", READ, "an al_read_ key has scope 'read', not 'ingest' (an ingest key starts "
         "with al_live_)"),
        ("admin", READ, "an al_read_ key has scope 'read', not 'admin' (an admin key starts "
         "with al_admin_)"),
    ],
)  # fmt: skip
def test_key_prefix_must_agree_with_scope(scope: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(auth({"scope": scope, "key": key}), {})
    assert caught.value.issues == [ConfigIssue("auth.orgs[0].keys[0].key", message)]
    assert key[12:] not in str(caught.value)


def test_a_secret_in_the_wrong_place_is_shortened_to_12_chars() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(auth({"scope": INGEST, "key": INGEST}), {})
    text = str(caught.value)
    assert "'al_live_0123…'" in text
    assert INGEST[12:] not in text


def test_key_secret_is_not_in_the_repr() -> None:
    config = parse_config(auth({"scope": "ingest", "key": INGEST}), {})
    assert INGEST not in repr(config)
    assert INGEST[17:] not in repr(config)


def test_a_wrong_shape_is_one_issue_not_a_cascade_of_required_fields() -> None:
    assert messages({"auth": {"orgs": [5, {"name": "ok", "keys": ["k"]}]}}) == {
        "auth.orgs[0]": "expected a mapping, got 5",
        "auth.orgs[1].keys[0]": "expected a mapping, got 'k'",
    }


def test_key_scope_and_key_are_required() -> None:
    assert messages(auth({"name": "k"})) == {
        "auth.orgs[0].keys[0].scope": "required",
        "auth.orgs[0].keys[0].key": "required",
    }


def test_duplicate_orgs_and_key_ids_are_rejected() -> None:
    reused = "al_read_0123abcd_" + "d" * 40  # same key id as INGEST
    raw = {
        "auth": {
            "orgs": [
                {"name": "acme", "keys": [{"scope": "ingest", "key": INGEST}]},
                {"name": "acme"},
                {"name": "globex", "keys": [{"scope": "read", "key": reused}]},
            ]
        }
    }
    assert messages(raw) == {
        "auth.orgs[1].name": "duplicate org (also auth.orgs[0])",
        "auth.orgs[2].keys[0].key": "key id 0123abcd is used twice (also auth.orgs[0].keys[0])",
    }


@pytest.mark.parametrize("name", ["", "Acme", "a b", "x" * 65, "acme.io"])
def test_org_name_must_be_a_slug(name: str) -> None:
    assert list(messages({"auth": {"orgs": [{"name": name}]}})) == ["auth.orgs[0].name"]


def test_org_name_slug_accepts_the_documented_alphabet() -> None:
    config = parse_config({"auth": {"orgs": [{"name": "a-b_9"}, {"name": "x" * 64}]}}, {})
    assert [org.name for org in config.auth.orgs] == ["a-b_9", "x" * 64]


# --- settings -----------------------------------------------------------------------------------


def settings(value: object, org: str = "acme") -> dict[str, object]:
    return {"auth": {"orgs": [{"name": "globex"}, {"name": org, "settings": value}]}}


def test_org_settings_load_typed() -> None:
    config = parse_config(
        settings(
            {"compare_enabled": "${env:COMPARE}", "hourly_rate": "${env:RATE}", "plan": "pro"}
        ),
        {"COMPARE": "false", "RATE": "45"},
    )
    assert config.org_settings(org_settings_groups()) == {
        "acme": {"compare_enabled": False, "hourly_rate": 45, "plan": "pro"}
    }


def test_org_settings_errors_carry_their_yaml_path() -> None:
    found = messages(
        settings(
            {
                "compare_enabld": True,
                "currency": "eur",
                "limits": {"requests_per_second": 0},
                "task_type_overrides": {"ticket_triage": -1},
                "plan": "gold",
            }
        )
    )
    assert set(found) == {
        "auth.orgs[1].settings.compare_enabld",
        "auth.orgs[1].settings.currency",
        "auth.orgs[1].settings.limits.requests_per_second",
        "auth.orgs[1].settings.task_type_overrides.ticket_triage",
        "auth.orgs[1].settings.plan",
    }
    assert "did you mean 'compare_enabled'?" in found["auth.orgs[1].settings.compare_enabld"]
    assert "ISO 4217" in found["auth.orgs[1].settings.currency"]


def test_org_settings_must_be_a_mapping() -> None:
    found = messages(settings(["compare_enabled"]))
    assert found == {"auth.orgs[1].settings": "expected a mapping, got a list"}
