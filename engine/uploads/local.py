"""Local-store uploads: appends at an offset to ``uploads/<id>/data`` under the store's
directory, and the SHA-256 computed on the way.

The file's size is the offset, so a request cut half way keeps what arrived. One request at a
time appends or completes (an exclusive ``flock`` on the file; another gets a conflict). Each
upload's running hash stays in the process between requests (``_HASHES``); a request that finds
none (the previous one went to another API process, or the process restarted) first hashes the
bytes already on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from engine.uploads.errors import UploadConflict, UploadTooLarge

#: Running hashes of local uploads kept between requests (an entry is ~200 bytes).
HASHES_KEPT = 1024
#: Bytes read at a time when hashing what is already stored.
HASH_CHUNK = 4 * 1024 * 1024

_HASHES: OrderedDict[str, tuple[int, Any]] = OrderedDict()
_HASHES_LOCK = threading.Lock()


def _keep_hash(upload_id: str, offset: int, digest: Any) -> None:
    with _HASHES_LOCK:
        _HASHES[upload_id] = (offset, digest)
        _HASHES.move_to_end(upload_id)
        while len(_HASHES) > HASHES_KEPT:
            _HASHES.popitem(last=False)


def _take_hash(upload_id: str, offset: int) -> Any | None:
    with _HASHES_LOCK:
        kept = _HASHES.pop(upload_id, None)
    return kept[1] if kept is not None and kept[0] == offset else None


def _hash_file(fh: IO[bytes], length: int) -> Any:
    """SHA-256 of the first ``length`` bytes of ``fh``."""
    digest = hashlib.sha256()
    fh.seek(0)
    left = length
    while left > 0:
        chunk = fh.read(min(HASH_CHUNK, left))
        if not chunk:
            raise UploadConflict(f"the stored bytes ended before offset {length}")
        digest.update(chunk)
        left -= len(chunk)
    return digest


@contextlib.contextmanager
def _locked(path: Path, mode: str) -> Iterator[IO[bytes]]:
    """``path`` opened and locked exclusively, or a conflict when another request holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UploadConflict(
                "another request is sending bytes to this upload or completing it; retry when "
                "it has ended (HEAD its data URL for the offset)"
            ) from None
        yield fh  # the lock goes with the file descriptor


class Appender:
    """One request's appends to a local upload: :meth:`write` the body's chunks in order, then
    :meth:`close` (also after an error: what arrived stays). Blocking: call in a thread."""

    def __init__(self, path: Path, upload_id: str, size: int, offset: int) -> None:
        self.upload_id = upload_id
        self.limit = size
        self._files = contextlib.ExitStack()
        self.fh = self._files.enter_context(_locked(path, "a+b"))
        try:
            self.offset = os.fstat(self.fh.fileno()).st_size
            if offset != self.offset:
                raise UploadConflict(
                    f"Upload-Offset is {offset} but upload {upload_id} holds {self.offset} "
                    "bytes: send from there",
                    offset=self.offset,
                )
            self.hash = _take_hash(upload_id, self.offset) or _hash_file(self.fh, self.offset)
        except BaseException:
            self._files.close()
            raise

    def write(self, data: bytes) -> None:
        """Append ``data``; past the declared size only what fits is kept."""
        room = self.limit - self.offset
        piece = data if len(data) <= room else data[:room]
        if piece:
            self.fh.write(piece)
            self.hash.update(piece)
            self.offset += len(piece)
        if len(data) > room:
            raise UploadTooLarge(
                f"the bytes pass the upload's declared size of {self.limit} bytes; "
                f"it holds {self.offset}"
            )

    def close(self) -> tuple[int, str | None]:
        """Make what arrived durable; (the offset, the SHA-256 once every byte is there)."""
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            _keep_hash(self.upload_id, self.offset, self.hash)
        finally:
            self._files.close()
        return self.offset, self.hash.hexdigest() if self.offset == self.limit else None


def finish(path: Path, upload_id: str, size: int, received_sha256: str | None) -> str:
    """The SHA-256 of a local upload that holds all its ``size`` bytes (else a conflict naming
    the offset): the one computed while appending, else computed now."""
    with _locked(path, "a+b") as fh:
        held = os.fstat(fh.fileno()).st_size
        if held != size:
            raise UploadConflict(
                f"upload {upload_id} holds {held} of its {size} bytes: send the rest "
                f"(PATCH its data URL with Upload-Offset: {held})",
                offset=held,
            )
        if received_sha256:
            return received_sha256
        kept = _take_hash(upload_id, size)
        return str((kept or _hash_file(fh, size)).hexdigest())
