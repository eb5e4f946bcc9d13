"""Fetching an import's source URL (engine/imports/fetch.py) from a real HTTP server on loopback:
the body streamed chunk by chunk, redirects followed and every hop checked again by the SSRF guard
(each forbidden range, as a name an injected resolver answers and as a literal), and every way a
fetch fails named: status, size (announced and streamed), a stalled or trickling server, TLS, too
many redirects; a stop from the progress hook (cancel, shutdown) cuts the connection at once.

No private or public address is ever dialled: the guard refuses them first."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine import netguard, source_url
from engine.formats import FORMATS
from engine.imports.fetch import Answer, FetchError, Limits, fetch
from engine.netguard import Policy
from engine.settings import Settings

DEV = Policy(allow_private=True)
LIMITS = Limits(max_bytes=10**8, timeout=10, deadline=60)


class OnlyTheTestServer(Policy):
    """The strict policy, except for the test server's own address (127.0.0.1) and ``http``:
    every other address gets the guard's own verdict, as with allow-private off."""

    __slots__ = ()

    @property
    def schemes(self) -> tuple[str, ...]:
        return ("https", "http")

    def refusal(self, address: netguard.IPAddress) -> str | None:
        return None if str(address) == "127.0.0.1" else netguard.refusal(address)


Route = Callable[["_Handler"], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    routes: dict[str, Route]
    seen: list[tuple[str, str | None]]
    release: threading.Event

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("host")))
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        # The client may cut the connection: what some tests expect.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            route(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Files:
    """A loopback HTTP server whose answers are set per path."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[tuple[str, str | None]] = []
        self.release = threading.Event()
        handler = type(
            "Handler",
            (_Handler,),
            {"routes": self.routes, "seen": self.seen, "release": self.release},
        )
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def files() -> Iterator[Files]:
    server = Files()
    yield server
    server.close()


def body(data: bytes, content_type: str | None = None, *, length: bool = True) -> Route:
    def answer(h: _Handler) -> None:
        h.send_response(200)
        if content_type:
            h.send_header("Content-Type", content_type)
        if length:
            h.send_header("Content-Length", str(len(data)))
        else:
            h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(data)
        h.close_connection = True

    return answer


def chunked(parts: list[bytes]) -> Route:
    def answer(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for part in parts:
            h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    return answer


def redirect(location: str, status: int = 302) -> Route:
    def answer(h: _Handler) -> None:
        h.send_response(status)
        if location:
            h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return answer


def status(code: int) -> Route:
    def answer(h: _Handler) -> None:
        h.send_response(code)
        h.send_header("Content-Length", "5")
        h.end_headers()
        h.wfile.write(b"nope\n")

    return answer


def stall(first: bytes, announced: int, started: threading.Event | None = None) -> Route:
    """Sends ``first`` of ``announced`` bytes, then nothing until the test ends."""

    def answer(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(announced))
        h.end_headers()
        h.wfile.write(first)
        h.wfile.flush()
        if started is not None:
            started.set()
        h.release.wait(60)
        h.close_connection = True

    return answer


def trickle(total: int, every: float, *, length: bool = True) -> Route:
    """One byte every ``every`` seconds: never silent for long, never done."""

    def answer(h: _Handler) -> None:
        h.send_response(200)
        if length:
            h.send_header("Content-Length", str(total))
        else:
            h.send_header("Connection", "close")
        h.end_headers()
        for _ in range(total):
            h.wfile.write(b"x")
            h.wfile.flush()
            if h.release.wait(every):
                break
        h.close_connection = True

    return answer


def _dns(table: dict[str, list[str]], calls: list[str] | None = None) -> netguard.Resolver:
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise netguard.Unresolvable(f"the host name {host!r} does not resolve")
        return table[host]

    return resolve


def _get(
    url: str,
    policy: Policy = DEV,
    limits: Limits = LIMITS,
    *,
    resolver: netguard.Resolver = netguard.system_resolver,
    on_progress: Callable[[], None] = lambda: None,
    start: Callable[[Answer], None] | None = None,
) -> tuple[bytes, Answer]:
    out = bytearray()

    def begin(answer: Answer) -> Callable[[bytes], object]:
        if start is not None:
            start(answer)
        return out.extend

    answer, size = fetch(url, policy, limits, on_progress, begin, resolver)
    assert size == len(out)
    return bytes(out), answer


# ------------------------------------------------------------------ the body, streamed


def test_the_body_is_streamed_whole_chunk_by_chunk(files: Files) -> None:
    data = b"id,email\n" + b"x" * (3 * 1024 * 1024 + 17)  # several reads
    files.routes["/users.csv"] = body(data, "text/csv; charset=utf-8")
    got, answer = _get(files.url("/users.csv?sig=secret"))
    assert got == data
    assert (answer.length, answer.content_type) == (len(data), "text/csv; charset=utf-8")


def test_a_chunked_body_without_length_is_read_to_its_end(files: Files) -> None:
    files.routes["/a.ndjson"] = chunked([b'{"a":1}\n'] * 1000)
    got, answer = _get(files.url("/a.ndjson"))
    assert got == b'{"a":1}\n' * 1000 and answer.length is None


# ------------------------------------------------------------------ redirects


def test_redirects_are_followed_and_each_hop_resolved_and_pinned_again(files: Files) -> None:
    files.routes["/start"] = redirect(files.url("/moved", host="cdn.test"), 301)
    files.routes["/moved"] = redirect("/data.csv", 307)  # relative: same host
    files.routes["/data.csv"] = body(b"id\n1\n")
    calls: list[str] = []
    dns = _dns({"files.test": ["127.0.0.1"], "cdn.test": ["127.0.0.1"]}, calls)
    got, answer = _get(files.url("/start", host="files.test"), resolver=dns)
    assert got == b"id\n1\n"
    assert answer.url == files.url("/data.csv", host="cdn.test")
    assert calls == ["files.test", "cdn.test", "cdn.test"]
    # the Host header is the URL's name; the connection went to the checked address
    assert [h for _, h in files.seen] == [
        f"files.test:{files.port}",
        f"cdn.test:{files.port}",
        f"cdn.test:{files.port}",
    ]


def test_more_redirects_than_the_limit_fail_naming_it(files: Files) -> None:
    for n in range(10):
        files.routes[f"/hop{n}"] = redirect(f"/hop{n + 1}")
    with pytest.raises(FetchError, match=r"more than 5 redirects \(the limit\)"):
        _get(files.url("/hop0"))
    assert len(files.seen) == 6  # the URL and five redirects, no more


def test_a_redirect_without_location_fails_naming_it(files: Files) -> None:
    files.routes["/r"] = redirect("", 302)
    with pytest.raises(FetchError, match="answered HTTP 302 Found without a Location"):
        _get(files.url("/r"))


FORBIDDEN = [
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("127.0.0.2", "loopback"),
    ("::1", "loopback"),
    ("169.254.169.254", "link_local"),
    ("fe80::1", "link_local"),
    ("100.64.0.1", "shared"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("::ffff:10.0.0.1", "private"),
]


@pytest.mark.parametrize("as_name", [True, False], ids=["dns-name", "literal"])
@pytest.mark.parametrize(("address", "reason"), FORBIDDEN, ids=[a for a, _ in FORBIDDEN])
def test_a_redirect_to_a_forbidden_address_is_refused(
    files: Files, address: str, reason: str, as_name: bool
) -> None:
    """Allow-private off (the test server's own address apart): the redirect's target is
    checked before any connection, whether it is a name resolving into the range or a literal."""
    assert netguard.refusal(ipaddress.ip_address(address)) == reason
    literal = f"[{address}]" if ":" in address else address
    files.routes["/start"] = redirect(
        files.url("/x.csv", host="inside.test" if as_name else literal)
    )
    dns = _dns({"files.test": ["127.0.0.1"], "inside.test": [address]})
    with pytest.raises(FetchError) as caught:
        _get(files.url("/start", host="files.test"), OnlyTheTestServer(), resolver=dns)
    message = str(caught.value)
    assert message.startswith("redirect 1 (to http://")
    assert netguard.REASONS[reason] in message and "refused" in message
    assert files.seen == [("/start", f"files.test:{files.port}")]


@pytest.mark.parametrize(("address", "reason"), FORBIDDEN, ids=[a for a, _ in FORBIDDEN])
def test_a_source_url_resolving_to_a_forbidden_address_is_refused_without_a_connection(
    address: str, reason: str
) -> None:
    dns = _dns({"files.example.com": [address]})
    with pytest.raises(FetchError) as caught:
        _get("https://files.example.com/users.csv", Policy(), resolver=dns)
    assert str(caught.value) == (
        "the source URL was refused: files.example.com resolves to "
        f"{ipaddress.ip_address(address)}, which is {netguard.REASONS[reason]}; refused"
    )


def test_localhost_through_the_system_resolver_is_refused_with_allow_private_off() -> None:
    with pytest.raises(FetchError, match=r"localhost resolves to .*loopback address; refused"):
        _get("https://localhost:8443/users.csv", Policy())


def test_http_is_refused_with_allow_private_off() -> None:
    with pytest.raises(FetchError, match=r"must start with https:// \(got http\)"):
        _get("http://files.example.com/users.csv", Policy(), resolver=_dns({}))


# ------------------------------------------------------------------ failures, named


def test_a_remote_error_status_fails_naming_it(files: Files) -> None:
    files.routes["/gone.csv"] = status(410)
    with pytest.raises(FetchError, match=r"/nope.csv answered HTTP 404 Not Found$"):
        _get(files.url("/nope.csv?token=abc"))
    with pytest.raises(FetchError, match="answered HTTP 410 Gone"):
        _get(files.url("/gone.csv"))


def test_messages_never_show_the_query(files: Files) -> None:
    with pytest.raises(FetchError) as caught:
        _get(files.url("/nope.csv?X-Amz-Signature=s3cr3t"))
    assert "s3cr3t" not in str(caught.value)


def test_a_content_length_over_the_cap_is_refused_before_reading(files: Files) -> None:
    files.routes["/big.csv"] = body(b"x" * 2000)
    started: list[Answer] = []
    with pytest.raises(FetchError, match=r"is 2000 bytes \(Content-Length\), more than "
                       r"BULKIO_MAX_UPLOAD_BYTES \(1000\)"):  # fmt: skip
        _get(files.url("/big.csv"), limits=Limits(1000, 10, 60), start=started.append)
    assert started == []


def test_a_body_that_grows_past_the_cap_stops_there(files: Files) -> None:
    files.routes["/big.csv"] = chunked([b"x" * 400] * 10)
    written = bytearray()

    def begin(answer: Answer) -> Callable[[bytes], object]:
        return written.extend

    with pytest.raises(FetchError, match=r"sent more than BULKIO_MAX_UPLOAD_BYTES \(1000\)"):
        fetch(files.url("/big.csv"), DEV, Limits(1000, 10, 60), lambda: None, begin)
    assert len(written) <= 1000


def test_a_body_shorter_than_announced_fails(files: Files) -> None:
    def short(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        h.wfile.write(b"x" * 10)
        h.close_connection = True

    files.routes["/short.csv"] = short
    with pytest.raises(FetchError, match="closed the connection after 10 of 100 bytes"):
        _get(files.url("/short.csv"))


def test_an_empty_file_fails(files: Files) -> None:
    files.routes["/empty.csv"] = body(b"")
    with pytest.raises(FetchError, match="is empty"):
        _get(files.url("/empty.csv"))


def test_a_stalled_server_fails_at_the_timeout(files: Files) -> None:
    files.routes["/stall.csv"] = stall(b"id\n", 1000)
    with pytest.raises(FetchError, match=r"sent nothing for 1 s \(BULKIO_URL_IMPORT_TIMEOUT"):
        _get(files.url("/stall.csv"), limits=Limits(10**6, 1, 60))


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "connection-close"])
def test_a_trickling_server_is_cut_at_the_deadline(files: Files, length: bool) -> None:
    """Never silent for the timeout, never done: the deadline ends it, also for an answer whose
    end is the connection's close (a cut must not pass for the end of the file)."""
    files.routes["/slow.csv"] = trickle(10_000, 0.05, length=length)
    with pytest.raises(FetchError, match=r"took longer than 1 s \(BULKIO_URL_IMPORT_DEADLINE"):
        _get(files.url("/slow.csv"), limits=Limits(10**6, 30, 1))


def test_a_server_that_never_answers_is_cut_at_the_deadline() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        with pytest.raises(FetchError, match="took longer than 1 s"):
            _get(f"http://127.0.0.1:{sock.getsockname()[1]}/x.csv", limits=Limits(10**6, 30, 1))
    finally:
        sock.close()


def test_a_refused_connection_is_named() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(
        FetchError, match=r"could not fetch http://127.0.0.1:\d+/x.csv: connection refused"
    ):
        _get(f"http://127.0.0.1:{port}/x.csv")


def _certificate(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "files.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("files.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_a_tls_error_is_named(tmp_path: Path) -> None:
    """A self-signed certificate: the fetch verifies against the system's roots."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*_certificate(tmp_path))
    server = Files(tls)
    server.routes["/x.csv"] = body(b"id\n1\n")
    try:
        with pytest.raises(FetchError, match=r"TLS certificate not accepted: self.signed"):
            _get(
                server.url("/x.csv", host="files.test", scheme="https"),
                resolver=_dns({"files.test": ["127.0.0.1"]}),
            )
    finally:
        server.close()


# ------------------------------------------------------------------ the progress hook


class _Stop(Exception):
    """What the runner's hook raises on a cancel or a shutdown."""


def test_the_hook_is_called_while_the_body_comes_in(files: Files) -> None:
    files.routes["/slow.csv"] = trickle(12, 0.1)
    calls: list[float] = []
    got, _ = _get(files.url("/slow.csv"), on_progress=lambda: calls.append(time.monotonic()))
    assert got == b"x" * 12
    assert len(calls) >= 2


def test_a_stop_from_the_hook_cuts_a_stalled_body_at_once(files: Files) -> None:
    """The timeout is 30 s: only the cut can end this fetch with the hook's own exception."""
    started = threading.Event()
    files.routes["/stall.csv"] = stall(b"id\n", 1000, started)

    def hook() -> None:
        if started.is_set():
            raise _Stop

    with pytest.raises(_Stop):
        _get(files.url("/stall.csv"), limits=Limits(10**6, 30, 600), on_progress=hook)


def test_a_stop_from_the_hook_cuts_a_server_that_has_not_answered() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)

    def hook() -> None:
        raise _Stop

    try:
        with pytest.raises(_Stop):
            _get(
                f"http://127.0.0.1:{sock.getsockname()[1]}/x.csv",
                limits=Limits(10**6, 30, 600),
                on_progress=hook,
            )
    finally:
        sock.close()


def test_start_may_refuse_before_a_byte_of_the_body_is_read(files: Files) -> None:
    files.routes["/data"] = body(b"x" * 100, "application/octet-stream")

    def refuse(answer: Answer) -> None:
        raise FetchError(source_url.missing_format(answer.url, answer.content_type))

    with pytest.raises(FetchError, match="pass format=csv"):
        _get(files.url("/data?sig=1"), start=refuse)


# ------------------------------------------------------------------ formats and labels


@pytest.mark.parametrize(
    ("url", "declared", "fmt"),
    [
        ("https://h.example/users.csv", None, "csv"),
        ("https://h.example/a/users.CSV.gz?sig=1", None, "csv"),
        ("https://h.example/x.jsonl", None, "ndjson"),
        ("https://h.example/x.ndjson", None, "ndjson"),
        ("https://h.example/x.json#frag", None, "json"),
        ("https://h.example/x.csv", "json", "json"),
        ("https://h.example/export?id=1", None, None),
        ("https://h.example/", None, None),
        ("https://h.example/users%2Ecsv", None, "csv"),
    ],
)
def test_format_from_url(url: str, declared: str | None, fmt: str | None) -> None:
    assert source_url.format_from_url(url, declared) == fmt


@pytest.mark.parametrize(
    ("content_type", "fmt"),
    [
        ("text/csv", "csv"),
        ("Text/CSV; charset=utf-8", "csv"),
        ("application/x-ndjson", "ndjson"),
        ("application/jsonl", "ndjson"),
        ("application/json; charset=utf-8", "json"),
        ("application/vnd.apache.parquet", "parquet" if "parquet" in FORMATS else None),
        ("application/octet-stream", None),
        ("application/gzip", None),
        (None, None),
        ("", None),
    ],
)
def test_format_from_content_type(content_type: str | None, fmt: str | None) -> None:
    assert source_url.format_from_content_type(content_type) == fmt


def test_shown_urls_drop_query_and_credentials() -> None:
    assert source_url.shown("https://u:p@h.example:8443/a/b.csv?X-Amz-Signature=1#f") == (
        "https://h.example:8443/a/b.csv"
    )
    assert source_url.shown("https://[::1]/x") == "https://[::1]/x"
    assert source_url.file_name("https://h.example/dir/My%20File.csv?x=1") == "My File.csv"
    assert source_url.file_name("https://h.example/") is None


def test_the_api_check_uses_the_setting() -> None:
    with pytest.raises(netguard.Refused) as caught:
        source_url.check("http://localhost:1/x.csv", Settings())
    assert caught.value.reason == "scheme"
    with pytest.raises(netguard.Refused) as caught:
        source_url.check("https://localhost:1/x.csv", Settings())
    assert caught.value.reason == "loopback"
    allowed = Settings(url_import_allow_private=True)
    assert source_url.check(" http://localhost:1/x.csv ", allowed) == "http://localhost:1/x.csv"
    with pytest.raises(netguard.Refused, match="longer than 8192"):
        source_url.check("https://h.example/" + "a" * 8192, allowed)
