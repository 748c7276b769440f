"""Integer keys of spans and runs: the 64-bit hashes the store looks them up by (dedup of re-sent
spans, the runs table's run_key).
"""

from __future__ import annotations

from hashlib import blake2b


def span_key(org: str, trace_id: bytes, span_id: bytes) -> int:
    """A span's 64-bit identity hash (signed, as stored in `spans.span_key`)."""
    digest = blake2b(trace_id + span_id, digest_size=8, key=org.encode()[:64]).digest()
    return int.from_bytes(digest, "little", signed=True)


def run_key(org: str, run_id: str | None) -> int | None:
    """A run's 64-bit lookup key (`runs.run_key`): the span key of its run span, whose ids the
    48-hex run id joins. None for anything that is not such an id."""
    if run_id is None or len(run_id) != 48:
        return None
    try:
        return span_key(org, bytes.fromhex(run_id[:32]), bytes.fromhex(run_id[32:]))
    except ValueError:
        return None
