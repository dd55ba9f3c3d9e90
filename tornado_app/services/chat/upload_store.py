"""Where uploaded bytes live: the ``UploadStore`` interface and its local-disk implementation.

Every method blocks (disk, or a network for another backend): the upload service calls them
in worker threads, never on the event loop. An S3-compatible backend implements the same
protocol (``begin`` a multipart upload, ``commit`` completes it under the key, ``open`` a
ranged GET stream, ``stale_partials`` aborts multipart uploads left unfinished).

Layout under ``--upload-dir``::

    tmp/<random>.part        an upload being received (removed when it ends, else swept)
    files/<k[:2]>/<key>      stored files and thumbnails (key = upload id, or id + ".thumb")
"""
from __future__ import annotations

import os
import re
import secrets
import time
from typing import BinaryIO, Protocol

KEY_RE = re.compile(r"^[A-Za-z0-9_-]{16,40}(\.thumb)?$")  # never a path: no dots but the suffix, no slashes


class PartialUpload(Protocol):
    """Bytes of one upload being received."""

    def write(self, data: bytes) -> None:
        """Append ``data``."""

    def abort(self) -> None:
        """Drop what was written (idempotent)."""


class UploadStore(Protocol):
    """Blob storage of uploads (see the module docstring)."""

    def begin(self) -> PartialUpload:
        """A new partial upload."""

    def commit(self, partial: PartialUpload, key: str) -> None:
        """Store what ``partial`` received under ``key``."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` (a thumbnail) under ``key``."""

    def open(self, key: str) -> BinaryIO:
        """The stored bytes of ``key`` for reading. Raises FileNotFoundError."""

    def local_path(self, partial: PartialUpload) -> str:
        """A path where ``partial``'s bytes can be read before commit (images are decoded from it)."""

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it is gone)."""

    def stale_partials(self, older_than: float) -> int:
        """Remove partial uploads not written to for ``older_than`` seconds; how many."""


class LocalPartial:
    """A temporary file under ``tmp/``."""

    def __init__(self, path: str):
        self.path = path
        self._file: "BinaryIO | None" = open(path, "xb")

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError("write after commit or abort")
        self._file.write(data)

    def close(self) -> None:
        """Flush and close the file (before it is read or moved)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def abort(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class LocalUploadStore:
    """Uploads as files under ``root`` (``--upload-dir``); directories are made on first use."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.tmp = os.path.join(self.root, "tmp")
        self.files = os.path.join(self.root, "files")

    def path_of(self, key: str) -> str:
        """The file of ``key``. Raises ValueError for a key that is not one of ours."""
        if not KEY_RE.match(key):
            raise ValueError("not an upload key")
        return os.path.join(self.files, key[:2], key)

    def begin(self) -> LocalPartial:
        os.makedirs(self.tmp, mode=0o700, exist_ok=True)
        return LocalPartial(os.path.join(self.tmp, secrets.token_hex(16) + ".part"))

    def local_path(self, partial: PartialUpload) -> str:
        if not isinstance(partial, LocalPartial):
            raise TypeError("not a partial upload of this store")
        partial.close()
        return partial.path

    def commit(self, partial: PartialUpload, key: str) -> None:
        if not isinstance(partial, LocalPartial):
            raise TypeError("not a partial upload of this store")
        partial.close()
        target = self.path_of(key)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        os.replace(partial.path, target)

    def put(self, key: str, data: bytes) -> None:
        target = self.path_of(key)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        partial = self.begin()
        partial.write(data)
        partial.close()
        os.replace(partial.path, target)

    def open(self, key: str) -> BinaryIO:
        return open(self.path_of(key), "rb")

    def delete(self, key: str) -> None:
        try:
            os.unlink(self.path_of(key))
        except FileNotFoundError:
            pass

    def stale_partials(self, older_than: float) -> int:
        try:
            names = os.listdir(self.tmp)
        except FileNotFoundError:
            return 0
        cutoff, removed = time.time() - older_than, 0
        for name in names:
            path = os.path.join(self.tmp, name)
            try:
                if name.endswith(".part") and os.stat(path).st_mtime < cutoff:
                    os.unlink(path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed
