"""S3 multipart uploads driven part by part, for upload sessions (engine/uploads.py).

obstore (engine/storage.py) writes multipart uploads itself but exposes no upload id, and its
``sign`` presigns a method and a path, not UploadPart's ``uploadId``/``partNumber`` query
(developmentseed/obstore#778). So these few calls go through botocore, with the store's own
bucket, prefix, endpoint, region and credentials; whole objects are still read and written
through obstore. botocore is imported on first use only: a process that never touches an S3
upload session never loads it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine.storage import S3Location

#: S3's smallest part (every part but the last) and most parts of one upload.
MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PARTS = 10_000

_CLIENTS: dict[S3Location, Any] = {}
_LOCK = threading.Lock()


class NoSuchUpload(LookupError):
    """Raised when S3 knows no multipart upload of that id (completed, aborted or never made)."""


@dataclass(frozen=True, slots=True)
class Part:
    number: int
    size: int
    #: Without quotes (S3 quotes ETags; clients copy them either way).
    etag: str


def plain_etag(etag: str) -> str:
    return etag.strip().strip('"')


def _client(location: S3Location) -> Any:
    """One botocore client per store and process (thread-safe; creating one takes ~1 s)."""
    with _LOCK:
        client = _CLIENTS.get(location)
        if client is None:
            import botocore.session
            from botocore.config import Config

            options: dict[str, Any] = {"region_name": location.region}
            if location.endpoint:
                options["endpoint_url"] = location.endpoint
            if location.access_key_id:
                options["aws_access_key_id"] = location.access_key_id
                options["aws_secret_access_key"] = location.secret_access_key
            style = "path" if location.endpoint else "auto"  # as engine/storage.py's S3Store
            config = Config(
                signature_version="s3v4",
                s3={"addressing_style": style},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
            )
            client = botocore.session.get_session().create_client("s3", config=config, **options)
            _CLIENTS[location] = client
        return client


def _missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    return response.get("Error", {}).get("Code") in ("NoSuchUpload", "404")


class Multipart:
    """The multipart calls of one S3 store. ``path`` arguments are store paths (without the
    store's prefix), as everywhere else."""

    def __init__(self, location: S3Location) -> None:
        self.location = location

    @property
    def _s3(self) -> Any:
        return _client(self.location)

    def _params(self, path: str, upload_id: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"Bucket": self.location.bucket, "Key": self.location.key(path)}
        if upload_id is not None:
            params["UploadId"] = upload_id
        return params

    def create(self, path: str, content_type: str | None = None) -> str:
        """Start a multipart upload of ``path``; its upload id."""
        extra = {"ContentType": content_type} if content_type else {}
        return str(self._s3.create_multipart_upload(**self._params(path), **extra)["UploadId"])

    def part_urls(self, path: str, upload_id: str, numbers: list[int], ttl: int) -> list[str]:
        """Presigned ``PUT`` URLs of these parts (UploadPart, valid ``ttl`` seconds)."""
        s3 = self._s3
        return [
            str(
                s3.generate_presigned_url(
                    "upload_part",
                    Params={**self._params(path, upload_id), "PartNumber": n},
                    ExpiresIn=ttl,
                    HttpMethod="PUT",
                )
            )
            for n in numbers
        ]

    def parts(self, path: str, upload_id: str) -> list[Part]:
        """The parts that arrived, by number (ListParts, every page)."""
        found: list[Part] = []
        marker = 0
        while True:
            try:
                page = self._s3.list_parts(**self._params(path, upload_id), PartNumberMarker=marker)
            except Exception as exc:
                if _missing(exc):
                    raise NoSuchUpload(upload_id) from exc
                raise
            found += [
                Part(int(p["PartNumber"]), int(p["Size"]), plain_etag(p["ETag"]))
                for p in page.get("Parts", [])
            ]
            if not page.get("IsTruncated"):
                return found
            marker = int(page["NextPartNumberMarker"])

    def complete(self, path: str, upload_id: str, parts: list[Part]) -> None:
        """Assemble the object from ``parts`` (CompleteMultipartUpload)."""
        body = {"Parts": [{"PartNumber": p.number, "ETag": f'"{p.etag}"'} for p in parts]}
        try:
            self._s3.complete_multipart_upload(
                **self._params(path, upload_id), MultipartUpload=body
            )
        except Exception as exc:
            if _missing(exc):
                raise NoSuchUpload(upload_id) from exc
            raise

    def abort(self, path: str, upload_id: str) -> None:
        """Abort the upload and drop its parts; an upload S3 no longer knows is not an error."""
        try:
            self._s3.abort_multipart_upload(**self._params(path, upload_id))
        except Exception as exc:
            if not _missing(exc):
                raise

    def uploads(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(store path, upload id) of every multipart upload in progress under ``prefix``."""
        strip = len(self.location.key(""))
        params: dict[str, Any] = {
            "Bucket": self.location.bucket,
            "Prefix": self.location.key(prefix),
        }
        while True:
            page = self._s3.list_multipart_uploads(**params)
            for item in page.get("Uploads", []):
                yield str(item["Key"])[strip:], str(item["UploadId"])
            if not page.get("IsTruncated"):
                return
            params["KeyMarker"] = page["NextKeyMarker"]
            params["UploadIdMarker"] = page["NextUploadIdMarker"]
