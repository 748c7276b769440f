"""Every request the server makes to a URL a user gave us: SSRF guard, bounds, signing, retries.

Callers (callbacks, attachments, the LLM judge, notification channels) hand in a URL and an
`OutboundPolicy`; requests leave through httpx with a transport that resolves and checks each
address itself and connects to exactly that address, so DNS rebinding cannot slip past the check.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from collector.outbound.config import OutboundPolicy
from collector.outbound.guard import (
    OutboundRefused,
    Resolver,
    check_destination,
    check_url,
    guarded_transport,
    label,
)

__all__ = [
    "SIGNATURE_HEADER", "OutboundClient", "OutboundFailed", "OutboundPolicy", "OutboundRefused",
    "Response", "backoff", "check_destination", "check_url", "deliver", "deliver_or_error",
    "fetch", "label", "post_json", "retry_after", "retryable", "sign", "verify",
]  # fmt: skip

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Agentledger-Signature"
USER_AGENT = "agentledger/0.1 (+outbound)"
_REDIRECTS = (301, 302, 303, 307, 308)
_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "cookie", SIGNATURE_HEADER.lower())


class OutboundFailed(Exception):
    """Network error, timeout or a non-2xx answer. `status` is None when nothing was answered;
    `retry_after_s` is the server's Retry-After (429/503), if it sent one; `permanent` marks a
    failure without a status that another try cannot fix (an SMTP 5xx rejection)."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        retry_after_s: float | None = None,
        *,
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s
        self.permanent = permanent


@dataclass(frozen=True)
class Response:
    """A whole (bounded) answer: the final URL after redirects, its status, headers and body."""

    url: str
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def content_type(self) -> str:
        return str(self.headers.get("content-type", ""))


