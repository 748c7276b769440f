"""Shipped data files are found through the installed data package, whatever the working
directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.resources import shipped, shipped_text


@pytest.mark.parametrize(
    "name", ["default.yaml", "prices.json", "fx_rates.json", "task_types.json"]
)
def test_shipped_files_are_found_from_anywhere(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert shipped(name).is_file() and shipped_text(name)


def test_a_file_not_shipped_is_an_error() -> None:
    with pytest.raises(FileNotFoundError, match="no_such_file"):
        shipped_text("no_such_file.json")
