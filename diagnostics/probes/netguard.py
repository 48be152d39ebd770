"""Which addresses a probe may connect to: never link-local (cloud metadata),
loopback, private, shared (100.64/10), multicast, reserved or unspecified ones,
IPv4 or IPv6, unless TARGET_ALLOWED_NETWORKS lists a network holding them.

A target's host is resolved and EVERY address it resolves to is checked: when the
target is saved (a clear error naming the address) and again when a probe
connects. The HTTP probes (requests) and the Kubernetes client connect through
`GuardedPoolManager`, which resolves, checks and connects to the address it
checked (so a name that resolves to a public address when checked and to
169.254.169.254 a moment later, DNS rebinding, reaches nothing) and never follows
a redirect.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .base import ProbeError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "postgres": 5432,
    "postgresql": 5432,
    "redis": 6379,
    "rediss": 6379,
    "amqp": 5672,
    "amqps": 5671,
}


class ForbiddenAddress(ProbeError):
    """A target's host is (or resolves to) an address no probe may reach."""


def parse_networks(values: Iterable[str]) -> list[IPNetwork]:
    """TARGET_ALLOWED_NETWORKS as networks; a malformed entry is a ValueError naming it."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"TARGET_ALLOWED_NETWORKS: {value!r} is not a network (e.g. 10.0.0.0/8, fd00::/8)"
            ) from None
    return networks


def allowed_networks() -> list[IPNetwork]:
    return parse_networks(getattr(settings, "TARGET_ALLOWED_NETWORKS", []) or [])


def _kind(address: IPAddress) -> str:
    """What kind of non-public address this is ("" for a public one)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return _kind(address.ipv4_mapped)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata)"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if address in ipaddress.ip_network("100.64.0.0/10"):
        return "shared (carrier-grade NAT)"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return ""


