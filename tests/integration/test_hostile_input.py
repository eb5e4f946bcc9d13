"""Hostile input end to end (issue #5): HTTP upload → real worker → PostgreSQL.

* Hostile files through the session service: each gives the precise error rows or the precise job
  failure, never a crash, a retry loop or a 5xx — including values PostgreSQL text cannot store
  (NUL), which must become error rows instead of failing the batch.
* Caps, through a second service with small limits (its own database and queue, so neither
  service's workers or reconciler touch the other's jobs): an oversize upload gets 413 *while
  streaming* (the answer arrives although most of the declared body was never sent), leaves no
  object behind and no memory growth; a gzip bomb fails its job with worker memory bounded; an
  overlong record fails its job.
* Client file names are never used as paths.
* A panic (``BaseException``) inside processing: the job must fail with a clear message after a
  bounded number of attempts counted in PostgreSQL (in-process ``Runtime.run_job`` against a
  real, private database).
"""

from __future__ import annotations

import gzip
import json
import os
import select
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import Bulkio
from polars.exceptions import PanicException

from engine import jobs
from engine.db import migrate
from engine.settings import load_settings

pytestmark = pytest.mark.integration

HEADER = b"id,email,name,role,created_at\n"


def row(n: int, email: str, name: bytes = b"Ann") -> bytes:
    """A valid users CSV record (records need an id unless they update an existing row)."""
    return b"%s,%s,%s,admin,2024-01-01T00:00:00Z" % (uid(n).encode(), email.encode(), name)


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def obj(n: int, email: str, name: str = "A", extra: dict[str, Any] | None = None) -> str:
    """A users JSON object as text (``extra`` adds keys, e.g. unknown ones)."""
    fields = {"id": uid(n), "email": email, "name": name, "role": "admin"}
    fields = {**fields, "created_at": "2024-01-01", **(extra or {})}
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


GOOD = row(1, "ann@example.com")
#: 65 nested arrays: with the object around them, one level more than MAX_JSON_DEPTH
DEEP: Any = []
for _ in range(64):
    DEEP = [DEEP]
NUL_TEXT = "name must not contain NUL (\\x00) characters: PostgreSQL text cannot hold them"


def errors_of(service: Bulkio, job_id: str) -> list[dict[str, Any]]:
    res = service.error_report(job_id)
    assert res.status_code == 200, res.text
    return [json.loads(line) for line in res.text.splitlines() if line]


def run(service: Bulkio, data: bytes, filename: str, resource: str = "users") -> dict[str, Any]:
    res = service.upload(None, resource, data=data, filename=filename)
    assert res.status_code == 202, res.text
    return service.wait(res.json()["job_id"], timeout=60)


def multipart(parts: list[tuple[str, bytes]], boundary: bytes = b"XyZ") -> tuple[bytes, str]:
    """A hand-made multipart body (httpx would escape the hostile bits we want to send)."""
    body = b"".join(
        b"--"
        + boundary
        + b"\r\nContent-Disposition: form-data; "
        + head
        + b"\r\n\r\n"
        + data
        + b"\r\n"
        for head, data in ((h.encode("utf-8", "surrogateescape"), d) for h, d in parts)
    )
    return body + b"--" + boundary + b"--\r\n", f"multipart/form-data; boundary={boundary.decode()}"


# ---------------------------------------------------------------- hostile files, end to end

