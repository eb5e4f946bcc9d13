"""The SSRF guard (engine/netguard.py): every refused range, names that resolve into them, the
connection pinned to the checked address (Host and TLS still the URL's name), redirects checked
hop by hop, and nothing ever connected to when a check fails.

The only servers here listen on loopback; private and public addresses are never dialled (the
guard refuses them first, or an injected resolver plays DNS)."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine import netguard
from engine.netguard import Policy, Refused, Unresolvable

STRICT, DEV = Policy(), Policy(allow_private=True)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456:789a::1", "private"),
        ("fec0::1", "private"),
        ("100.64.0.1", "shared"),
        ("100.127.255.254", "shared"),
        ("169.254.169.254", "link_local"),
        ("169.254.0.1", "link_local"),
        ("fe80::1", "link_local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "reserved"),  # documentation
        ("198.18.0.1", "reserved"),  # benchmarking
        ("192.0.0.8", "reserved"),
        ("2001:db8::1", "reserved"),
        ("100::1", "reserved"),  # discard-only
        # IPv6 forms that carry an IPv4 address are judged by it
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("::ffff:169.254.169.254", "link_local"),
        ("::ffff:100.64.0.1", "shared"),
        ("::ffff:0.0.0.0", "unspecified"),
        ("64:ff9b::a9fe:a9fe", "link_local"),  # NAT64 of 169.254.169.254
        ("64:ff9b::7f00:1", "loopback"),
        ("2002:c0a8:101::1", "private"),  # 6to4 of 192.168.1.1
    ],
)
def test_each_forbidden_range_is_refused_with_its_reason(address: str, reason: str) -> None:
    assert netguard.refusal(ipaddress.ip_address(address)) == reason
    with pytest.raises(Refused) as caught:
        netguard.check_url(f"https://[{address}]/hook" if ":" in address else
                           f"https://{address}/hook", STRICT, _no_dns)  # fmt: skip
    assert caught.value.reason == reason
    assert netguard.REASONS[reason] in str(caught.value)


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "8.8.8.8", "2606:4700::6810:84e5", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address: str) -> None:
    assert netguard.refusal(ipaddress.ip_address(address)) is None


def _no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"an IP literal must not be looked up ({host})")


def _dns(table: dict[str, list[str]]) -> netguard.Resolver:
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise Unresolvable(f"the host name {host!r} does not resolve")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        (["10.0.0.7"], "private"),
        (["93.184.215.14", "192.168.0.10"], "private"),  # one bad address is enough
        (["2606:4700::6810:84e5", "fe80::1"], "link_local"),
        (["169.254.169.254"], "link_local"),
        (["127.0.0.1"], "loopback"),
        (["::ffff:172.16.0.1"], "private"),
    ],
)
def test_a_name_resolving_to_a_forbidden_address_is_refused(
    answers: list[str], reason: str
) -> None:
    with pytest.raises(Refused) as caught:
        netguard.check_url(
            "https://hooks.example.com/x", STRICT, _dns({"hooks.example.com": answers})
        )
    assert caught.value.reason == reason
    assert "hooks.example.com resolves to" in str(caught.value)


def test_localhost_through_the_system_resolver_is_refused() -> None:
    with pytest.raises(Refused) as caught:
        netguard.check_url("https://localhost:8443/hook", STRICT)
    assert caught.value.reason == "loopback"


def test_a_public_name_is_pinned_to_its_first_address() -> None:
    dns = _dns({"hooks.example.com": ["93.184.215.14", "2606:4700::6810:84e5"]})
    target = netguard.check_url("https://Hooks.Example.com./in?a=1", STRICT, dns)
    assert (target.host, target.port, target.path, target.address) == (
        "hooks.example.com",
        443,
        "/in?a=1",
        "93.184.215.14",
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com/", "scheme"),
        ("ftp://hooks.example.com/", "scheme"),
        ("hooks.example.com/x", "scheme"),
        ("https://user:pw@hooks.example.com/", "credentials"),
        ("https:///path-only", "host"),
        ("https://hooks.example.com:99999/", "host"),
    ],
)
def test_url_forms_refused_before_any_lookup(url: str, reason: str) -> None:
    with pytest.raises(Refused) as caught:
        netguard.check_url(url, STRICT, _no_dns)
    assert caught.value.reason == reason


def test_an_unresolvable_name_is_its_own_error() -> None:
    with pytest.raises(Unresolvable):
        netguard.check_url("https://no-such-host.invalid/", STRICT)


def test_allow_private_lets_loopback_private_and_http_through_but_not_the_rest() -> None:
    for address in ("127.0.0.1", "10.1.1.1", "100.64.0.1", "::1", "fd00::1"):
        assert DEV.refusal(ipaddress.ip_address(address)) is None
    for address in ("169.254.169.254", "fe80::1", "224.0.0.1", "0.0.0.0", "240.0.0.1"):
        assert DEV.refusal(ipaddress.ip_address(address)) is not None
    assert netguard.check_url("http://localhost:1/x", DEV).address in ("127.0.0.1", "::1")


# ------------------------------------------------------------------ real connections (loopback)


class _Seen(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]
    answer: tuple[int, dict[str, str]] = (200, {})

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "host": self.headers.get("host"),
                "body": self.rfile.read(length),
                "sni": getattr(self.server, "last_sni", None),
            }
        )
        status, headers = self.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(
    answer: tuple[int, dict[str, str]] = (200, {}), tls: ssl.SSLContext | None = None
) -> tuple[ThreadingHTTPServer, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    handler = type("Handler", (_Seen,), {"seen": seen, "answer": answer})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:

        def remember(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            server.last_sni = name  # type: ignore[attr-defined]

        tls.sni_callback = remember  # type: ignore[assignment]
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening socket on loopback that must never see a connection."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _no_connection(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def test_a_refused_loopback_url_is_never_connected_to(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    for url in (
        f"https://127.0.0.1:{port}/",
        f"https://localhost:{port}/",
        f"http://127.0.0.1:{port}/",
    ):
        with pytest.raises(Refused):
            netguard.request(url, STRICT, method="POST", body=b"{}", timeout=2)
    dns = _dns({"rebind.example.com": ["127.0.0.1"]})
    with pytest.raises(Refused):
        netguard.request(f"https://rebind.example.com:{port}/", STRICT, resolver=dns, timeout=2)
    assert _no_connection(listener)


def test_the_connection_goes_to_the_checked_address_and_is_never_looked_up_again() -> None:
    """DNS rebinding: the first answer is checked and pinned; a resolver that would answer
    differently later is never asked again."""
    server, seen = _serve()
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    port = server.server_address[1]
    try:
        with netguard.request(
            f"http://hooks.example.com:{port}/in?x=1",
            DEV,
            method="POST",
            body=b'{"a":1}',
            headers={"Content-Type": "application/json"},
            resolver=rebinding,
            timeout=5,
        ) as answer:
            assert answer.status == 200
            assert answer.read(10) == b"ok"
    finally:
        server.shutdown()
        server.server_close()
    assert calls == ["hooks.example.com"]
    assert seen == [
        {
            "method": "POST",
            "path": "/in?x=1",
            "host": f"hooks.example.com:{port}",
            "body": b'{"a":1}',
            "sni": None,
        }
    ]


def test_a_redirect_is_returned_as_is_unless_asked_and_each_hop_is_checked(
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    server, seen = _serve((307, {"Location": f"http://0.0.0.0:{port}/inside"}))
    url = f"http://127.0.0.1:{server.server_address[1]}/out"
    try:
        with netguard.request(url, DEV, method="POST", body=b"x", timeout=5) as answer:
            assert answer.status == 307  # not followed
        with pytest.raises(Refused) as caught:
            netguard.request(url, DEV, method="POST", body=b"x", timeout=5, max_redirects=3)
    finally:
        server.shutdown()
        server.server_close()
    assert caught.value.reason == "unspecified"
    assert len(seen) == 2
    assert _no_connection(listener)  # 0.0.0.0:port would have reached it


def test_a_followed_redirect_keeps_to_checked_hops() -> None:
    final, seen_final = _serve()
    hop, seen_hop = _serve((303, {"Location": f"http://127.0.0.1:{final.server_address[1]}/end"}))
    try:
        with netguard.request(
            f"http://127.0.0.1:{hop.server_address[1]}/start",
            DEV,
            method="POST",
            body=b"payload",
            headers={"Authorization": "Bearer x", "Content-Type": "text/plain"},
            max_redirects=1,
            timeout=5,
        ) as answer:
            assert (answer.status, answer.url) == (
                200,
                f"http://127.0.0.1:{final.server_address[1]}/end",
            )
    finally:
        for server in (final, hop):
            server.shutdown()
            server.server_close()
    assert [s["method"] for s in seen_hop + seen_final] == ["POST", "GET"]
    assert seen_final[0]["body"] == b""


def test_a_peer_that_never_answers_is_cut_at_the_deadline() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        with pytest.raises(TimeoutError):
            netguard.request(
                f"http://127.0.0.1:{sock.getsockname()[1]}/",
                DEV,
                method="POST",
                body=b"x",
                timeout=30,
                deadline=0.5,
            )
    finally:
        sock.close()


# ------------------------------------------------------------------ TLS: the URL's name, pinned IP


def _certificate(tmp: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize("cert_name", ["hooks.example.com", "other.example.com"])
def test_tls_uses_the_url_host_for_sni_and_verification_over_the_pinned_address(
    tmp_path: Path, cert_name: str
) -> None:
    cert, key = _certificate(tmp_path, cert_name)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    server, seen = _serve(tls=server_tls)
    client_tls = ssl.create_default_context(cafile=str(cert))
    port = server.server_address[1]
    url = f"https://hooks.example.com:{port}/tls"
    dns = _dns({"hooks.example.com": ["127.0.0.1"]})
    try:
        if cert_name == "hooks.example.com":
            with netguard.request(
                url, DEV, method="POST", body=b"{}", resolver=dns, tls=client_tls, timeout=5
            ) as answer:
                assert answer.status == 200
            assert seen[0]["sni"] == "hooks.example.com"
            assert seen[0]["host"] == f"hooks.example.com:{port}"
        else:  # the certificate must match the URL's name, not the address connected to
            with pytest.raises(ssl.SSLCertVerificationError) as caught:
                netguard.request(
                    url, DEV, method="POST", body=b"{}", resolver=dns, tls=client_tls, timeout=5
                )
            assert "hostname" in netguard.describe(caught.value).lower() or "match" in str(
                caught.value
            )
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("url", ["https://a\x00b.example.com/", "https://" + "a" * 300 + ".com/"])
def test_odd_host_names_are_unresolvable_not_a_crash(url: str) -> None:
    with pytest.raises((Unresolvable, Refused)):
        netguard.check_url(url, STRICT)
