"""The SSRF guard: outbound HTTP only to addresses that were checked, and to nothing else.

A URL given by a client (a webhook endpoint, later a URL to import from) must not make a server
of ours call into its own network: a loopback admin port, a database on a private address, the
cloud's metadata service on a link-local one. The guard therefore

1. parses the URL: ``https`` only (``http`` too when private targets are allowed), no user
   name or password in it, a host;
2. resolves the host **once** and checks **every** address it resolves to (a name with one
   public and one private address is refused: which one a later lookup would pick is not ours
   to decide);
3. connects to the checked address itself (the connection is *pinned*): the ``Host`` header,
   TLS SNI and certificate verification still use the URL's host name, but no second lookup
   happens, so a DNS answer that changes between the check and the connection (DNS rebinding)
   cannot move the request elsewhere;
4. follows redirects only when the caller asks (``max_redirects``), checking and pinning each
   hop again as in 1-3.

A ``deadline`` cuts the connection whatever it is doing (connecting, waiting, reading the
body); ``on_open`` hands the caller a function that cuts it at once from another thread (a
worker's shutdown or a job's cancel while a download runs).

Refused ranges (:func:`refusal` names the reason): loopback (127/8, ::1), private (10/8,
172.16/12, 192.168/16, fc00::/7, the deprecated fec0::/10), shared/CGNAT (100.64/10), link-local
(169.254/16, fe80::/10), multicast, unspecified (0.0.0.0, ::), broadcast, and every other
special-purpose (not globally reachable) range; IPv6 forms that carry an IPv4 address
(IPv4-mapped ``::ffff:a.b.c.d``, 6to4, NAT64) are judged by that address.
``Policy(allow_private=True)`` (development and tests) lets loopback, private and shared
addresses through, and plain ``http``; the others stay refused whatever the policy.

Errors::

    NetGuardError          anything this module raises on purpose
     ├── Refused           the URL or one of its addresses may not be called (``reason``)
     └── Unresolvable      the host name does not resolve

Connection and protocol failures are the standard library's (``OSError``, ``ssl.SSLError``,
``http.client.HTTPException``); callers treat them as failed attempts.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``resolver(host, port)`` -> the host's addresses as text; the default asks the system
#: (``getaddrinfo``). Tests inject their own to play DNS.
Resolver = Callable[[str, int], Sequence[str]]

#: Why an address is refused, as told to the client.
REASONS = {
    "loopback": "a loopback address",
    "private": "a private-network address",
    "shared": "a shared (carrier-grade NAT, 100.64.0.0/10) address",
    "link_local": "a link-local address (where cloud metadata services answer)",
    "multicast": "a multicast address",
    "unspecified": "the unspecified address",
    "broadcast": "the broadcast address",
    "reserved": "a reserved or special-purpose address, not reachable on the internet",
}
#: The reasons ``Policy(allow_private=True)`` lets through.
PRIVATE_REASONS = frozenset({"loopback", "private", "shared"})
_PRIVATE_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")
#: Special-purpose ranges of the IANA registries that are not reachable on the internet, listed
#: here too so the verdict does not depend on the Python version's ``is_global`` tables.
_RESERVED_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "3fff::/20",
        "5f00::/16",
    )
)
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
#: NAT64 prefixes (RFC 6052, RFC 8215): the last 32 bits are an IPv4 address.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
#: Redirect statuses a caller that follows redirects follows.
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class NetGuardError(Exception):
    """Raised on purpose by this module; ``str()`` is a message fit for the client."""


class Refused(NetGuardError):
    """Raised when a URL, or an address its host resolves to, may not be called. ``reason``:
    ``scheme``, ``credentials``, ``host``, or a key of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Unresolvable(NetGuardError):
    """Raised when the URL's host name does not resolve to any address."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not be called (a key of :data:`REASONS`), or None if it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return refusal(embedded)
    if address.is_unspecified or (address.version == 4 and int(address) >> 24 == 0):
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link_local"
    if address.is_multicast:
        return "multicast"
    if address == _BROADCAST:
        return "broadcast"
    if address in _SHARED:
        return "shared"
    if any(address in net for net in _PRIVATE_NETS):
        return "private"
    if not address.is_global or address.is_reserved or any(address in n for n in _RESERVED_NETS):
        return "reserved"
    return None


@dataclass(frozen=True, slots=True)
class Policy:
    """What the guard lets through. ``allow_private``: loopback, private and shared addresses,
    and ``http`` URLs (development and tests)."""

    allow_private: bool = False

    @property
    def schemes(self) -> tuple[str, ...]:
        return ("https", "http") if self.allow_private else ("https",)

    def refusal(self, address: IPAddress) -> str | None:
        reason = refusal(address)
        if reason in PRIVATE_REASONS and self.allow_private:
            return None
        return reason


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses, in the system's order of preference, each once."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:  # ValueError: a NUL in the name
        raise Unresolvable(f"the host name {host!r} does not resolve ({exc})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: where the request line, ``Host`` and TLS point (``host``, the URL's name)
    and where the connection goes (``address``, checked)."""

    url: str
    scheme: str
    host: str
    port: int
    #: Path and query, as sent in the request line.
    path: str
    address: str