FAILS = [
    pytest.param(
        HEADER + b",\xe9t\xe9@example.com,A,admin,2024-01-01\n",
        "u.csv",
        "the file is not valid UTF-8: byte 0xe9 at offset 31 (line 2)",
        id="non-utf8",
    ),
    pytest.param(
        HEADER.decode().encode("utf-16"), "u.csv", "UTF-16 (or UTF-32) byte-order mark", id="utf16"
    ),
    pytest.param(
        HEADER.replace(b"\n", b"\r") + GOOD + b"\r",
        "u.csv",
        "the file seems to use CR-only line endings",
        id="cr-only-line-endings",
    ),
    pytest.param(
        HEADER + b',"ann@example.com,Ann,admin,2024-01-01\n' + GOOD + b"\n",
        "u.csv",
        "the CSV file ends inside a quoted field (an unbalanced quote)",
        id="unbalanced-quote",
    ),
    pytest.param(gzip.compress(b""), "u.csv.gz", "the file is empty", id="empty-csv"),
    pytest.param(gzip.compress(b"\n \n"), "u.ndjson.gz", "the file holds no records", id="blank"),
    pytest.param(HEADER, "u.csv", "the CSV file has a header but no records", id="header-only"),
    pytest.param(b" [ ] ", "u.json", "the JSON array is empty", id="empty-json-array"),
    pytest.param(
        b"id,email,name,email,role,created_at\n" + b",a@b.cd,A,b@b.cd,admin,2024-01-01\n",
        "u.csv",
        "the CSV header repeats column(s): email",
        id="duplicate-header",
    ),
    pytest.param(
        b"id,email,name\x00,role,created_at\n,a@b.cd,A,admin,2024-01-01\n",
        "u.csv",
        "the CSV header lacks required column(s): name; found: id, email, name\u2400, role, "
        "created_at",
        id="nul-in-header-names",
    ),
    pytest.param(
        b'{"id": "x"}', "u.json", "a JSON file must hold one array of objects", id="json-object"
    ),
]


@pytest.mark.parametrize(("data", "filename", "message"), FAILS)
def test_unreadable_files_fail_the_job_with_a_precise_message(
    service: Bulkio, data: bytes, filename: str, message: str
) -> None:
    job = run(service, data, filename)
    assert job["status"] == "failed", job
    assert message in job["error"], job["error"]
    assert job["attempts"] == 1, "a file error is final: it must not be retried"


ERROR_ROWS = [
    pytest.param(
        b"\xef\xbb\xbf"
        + HEADER.replace(b"\n", b"\r\n")
        + GOOD
        + b"\r\n"
        + row(2, "bob@example.com")
        + b"\n"
        + row(3, "cy@example.com")
        + b"\r\n",
        "u.csv",
        3,
        [],
        id="bom-crlf-and-mixed-line-endings",
    ),
    pytest.param(
        HEADER + row(1, "ann@example.com", b"A\x00nn") + b"\n" + row(2, "bob@example.com"),
        "u.csv",
        1,
        [(1, 2, "name", "invalid_format", NUL_TEXT, "A\u2400nn")],
        id="nul-in-csv-text",
    ),
    pytest.param(
        "\n".join(
            [
                obj(1, "a@b.cd", "A\x00"),  # an escaped NUL (\u0000): valid JSON
                obj(2, "b@b.cd", "B@").replace("B@", "B\x00"),  # a raw NUL: invalid JSON
                obj(3, "c@b.cd"),
            ]
        ).encode(),
        "u.ndjson",
        1,
        [
            (1, 1, "name", "invalid_format", NUL_TEXT, "A\u2400"),
            (
                2,
                2,
                None,
                "malformed_record",
                "the line is not a valid JSON object",
                obj(2, "b@b.cd", "B\u2400"),
            ),
        ],
        id="nul-in-json",
    ),
    pytest.param(
        HEADER
        + row(1, "ann@example.com", b'A"nn')
        + b"\n"
        + row(2, "bob@example.com")
        + b"\n"
        + row(3, "cy@example.com", b'C"y')
        + b"\n"
        + row(4, "di@example.com")
        + b"\n",
        "u.csv",
        1,
        [
            (
                1,
                2,
                None,
                "malformed_record",
                'a quote (") inside an unquoted field or after a closing quote: enclose the whole '
                'field in quotes and double each quote inside it ("")',
                None,
            )
        ],
        id="stray-quote",
    ),
    pytest.param(
        f'[7, "x", {obj(1, "a@b.cd")}]'.encode(),
        "u.json",
        1,
        [
            (
                1,
                1,
                None,
                "malformed_record",
                "the element of the JSON array holds a number, not a JSON object",
                "7",
            ),
            (
                2,
                1,
                None,
                "malformed_record",
                "the element of the JSON array holds a string, not a JSON object",
                '"x"',
            ),
        ],
        id="json-values-that-are-not-objects",
    ),
    pytest.param(
        obj(1, "a@b.cd", extra={"x": DEEP}).encode() + b"\n",
        "u.ndjson",
        0,
        [
            (
                1,
                1,
                None,
                "malformed_record",
                "the record nests arrays/objects 66 levels deep; at most 64 are accepted",
                obj(1, "a@b.cd", extra={"x": DEEP}),
            ),
        ],
        id="json-nesting-cap",
    ),
]


