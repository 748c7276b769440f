"""A bounded, durable FIFO of byte records on disk: segment files plus a committed read cursor.

The OTLP forward exporter appends each batch here before the pipeline acknowledges it, and its
sender thread reads, sends and acknowledges records in order; a restart resumes at the cursor.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import zlib
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")  # payload length, CRC-32 of the payload
Position = tuple[int, int]  # (segment number, byte offset)


class QueueFull(Exception):
    """A record larger than the whole queue may hold."""


class DiskQueue:
    """Records are appended to the newest segment (`<n>.seg`) and fsynced before `append`
    returns; concurrent appends share one fsync. When the queue would pass `max_records` or
    `max_bytes`, the oldest records are dropped (their count is returned). The cursor file names
    the first record not yet acknowledged; segments wholly before it are deleted. On open, a
    torn tail (a crash mid-append) is cut off at the last whole record."""

    def __init__(
        self,
        directory: Path,
        *,
        max_records: int,
        max_bytes: int,
        segment_bytes: int = 8 * 1024 * 1024,
        fsync: bool = True,
    ) -> None:
        self.directory = directory
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._nonempty = threading.Condition(self._lock)
        self._index: deque[tuple[int, int, int]] = deque()  # (segment, offset, payload length)
        self._bytes = 0
        self._segment = 0
        self._offset = 0
        self._fd = -1
        self._written = 0
        self._synced = 0
        self._rotate_due = False

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        start = self._read_cursor()
        segments = sorted(int(p.stem) for p in self.directory.glob("*.seg") if p.stem.isdigit())
        for n in segments:
            if n < start[0]:
                self._path(n).unlink(missing_ok=True)
                continue
            self._recover(n, start[1] if n == start[0] else 0, last=n == segments[-1])
        self._segment = (segments[-1] + 1) if segments else max(start[0], 1)
        self._open_segment()

    def close(self) -> None:
        with self._sync_lock, self._lock:
            if self._fd >= 0:
                if self._fsync:
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
            self._write_cursor()

    # -- writing ---------------------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Append one record durably; returns how many old records were dropped for room."""
        size = _HEADER.size + len(payload)
        if size > self._max_bytes:
            raise QueueFull(f"a {len(payload)}-byte record is larger than the queue")
        if self._rotate_due:
            with self._sync_lock, self._lock:
                if self._rotate_due:
                    self._rotate()
        with self._lock:
            dropped = 0
            while self._index and (
                len(self._index) >= self._max_records or self._bytes + size > self._max_bytes
            ):
                self._pop_oldest()
                dropped += 1
            if dropped:
                self._write_cursor()
            data = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            self._index.append((self._segment, self._offset, len(payload)))
            self._offset += len(data)
            self._bytes += len(data)
            self._written += len(data)
            target = self._written
            self._rotate_due = self._offset >= self._segment_bytes
            self._nonempty.notify_all()
        self._sync(target)
        return dropped

    def _sync(self, target: int) -> None:
        if not self._fsync:
            return
        with self._sync_lock:  # whoever syncs, syncs everything written so far
            if self._synced >= target:
                return
            with self._lock:
                fd, upto = self._fd, self._written
            os.fsync(fd)
            self._synced = upto

    def _rotate(self) -> None:
        """Start a new segment (both locks held)."""
        if self._fsync:
            os.fsync(self._fd)
        os.close(self._fd)
        self._synced = self._written
        self._segment += 1
        self._open_segment()

    def _open_segment(self) -> None:
        self._fd = os.open(self._path(self._segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._offset = os.fstat(self._fd).st_size
        self._rotate_due = False
        self._fsync_dir()

    # -- reading ---------------------------------------------------------------------------

    def wait(self, timeout: float) -> bool:
        """Wait until a record is queued (or `timeout`); True if one is."""
        with self._nonempty:
            if not self._index:
                self._nonempty.wait(timeout)
            return bool(self._index)

    def peek(self) -> tuple[Position, bytes] | None:
        """The oldest record not yet acknowledged, or None when the queue is empty."""
        while True:
            with self._lock:
                if not self._index:
                    return None
                segment, offset, length = self._index[0]
            data = self._read(segment, offset, length)
            if data is not None:
                return (segment, offset), data
            log.error("forward queue: record at %s:%d is unreadable; skipped", segment, offset)
            self.ack((segment, offset))

    def ack(self, position: Position) -> None:
        """The record at `position` is delivered: move the committed cursor past it."""
        with self._lock:
            if not self._index or self._index[0][:2] != position:
                return  # already dropped for room while it was being sent
            self._pop_oldest()
            self._write_cursor()

    @property
    def records(self) -> int:
        return len(self._index)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    # -- internals -------------------------------------------------------------------------

    def _pop_oldest(self) -> None:
        segment, _, length = self._index.popleft()
        self._bytes -= _HEADER.size + length
        head = self._index[0][0] if self._index else self._segment
        for n in range(segment, head):
            self._path(n).unlink(missing_ok=True)

    def _cursor(self) -> Position:
        return self._index[0][:2] if self._index else (self._segment, self._offset)

    def _write_cursor(self) -> None:
        segment, offset = self._cursor()
        tmp = self.directory / "cursor.tmp"
        with open(tmp, "w") as f:
            json.dump({"segment": segment, "offset": offset}, f)
            f.flush()
            if self._fsync:
                os.fsync(f.fileno())
        os.replace(tmp, self.directory / "cursor")
        self._fsync_dir()

    def _read_cursor(self) -> Position:
        try:
            raw = json.loads((self.directory / "cursor").read_text())
            return int(raw["segment"]), int(raw["offset"])
        except FileNotFoundError:
            return 0, 0
        except (ValueError, KeyError, TypeError) as e:
            # Written atomically, so this is damage from outside: resend rather than lose.
            log.error("forward queue: unreadable cursor (%s); reading from the oldest record", e)
            return 0, 0

    def _recover(self, segment: int, offset: int, *, last: bool) -> None:
        path = self._path(segment)
        size = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(offset)
            while offset + _HEADER.size <= size:
                length, crc = _HEADER.unpack(f.read(_HEADER.size))
                payload = f.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    break
                self._index.append((segment, offset, length))
                self._bytes += _HEADER.size + length
                offset += _HEADER.size + length
        if offset < size:
            what = "a torn last record" if last else "a damaged record"
            log.warning("forward queue: %s at %s:%d; cut off", what, path.name, offset)
            os.truncate(path, offset)

    def _read(self, segment: int, offset: int, length: int) -> bytes | None:
        try:
            with open(self._path(segment), "rb") as f:
                f.seek(offset)
                header = f.read(_HEADER.size)
                payload = f.read(length)
        except FileNotFoundError:
            return None
        if len(header) < _HEADER.size or len(payload) < length:
            return None
        if _HEADER.unpack(header) != (length, zlib.crc32(payload)):
            return None
        return payload

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}.seg"

    def _fsync_dir(self) -> None:
        if not self._fsync:
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