def parse(url: str, policy: Policy) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of ``url`` if its form is allowed; no lookup happens."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise Refused("host", f"the URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in policy.schemes:
        allowed = " or ".join(f"{s}://" for s in policy.schemes)
        raise Refused("scheme", f"the URL must start with {allowed} (got {scheme or 'none'})")
    if parts.username is not None or parts.password is not None:
        raise Refused("credentials", "the URL must not hold a user name or password")
    host = parts.hostname
    if not host:
        raise Refused("host", "the URL must name a host")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise Refused("host", f"the host name {host!r} is not a valid domain name") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host.rstrip(".") or host, port or (443 if scheme == "https" else 80), path


def check_url(url: str, policy: Policy, resolver: Resolver = system_resolver) -> Target:
    """Parse ``url``, resolve its host once and check every address; the first one is the one
    to connect to. Raises :class:`Refused` or :class:`Unresolvable`."""
    scheme, host, port, path = parse(url, policy)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    texts = [str(literal)] if literal is not None else list(resolver(host, port))
    if not texts:
        raise Unresolvable(f"the host name {host!r} does not resolve")
    for text in texts:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
        reason = policy.refusal(address)
        if reason is not None:
            shown = host if literal is not None else f"{host} resolves to {address}, which"
            raise Refused(reason, f"{shown} is {REASONS[reason]}; refused")
    return Target(url, scheme, host, port, path, texts[0])


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to a checked address; ``host`` stays the URL's (``Host`` header)."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.pinned = target.address

    #: The connected socket, kept after ``getresponse`` hands it over to the response (an
    #: answer that closes the connection sets ``sock`` to None): what :func:`_abort` cuts.
    wire: socket.socket | None = None

    def connect(self) -> None:
        self.sock = socket.create_connection((self.pinned, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.wire = self.sock


class _PinnedHTTPS(_PinnedHTTP):
    """As :class:`_PinnedHTTP`, in TLS: SNI and the certificate check use the URL's host."""

    default_port = 443

    def __init__(self, target: Target, timeout: float, tls: ssl.SSLContext) -> None:
        super().__init__(target, timeout)
        self.tls = tls

    def connect(self) -> None:
        super().connect()
        self.sock = self.wire = self.tls.wrap_socket(self.sock, server_hostname=self.host)


@dataclass(slots=True)
class Response:
    """An answer whose body has not been read yet: read what you need, then :meth:`close`."""

    url: str
    status: int
    headers: http.client.HTTPMessage
    _raw: http.client.HTTPResponse
    _conn: http.client.HTTPConnection
    _watchdog: threading.Timer | None = field(default=None, repr=False)

    def read(self, limit: int) -> bytes:
        """At most ``limit`` bytes of the body."""
        return self._raw.read(limit)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._raw.close()
        self._conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _abort(conn: http.client.HTTPConnection, fired: threading.Event) -> None:
    """Cut a connection (its deadline passed, or its caller stops): the blocked read fails at
    once, also while the body of an answer that closes the connection is read."""
    fired.set()
    sock = getattr(conn, "wire", None) or conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: nothing to cut
            # The plain socket's shutdown: SSLSocket.shutdown would also drop its TLS object
            # under a read in progress in another thread.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def open_target(
    target: Target,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 15.0,
    deadline: float | None = None,
    tls: ssl.SSLContext | None = None,
    on_open: Callable[[Callable[[], None]], None] | None = None,
) -> Response:
    """Send one request to a checked target over a connection pinned to its address.
    ``timeout``: per connect and per socket read; ``deadline``: seconds after which the
    connection is cut whatever is happening (a peer that trickles bytes); ``on_open``: called,
    before connecting, with a function that cuts this connection at once from any thread (it
    does nothing until the connection is made, and the read in progress fails with OSError)."""
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = _PinnedHTTPS(target, timeout, tls or ssl.create_default_context())
    else:
        conn = _PinnedHTTP(target, timeout)
    if on_open is not None:
        on_open(functools.partial(_abort, conn, threading.Event()))
    watchdog = None
    fired = threading.Event()
    if deadline is not None:
        watchdog = threading.Timer(deadline, _abort, args=(conn, fired))
        watchdog.daemon = True
        watchdog.start()
    try:
        conn.request(method, target.path, body=body, headers=dict(headers or {}))
        raw = conn.getresponse()
    except BaseException as exc:
        if watchdog is not None:
            watchdog.cancel()
        conn.close()
        if fired.is_set() and isinstance(exc, OSError | http.client.HTTPException):
            raise TimeoutError(f"no answer within {deadline:g} s") from exc
        raise
    return Response(target.url, raw.status, raw.headers, raw, conn, watchdog)


def request(
    url: str,
    policy: Policy,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 15.0,
    deadline: float | None = None,
    max_redirects: int = 0,
    resolver: Resolver = system_resolver,
    tls: ssl.SSLContext | None = None,
) -> Response:
    """Check ``url``, then send the request pinned to the checked address. With
    ``max_redirects`` > 0, a redirect's ``Location`` is checked and pinned again before it is
    followed (303, and 301/302 after a POST, become a GET without body, as browsers do; the
    ``Authorization`` header is dropped when the host changes). Without, a 3xx is returned as
    it is."""
    current = check_url(url, policy, resolver)
    sent: dict[str, str] = dict(headers or {})
    hops = 0
    while True:
        response = open_target(
            current,
            method=method,
            headers=sent,
            body=body,
            timeout=timeout,
            deadline=deadline,
            tls=tls,
        )
        location = response.headers.get("location")
        if response.status not in REDIRECTS or not location or hops >= max_redirects:
            return response
        response.close()
        hops += 1
        following = check_url(urljoin(current.url, location), policy, resolver)
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            method, body = "GET", None
            sent = {k: v for k, v in sent.items() if k.lower() != "content-type"}
        if following.host != current.host:
            sent = {k: v for k, v in sent.items() if k.lower() != "authorization"}
        current = following


def describe(exc: BaseException) -> str:
    """A short text for a failed call, fit for a delivery history (no traceback)."""
    if isinstance(exc, NetGuardError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return str(exc) if exc.args and isinstance(exc.args[0], str) else "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "connection reset"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, http.client.HTTPException):
        return f"invalid HTTP answer ({type(exc).__name__})"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


__all__ = [
    "PRIVATE_REASONS",
    "REASONS",
    "NetGuardError",
    "Policy",
    "Refused",
    "Resolver",
    "Response",
    "Target",
    "Unresolvable",
    "check_url",
    "describe",
    "open_target",
    "parse",
    "refusal",
    "request",
    "system_resolver",
]