@pytest.mark.parametrize(("data", "filename", "successful", "errors"), ERROR_ROWS)
def test_hostile_records_become_precise_error_rows(
    service: Bulkio,
    db: psycopg.Connection[Any],
    data: bytes,
    filename: str,
    successful: int,
    errors: list[tuple[Any, ...]],
) -> None:
    job = run(service, data, filename)
    assert job["status"] == "completed", job
    assert (job["successful"], job["failed"]) == (successful, len(errors)), job["errors"]
    got = [
        (e["row"], e["line"], e["field"], e["code"], e["message"], e["value"])
        for e in errors_of(service, job["job_id"])
    ]
    assert got == errors
    assert db.execute("SELECT count(*) FROM users").fetchone() == (successful,)


def test_a_batch_of_only_malformed_articles_completes_with_error_rows(service: Bulkio) -> None:
    """Regression: validation raised on a 0-row articles batch, so the job was retried to death."""
    job = run(service, b'[1]\n"two"\nnull\n', "a.ndjson", resource="articles")
    assert (job["status"], job["processed"], job["failed"]) == ("completed", 3, 3), job
    assert [e["code"] for e in job["errors"]] == ["malformed_record"] * 3


@pytest.mark.parametrize(
    ("data", "filename", "warning"),
    [
        (
            b"id,email,name,role,created_at,color,n\x00te\n" + GOOD + b",red,x\n",
            "u.csv",
            "ignored unknown column(s): color, n\u2400te",
        ),
        (
            (
                obj(1, "a@b.cd", extra={"color": 1}) + "\n" + obj(2, "b@b.cd", extra={"k\x00": 1})
            ).encode(),
            "u.ndjson",
            "ignored unknown key(s): color, k\u2400",
        ),
        (
            f"[{obj(1, 'a@b.cd', extra={'color': 1})}]".encode(),
            "u.json",
            "ignored unknown key(s): color",
        ),
    ],
)
def test_unknown_columns_and_keys_are_ignored_and_reported_once(
    service: Bulkio, data: bytes, filename: str, warning: str
) -> None:
    job = run(service, data, filename)
    assert job["status"] == "completed", job
    assert job["failed"] == 0 and job["successful"] >= 1
    assert job["warnings"] == [warning]


# ---------------------------------------------------------------- the upload endpoint


def test_file_names_from_clients_are_never_used_as_paths(service: Bulkio) -> None:
    root = Path(service.env["BULKIO_STORAGE_URL"].removeprefix("file://"))
    outside = root.parent / "escaped.csv"
    names = [
        "../escaped.csv",
        "../../../../../../tmp/escaped.csv",
        "/etc/escaped.csv",
        "..\\..\\escaped.csv",
        "imports/x/source.csv",
        "~/.ssh/x.csv",
    ]
    for name in names:
        res = service.upload(None, "users", data=HEADER + GOOD + b"\n", filename=name)
        assert res.status_code == 202, res.text
        job = service.wait(res.json()["job_id"])
        assert job["status"] == "completed" and job["file_name"] == name
        assert (root / "imports" / job["job_id"] / "source").is_file()
        report = service.error_report(job["job_id"])
        assert report.headers["content-disposition"] == (
            f'attachment; filename="errors-{job["job_id"]}.ndjson"'
        )
    assert not outside.exists() and not Path("/tmp/escaped.csv").exists()
    assert not Path("/etc/escaped.csv").exists()
    stored = {p.relative_to(root).parts[0] for p in root.rglob("*") if p.is_file()}
    assert stored <= {"imports", "exports"}


