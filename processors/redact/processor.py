"""The `redact:` processor: masks, hashes or drops secrets and personal data before the commit.

Gets decoded batches (spans, logs, metric points) from the pipeline; one RE2 prefilter runs
column-wise over each JSON/text column so only rows that may hold something are redacted one by
one (`redact_rules.Redactor`); the batch goes on to the next processor and then the store.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from collector.model import Batch, Signal
from processors.redact.rules import RedactConfig, Redactor, RedactRule, glob_prefilter

__all__ = ["REDACTIONS_METRIC", "RedactConfig", "RedactProcessor", "RedactRule", "Redactor"]

REDACTIONS_METRIC = "agentledger_redactions_total"


def _dumps(value: Any) -> str:
    # orjson: the attribute maps of OTLP items, which decode has already checked are valid
    # UTF-8 with finite numbers, ~5x faster than the stdlib encoder.
    return orjson.dumps(value).decode()


# Free-text columns (core and normalised) scanned with the value rules, per signal.
_TEXT_COLUMNS: dict[Signal, tuple[str, ...]] = {
    Signal.TRACES: (
        "name", "status_message", "trace_state", "agent_name", "run_id_external", "session_id",
        "user_id", "tool_name", "tool_call_id", "tool_args", "tool_result", "error_type",
        "input_text", "output_text",
    ),
    Signal.LOGS: ("severity_text", "event_name"),
    Signal.METRICS: ("description",),
}  # fmt: skip


_JSON_COLUMNS: dict[Signal, tuple[str, ...]] = {
    Signal.TRACES: ("attributes", "resource_attributes", "scope_attributes", "events", "links"),
    Signal.LOGS: ("attributes", "resource_attributes", "scope_attributes", "body"),
    Signal.METRICS: ("attributes", "resource_attributes"),
}
_ALL: Any = frozenset({"*"})  # stands for "every row"
_EMPTY_JSON = frozenset({"{}", "[]", "null", '""'})


def _matching(columns: list[list[Any]], pattern: str | None) -> frozenset[str]:
    """The distinct texts of `columns` that `pattern` (RE2) finds something in.

    One call for all columns of a batch: compiling the pattern costs ~0.3 ms a call, the scan
    ~2 ns a byte, so per-column or per-row calls would cost more than the scan itself.
    """
    if pattern is None:
        return _ALL  # type: ignore[no-any-return]
    distinct = dict.fromkeys(itertools.chain.from_iterable(columns))
    for empty in (None, "", *_EMPTY_JSON):
        distinct.pop(empty, None)
    if not distinct:
        return frozenset()
    texts = pa.array(list(distinct), pa.string())
    return frozenset(texts.filter(pc.match_substring_regex(texts, pattern)).to_pylist())


class RedactProcessor:
    """Pure: the same batch in, with every committed column redacted. Place it first in a
    pipeline so normalised columns (excerpts, tool args) derive from redacted attributes; it
    scans those columns too when they are already there."""

    def __init__(self, config: RedactConfig) -> None:
        self._r = Redactor(config)
        self._hits: frozenset[str] = frozenset()
        values = "|".join(f"(?:{r.prefilter})" for r in self._r.value_rules)
        keys = glob_prefilter(self._r.key_globs) if self._r.key_globs else ""
        # None: every row of a JSON column must be looked at (allow list, unsafe key globs).
        self._json_filter: str | None = "|".join(p for p in (values, keys) if p) or "$^"
        if self._r.restricts_keys or keys is None:
            self._json_filter = None
        self._text_filter = values or "$^"

    @property
    def redactor(self) -> Redactor:
        return self._r

    def process(self, batch: Batch) -> Batch:
        if not len(batch):
            return batch
        cols = batch.columns
        r = self._r
        json_names = [n for n in _JSON_COLUMNS[batch.signal] if cols.get(n)]
        text_names = [n for n in _TEXT_COLUMNS[batch.signal] if cols.get(n)]
        # One RE2 call for the whole batch when it can (each call compiles the pattern again);
        # the JSON pattern finds a superset of what the text pattern finds.
        together = self._json_filter is not None
        names = json_names + text_names if together else json_names
        self._hits = _matching([cols[n] for n in names], self._json_filter)
        for i in self._rows(cols.get("attributes")):
            new = r.attributes(batch.attributes[i])
            if new is not batch.attributes[i]:
                batch.attributes[i] = new
                cols["attributes"][i] = _dumps(new)
        self._resources(batch)
        self._json_column(cols.get("scope_attributes"), r.attributes)
        if batch.signal is Signal.TRACES:
            self._events(batch)
            self._json_column(cols.get("links"), self._links)
        if batch.signal is Signal.LOGS:
            self._json_column(cols.get("body"), lambda raw: r.value(raw, field="body"))
        if not together:
            self._hits = _matching([cols[n] for n in text_names], self._text_filter)
        for name in text_names:
            values = cols[name]
            for i in self._rows(values):
                values[i] = r.scan(values[i])
        for rule, n in r.take_counts().items():
            key = (REDACTIONS_METRIC, "rule", rule)
            batch.counters[key] = batch.counters.get(key, 0) + n
        return batch

    def _rows(self, values: list[Any] | None) -> list[int]:
        hits = self._hits
        if not values or not hits:
            return []
        if hits is _ALL:
            return [i for i, v in enumerate(values) if v is not None]
        return [i for i, v in enumerate(values) if v in hits]

    def _resources(self, batch: Batch) -> None:
        cols = batch.columns
        done: dict[str, tuple[dict[str, Any], str]] = {}
        for i in self._rows(cols.get("resource_attributes")):
            text = cols["resource_attributes"][i]
            if text not in done:
                new = self._r.attributes(batch.resources[i])
                done[text] = (new, _dumps(new) if new is not batch.resources[i] else text)
            batch.resources[i], cols["resource_attributes"][i] = done[text]

    def _events(self, batch: Batch) -> None:
        column = batch.columns.get("events")
        for i in self._rows(column):
            assert column is not None
            events = batch.events[i]
            new = [self._event(e) for e in events]
            if any(a is not b for a, b in zip(new, events, strict=True)):
                batch.events[i] = new
                column[i] = _dumps(new)

    def _event(self, event: dict[str, Any]) -> dict[str, Any]:
        attrs = self._r.attributes(event.get("attributes") or {})
        name = self._r.scan(event.get("name") or "")
        if attrs is event.get("attributes") and name == (event.get("name") or ""):
            return event
        return {**event, "name": name, "attributes": attrs}

    def _links(self, links: Any) -> Any:
        if not isinstance(links, list):
            return links
        out = []
        for link in links:
            attrs = link.get("attributes") if isinstance(link, dict) else None
            new = self._r.attributes(attrs) if isinstance(attrs, dict) else attrs
            out.append(link if new is attrs else {**link, "attributes": new})
        return links if all(a is b for a, b in zip(out, links, strict=True)) else out

    def _json_column(self, values: list[Any] | None, redact: Any) -> None:
        """A JSON text column redacted through its parsed value; equal texts once."""
        done: dict[str, str] = {}
        for i in self._rows(values):
            assert values is not None
            text = values[i]
            if text not in done:
                raw = orjson.loads(text)
                new = redact(raw)
                done[text] = text if new is raw else _dumps(new)
            values[i] = done[text]