class OutboundClient:
    """A pooled client for many requests under one policy (the judge, a channel); the module
    functions make a short-lived one when none is given. `resolver` replaces DNS (tests)."""

    def __init__(self, policy: OutboundPolicy, *, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self._client = httpx.AsyncClient(
            transport=guarded_transport(policy, resolver),
            follow_redirects=False,
            trust_env=False,  # an env proxy would connect for us, past the guard
            timeout=httpx.Timeout(policy.timeout_s),
            headers={"User-Agent": USER_AGENT},
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Any status comes back as a Response; OutboundRefused for a refused URL or an answer
        over `max_bytes`, OutboundFailed for network errors and the time bound."""
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                return await self._follow(method, url, content, dict(headers or {}))
        except TimeoutError:
            raise OutboundFailed(
                f"{label(url)}: no answer within {self.policy.timeout_s:g}s"
            ) from None

    async def _follow(
        self, method: str, url: str, content: bytes | None, headers: dict[str, str]
    ) -> Response:
        for _hop in range(self.policy.max_redirects + 1):
            check_url(url, self.policy)
            response = await self._once(method, url, content, headers)
            location = response.headers.get("location")
            if response.status not in _REDIRECTS or location is None:
                return response
            if method != "GET" and response.status not in (307, 308):
                # Turning a POST into a GET would "deliver" without the body: report it instead.
                return response
            target = str(httpx.URL(url).join(location))
            if httpx.URL(target).netloc != httpx.URL(url).netloc:
                headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
            url = target
        raise OutboundFailed(f"{label(url)}: more than {self.policy.max_redirects} redirects")

    async def _once(
        self, method: str, url: str, content: bytes | None, headers: dict[str, str]
    ) -> Response:
        limit = self.policy.max_bytes
        try:
            request = self._client.build_request(method, url, content=content, headers=headers)
            response = await self._client.send(request, stream=True)
            try:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise OutboundRefused(f"{label(url)}: answer of {declared} bytes > {limit}")
                body = bytearray()
                async for chunk in response.aiter_bytes():  # decoded: a gzip bomb stops early
                    body += chunk
                    if len(body) > limit:
                        raise OutboundRefused(f"{label(url)}: answer larger than {limit} bytes")
            finally:
                await response.aclose()
        except httpx.HTTPError as e:
            reason = type(e).__name__ + (f": {e}" if str(e) else "")
            raise OutboundFailed(f"{label(url)}: {reason}") from None
        return Response(url, response.status_code, response.headers, bytes(body))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> OutboundClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _with_client(
    policy: OutboundPolicy,
    client: OutboundClient | None,
    call: Callable[[OutboundClient], Awaitable[Response]],
) -> Response:
    if client is not None:
        return await call(client)
    async with OutboundClient(policy) as own:
        return await call(own)


def retry_after(value: str | None) -> float | None:
    """A Retry-After header (delta-seconds or an HTTP date) in seconds from now, or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _raise_for_status(response: Response) -> None:
    if 200 <= response.status < 300:
        return
    wait = retry_after(response.headers.get("retry-after"))
    raise OutboundFailed(f"{label(response.url)} answered {response.status}", response.status, wait)


async def fetch(
    url: str, policy: OutboundPolicy, *, client: OutboundClient | None = None
) -> tuple[bytes, str]:
    """GET a URL (an attachment): (body, content-type). Redirects are followed, each re-checked."""
    response = await _with_client(policy, client, lambda c: c.request("GET", url))
    _raise_for_status(response)
    return response.body, response.content_type


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `X-Agentledger-Signature` value: "t=<unix s>,v1=<hex HMAC-SHA256 of "<t>." + body>"."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str, body: bytes, header: str, tolerance_s: int = 300, now: int | None = None
) -> bool:
    """Whether `header` signs `body` with `secret` and its timestamp is within `tolerance_s`."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    stamps = parts.get("t", [])
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    timestamp = int(stamps[0])
    if abs((int(time.time()) if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))


async def post_json(
    url: str,
    payload: Mapping[str, Any],
    *,
    policy: OutboundPolicy,
    secret: str | None = None,
    headers: Mapping[str, str] | None = None,
    client: OutboundClient | None = None,
) -> int:
    """POST compact JSON (signed when `secret` is given); the 2xx status, else OutboundFailed."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    if secret is not None:
        sent[SIGNATURE_HEADER] = sign(secret, body, int(time.time()))
    response = await _with_client(
        policy, client, lambda c: c.request("POST", url, content=body, headers=sent)
    )
    _raise_for_status(response)
    return response.status


def retryable(error: OutboundFailed) -> bool:
    """Network errors, timeouts, 5xx, 408 and 429 are worth another try; other answers are not."""
    if error.permanent:
        return False
    return error.status is None or error.status >= 500 or error.status in (408, 429)


def backoff(attempt: int, base_delay_s: float, max_delay_s: float) -> float:
    """Delay before retry number `attempt` (0-based): exponential, with "equal jitter"."""
    delay = min(max_delay_s, base_delay_s * 2.0**attempt)
    return delay / 2 + random.uniform(0, delay / 2)


async def deliver_or_error(
    url: str,
    payload: Mapping[str, Any],
    *,
    policy: OutboundPolicy,
    secret: str | None = None,
    headers: Mapping[str, str] | None = None,
    attempts: int = 5,
    base_delay_s: float = 1.0,
    max_delay_s: float = 60.0,
    client: OutboundClient | None = None,
) -> Exception | None:
    """`deliver`, but returns the last error (None when delivered) for callers that raise it."""
    last: Exception | None = None
    for attempt in range(max(1, attempts)):
        try:
            await post_json(
                url, payload, policy=policy, secret=secret, headers=headers, client=client
            )
            return None
        except OutboundRefused as e:
            log.warning("outbound delivery refused: %s", e)
            return e
        except OutboundFailed as e:
            last = e
            if not retryable(e) or attempt + 1 >= attempts:
                break
            delay = backoff(attempt, base_delay_s, max_delay_s)
            if e.retry_after_s is not None:
                delay = max(delay, min(e.retry_after_s, max_delay_s))
            log.info("outbound delivery failed (%s); retry %d in %.1fs", e, attempt + 1, delay)
            await asyncio.sleep(delay)
    log.warning("outbound delivery gave up after %d attempt(s): %s", attempts, last)
    return last


async def deliver(
    url: str,
    payload: Mapping[str, Any],
    *,
    policy: OutboundPolicy,
    secret: str | None = None,
    headers: Mapping[str, str] | None = None,
    attempts: int = 5,
    base_delay_s: float = 1.0,
    max_delay_s: float = 60.0,
    client: OutboundClient | None = None,
) -> bool:
    """post_json with exponential backoff + jitter on network errors, 5xx, 408 and 429 (waiting
    at least the Retry-After). True when delivered; False after the last attempt, on another
    4xx, or for a refused URL (logged, never retried)."""
    error = await deliver_or_error(
        url,
        payload,
        policy=policy,
        secret=secret,
        headers=headers,
        attempts=attempts,
        base_delay_s=base_delay_s,
        max_delay_s=max_delay_s,
        client=client,
    )
    return error is None