@pytest.mark.parametrize(
    ("body", "content_type", "detail"),
    [
        (b"x", "multipart/form-data", "expected multipart/form-data with a boundary"),
        (b"garbage\x00\xff", "multipart/form-data; boundary=XX", "malformed multipart body"),
        (
            b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\nid\n',
            "multipart/form-data; boundary=XX",
            "the multipart body ended before its closing boundary",
        ),
        (
            multipart([('name="resource"', b"users")])[0],
            multipart([])[1],
            "the multipart form has no 'file' field",
        ),
        (
            multipart([('name="resource"', b"users"), ('name="file"; filename="u.csv"', b"")])[0],
            multipart([])[1],
            "the uploaded file is empty",
        ),
        (
            multipart([('name="resource"', b"u" * 5000), ('name="file"', b"x")])[0],
            multipart([])[1],
            "form field 'resource' is too long",
        ),
    ],
)
def test_malformed_multipart_is_a_400_problem(
    service: Bulkio, body: bytes, content_type: str, detail: str
) -> None:
    res = service.client.post("/v1/imports", content=body, headers={"content-type": content_type})
    assert res.status_code == 400, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    assert detail in res.json()["detail"]


def test_an_overlong_multipart_boundary_is_a_400(service: Bulkio) -> None:
    body, _ = multipart([('name="file"', b"x")], boundary=b"b" * 300)
    res = service.client.post(
        "/v1/imports",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=" + "b" * 300},
    )
    assert res.status_code == 400, res.text


def test_a_part_header_that_is_not_latin1_is_a_400(service: Bulkio) -> None:
    body = b"--XX\r\nContent-Disposition: \xff\xfe; name=file\r\n\r\nid\n\r\n--XX--\r\n"
    res = service.client.post(
        "/v1/imports", content=body, headers={"content-type": "multipart/form-data; boundary=XX"}
    )
    assert res.status_code == 400, res.text


@pytest.mark.parametrize("via", ["multipart", "query"])
def test_a_file_name_with_nul_is_not_a_server_error(service: Bulkio, via: str) -> None:
    if via == "multipart":
        body, ctype = multipart(
            [('name="resource"', b"users"), ('name="file"; filename="u\x00.csv"', HEADER + GOOD)]
        )
        res = service.client.post("/v1/imports", content=body, headers={"content-type": ctype})
    else:
        res = service.client.post(
            "/v1/imports",
            params={"resource": "users", "filename": "u\x00.csv"},
            content=HEADER + GOOD,
        )
    assert res.status_code < 500, res.text


# ---------------------------------------------------------------- caps (a service with small ones)

UPLOAD_CAP = 1024 * 1024
DECOMPRESSED_CAP = 2 * 1024 * 1024
RECORD_CAP = 4096


@pytest.fixture(scope="module")
def capped(
    pg_server: Any, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bulkio]:
    """A second bulkio with small caps, on its own database and queue."""
    url = pg_server.create_database("bulkio_capped")
    migrate(url)
    work = tmp_path_factory.mktemp("capped")
    service = Bulkio(
        {
            "BULKIO_DATABASE_URL": url,
            "BULKIO_REDIS_URL": redis_server.url(),
            "BULKIO_STORAGE_URL": f"file://{work / 'objects'}",
            "BULKIO_QUEUE_NAME": "bulkio-capped",
            "BULKIO_MAX_UPLOAD_BYTES": str(UPLOAD_CAP),
            "BULKIO_MAX_DECOMPRESSED_BYTES": str(DECOMPRESSED_CAP),
            "BULKIO_MAX_RECORD_BYTES": str(RECORD_CAP),
            "BULKIO_SIGNING_SECRET": "test-secret",
            "BULKIO_RECONCILE_SECONDS": "1",
        },
        work,
        workers=1,
    )
    yield service
    service.stop()
    pg_server.drop_database("bulkio_capped")


