"""Fetching published lists: bounded reads of http(s)/file URLs and paths, atomic writes, and
URLs that never carry their credentials into a log line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from collector.prices.fetch import fetch, read_state, redact_url, write_atomically


def test_urls_are_logged_without_credentials() -> None:
    assert redact_url("https://user:pw@prices.example:8443/v1/models?key=s3cret") == (
        "https://prices.example:8443/v1/models"
    )


def test_fetch_reads_paths_and_file_urls_within_a_limit(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_bytes(b"x" * 100)
    assert fetch(str(path)) == fetch(path.as_uri()) == b"x" * 100
    with pytest.raises(ValueError, match="larger than"):
        fetch(str(path), limit=99)
    with pytest.raises(ValueError, match="only http, https and file"):
        fetch("ftp://user:pw@example.com/list.json")
    with pytest.raises(OSError):
        fetch(str(tmp_path / "missing.json"))


def test_write_atomically_replaces_whole_and_keeps_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "book.json"
    path.write_text("old")
    os.chmod(path, 0o640)
    write_atomically(path, '{"new": true}')
    assert path.read_text() == '{"new": true}' and path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["book.json"]  # no temporary file left


def test_an_unreadable_state_is_no_state(tmp_path: Path) -> None:
    assert read_state(None) is None and read_state(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("{broken")
    assert read_state(tmp_path / "bad.json") is None
    (tmp_path / "list.json").write_text("[1]")
    assert read_state(tmp_path / "list.json") is None
