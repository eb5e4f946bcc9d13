"""Upload sessions' rows and their S3 side: create, read, what arrived, completion (size and
SHA-256 checks), and the import that consumes one (see the package's docstring)."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from engine import limits
from engine.jobs import Job
from engine.multipart import MAX_PARTS, Multipart, NoSuchUpload, Part
from engine.settings import Settings
from engine.storage import Storage
from engine.uploads import local
from engine.uploads.errors import (
    ChecksumMismatch,
    TooManyUploads,
    UnsupportedStore,
    UploadConflict,
    UploadNotFound,
    UploadRejected,
    UploadTooLarge,
)

#: Object path of an upload's bytes; the segment after ``uploads/`` is its id.
PREFIX = "uploads"
#: Stores that can take upload sessions.
KINDS = ("local", "s3")
#: How long one request may take to complete an upload (assemble, hash) before another may try.
COMPLETE_LEASE_SECONDS = 900
#: Missing or wrong parts named in one message.
NAMED_PARTS = 20


@dataclass(frozen=True, slots=True)
class Upload:
    row: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.row[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    @property
    def id(self) -> str:
        return str(self.row["id"])

    @property
    def parts_count(self) -> int:
        return -(-int(self.row["size"]) // int(self.row["part_size"]))

    def part_bytes(self, number: int) -> int:
        """The size part ``number`` (1-based) must have: ``part_size``, the last one the rest."""
        size, part = int(self.row["size"]), int(self.row["part_size"])
        return min(part, size - (number - 1) * part)


def part_size_for(size: int, configured: int) -> int:
    """``configured`` (BULKIO_UPLOAD_PART_BYTES), or more when the file would need more than
    S3's 10,000 parts (rounded up to a MiB)."""
    mib = 1024 * 1024
    needed = -(-size // MAX_PARTS)
    return max(configured, -(-needed // mib) * mib)


def object_path(upload_id: str) -> str:
    return f"{PREFIX}/{upload_id}/data"


def _one(conn: psycopg.Connection[Any], sql: str, params: Any) -> Upload | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
    return Upload(row) if row else None


def valid_id(upload_id: str) -> bool:
    try:
        uuid.UUID(upload_id)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- create and read


def create(
    conn: psycopg.Connection[Any],
    storage: Storage,
    settings: Settings,
    *,
    owner: str,
    token_id: str | None,
    file_name: str | None,
    size: int,
    sha256: str | None,
    content_type: str | None,
) -> Upload:
    """A new open upload (``conn``: autocommit). On S3 its multipart upload is started too;
    the row comes first, so a multipart upload never exists without one (see :func:`expire`)."""
    if storage.kind not in KINDS:
        raise UnsupportedStore(
            f"upload sessions need a local or S3 object store, not {storage.kind}://"
        )
    if size > settings.max_upload_bytes:
        raise UploadTooLarge(
            f"size {size} is larger than {settings.max_upload_bytes} bytes "
            "(BULKIO_MAX_UPLOAD_BYTES)"
        )
    upload_id = str(uuid.uuid4())
    path = object_path(upload_id)
    part_size = part_size_for(size, settings.upload_part_bytes) if storage.kind == "s3" else size
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('uploads:' || %s))", (owner,))
        pending = conn.execute(
            "SELECT count(*) FROM uploads WHERE owner = %s AND job_id IS NULL "
            "AND expires_at > now()",
            (owner,),
        ).fetchone()
        if pending and int(pending[0]) >= settings.max_open_uploads:
            raise TooManyUploads(
                f"{owner!r} already has {pending[0]} uploads not yet imported "
                "(BULKIO_MAX_OPEN_UPLOADS); import them or let them expire"
            )
        conn.execute(
            "INSERT INTO uploads (id, owner, token_id, file_name, content_type, size, sha256, "
            "storage, object_key, part_size, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, now() + make_interval(hours => %s))",
            (upload_id, owner, token_id, file_name, content_type, size, sha256, storage.kind,
             path, part_size, settings.upload_expiry_hours),
        )  # fmt: skip
    if storage.kind == "s3":
        try:
            multipart_id = multipart_of(storage).create(path, content_type)
        except BaseException:
            conn.execute("DELETE FROM uploads WHERE id = %s", (upload_id,))
            raise
        conn.execute(
            "UPDATE uploads SET s3_upload_id = %s WHERE id = %s", (multipart_id, upload_id)
        )
    found = get(conn, upload_id, owner)
    assert found is not None
    return found


def get(conn: psycopg.Connection[Any], upload_id: str, owner: str | None) -> Upload | None:
    """The upload if it belongs to ``owner`` (None: anyone) and has not expired unimported."""
    if not valid_id(upload_id):
        return None
    return _one(
        conn,
        "SELECT * FROM uploads WHERE id = %s AND (%s::text IS NULL OR owner = %s) "
        "AND (job_id IS NOT NULL OR expires_at > now())",
        (upload_id, owner, owner),
    )


def multipart_of(storage: Storage) -> Multipart:
    assert storage.s3 is not None
    return Multipart(storage.s3)


def received(storage: Storage, upload: Upload) -> tuple[int, list[Part]]:
    """(bytes that arrived, S3 parts that arrived). A completed upload has all its bytes."""
    if upload.status not in ("open", "completing"):
        return int(upload.size), []
    if upload.storage == "local":
        try:
            return storage.local_path(upload.object_key).stat().st_size, []
        except FileNotFoundError:
            return 0, []
    if not upload.s3_upload_id:
        return 0, []
    try:
        parts = multipart_of(storage).parts(upload.object_key, upload.s3_upload_id)
    except NoSuchUpload:  # assembled by a completion that then failed: all bytes are there
        return int(upload.size), []
    parts = [p for p in parts if p.number <= upload.parts_count]
    return sum(p.size for p in parts), parts


def part_urls(storage: Storage, upload: Upload, numbers: list[int], ttl: int) -> list[str]:
    """Presigned PUT URLs of these parts of an S3 upload."""
    return multipart_of(storage).part_urls(upload.object_key, upload.s3_upload_id, numbers, ttl)


# ---------------------------------------------------------------- local appends


def open_appender(storage: Storage, upload: Upload, offset: int) -> local.Appender:
    """An :class:`~engine.uploads.local.Appender` of an open local upload (blocking)."""
    if upload.status != "open":
        raise UploadConflict(f"upload {upload.id} is {upload.status}: it takes no more bytes")
    path = storage.local_path(upload.object_key)
    return local.Appender(path, upload.id, int(upload.size), offset)


def note_digest(conn: psycopg.Connection[Any], upload_id: str, digest: str) -> None:
    """Record the SHA-256 of a local upload whose last byte arrived."""
    conn.execute(
        "UPDATE uploads SET received_sha256 = %s, updated_at = now() "
        "WHERE id = %s AND status = 'open'",
        (digest, upload_id),
    )


# ---------------------------------------------------------------- completion


def complete(
    pool: ConnectionPool,
    storage: Storage,
    upload_id: str,
    owner: str,
    parts: list[tuple[int, str]] | None = None,
) -> Upload:
    """Check the size and the SHA-256 of the bytes and mark the upload completed (blocking;
    reads the whole S3 object once). ``parts``: the (part number, ETag) pairs the client got
    from S3; checked against what S3 holds (None: take S3's list). Completing a completed
    upload returns it unchanged."""
    with pool.connection() as conn:
        upload = _claim(conn, upload_id, owner)
    if upload.status != "completing":
        return upload
    try:
        if upload.storage == "local":
            path = storage.local_path(upload.object_key)
            digest = local.finish(path, upload.id, int(upload.size), upload.received_sha256)
        else:
            digest = _finish_s3(storage, upload, parts)
    except UploadRejected as exc:
        _reject(pool, storage, upload, str(exc))
        raise
    except BaseException:
        with pool.connection() as conn:  # usable again: the client may send what is missing
            conn.execute(
                "UPDATE uploads SET status = 'open', lease_expires = NULL, updated_at = now() "
                "WHERE id = %s AND status = 'completing'",
                (upload.id,),
            )
        raise
    if upload.sha256 and digest != upload.sha256:
        mismatch = ChecksumMismatch(upload.sha256, digest, upload.id)
        _reject(pool, storage, upload, str(mismatch), received_sha256=digest)
        raise mismatch
    with pool.connection() as conn:
        done = _one(
            conn,
            "UPDATE uploads SET status = 'completed', received_sha256 = %s, completed_at = now(), "
            "updated_at = now(), lease_expires = NULL WHERE id = %s AND status = 'completing' "
            "RETURNING *",
            (digest, upload.id),
        )
    if done is None:
        raise UploadConflict(f"upload {upload.id} expired while it was being completed")
    return done


def _claim(conn: psycopg.Connection[Any], upload_id: str, owner: str) -> Upload:
    if not valid_id(upload_id):
        raise UploadNotFound(f"no upload {upload_id}")
    claimed = _one(
        conn,
        "UPDATE uploads SET status = 'completing', updated_at = now(), "
        "lease_expires = now() + make_interval(secs => %s) "
        "WHERE id = %s AND owner = %s AND job_id IS NULL AND expires_at > now() "
        "AND (status = 'open' OR (status = 'completing' AND lease_expires < now())) RETURNING *",
        (COMPLETE_LEASE_SECONDS, upload_id, owner),
    )
    if claimed is not None:
        return claimed
    upload = get(conn, upload_id, owner)
    if upload is None:
        raise UploadNotFound(f"no upload {upload_id}")
    if upload.status == "completing":
        raise UploadConflict(f"upload {upload_id} is being completed by another request")
    if upload.status == "rejected":
        raise UploadConflict(f"upload {upload_id} was rejected: {upload.error}")
    return upload  # completed or imported: nothing to do


def _named(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:NAMED_PARTS])
    more = len(numbers) - NAMED_PARTS
    return shown + (f" and {more} more" if more > 0 else "")


def _finish_s3(storage: Storage, upload: Upload, given: list[tuple[int, str]] | None) -> str:
    path, count = upload.object_key, upload.parts_count
    if not upload.s3_upload_id:  # its creation died between the row and S3
        raise UploadRejected(f"upload {upload.id} has no multipart upload: create a new one")
    multipart = multipart_of(storage)
    try:
        arrived = {p.number: p for p in multipart.parts(path, upload.s3_upload_id)}
    except NoSuchUpload:
        arrived = None  # assembled by an earlier attempt that failed later: check the object
    if arrived is not None:
        missing = [n for n in range(1, count + 1) if n not in arrived]
        if missing:
            raise UploadConflict(
                f"parts {_named(missing)} of {count} have not arrived: send them "
                f"(GET /v1/uploads/{upload.id} lists fresh URLs)"
            )
        wrong = [n for n in range(1, count + 1) if arrived[n].size != upload.part_bytes(n)]
        if wrong:
            sizes = ", ".join(
                f"{n}: {arrived[n].size} instead of {upload.part_bytes(n)}" for n in wrong[:5]
            )
            raise UploadConflict(
                f"parts {_named(wrong)} have the wrong size ({sizes} bytes): send them again"
            )
        if given is not None:
            _check_given(upload, arrived, given)
        multipart.complete(path, upload.s3_upload_id, [arrived[n] for n in range(1, count + 1)])
    try:
        stored = storage.size(path)
    except FileNotFoundError:
        raise UploadRejected(f"upload {upload.id}: its multipart upload is gone") from None
    if stored != int(upload.size):
        raise UploadRejected(
            f"the assembled object has {stored} bytes, not the declared {upload.size}; "
            f"upload {upload.id} is rejected: create a new one"
        )
    digest = hashlib.sha256()
    for chunk in storage.read(path):
        digest.update(chunk)
    return digest.hexdigest()


def _check_given(upload: Upload, arrived: dict[int, Part], given: list[tuple[int, str]]) -> None:
    numbers = sorted(n for n, _ in given)
    if numbers != list(range(1, upload.parts_count + 1)):
        raise UploadConflict(
            f"parts must list part numbers 1 to {upload.parts_count} once each "
            f"(got {len(given)} entries)"
        )
    stale = sorted(n for n, etag in given if arrived[n].etag != etag.strip().strip('"'))
    if stale:
        raise UploadConflict(
            f"the ETags of parts {_named(stale)} are not those of the parts storage holds "
            f"(sent again since?): GET /v1/uploads/{upload.id} lists the stored ones"
        )


def delete_bytes(storage: Storage, upload: Upload | dict[str, Any]) -> None:
    row = upload.row if isinstance(upload, Upload) else upload
    if row["storage"] == "s3" and row["s3_upload_id"] and storage.s3 is not None:
        multipart_of(storage).abort(row["object_key"], row["s3_upload_id"])
    storage.delete(row["object_key"])
    if storage.kind == "local":
        with contextlib.suppress(OSError):
            storage.local_path(row["object_key"]).parent.rmdir()


def _reject(
    pool: ConnectionPool,
    storage: Storage,
    upload: Upload,
    reason: str,
    received_sha256: str | None = None,
) -> None:
    with pool.connection() as conn:
        conn.execute(
            "UPDATE uploads SET status = 'rejected', error = %s, received_sha256 = %s, "
            "lease_expires = NULL, updated_at = now() WHERE id = %s",
            (reason, received_sha256, upload.id),
        )
    delete_bytes(storage, upload)


# ---------------------------------------------------------------- import


def create_job(
    conn: psycopg.Connection[Any],
    upload_id: str,
    *,
    token_id: str,
    job_limit: int,
    slot: str | None,
    **fields: Any,
) -> Job:
    """The import job of a completed upload of the job's ``owner``, created in the transaction
    that marks the upload imported (so it is imported once), within the token's job limit
    (engine/limits.py; raises its LimitReached). The job's source is the upload's object.
    ``fields``: those of :func:`engine.jobs.create` but the source's."""
    with conn.transaction():
        upload = _claim_for_import(conn, upload_id, fields["owner"])
        job = limits.create_job(
            conn,
            token_id=token_id,
            job_limit=job_limit,
            slot=slot,
            object_key=upload.object_key,
            total_bytes=int(upload.size),
            file_name=upload.file_name,
            **fields,
        )
        conn.execute(
            "UPDATE uploads SET status = 'imported', job_id = %s, updated_at = now() WHERE id = %s",
            (job.id, upload.id),
        )
    return job


def _claim_for_import(conn: psycopg.Connection[Any], upload_id: str, owner: str) -> Upload:
    upload = None
    if valid_id(upload_id):
        upload = _one(
            conn,
            "SELECT * FROM uploads WHERE id = %s AND owner = %s "
            "AND (job_id IS NOT NULL OR expires_at > now()) FOR UPDATE",
            (upload_id, owner),
        )
    if upload is None:
        raise UploadNotFound(f"no upload {upload_id}")
    if upload.status == "imported":
        raise UploadConflict(
            f"upload {upload_id} was imported already, by job {upload.job_id}; an upload is "
            "imported once"
        )
    if upload.status == "rejected":
        raise UploadConflict(f"upload {upload_id} was rejected: {upload.error}")
    if upload.status != "completed":
        raise UploadConflict(
            f"upload {upload_id} is {upload.status}: complete it first "
            f"(POST /v1/uploads/{upload_id}/complete)"
        )
    return upload
