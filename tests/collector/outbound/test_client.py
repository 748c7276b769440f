"""Tests of collector/outbound/client.py: SSRF refusals, connect-to-checked-address, bounds,
signing, delivery with retries; against a real local HTTP receiver (tests/fixtures/receiver.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from collector.outbound.client import (
    OutboundClient,
    OutboundFailed,
    OutboundRefused,
    check_destination,
    check_url,
    deliver,
    fetch,
    post_json,
    retry_after,
    sign,
    verify,
)
from collector.outbound.config import OutboundPolicy
from tests.fixtures.receiver import Answer, Receiver

STRICT = OutboundPolicy()
LOCAL = OutboundPolicy(allow_private=True, timeout_s=5)


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


REFUSED = [
    "http://127.0.0.1/",
    "http://127.8.9.10:8080/x",
    "http://localhost:4318/",
    "http://api.localhost/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # CGNAT
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://[::1]/",
    "http://[::]/",
    "http://[fe80::1]/",
    "http://[fd12:3456::1]/",
    "http://[ff02::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:a9fe:a9fe]/",  # ::ffff:169.254.169.254
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://2130706433/",  # 127.0.0.1 as one number
    "http://0x7f.1/",
    "http://127.1/",
    "http://017700000001/",  # octal
    "http://0251.0376.0251/",  # 169.254.169 (.0) in octal
]


@pytest.mark.parametrize("url", REFUSED)
def test_private_and_special_addresses_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefused, match="refused"):
        check_url(url, STRICT)
    check_url(url, OutboundPolicy(allow_private=True))  # the switch lets them through


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "file:///etc/passwd", "gopher://x/", "javascript:alert(1)"]
)
def test_only_http_and_https(url: str) -> None:
    for policy in (STRICT, LOCAL):
        with pytest.raises(OutboundRefused, match=r"scheme|host"):
            check_url(url, policy)


@pytest.mark.parametrize(
    "url", ["not a url", "http://", "http:///path", "", "http://0251.0376.0251.0376/"]
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefused):
        check_url(url, STRICT)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T0/B0/secret",
        "http://8.8.8.8/",
        "https://[2606:4700:4700::1111]/dns-query",
        "https://[::ffff:8.8.8.8]/",
        "http://cafe.example/",  # hex-looking labels are names, not addresses
    ],
)
def test_public_urls_pass(url: str) -> None:
    check_url(url, STRICT)


class FakeDns:
    """A resolver: host -> its answers in turn (the last one repeats); records each lookup."""

    def __init__(self, **answers: list[str] | list[list[str]]) -> None:
        self.answers = {
            host.replace("_", "."): [a] if a and isinstance(a[0], str) else list(a)
            for host, a in answers.items()
        }
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        turns = self.answers[host]
        return list(turns.pop(0) if len(turns) > 1 else turns[0])  # type: ignore[arg-type]


def test_check_destination_checks_every_address() -> None:
    resolver = FakeDns(
        ok_test=["93.184.216.34"],
        bad_test=["93.184.216.34", "10.0.0.7"],
        meta_test=["169.254.169.254"],
        v6_test=["2606:4700::1", "::1"],
        home_test=["127.0.0.1"],
    )
    asyncio.run(check_destination("https://ok.test/x", STRICT, resolver=resolver))
    for host, why in (
        ("bad.test", "10.0.0.7"),
        ("meta.test", "link-local"),
        ("v6.test", "::1"),
        ("home.test", r"home\.test resolves to 127\.0\.0\.1: a loopback address"),
    ):
        with pytest.raises(OutboundRefused, match=why):
            asyncio.run(check_destination(f"https://{host}/", STRICT, resolver=resolver))
    with pytest.raises(OutboundRefused, match="scheme"):
        asyncio.run(check_destination("ftp://ok.test/", STRICT, resolver=resolver))
    # allow_private: nothing to refuse, so nothing is resolved.
    asyncio.run(check_destination("https://home.test/", LOCAL, resolver=resolver))
    assert resolver.calls.count("home.test") == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://%31%32%37.0.0.1/",  # 127.0.0.1 as a browser decodes it
        "http://%6c%6f%63%61%6c%68%6f%73%74/",  # localhost
        "http://127.0.0.1%2e/",
        "http://ok%2etest/",
    ],
)
def test_a_percent_encoded_host_is_refused_whatever_the_policy(url: str) -> None:
    for policy in (STRICT, LOCAL):
        with pytest.raises(OutboundRefused, match="percent-encoded"):
            check_url(url, policy)
        with pytest.raises(OutboundRefused, match="percent-encoded"):
            asyncio.run(check_destination(url, policy, resolver=FakeDns()))


def test_a_name_that_does_not_resolve_now_is_left_to_delivery() -> None:
    """Refused is what a delivery would refuse; a name without an address now is a retryable
    network error at delivery, not a refusal, so it is not refused up front either."""

    async def nowhere(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    asyncio.run(check_destination("https://nowhere.test/", STRICT, resolver=nowhere))

    async def slow(host: str, port: int) -> list[str]:
        await asyncio.sleep(5)
        return ["127.0.0.1"]

    started = time.monotonic()
    quick = OutboundPolicy(timeout_s=0.2)
    asyncio.run(check_destination("https://slow.test/", quick, resolver=slow))
    assert time.monotonic() - started < 2


def test_connects_to_the_resolved_address_with_the_host_header(rx: Receiver) -> None:
    """The name resolves (through our resolver) to the receiver: the request reaches it by IP
    and still names the host, as TLS SNI would."""
    resolver = FakeDns(svc_test=["127.0.0.1"])

    async def go() -> bytes:
        async with OutboundClient(LOCAL, resolver=resolver) as client:
            return (await client.request("GET", f"http://svc.test:{rx.port}/a")).body

    assert asyncio.run(go()) == b"ok"
    assert rx.requests[0].headers["host"] == f"svc.test:{rx.port}"
    assert resolver.calls == ["svc.test"]


def test_dns_rebinding_is_caught_at_connect_time(rx: Receiver) -> None:
    """The up-front check sees a public address; by the time of the request the name points at
    loopback. The request is refused: the connection goes only to an address checked then."""
    resolver = FakeDns(rebind_test=[["93.184.216.34"], ["127.0.0.1"]])
    url = f"http://rebind.test:{rx.port}/"

    async def go() -> None:
        await check_destination(url, STRICT, resolver=resolver)
        async with OutboundClient(STRICT, resolver=resolver) as client:
            await client.request("GET", url)

    with pytest.raises(OutboundRefused, match=r"rebind\.test resolves to 127\.0\.0\.1"):
        asyncio.run(go())
    assert rx.requests == []


def test_literal_loopback_is_refused_before_any_connection(rx: Receiver) -> None:
    with pytest.raises(OutboundRefused):
        asyncio.run(fetch(rx.url("/"), STRICT))
    assert rx.requests == []


def test_fetch_returns_body_and_content_type(rx: Receiver) -> None:
    rx.script("/img", Answer(body=b"\x89PNG...", headers={"content-type": "image/png"}))
    assert asyncio.run(fetch(rx.url("/img"), LOCAL)) == (b"\x89PNG...", "image/png")
    rx.script("/gone", Answer(404, b"no"))
    with pytest.raises(OutboundFailed) as e:
        asyncio.run(fetch(rx.url("/gone"), LOCAL))
    assert e.value.status == 404


@pytest.mark.parametrize("chunked", [False, True])
def test_size_bound(rx: Receiver, chunked: bool) -> None:
    policy = OutboundPolicy(allow_private=True, max_bytes=100_000)
    rx.script("/big", Answer(body=b"x" * 300_000, chunked=chunked))
    with pytest.raises(OutboundRefused, match="100000"):
        asyncio.run(fetch(rx.url("/big"), policy))
    rx.script("/fits", Answer(body=b"x" * 100_000, chunked=chunked))
    assert len(asyncio.run(fetch(rx.url("/fits"), policy))[0]) == 100_000


def test_time_bound(rx: Receiver) -> None:
    rx.script("/slow", Answer(delay_s=3))
    started = time.monotonic()
    with pytest.raises(OutboundFailed, match=r"0\.5s") as e:
        asyncio.run(fetch(rx.url("/slow"), OutboundPolicy(allow_private=True, timeout_s=0.5)))
    assert e.value.status is None
    assert time.monotonic() - started < 2


def test_connection_refused_is_a_failure_without_status() -> None:
    with Receiver() as gone:
        url = gone.url("/")
    with pytest.raises(OutboundFailed) as e:
        asyncio.run(fetch(url, LOCAL))
    assert e.value.status is None


def test_redirects_are_followed_and_each_hop_rechecked(rx: Receiver) -> None:
    rx.script("/a", Answer(302, headers={"location": "/b"}))
    rx.script("/b", Answer(301, headers={"location": rx.url("/c")}))
    rx.script("/c", Answer(body=b"final"))
    assert asyncio.run(fetch(rx.url("/a"), LOCAL))[0] == b"final"
    rx.script("/evil", Answer(302, headers={"location": "file:///etc/passwd"}))
    with pytest.raises(OutboundRefused, match="scheme"):
        asyncio.run(fetch(rx.url("/evil"), LOCAL))
    rx.script("/loop", *[Answer(302, headers={"location": "/loop"})] * 5)
    with pytest.raises(OutboundFailed, match="more than 3 redirects"):
        asyncio.run(fetch(rx.url("/loop"), LOCAL))


def test_sign_and_verify() -> None:
    body = b'{"event":"log.flagged"}'
    header = sign("s3cret", body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify("s3cret", body, header, now=1_700_000_100)
    assert not verify("s3cret", body + b" ", header, now=1_700_000_100)
    assert not verify("other", body, header, now=1_700_000_100)
    assert not verify("s3cret", body, header, now=1_700_000_301)  # too old
    assert not verify("s3cret", body, header, now=1_699_999_000)  # from the future
    for bad in ("", "v1=abc", "t=x,v1=abc", "t=1,t=2,v1=abc", "garbage"):
        assert not verify("s3cret", body, bad)
    rotated = "t=1700000000,v1=" + "0" * 64 + "," + header.split(",")[1]
    assert verify("s3cret", body, rotated, now=1_700_000_000)


def test_post_json_is_compact_and_signed(rx: Receiver) -> None:
    payload = {"event": "alert.triggered", "value": 0.75, "name": "coût"}
    status = asyncio.run(
        post_json(rx.url("/hook"), payload, policy=LOCAL, secret="whsec", headers={"X-A": "1"})
    )
    assert status == 200
    req = rx.requests[0]
    assert req.method == "POST" and req.headers["content-type"] == "application/json"
    assert req.body == json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    assert verify("whsec", req.body, req.headers["x-agentledger-signature"])
    assert req.headers["x-a"] == "1"
    asyncio.run(post_json(rx.url("/plain"), payload, policy=LOCAL))
    assert "x-agentledger-signature" not in rx.requests[1].headers


def test_post_redirects(rx: Receiver) -> None:
    with Receiver() as other:
        rx.script("/307", Answer(307, headers={"location": other.url("/moved")}))
        asyncio.run(post_json(rx.url("/307"), {"a": 1}, policy=LOCAL, secret="k"))
        moved = other.requests[0]
        assert moved.method == "POST" and moved.body == b'{"a":1}'
        assert "x-agentledger-signature" not in moved.headers  # another origin: not sent on
    rx.script("/302", Answer(302, headers={"location": "/x"}))
    with pytest.raises(OutboundFailed) as e:  # a 302 would turn the POST into a GET
        asyncio.run(post_json(rx.url("/302"), {"a": 1}, policy=LOCAL))
    assert e.value.status == 302


def test_deliver_retries_5xx_then_succeeds(rx: Receiver) -> None:
    rx.script("/h", Answer(503), Answer(500), Answer(200))
    ok = asyncio.run(deliver(rx.url("/h"), {"a": 1}, policy=LOCAL, base_delay_s=0.01))
    assert ok and len(rx.requests) == 3


def test_deliver_honours_retry_after(rx: Receiver) -> None:
    rx.script("/h", Answer(429, headers={"retry-after": "1"}), Answer(200))
    started = time.monotonic()
    assert asyncio.run(deliver(rx.url("/h"), {}, policy=LOCAL, base_delay_s=0.01))
    assert time.monotonic() - started >= 0.95
    assert len(rx.requests) == 2


def test_deliver_does_not_retry_client_errors(rx: Receiver) -> None:
    rx.script("/h", Answer(400), Answer(200))
    assert not asyncio.run(deliver(rx.url("/h"), {}, policy=LOCAL, base_delay_s=0.01))
    assert len(rx.requests) == 1
    rx.script("/t", Answer(408), Answer(200))
    assert asyncio.run(deliver(rx.url("/t"), {}, policy=LOCAL, base_delay_s=0.01))


def test_deliver_gives_up_after_attempts(rx: Receiver) -> None:
    rx.script("/h", *[Answer(502)] * 10)
    assert not asyncio.run(deliver(rx.url("/h"), {}, policy=LOCAL, attempts=3, base_delay_s=0.01))
    assert len(rx.requests) == 3


def test_deliver_never_sends_to_a_refused_url(rx: Receiver) -> None:
    assert not asyncio.run(deliver(rx.url("/h"), {}, policy=STRICT, base_delay_s=0.01))
    assert rx.requests == []


def test_retry_after_forms() -> None:
    assert retry_after("7") == 7.0
    assert retry_after(None) is None and retry_after("soon") is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= (retry_after(future) or 0) <= 31


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        OutboundPolicy(timeout_s=0)
    with pytest.raises(ValueError):
        OutboundPolicy(max_bytes=0)


def test_system_resolver_path(rx: Receiver) -> None:
    """Without a fake resolver: the system resolves `localhost`; every address it gives is
    tried in turn (the receiver listens on 127.0.0.1 only, ::1 may come first)."""
    body, _ = asyncio.run(fetch(f"http://localhost:{rx.port}/", LOCAL))
    assert body == b"ok" and rx.requests[0].headers["host"] == f"localhost:{rx.port}"
