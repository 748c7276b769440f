"""The SSRF guard of `collector/outbound/client.py`: which URLs and addresses the server may
contact.

URLs come from users (callbacks, attachments, webhooks); `check_destination` refuses one when it
is created, and at delivery names are resolved here, every address is checked, and the httpx
transport built here connects to exactly the address that was checked.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import certifi
import httpcore
import httpx

if TYPE_CHECKING:
    from collector.outbound.config import OutboundPolicy

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""host, port → the addresses to try, in order (default: the system resolver)."""

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LEGACY_V4 = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}", re.I)


class OutboundRefused(ValueError):
    """The URL is refused: not http/https, an address it must not reach (SSRF), or too big."""


def label(url: str) -> str:
    """scheme://host[:port] of a URL: enough to say where, never a path or query secret."""
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid URL>"
    port = f":{u.port}" if u.port else ""
    host = f"[{u.host}]" if ":" in u.host else u.host
    return f"{u.scheme}://{host}{port}"


def literal_ip(host: str) -> IPAddress | None:
    """The address a host literally is: dotted, IPv6, or the legacy forms the C resolver still
    accepts (`2130706433`, `0x7f.1`, `127.1`), which would otherwise sneak past as "names"."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _LEGACY_V4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why the server must not connect to `ip` without `allow_private`, or None if it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (
            ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None
        )
        if embedded is not None:  # the packets go to the IPv4 address: judge that one
            reason = refusal(embedded)
            return f"{reason} (as {ip})" if reason else None
        tunnelled = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if tunnelled is not None and (reason := refusal(tunnelled)):
            return f"{reason} (tunnelled in {ip})"
    kinds = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "a CGNAT (shared) address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    )
    return next((f"{ip} is {why}" for hit, why in kinds if hit), None)


def _refuse(reason: str) -> OutboundRefused:
    return OutboundRefused(f"refused: {reason} (outbound.allow_private is off)")


def check_url(url: str, policy: OutboundPolicy) -> None:
    """Syntax, scheme (http/https) and a literal-address check, without DNS: OutboundRefused."""
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as e:
        raise OutboundRefused(f"refused: not a valid URL ({e})") from None
    if u.scheme not in ("http", "https"):
        shown = u.scheme or "none"
        raise OutboundRefused(f"refused: scheme {shown!r} (only http and https)")
    host = u.host.rstrip(".").lower()
    if not host:
        raise OutboundRefused("refused: the URL has no host")
    if "%" in host and ":" not in host:
        # Browsers decode `%31%32%37.0.0.1` to 127.0.0.1; no real host name needs escapes (an
        # international one is IDNA), so a host written this way is refused, whatever it hides.
        raise OutboundRefused(f"refused: the host {host!r} is percent-encoded; write it plainly")
    if policy.allow_private:
        return
    if host == "localhost" or host.endswith(".localhost"):
        raise _refuse(f"{host} is a loopback name")
    ip = literal_ip(host)
    if ip is not None and (reason := refusal(ip)):
        raise _refuse(reason)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def checked_addresses(
    host: str, port: int, policy: OutboundPolicy, resolver: Resolver | None = None
) -> list[str]:
    """The addresses to connect to for host:port, every one checked (one refused: all refused,
    since the resolver's order is not ours to trust)."""
    ip = literal_ip(host)
    if ip is not None:
        addresses = [str(ip)]
    else:
        try:
            addresses = await (resolver or system_resolver)(host, port)
        except OSError as e:
            raise httpcore.ConnectError(f"cannot resolve {host}: {e}") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
    if not policy.allow_private:
        for address in addresses:
            if reason := refusal(ipaddress.ip_address(address.split("%", 1)[0])):
                raise _refuse(f"{host} resolves to {address}: {reason.split(' is ', 1)[1]}")
    return addresses


async def check_destination(
    url: str, policy: OutboundPolicy, *, resolver: Resolver | None = None
) -> None:
    """The check every URL a user gives gets when it is created (a callback, a webhook, a
    channel, an attachment): what a request to it would refuse, refused now. `check_url`, then
    the host's addresses, each judged as the connection will judge them (`checked_addresses`):
    OutboundRefused if any is refused. A name that does not resolve now (or not within the
    time bound) is not refused: a delivery resolves it again, checks again, and fails as a
    retryable network error if it still cannot."""
    check_url(url, policy)
    if policy.allow_private:
        return
    u = httpx.URL(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        async with asyncio.timeout(policy.timeout_s):
            await checked_addresses(u.host, port, policy, resolver)
    except (httpcore.ConnectError, TimeoutError):
        return


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with resolution done here: it connects to a checked address.
    TLS still runs against the URL's host name (SNI, certificate), which httpcore passes on."""

    def __init__(self, policy: OutboundPolicy, resolver: Resolver | None) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await checked_addresses(host, port, self._policy, self._resolver)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        assert error is not None
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("refused: unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs milliseconds; one verifying context serves every client.
    return ssl.create_default_context(cafile=certifi.where())


def guarded_transport(
    policy: OutboundPolicy, resolver: Resolver | None
) -> httpx.AsyncBaseTransport:
    """An httpx transport whose every connection goes through the guard (no proxies, no UDS)."""
    transport = httpx.AsyncHTTPTransport(verify=_tls_context(), trust_env=False, retries=0)
    # httpx does not take a network backend, so swap in a pool that uses ours.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=_tls_context(), network_backend=_GuardedBackend(policy, resolver)
    )
    return transport
