"""Shared helpers of the config tests: parse a raw mapping and collect its issues, write a file.

Used by test_config.py, test_configparse.py and test_config_auth.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import parse_config
from collector.configparse import ConfigError, ConfigIssue

REPO = Path(__file__).resolve().parents[2]
INGEST = "al_live_0123abcd_" + "a" * 40
READ = "al_read_4567ef01_" + "b" * 40
ADMIN = "al_admin_89abcdef_" + "c" * 40


def issues_of(raw: object, env: dict[str, str] | None = None) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env or {})
    return caught.value.issues


def messages(raw: object, env: dict[str, str] | None = None) -> dict[str, str]:
    return {issue.path: issue.message for issue in issues_of(raw, env)}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agentledger.yaml"
    path.write_text(text, encoding="utf-8")
    return path