def _group_rss_kib(pgid: int) -> int:
    """Resident memory of every process in a process group (granian forks its workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _stream_upload(service: Bulkio, head: bytes, body: Iterator[bytes]) -> tuple[bytes, int]:
    """Send a request head, then body pieces until the server answers; return (answer, bytes
    of body sent). The server must answer before the body ends for a streamed check."""
    sent = 0
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        sock.sendall(head)
        for piece in body:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(piece)
            except OSError:  # the server answered and closed: stop sending
                break
            sent += len(piece)
        answer = b""
        deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            readable, _, _ = select.select([sock], [], [], max(deadline - time.monotonic(), 0))
            if not readable:
                break
            try:
                piece = sock.recv(65536)
            except OSError:
                break
            if not piece:
                break
            answer += piece
    return answer, sent


def _http_answer(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a raw HTTP/1.1 answer with a Content-Length body."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return int(status_line.split()[1]), headers, body[: int(headers["content-length"])]


def _pieces(total: int, first: bytes = b"", size: int = 64 * 1024) -> Iterator[bytes]:
    yield first
    filler = (GOOD + b"\n") * (size // (len(GOOD) + 1))
    sent = 0
    while sent < total:
        yield filler
        sent += len(filler)


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.mark.parametrize("framing", ["raw", "multipart", "chunked"])
def test_an_oversize_upload_is_refused_with_413_while_streaming(
    capped: Bulkio, framing: str
) -> None:
    declared = 1024**3  # 1 GiB announced; a server that buffered would wait for all of it
    target = "/v1/imports?resource=users&format=csv"
    headers = f"Host: x\r\nAuthorization: Bearer {capped.token}\r\n"
    first = b""
    body: Iterator[bytes]
    if framing == "multipart":
        headers += "Content-Type: multipart/form-data; boundary=XyZ\r\n"
        first = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="u.csv"\r\n\r\n'
    if framing == "chunked":
        headers += "Transfer-Encoding: chunked\r\n"
        body = (b"%x\r\n%s\r\n" % (len(p), p) for p in _pieces(16 * UPLOAD_CAP) if p)
    else:
        headers += f"Content-Length: {declared}\r\n"
        body = _pieces(16 * UPLOAD_CAP, first)
    root = Path(capped.env["BULKIO_STORAGE_URL"].removeprefix("file://"))
    before_files = _files(root)
    assert capped.api is not None
    rss_before = _group_rss_kib(capped.api.pid)
    answer, sent = _stream_upload(capped, f"POST {target} HTTP/1.1\r\n{headers}\r\n".encode(), body)
    status, head, content = _http_answer(answer)
    assert status == 413, answer[:300]
    assert head["content-type"].startswith("application/problem+json")
    problem = json.loads(content)
    assert problem["status"] == 413
    assert problem["detail"] == (
        f"the upload is larger than {UPLOAD_CAP} bytes (BULKIO_MAX_UPLOAD_BYTES)"
    )
    assert sent < 8 * UPLOAD_CAP < declared  # answered long before the body could end
    time.sleep(0.5)
    assert _files(root) == before_files, "a refused upload must leave no object behind"
    assert _group_rss_kib(capped.api.pid) - rss_before < 64 * 1024
    assert capped.client.get("/health").status_code == 200


def test_an_upload_of_exactly_the_cap_is_accepted(capped: Bulkio) -> None:
    client = capped.client
    line = GOOD + b"\n"
    data = HEADER + line * ((UPLOAD_CAP - len(HEADER)) // len(line))
    data += b" " * (UPLOAD_CAP - len(data) - 1) + b"\n"
    assert len(data) == UPLOAD_CAP
    ok = client.post("/v1/imports", params={"resource": "users", "format": "csv"}, content=data)
    assert ok.status_code == 202, ok.text
    capped.wait(ok.json()["job_id"])


def test_a_gzip_bomb_fails_its_job_and_worker_memory_stays_bounded(capped: Bulkio) -> None:
    client = capped.client
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = (GOOD + b"\n") * (1024 * 1024 // (len(GOOD) + 1))
    bomb = squeeze.compress(HEADER) + b"".join(squeeze.compress(block) for _ in range(64))
    bomb += squeeze.flush()
    assert len(bomb) < UPLOAD_CAP  # ~64 MiB of CSV in well under 1 MiB
    worker = capped.workers[0]
    peak_before = _peak_rss_kib(worker.pid)
    res = client.post("/v1/imports", data={"resource": "users"}, files={"file": ("u.csv.gz", bomb)})
    assert res.status_code == 202, res.text
    job = capped.wait(res.json()["job_id"], kind="jobs")
    assert job["status"] == "failed", job
    assert job["error"] == (
        f"the gzip file expands to more than {DECOMPRESSED_CAP} bytes "
        "(BULKIO_MAX_DECOMPRESSED_BYTES); split it or raise the limit"
    )
    assert job["attempts"] == 1
    assert worker.alive()
    assert _peak_rss_kib(worker.pid) - peak_before < 128 * 1024, "decompression is not bounded"


def test_an_overlong_record_fails_its_job(capped: Bulkio) -> None:
    client = capped.client
    data = HEADER + GOOD + b"\n" + b",x@y.zz," + b"n" * (2 * RECORD_CAP) + b",admin,2024\n"
    res = client.post("/v1/imports", data={"resource": "users"}, files={"file": ("u.csv", data)})
    job = capped.wait(res.json()["job_id"], kind="jobs")
    assert job["status"] == "failed", job
    assert job["error"].startswith(
        f"a record starting on line 3 is longer than {RECORD_CAP} bytes (BULKIO_MAX_RECORD_BYTES)"
    )


# ---------------------------------------------------------------- panics: bounded attempts


@pytest.fixture(scope="module")
def panic_db(pg_server: Any) -> Iterator[str]:
    """A private database: no running worker or reconciler may pick these jobs up."""
    url = pg_server.create_database("bulkio_panic")
    migrate(url)
    yield url
    pg_server.drop_database("bulkio_panic")


def _attempt_until_done(runtime: Any, job_id: str, deliveries: int) -> list[str]:
    """Deliver the job like Dramatiq does (its worker catches BaseException and retries)."""
    raised = []
    for _ in range(deliveries):
        with psycopg.connect(runtime.settings.database_url) as conn:
            job = jobs.get(conn, job_id)
        assert job is not None
        if job.terminal:
            break
        try:
            runtime.run_job(job_id)
        except BaseException as exc:  # what dramatiq.Worker does with it
            raised.append(type(exc).__name__)
    return raised


def _panicking_job(
    panic_db: str, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> tuple[Any, str]:
    from engine.imports import run as importer
    from engine.worker import Runtime

    settings = load_settings(
        {}, database_url=panic_db, storage_url="memory://", max_attempts=3, lease_seconds=60
    )
    runtime = Runtime(settings)
    job_id = jobs.new_job_id()
    runtime.storage.put(f"imports/{job_id}/source", HEADER + GOOD + b"\n")
    with psycopg.connect(panic_db, autocommit=True) as conn:
        jobs.create(
            conn,
            job_id=job_id,
            kind="import",
            resource="users",
            fmt="csv",
            mode="upsert",
            owner="tester",
            object_key=f"imports/{job_id}/source",
        )

    def explode(*_: Any) -> Any:
        raise error

    monkeypatch.setattr(importer, "validate", explode)
    return runtime, job_id


def _job_row(url: str, job_id: str) -> tuple[Any, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT status, attempts, error, lease_owner FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_an_exception_fails_the_job_after_bounded_attempts(
    panic_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, job_id = _panicking_job(panic_db, monkeypatch, RuntimeError("kaboom"))
    try:
        raised = _attempt_until_done(runtime, job_id, deliveries=4)  # Retries(max_retries=3)
    finally:
        runtime.reset()
    status, _, error, lease_owner = _job_row(panic_db, job_id)
    assert (status, lease_owner) == ("failed", None)
    assert raised == ["RuntimeError"] * 3  # three attempts ran; the fourth delivery gave up
    assert error.startswith("gave up after 3 attempts; last error: internal error (id ")


def test_the_attempts_counted_in_postgresql_never_exceed_max_attempts(
    panic_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, job_id = _panicking_job(panic_db, monkeypatch, RuntimeError("kaboom"))
    try:
        _attempt_until_done(runtime, job_id, deliveries=4)
    finally:
        runtime.reset()
    status, attempts, _, _ = _job_row(panic_db, job_id)
    assert (status, attempts) == ("failed", 3)


def test_a_panic_fails_the_job_after_bounded_attempts_with_a_clear_message(
    panic_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, job_id = _panicking_job(
        panic_db, monkeypatch, PanicException("not yet implemented: hostile input")
    )
    try:
        raised = _attempt_until_done(runtime, job_id, deliveries=1)
        status, attempts, error, lease_owner = _job_row(panic_db, job_id)
        assert raised == ["PanicException"]
        assert (status, attempts, lease_owner) == ("queued", 1, None), "lease not handed back"
        assert error.startswith("internal error (id "), error  # details only in the log
        _attempt_until_done(runtime, job_id, deliveries=3)
    finally:
        runtime.reset()
    status, attempts, error, _ = _job_row(panic_db, job_id)
    assert status == "failed" and attempts <= 4
    assert error.startswith("gave up after 3 attempts; last error: internal error (id "), error
