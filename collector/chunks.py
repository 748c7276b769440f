"""Splits a large OTLP protobuf request into smaller requests of whole items, at the wire level.

The pipeline cuts a request bigger than a chunk before it goes to the decode workers, so a
worker parses and decodes one chunk at a time (a parsed message costs up to ~6x its wire size,
its Python objects ~20x): the memory of decoding is bounded by the chunk, not by the request.
"""

from __future__ import annotations

from collections.abc import Iterator

# Export{Trace,Logs,Metrics}ServiceRequest, Resource{Spans,Logs,Metrics} and
# Scope{Spans,Logs,Metrics} all hold their repeated children in a length-delimited field: 1 at
# the top, 2 below. Everything else in a message is a header copied into every chunk.
_TOP_FIELD = 1
_CHILD_FIELD = 2
_LEN = 2  # wire type of length-delimited fields


class _Unsplittable(Exception):
    """The bytes are not framed as expected: the parser judges the request whole."""


def split(payload: bytes, limit: int) -> list[bytes]:
    """`payload` as requests of about `limit` bytes or less (one item may be larger), cut
    between items (spans, log records, metrics); `[payload]` when it fits or is not framed as
    an Export*ServiceRequest (then it is parsed, and refused or accepted, whole).

    Parsing the chunks gives the same items as parsing the whole: every field other than the
    children is copied into each chunk's resource and scope, in its original order.
    """
    if len(payload) <= limit:
        return [payload]
    try:
        groups = list(_groups(memoryview(payload)))
    except (_Unsplittable, IndexError):
        return [payload]
    if sum(len(items) for _, _, items in groups) < 2:
        return [payload]  # one item: nothing to cut, and no copy made
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for resource_header, scope_header, items in groups:
        taken: list[memoryview] = []
        taken_size = 0
        for item in items:
            if taken and size + taken_size + len(item) > limit:
                current.append(_resource(resource_header, scope_header, taken))
                chunks.append(b"".join(current))
                current, size, taken, taken_size = [], 0, [], 0
            taken.append(item)
            taken_size += len(item)
        entry = _resource(resource_header, scope_header, taken)
        current.append(entry)
        size += len(entry)  # with the headers it repeats
        if size >= limit:
            chunks.append(b"".join(current))
            current, size = [], 0
    if current:
        chunks.append(b"".join(current))
    return chunks


def _groups(buf: memoryview) -> Iterator[tuple[bytes, bytes, list[memoryview]]]:
    """(resource header, scope header, item fields) for each scope of each resource; the items
    are views into `buf`, copied once, into their chunk."""
    for number, wire, start, end, _ in _fields(buf, 0, len(buf)):
        if number != _TOP_FIELD or wire != _LEN:
            raise _Unsplittable  # a field the request type does not have
        resource_header: list[bytes] = []
        scopes: list[tuple[int, int]] = []
        for n, w, s, e, field_start in _fields(buf, start, end):
            if n == _CHILD_FIELD and w == _LEN:
                scopes.append((s, e))
            else:
                resource_header.append(bytes(buf[field_start:e]))
        header = b"".join(resource_header)
        if not scopes:
            yield header, b"", []
        for s, e in scopes:
            scope_header: list[bytes] = []
            items: list[memoryview] = []
            for n, w, _, item_e, field_start in _fields(buf, s, e):
                if n == _CHILD_FIELD and w == _LEN:
                    items.append(buf[field_start:item_e])
                else:
                    scope_header.append(bytes(buf[field_start:item_e]))
            yield header, b"".join(scope_header), items


def _resource(resource_header: bytes, scope_header: bytes, items: list[memoryview]) -> bytes:
    scope = scope_header + b"".join(items)
    resource = resource_header + _field(_CHILD_FIELD, scope)
    return _field(_TOP_FIELD, resource)


def _field(number: int, value: bytes) -> bytes:
    return _varint_bytes(number << 3 | _LEN) + _varint_bytes(len(value)) + value


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, value start, value end, field start) of each field in
    buf[start:end]; a value's bounds are those of its bytes (after the length, for LEN)."""
    i = start
    while i < end:
        field_start = i
        tag, i = _varint(buf, i)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _Unsplittable
        if wire == _LEN:
            length, i = _varint(buf, i)
            value_start, i = i, i + length
        elif wire == 0:
            value_start = i
            _, i = _varint(buf, i)
        elif wire == 1:
            value_start, i = i, i + 8
        elif wire == 5:
            value_start, i = i, i + 4
        else:
            raise _Unsplittable  # groups (deprecated) and invalid wire types
        if i > end:
            raise _Unsplittable
        yield number, wire, value_start, i, field_start


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    b = buf[i]
    if b < 0x80:
        return b, i + 1
    result, shift = b & 0x7F, 7
    while True:
        i += 1
        b = buf[i]
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i + 1
        shift += 7
        if shift > 63:
            raise _Unsplittable
