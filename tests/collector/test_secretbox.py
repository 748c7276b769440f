"""Tests of collector/secretbox.py: sealing round trips, tamper and wrong-key refusal, the key
file (0600, created once, shared by concurrent starters), configured keys and previews."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest

from collector.configparse import ConfigIssue
from collector.secretbox import KEY_FILE, SecretBox, SecretsConfig, decode_key, preview

KEY = base64.b64encode(bytes(range(32))).decode()


def test_seal_round_trip_and_fresh_nonces() -> None:
    box = SecretBox(decode_key(KEY))
    for plain in ("sk-ant-api03-abc", "", "ünïcødé ✓", "x" * 10_000):
        token = box.seal(plain)
        assert (token.startswith("v1:") and plain not in token) or not plain
        assert box.unseal(token) == plain
    assert box.seal("same") != box.seal("same")


def test_tampered_token_is_refused() -> None:
    box = SecretBox(decode_key(KEY))
    raw = bytearray(base64.b64decode(box.seal("sk-secret")[3:]))
    for i in (0, 12, len(raw) - 1):  # nonce, ciphertext, tag
        bad = bytearray(raw)
        bad[i] ^= 1
        with pytest.raises(ValueError, match="tampered"):
            box.unseal("v1:" + base64.b64encode(bytes(bad)).decode())


def test_wrong_key_and_malformed_tokens() -> None:
    token = SecretBox(decode_key(KEY)).seal("sk-secret")
    with pytest.raises(ValueError, match="another key"):
        SecretBox(os.urandom(32)).unseal(token)
    box = SecretBox(decode_key(KEY))
    for bad, why in (("sk-secret", "prefix"), ("v1:@@@", "base64"), ("v1:AAAA", "short")):
        with pytest.raises(ValueError, match=why):
            box.unseal(bad)


def test_key_file_created_0600_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    token = SecretBox.open(data).seal("k")
    key_file = data / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert SecretBox.open(data).unseal(token) == "k"  # a restart reads the same key
    assert [p.name for p in data.iterdir()] == [KEY_FILE]  # no temporary left behind


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    boxes: list[SecretBox] = []

    def start() -> None:
        boxes.append(SecretBox.open(tmp_path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    token = boxes[0].seal("shared")
    assert all(box.unseal(token) == "shared" for box in boxes)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    SecretBox.open(tmp_path)
    (tmp_path / KEY_FILE).chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        SecretBox.open(tmp_path)


def test_corrupt_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.write_text("short\n")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="valid key"):
        SecretBox.open(tmp_path)


def test_configured_key_wins_over_the_file(tmp_path: Path) -> None:
    box = SecretBox.open(tmp_path, KEY)
    assert not (tmp_path / KEY_FILE).exists()
    assert SecretBox(bytes(range(32))).unseal(box.seal("x")) == "x"
    urlsafe = base64.urlsafe_b64encode(bytes(range(250, 256)) * 5 + b"ab").decode()
    assert SecretBox.open(tmp_path, urlsafe)


def test_bad_configured_keys() -> None:
    for bad, why in (("not base64!", "base64"), (base64.b64encode(b"x" * 16).decode(), "16")):
        with pytest.raises(ValueError, match=why):
            decode_key(bad)
        issues = SecretsConfig(key=bad).validate()
        assert issues and issues[0].path == "key" and bad not in issues[0].message
    assert SecretsConfig(key=KEY).validate() == [] == SecretsConfig().validate()
    assert isinstance(SecretsConfig(key="x").validate()[0], ConfigIssue)


def test_secrets_never_in_repr() -> None:
    assert KEY not in repr(SecretsConfig(key=KEY))
    assert "hidden" in repr(SecretBox(decode_key(KEY)))


def test_preview() -> None:
    assert preview("sk-ant-api03-XYZ") == "sk-a…"
    assert preview("ab") == "ab…"
