"""The forward exporter's disk queue: order, durability across reopen, torn tails, bounds.

Each test works on a real directory; "a crash" is a second queue opened on the same directory
without closing the first (nothing but what reached the files survives).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from exporters.otlp.diskqueue import DiskQueue, QueueFull


def queue(path: Path, **bounds: int) -> DiskQueue:
    q = DiskQueue(
        path,
        max_records=bounds.get("max_records", 1000),
        max_bytes=bounds.get("max_bytes", 1 << 20),
        segment_bytes=bounds.get("segment_bytes", 1 << 16),
    )
    q.open()
    return q


def drain(q: DiskQueue) -> list[bytes]:
    out = []
    while (item := q.peek()) is not None:
        out.append(item[1])
        q.ack(item[0])
    return out


def test_fifo_and_ack(tmp_path: Path) -> None:
    q = queue(tmp_path)
    for i in range(5):
        assert q.append(f"r{i}".encode()) == 0
    assert q.records == 5
    item = q.peek()
    assert item is not None and item[1] == b"r0"
    assert q.peek() == item  # not consumed until acknowledged
    q.ack(item[0])
    q.ack(item[0])  # twice is harmless
    assert drain(q) == [b"r1", b"r2", b"r3", b"r4"]
    assert q.records == 0 and q.size_bytes == 0
    q.close()


def test_unacknowledged_records_survive_a_crash_and_acknowledged_ones_stay_gone(
    tmp_path: Path,
) -> None:
    q = queue(tmp_path)
    for i in range(4):
        q.append(f"r{i}".encode())
    first = q.peek()
    assert first is not None
    q.ack(first[0])
    # no close(): the process died here
    again = queue(tmp_path)
    assert drain(again) == [b"r1", b"r2", b"r3"]
    again.append(b"r4")
    again.close()
    assert drain(queue(tmp_path)) == [b"r4"]


def test_a_torn_tail_is_cut_off_and_appending_goes_on(tmp_path: Path) -> None:
    q = queue(tmp_path)
    for i in range(3):
        q.append(f"record-{i}".encode() * 10)
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # the last append was cut short by a crash
    again = queue(tmp_path)
    assert again.records == 2
    again.append(b"after")
    assert drain(again) == [b"record-0" * 10, b"record-1" * 10, b"after"]


def test_a_corrupted_record_is_not_delivered(tmp_path: Path) -> None:
    q = queue(tmp_path)
    q.append(b"good")
    q.append(b"will be damaged")
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert drain(queue(tmp_path)) == [b"good"]


def test_full_queue_drops_the_oldest(tmp_path: Path) -> None:
    q = queue(tmp_path, max_records=3)
    dropped = [q.append(f"r{i}".encode()) for i in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    assert drain(q) == [b"r2", b"r3", b"r4"]
    by_size = queue(tmp_path / "b", max_bytes=3 * (8 + 100))
    for i in range(4):
        by_size.append(bytes([i]) * 100)
    assert [r[0] for r in drain(by_size)] == [1, 2, 3]
    with pytest.raises(QueueFull):
        by_size.append(b"x" * 1000)


def test_a_record_dropped_while_being_sent_is_not_acknowledged_twice(tmp_path: Path) -> None:
    q = queue(tmp_path, max_records=2)
    q.append(b"a")
    q.append(b"b")
    sending = q.peek()
    assert sending is not None
    q.append(b"c")  # drops "a" for room while it is in flight
    q.ack(sending[0])  # must not remove "b"
    assert drain(q) == [b"b", b"c"]


def test_segments_rotate_and_consumed_ones_are_deleted(tmp_path: Path) -> None:
    q = queue(tmp_path, segment_bytes=256)
    for i in range(40):
        q.append(bytes([i]) * 50)
    assert len(list(tmp_path.glob("*.seg"))) > 5
    assert [r[0] for r in drain(q)] == list(range(40))
    assert len(list(tmp_path.glob("*.seg"))) == 1  # only the one being written
    q.close()
    again = queue(tmp_path, segment_bytes=256)
    assert again.records == 0


def test_concurrent_appends_are_all_kept_once(tmp_path: Path) -> None:
    q = queue(tmp_path, segment_bytes=4096)

    def writer(n: int) -> None:
        for i in range(50):
            q.append(f"{n}:{i}".encode())

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = drain(queue(tmp_path, segment_bytes=4096))
    assert sorted(got) == sorted(f"{n}:{i}".encode() for n in range(8) for i in range(50))
    per_writer = [[r for r in got if r.startswith(f"{n}:".encode())] for n in range(8)]
    assert all(w == [f"{n}:{i}".encode() for i in range(50)] for n, w in enumerate(per_writer))
