"""Tests for `collector/cli.py` in process: every option of every command says what it does, and
JSON logs keep the fields a log call passes."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from collector.cli import _JsonFormatter, _parser


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_every_option_and_command_has_help_text() -> None:
    missing = [
        f"{p.prog} {'/'.join(a.option_strings) or a.dest}"
        for p in _parsers(_parser())
        for a in p._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        and not (a.help and a.help.strip())
    ]
    assert missing == []


def test_json_logs_keep_the_fields_a_call_passes_as_extra() -> None:
    formatter = _JsonFormatter()
    record = logging.makeLogRecord(
        {"name": "collector.x", "levelname": "WARNING", "msg": "slow %s", "args": ("commit",)}
    )
    record.__dict__.update({"org": "acme", "rows": 12, "path": Path("/d")})
    line = json.loads(formatter.format(record))
    assert line["message"] == "slow commit" and line["level"] == "warning"
    assert (line["org"], line["rows"], line["path"]) == ("acme", 12, "/d")
    assert "args" not in line and "msg" not in line