def forbidden_kind(address: str | IPAddress) -> str:
    """What kind of forbidden address this is ("" when a probe may connect to it)."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    kind = _kind(ip)
    if not kind:
        return ""
    plain = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    if any(plain in network or ip in network for network in allowed_networks()):
        return ""
    return kind


ADVICE = "targets may not point there unless TARGET_ALLOWED_NETWORKS lists its network"


def _same(host: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")) == ipaddress.ip_address(address)
    except ValueError:
        return False


def _refusal(host: str, address: str, kind: str) -> str:
    if _same(host, address):
        return f"{host.strip('[]')} is a {kind} address: {ADVICE}"
    return f"{host} resolves to {address}, a {kind} address: {ADVICE}"


def address_refusal(address: str | IPAddress) -> str:
    """Why a probe may not connect to this address ("" when it may)."""
    kind = forbidden_kind(address)
    return _refusal(str(address), str(address), kind) if kind else ""


def resolve(host: str, port: int | None = None) -> list[str]:
    """Every address the host resolves to (the host itself when it is an address).
    socket.gaierror when it does not resolve."""
    host = host.strip("[]")
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    found = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    addresses: list[str] = []
    for *_, sockaddr in found:
        address = str(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
        if address not in addresses:
            addresses.append(address)
    return addresses


def checked_addresses(host: str, port: int | None = None, *, what: str = "") -> list[str]:
    """The addresses to connect to for `host`: all of them allowed, else
    ForbiddenAddress naming the first that is not (nothing is connected to)."""
    prefix = f"{what}: " if what else ""
    try:
        addresses = resolve(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise ProbeError(f"{prefix}host name {host} does not resolve ({exc})") from None
    if not addresses:
        raise ProbeError(f"{prefix}host name {host} resolves to no address")
    for address in addresses:
        if kind := forbidden_kind(address):
            raise ForbiddenAddress(f"{prefix}{_refusal(host, address, kind)}")
    return addresses


def host_refusal(host: str, port: int | None = None, *, unresolved_ok: bool = True) -> str:
    """Why this host may not be a target's ("" when it may). A name that does not
    resolve here (the web server may not see the platform's internal names) passes
    when `unresolved_ok`: the probe checks it again when it connects."""
    try:
        addresses = resolve(host or "localhost", port)
    except (socket.gaierror, UnicodeError):
        return "" if unresolved_ok else f"host name {host} does not resolve"
    for address in addresses:
        if kind := forbidden_kind(address):
            return _refusal(host or "localhost", address, kind)
    return ""


def url_host(url: str) -> tuple[str, int | None]:
    """The host (empty: the local machine, e.g. a Unix socket) and port of a URL."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname or "", port or DEFAULT_PORTS.get(parts.scheme.lower())


def url_hosts(url: str) -> list[tuple[str, int | None]]:
    """Every host of a URL: libpq's may list several (postgres://a:5432,b:5433/db)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    if "," not in netloc:
        return [url_host(url)]
    default = DEFAULT_PORTS.get(parts.scheme.lower())
    hosts = []
    for item in netloc.split(","):
        found = urlsplit(f"//{item}")
        try:
            port = found.port
        except ValueError:
            port = None
        hosts.append((found.hostname or "", port or default))
    return hosts


def url_refusal(url: str, *, unresolved_ok: bool = True) -> str:
    """Why a target may not point at this URL's host(s) ("" when it may); a URL
    without a host means this machine (loopback)."""
    for host, port in url_hosts(url):
        if refusal := host_refusal(host or "localhost", port, unresolved_ok=unresolved_ok):
            return refusal
    return ""


def check_url(url: str, what: str) -> None:
    """Refuse (ForbiddenAddress / ProbeError) before connecting to any host of `url`."""
    for host, port in url_hosts(url):
        checked_addresses(host or "localhost", port, what=what)


# --- connections that connect only to the address they checked ------------------------


class _GuardedConnectionMixin:
    _dns_host: str
    port: int

    def _new_conn(self) -> socket.socket:
        name = self._dns_host
        try:
            addresses = resolve(name, self.port)
        except socket.gaierror as exc:  # as urllib3 says it: the probes word it
            raise urllib3.exceptions.NameResolutionError(name, self, exc) from exc  # type: ignore[arg-type]
        for address in addresses:
            if kind := forbidden_kind(address):
                raise ForbiddenAddress(_refusal(name, address, kind))
        failure: Exception | None = None
        for address in addresses:
            self._dns_host = address  # connect to exactly the address checked
            try:
                return super()._new_conn()  # type: ignore[misc]
            except (
                urllib3.exceptions.NewConnectionError,
                urllib3.exceptions.ConnectTimeoutError,
            ) as exc:
                failure = exc
            finally:
                self._dns_host = name  # the Host header, SNI and certificate use the name
        assert failure is not None
        raise failure


class GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedPoolManager(urllib3.PoolManager):
    """A PoolManager whose connections check their address first and which never
    follows a redirect (a 3xx is handed back as it came)."""

    def __init__(self, *args: Any, check_addresses: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if check_addresses:
            self.pool_classes_by_scheme = {
                "http": GuardedHTTPConnectionPool,
                "https": GuardedHTTPSConnectionPool,
            }

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:
        return super().urlopen(method, url, redirect=False, **kw)


def guard_pool_manager(
    manager: urllib3.PoolManager, *, check_addresses: bool = True
) -> urllib3.PoolManager:
    """The same pool manager (its TLS and pool settings), made a guarded one."""
    guarded = GuardedPoolManager(check_addresses=check_addresses)
    guarded.connection_pool_kw = dict(manager.connection_pool_kw)
    guarded.headers = manager.headers
    manager.clear()
    return guarded


class GuardedAdapter(HTTPAdapter):
    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **kw: Any
    ) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = GuardedPoolManager(
            num_pools=connections, maxsize=maxsize, block=block, **kw
        )


class GuardedSession(requests.Session):
    """A requests session that connects only to allowed addresses (the one it
    checked) and never follows a redirect, whatever the caller asks."""

    def __init__(self) -> None:
        super().__init__()
        self.mount("http://", GuardedAdapter())
        self.mount("https://", GuardedAdapter())

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs["allow_redirects"] = False
        return super().request(method, url, *args, **kwargs)
